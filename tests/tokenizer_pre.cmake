# Pre-tokenizers deepseek-llm (DeepSeek-LLM/V2/V2-Lite/V2.5 GGUFs) and deepseek-coder: pieces against
# tokenizer.json's published Split rules run by ICU's regex engine, GGUF round trips with the
# DeepSeek-V3 vocabulary (tools/tokenizer, installed by tools/setup.sh), unknown pre names.
prefixd_test(test_tokenizer_pre SOURCES test_tokenizer_pre.cpp LIBS prefixd_engine TIMEOUT 300)
