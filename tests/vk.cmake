# Vulkan backend tests (run on lavapipe in CI; they fail, never skip, when no device is found).
prefixd_test(test_vk_ops SOURCES test_vk_ops.cpp LIBS prefixd_engine LABELS vulkan TIMEOUT 300)
prefixd_test(test_vk_cells SOURCES test_vk_cells.cpp LIBS prefixd_engine LABELS vulkan TIMEOUT 300)
prefixd_test(test_vk_model SOURCES test_vk_model.cpp LIBS prefixd_engine LABELS vulkan FIXTURES test_models
             TIMEOUT 600)
prefixd_test(test_vk_memory SOURCES test_vk_memory.cpp LIBS prefixd_engine LABELS vulkan FIXTURES test_models
             TIMEOUT 300)
# prefixd_vk_variant(NAME BINARY [MODELS] ENV VAR=VALUE...): BINARY again as the ctest NAME, with
# ENV added to the test environment; MODELS: it needs the generated test models.
function(prefixd_vk_variant name binary)
    cmake_parse_arguments(V "MODELS" "" "ENV" ${ARGN})
    add_test(NAME ${name} COMMAND ${binary})
    set(env ${PREFIXD_TEST_ENV} ${V_ENV})
    set_tests_properties(${name} PROPERTIES ENVIRONMENT "${env}" TIMEOUT 600 LABELS vulkan)
    if(V_MODELS)
        set_tests_properties(${name} PROPERTIES FIXTURES_REQUIRED test_models)
    endif()
endfunction()

# The whole-model checks again with the attention kernel GPUs use (attn_mla) in place of the
# CPU-driver tiled one that lavapipe picks by default.
prefixd_vk_variant(test_vk_model_attn_wg test_vk_model MODELS ENV PREFIXD_VK_ATTN=wg)
# And with every kernel choice a GPU makes (device-address matmuls on the plain weight layout, no
# texel or row-interleaved shaders, attn_mla, MoE slots of multi-row steps grouped on the device by
# moe_group): the configuration NVIDIA/AMD/Intel devices run, checked end to end on lavapipe since
# CI has no GPU. PREFIXD_VK_REORDER=1 (engine/vk/vk_context.h set_reorder) reverses the dispatches
# between two barriers, so a barrier the GPU path lacks shows here as logits unlike the reference,
# and PREFIXD_VK_VALIDATION=1 runs it under the Khronos validation layer (an error fails the test).
# Memory as on a discrete GPU: weights uploaded through staging copies (PREFIXD_VK_MAP_DEVICE=0)
# and logits copied to host-cached memory before the host reads them (PREFIXD_VK_READBACK=1).
# Steps submitted in parts, as GPUs do by default (PREFIXD_VK_SUBMIT_LAYERS; every layer here):
# barriers must order each part after the ones before.
set(PREFIXD_GPU_PATH PREFIXD_VK_TEXEL=0 PREFIXD_VK_ATTN=wg PREFIXD_VK_DEVICE_GROUP=1 PREFIXD_VK_SUBMIT_LAYERS=1)
prefixd_vk_variant(test_vk_model_gpu_path test_vk_model MODELS
                   ENV ${PREFIXD_GPU_PATH} PREFIXD_VK_REORDER=1 PREFIXD_VK_VALIDATION=1
                       PREFIXD_VK_MAP_DEVICE=0 PREFIXD_VK_READBACK=1)
# Expert stacks split into parts of at most 64 KiB (as a stack over the device's allocation limit
# is, tests/test_vk_memory.cpp): every map-driven matmul runs once per part, on the CPU-driver
# kernels and on the GPU path.
prefixd_vk_variant(test_vk_model_split_stacks test_vk_model MODELS ENV PREFIXD_VK_STACK_CAP=65536)
prefixd_vk_variant(test_vk_model_split_stacks_gpu_path test_vk_model MODELS
                   ENV ${PREFIXD_GPU_PATH} PREFIXD_VK_STACK_CAP=65536)
# The default (CPU-driver) kernels with their phases reversed alike: their barriers too.
prefixd_vk_variant(test_vk_model_reorder test_vk_model MODELS ENV PREFIXD_VK_REORDER=1 PREFIXD_VK_SUBMIT_LAYERS=2)
# Every per-op kernel test under the validation layer, on the CPU-driver (texel) path.
prefixd_vk_variant(test_vk_ops_validation test_vk_ops ENV PREFIXD_VK_VALIDATION=1)
# The GPU path again with 16-lane subgroups (llvmpipe at 512 bits): GPUs have 32 (NVIDIA), 64
# (AMD) or 8-32 (Intel) lanes, and the GPU shaders' reductions must not depend on lavapipe's 8.
prefixd_vk_variant(test_vk_model_gpu_sg16 test_vk_model MODELS
                   ENV ${PREFIXD_GPU_PATH} LP_NATIVE_VECTOR_WIDTH=512 PREFIXD_TEST_SUBGROUP=16)
# Every per-op kernel with lavapipe's default choices at 512 bits: there its imageLoad fills only 8
# of 16 lanes, so the context must leave texel mode off (engine/vk/vk_context.cpp wide_llvmpipe).
prefixd_vk_variant(test_vk_ops_sg16 test_vk_ops ENV LP_NATIVE_VECTOR_WIDTH=512)
