# Runner prefix cache (adapter virtual rows reused across requests): CPU and Vulkan (lavapipe) backends.
prefixd_test(test_runner_prefix SOURCES test_runner_prefix.cpp LIBS prefixd_engine LABELS vulkan
             FIXTURES test_models TIMEOUT 300)
