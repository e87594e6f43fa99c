# GGUF parser fuzz target (engine core): only the parser source is needed.
prefixd_fuzz_target(NAME fuzz_gguf SOURCES ${PREFIXD_SRC}/tests/fuzz/fuzz_gguf.cpp ${PREFIXD_SRC}/engine/gguf.cpp)
