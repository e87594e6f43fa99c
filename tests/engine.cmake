# Engine core tests (GGUF, model loading, CPU reference ops/forward, sampler, runner, CLI).
# The fixture test `gen_test_models` writes the tiny test models into build/test-models.
prefixd_test(test_cpu_ops SOURCES test_cpu_ops.cpp LIBS prefixd_engine TIMEOUT 120)
prefixd_test(test_gguf SOURCES test_gguf.cpp LIBS prefixd_engine TIMEOUT 120)
