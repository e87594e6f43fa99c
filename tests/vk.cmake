# Vulkan backend tests (run on lavapipe in CI; they fail, never skip, when no device is found).
prefixd_test(test_vk_ops SOURCES test_vk_ops.cpp LIBS prefixd_engine LABELS vulkan TIMEOUT 300)
prefixd_test(test_vk_cells SOURCES test_vk_cells.cpp LIBS prefixd_engine LABELS vulkan TIMEOUT 300)
prefixd_test(test_vk_model SOURCES test_vk_model.cpp LIBS prefixd_engine LABELS vulkan FIXTURES test_models
             TIMEOUT 600)
prefixd_test(test_vk_memory SOURCES test_vk_memory.cpp LIBS prefixd_engine LABELS vulkan FIXTURES test_models
             TIMEOUT 300)
# The whole-model checks again with the attention kernel GPUs use (attn_mla) in place of the
# CPU-driver tiled one that lavapipe picks by default.
set(PREFIXD_TEST_ENV_WG ${PREFIXD_TEST_ENV})
list(APPEND PREFIXD_TEST_ENV_WG PREFIXD_VK_ATTN=wg)
add_test(NAME test_vk_model_attn_wg COMMAND test_vk_model)
set_tests_properties(test_vk_model_attn_wg PROPERTIES ENVIRONMENT "${PREFIXD_TEST_ENV_WG}" TIMEOUT 600
                                                      LABELS vulkan FIXTURES_REQUIRED test_models)
# And with every kernel choice a GPU makes (device-address matmuls on the plain weight layout, no
# texel or row-interleaved shaders, attn_mla, MoE slots of multi-row steps grouped on the device by
# moe_group): the configuration NVIDIA/AMD/Intel devices run, checked end to end on lavapipe since
# CI has no GPU.
# PREFIXD_VK_REORDER=1 (engine/vk/vk_context.h set_reorder) reverses the dispatches between two
# barriers, so a barrier the GPU path lacks shows here as logits unlike the reference, and
# PREFIXD_VK_VALIDATION=1 runs it under the Khronos validation layer (an error fails the test).
set(PREFIXD_TEST_ENV_GPU ${PREFIXD_TEST_ENV})
list(APPEND PREFIXD_TEST_ENV_GPU PREFIXD_VK_TEXEL=0 PREFIXD_VK_ATTN=wg PREFIXD_VK_DEVICE_GROUP=1 PREFIXD_VK_REORDER=1
     PREFIXD_VK_VALIDATION=1)
add_test(NAME test_vk_model_gpu_path COMMAND test_vk_model)
set_tests_properties(test_vk_model_gpu_path PROPERTIES ENVIRONMENT "${PREFIXD_TEST_ENV_GPU}" TIMEOUT 600
                                                       LABELS vulkan FIXTURES_REQUIRED test_models)
# The default (CPU-driver) kernels with their phases reversed alike: their barriers too.
set(PREFIXD_TEST_ENV_REORDER ${PREFIXD_TEST_ENV})
list(APPEND PREFIXD_TEST_ENV_REORDER PREFIXD_VK_REORDER=1)
add_test(NAME test_vk_model_reorder COMMAND test_vk_model)
set_tests_properties(test_vk_model_reorder PROPERTIES ENVIRONMENT "${PREFIXD_TEST_ENV_REORDER}" TIMEOUT 600
                                                      LABELS vulkan FIXTURES_REQUIRED test_models)
# Every per-op kernel test under the validation layer, on the CPU-driver (texel) path.
set(PREFIXD_TEST_ENV_VALIDATION ${PREFIXD_TEST_ENV})
list(APPEND PREFIXD_TEST_ENV_VALIDATION PREFIXD_VK_VALIDATION=1)
add_test(NAME test_vk_ops_validation COMMAND test_vk_ops)
set_tests_properties(test_vk_ops_validation PROPERTIES ENVIRONMENT "${PREFIXD_TEST_ENV_VALIDATION}" TIMEOUT 600
                                                       LABELS vulkan)
# The GPU path again with 16-lane subgroups (llvmpipe at 512 bits): GPUs have 32 (NVIDIA), 64
# (AMD) or 8-32 (Intel) lanes, and the GPU shaders' reductions must not depend on lavapipe's 8.
set(PREFIXD_TEST_ENV_SG16 ${PREFIXD_TEST_ENV})
list(APPEND PREFIXD_TEST_ENV_SG16 PREFIXD_VK_TEXEL=0 PREFIXD_VK_ATTN=wg PREFIXD_VK_DEVICE_GROUP=1 LP_NATIVE_VECTOR_WIDTH=512
     PREFIXD_TEST_SUBGROUP=16)
add_test(NAME test_vk_model_gpu_sg16 COMMAND test_vk_model)
set_tests_properties(test_vk_model_gpu_sg16 PROPERTIES ENVIRONMENT "${PREFIXD_TEST_ENV_SG16}" TIMEOUT 600
                                                       LABELS vulkan FIXTURES_REQUIRED test_models)
