# ledger_bench: committed ledger rows/s with synchronous=FULL (group commit vs one row per tx).
add_executable(ledger_bench ${CMAKE_CURRENT_SOURCE_DIR}/ledger_bench.cpp)
target_link_libraries(ledger_bench PRIVATE prefixd_store)
