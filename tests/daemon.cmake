# Protocol + daemon tests. Unit tests of message decoding run without a model; integration tests
# start the real prefixd binary (CPU backend, tiny model, temp db, real sockets).
prefixd_test(test_proto_message SOURCES test_proto_message.cpp LIBS prefixd_daemon_lib TIMEOUT 60)
