# Fuzz target for wire-message decoding (Verifier + validation); needs the main build's flatc output.
prefixd_fuzz_target(NAME fuzz_message
                    SOURCES ${PREFIXD_SRC}/tests/fuzz/fuzz_message.cpp ${PREFIXD_SRC}/daemon/message.cpp
                    LIBS flatbuffers::flatbuffers)
