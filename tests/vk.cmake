# Vulkan backend tests (run on lavapipe in CI; they fail, never skip, when no device is found).
prefixd_test(test_vk_ops SOURCES test_vk_ops.cpp LIBS prefixd_engine LABELS vulkan TIMEOUT 300)
