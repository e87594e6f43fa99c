// Reads a Hugging Face tokenizer.json (byte-level BPE, e.g. DeepSeek-V3's) into the arrays a GGUF
// stores as tokenizer.ggml.tokens / token_type / merges, so tools can write real vocabularies into
// generated test models. Token types use GGUF numbering: 1 normal, 3 control, 4 user-defined, 5 unused.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace prefixd {

struct HfVocab {
    std::vector<std::string> tokens;  // id -> byte-level token string (GPT-2 byte<->unicode form)
    std::vector<int32_t> token_types; // id -> GGUF token type
    std::vector<std::string> merges;  // "left right", in rank order
    int32_t bos = -1, eos = -1;       // -1 when not found
};

inline constexpr int32_t kDeepSeekV3VocabSize = 129280;

// Loads `path`. bos/eos come from tokenizer_config.json beside it when present (bos_token/eos_token),
// else from the added tokens named like DeepSeek's "<｜begin▁of▁sentence｜>"/"<｜end▁of▁sentence｜>".
// Ids missing up to `pad_to` (ids beyond the largest one present, or holes) become unique
// placeholders "[PAD<id>]" of type 5 (unused); pad_to <= 0 pads only holes.
// Throws TokenizerError (engine/tokenizer.h) naming the file and what was wrong.
HfVocab load_hf_tokenizer_json(const std::string& path, int32_t pad_to = kDeepSeekV3VocabSize);

} // namespace prefixd
