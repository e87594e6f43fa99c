# Short libFuzzer run of every target in tests/fuzz (separate clang build under build/fuzz).
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/CMakeLists.txt)
    add_test(NAME fuzz_smoke COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/run.sh ${CMAKE_BINARY_DIR} 20)
    set_tests_properties(fuzz_smoke PROPERTIES TIMEOUT 1500 LABELS fuzz ENVIRONMENT "${PREFIXD_TEST_ENV}")
endif()
