# Protocol + daemon tests. Unit tests of message decoding run without a model; integration tests
# start the real prefixd binary (CPU backend, tiny model, temp db, real sockets).
prefixd_test(test_proto_message SOURCES test_proto_message.cpp LIBS prefixd_daemon_lib TIMEOUT 60)
set(DAEMON_IT_DEPS prefixd_daemon_lib prefixd_store)
prefixd_test(test_daemon_jobs SOURCES test_daemon_jobs.cpp LIBS ${DAEMON_IT_DEPS} FIXTURES test_models TIMEOUT 600)
foreach(t test_daemon_jobs)
    add_dependencies(${t} prefixd)
endforeach()
prefixd_test(test_daemon_reliability SOURCES test_daemon_reliability.cpp LIBS ${DAEMON_IT_DEPS} FIXTURES test_models TIMEOUT 600)
add_dependencies(test_daemon_reliability prefixd)
prefixd_test(test_daemon_curve SOURCES test_daemon_curve.cpp LIBS ${DAEMON_IT_DEPS} FIXTURES test_models TIMEOUT 300)
add_dependencies(test_daemon_curve prefixd)
