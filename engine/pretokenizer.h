// Pre-tokenizers of the DeepSeek family (GGUF tokenizer.ggml.pre "deepseek-v3", "deepseek-llm" for
// DeepSeek-LLM/V2/V2-Lite/V2.5, "deepseek-coder"): split text (without added tokens) into the pieces
// that byte-level BPE runs over, following tokenizer.json's Split/Isolated (and Digits) rules with
// ICU character properties; plus the strict UTF-8 decoding the tokenizer uses.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace prefixd {

// Decodes one well-formed UTF-8 sequence at s[i] (i < s.size()); returns its length or 0 when
// ill-formed (overlong forms, surrogates, > U+10FFFF and truncation are all rejected).
size_t utf8_next(std::string_view s, size_t i, char32_t& cp);
void append_utf8(std::string& out, char32_t c);

// Pieces are views into `text`, in order, non-empty, covering it. Throws TokenizerError on invalid UTF-8.
void pre_tokenize_deepseek_v3(std::string_view text, std::vector<std::string_view>& pieces);
void pre_tokenize_deepseek_llm(std::string_view text, std::vector<std::string_view>& pieces);
void pre_tokenize_deepseek_coder(std::string_view text, std::vector<std::string_view>& pieces);

enum class PreTokenizerKind { DeepSeekV3, DeepSeekLlm, DeepSeekCoder };
// Maps a tokenizer.ggml.pre name to its pre-tokenizer; throws TokenizerError naming the supported ones.
PreTokenizerKind pre_tokenizer_kind(const std::string& name);
void pre_tokenize(PreTokenizerKind kind, std::string_view text, std::vector<std::string_view>& pieces);

} // namespace prefixd
