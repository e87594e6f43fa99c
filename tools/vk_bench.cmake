# Vulkan microbenchmark (not part of the engine): Q8_0 mat-vec shader forms on the local device.
add_executable(vk_matvec_bench ${CMAKE_CURRENT_SOURCE_DIR}/vk_matvec_bench.cpp)
target_link_libraries(vk_matvec_bench PRIVATE Vulkan::Vulkan)
target_compile_definitions(vk_matvec_bench PRIVATE GLSLANG="${GLSLANG_VALIDATOR}"
                           BENCH_SHADER="${CMAKE_CURRENT_SOURCE_DIR}/vk_matvec_bench.comp")

# Kernel benchmark of the engine's interleaved matmul pipelines (tools/vk_op_bench.cpp).
add_executable(vk_op_bench ${CMAKE_CURRENT_SOURCE_DIR}/vk_op_bench.cpp)
target_include_directories(vk_op_bench PRIVATE ${PROJECT_SOURCE_DIR})
target_link_libraries(vk_op_bench PRIVATE prefixd_engine CLI11::CLI11)
