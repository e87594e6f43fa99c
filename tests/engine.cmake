# Engine core tests (GGUF, model loading, CPU reference ops/forward, sampler, runner, CLI).
# The fixture test `gen_test_models` writes the tiny test models into build/test-models.
prefixd_test(test_cpu_ops SOURCES test_cpu_ops.cpp LIBS prefixd_engine TIMEOUT 120)
prefixd_test(test_gguf SOURCES test_gguf.cpp LIBS prefixd_engine TIMEOUT 120)

# Fixture: the tiny test models (build/test-models), written by gen_model; up-to-date files are kept.
add_test(NAME gen_test_models COMMAND gen_model --test-set ${PREFIXD_TEST_MODELS_DIR})
set_tests_properties(gen_test_models PROPERTIES FIXTURES_SETUP test_models TIMEOUT 600
                                                ENVIRONMENT "${PREFIXD_TEST_ENV}")
prefixd_test(test_model SOURCES test_model.cpp LIBS prefixd_engine FIXTURES test_models TIMEOUT 300)
prefixd_test(test_core_forward SOURCES test_core_forward.cpp LIBS prefixd_engine FIXTURES test_models TIMEOUT 300)
prefixd_test(test_sampler SOURCES test_sampler.cpp LIBS prefixd_engine TIMEOUT 60)
prefixd_test(test_runner SOURCES test_runner.cpp LIBS prefixd_engine FIXTURES test_models TIMEOUT 300)
prefixd_test(test_core_cli SOURCES test_core_cli.cpp LIBS prefixd_engine nlohmann_json::nlohmann_json
             FIXTURES test_models TIMEOUT 300)
add_dependencies(test_core_cli prefixctl gen_model)
