# Vulkan backend tests (run on lavapipe in CI; they fail, never skip, when no device is found).
prefixd_test(test_vk_ops SOURCES test_vk_ops.cpp LIBS prefixd_engine LABELS vulkan TIMEOUT 300)
prefixd_test(test_vk_model SOURCES test_vk_model.cpp LIBS prefixd_engine LABELS vulkan FIXTURES test_models
             TIMEOUT 600)
prefixd_test(test_vk_memory SOURCES test_vk_memory.cpp LIBS prefixd_engine LABELS vulkan FIXTURES test_models
             TIMEOUT 300)
