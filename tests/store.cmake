# Store tests (adapters, tenants, ledger, prefixctl store commands). Each runs in seconds.
prefixd_test(test_store_files SOURCES test_store_files.cpp LIBS prefixd_store LABELS store TIMEOUT 120)
prefixd_test(test_store_db SOURCES test_store_db.cpp LIBS prefixd_store SQLite::SQLite3 LABELS store TIMEOUT 120)
prefixd_test(test_store_ledger SOURCES test_store_ledger.cpp LIBS prefixd_store LABELS store TIMEOUT 180)
prefixd_test(test_store_cli SOURCES test_store_cli.cpp LIBS prefixd_store nlohmann_json::nlohmann_json LABELS store
             TIMEOUT 180)
add_dependencies(test_store_cli prefixctl)
