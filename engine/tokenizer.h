// Byte-level BPE tokenizer built from the vocabulary and merges stored in the GGUF
// (tokenizer.ggml.*), with DeepSeek-V3's pre-tokenizer rules (Unicode classes via ICU).
// Special/added tokens written literally in the text are recognised as single ids.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace prefixd {

namespace gguf { class Parsed; }

struct TokenizerError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class Tokenizer {
  public:
    // token_types: GGUF token types (1 normal, 3 control, 4 user-defined, ...).
    Tokenizer(std::vector<std::string> tokens, std::vector<int32_t> token_types,
              std::vector<std::string> merges, std::string pre, int32_t bos, int32_t eos, bool add_bos);
    static std::unique_ptr<Tokenizer> from_gguf(const gguf::Parsed& g);  // throws TokenizerError
    ~Tokenizer();

    // Text (valid UTF-8, else TokenizerError) -> ids; BOS first when add_bos.
    std::vector<int32_t> encode(std::string_view text, bool add_bos) const;
    // ids -> text (byte-level decoding; specials rendered as their text).
    std::string decode(std::span<const int32_t> ids) const;
    // Raw bytes of one token (may be a partial UTF-8 sequence).
    std::string token_bytes(int32_t id) const;
    // The pre-tokenizer's pieces of `text` (valid UTF-8, else TokenizerError), without added-token
    // matching: what BPE runs over. For tests and debugging.
    std::vector<std::string> pre_tokenize(std::string_view text) const;
    // Throws TokenizerError naming the first byte that valid UTF-8 text can hold (not 0xC0, 0xC1,
    // 0xF5-0xFF) and the vocabulary has no token for: encode() would fail on text holding it.
    void check_bytes() const;
    size_t vocab_size() const;
    int32_t bos() const;
    int32_t eos() const;
    bool add_bos() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace prefixd
