# Runner prefix cache with same-key requests arriving together (waiters, cancelled leader, skipped
# save): CPU and Vulkan (lavapipe) backends.
prefixd_test(test_runner_prefix_wait SOURCES test_runner_prefix_wait.cpp LIBS prefixd_engine LABELS vulkan
             FIXTURES test_models TIMEOUT 300)
