# K-quant (Q4_K, Q6_K) tests: CPU codecs and load errors, Vulkan matmuls and the tiny Q4_K_M
# model (tiny-v2k-q4_k_m.gguf from the test_models fixture) against the CPU reference.
prefixd_test(test_kquant_codec SOURCES test_kquant_codec.cpp LIBS prefixd_engine FIXTURES test_models TIMEOUT 120)
prefixd_test(test_kquant_vk SOURCES test_kquant_vk.cpp LIBS prefixd_engine LABELS vulkan FIXTURES test_models
             TIMEOUT 300)
