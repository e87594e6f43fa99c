# gen_model: random-weight deepseek2 GGUF writer (test models, demo, benchmarks) -> build*/bin/gen_model.
add_executable(gen_model ${CMAKE_CURRENT_SOURCE_DIR}/gen_model.cpp)
target_include_directories(gen_model PRIVATE ${PROJECT_SOURCE_DIR})
target_compile_definitions(gen_model PRIVATE PREFIXD_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
target_link_libraries(gen_model PRIVATE prefixd_engine CLI11::CLI11)
# step_bound_bench: a stream's token gaps while a long prompt is prefilled, with and without
# RunnerOptions::max_step_seconds (a benchmark, not a test).
add_executable(step_bound_bench ${CMAKE_CURRENT_SOURCE_DIR}/step_bound_bench.cpp)
target_include_directories(step_bound_bench PRIVATE ${PROJECT_SOURCE_DIR})
target_link_libraries(step_bound_bench PRIVATE prefixd_engine CLI11::CLI11)
