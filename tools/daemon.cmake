# load_bench: daemon jobs/s and latency vs the same jobs in-process (a benchmark, not a test).
if(TARGET prefixd_daemon_lib)
    add_executable(load_bench ${CMAKE_CURRENT_SOURCE_DIR}/load_bench.cpp)
    target_link_libraries(load_bench PRIVATE prefixd_daemon_lib)
endif()
