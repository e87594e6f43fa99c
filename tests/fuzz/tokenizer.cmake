# Tokenizer fuzz target (issue 3): encode/decode/pre_tokenize on arbitrary bytes.
prefixd_fuzz_target(NAME fuzz_tokenizer
                    SOURCES ${PREFIXD_SRC}/tests/fuzz/fuzz_tokenizer.cpp ${PREFIXD_SRC}/engine/tokenizer.cpp
                            ${PREFIXD_SRC}/engine/pretokenizer.cpp ${PREFIXD_SRC}/engine/gguf.cpp
                    LIBS ICU::uc)
