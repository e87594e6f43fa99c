// libFuzzer target for the tokenizer: arbitrary bytes through encode (pre-tokenizer, added-token
// trie, BPE) on a small synthetic byte-level vocabulary. Invalid UTF-8 must raise TokenizerError;
// valid input must round-trip through decode and the pre-tokenizer pieces must cover the input.
#include "engine/tokenizer.h"

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace {

void utf8(std::string& o, char32_t c) {
    if (c < 0x80)
        o += char(c);
    else if (c < 0x800)
        o += char(0xC0 | (c >> 6)), o += char(0x80 | (c & 0x3F));
    else
        o += char(0xE0 | (c >> 12)), o += char(0x80 | ((c >> 6) & 0x3F)), o += char(0x80 | (c & 0x3F));
}

// 256 GPT-2 byte tokens, merges of every pair of lowercase letters and of "Ġ"+letter (then of those
// with another letter), and added tokens that share prefixes (longest match must win).
std::unique_ptr<prefixd::Tokenizer> make_tokenizer() {
    std::vector<std::string> tokens;
    std::vector<int32_t> types;
    int n = 0;
    for (int b = 0; b < 256; ++b) {
        bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        std::string s;
        utf8(s, keep ? char32_t(b) : char32_t(256 + n++));
        tokens.push_back(s);
        types.push_back(1);
    }
    std::vector<std::string> merges;
    const std::string sp = tokens[' '];
    for (char a = 'a'; a <= 'z'; ++a)
        for (char b = 'a'; b <= 'z'; ++b) {
            merges.push_back(std::string(1, a) + " " + std::string(1, b));
            tokens.push_back(std::string(1, a) + b);
            types.push_back(1);
        }
    for (char a = 'a'; a <= 'z'; ++a) {
        merges.push_back(sp + " " + std::string(1, a));
        tokens.push_back(sp + a);
        types.push_back(1);
    }
    for (char a = 'a'; a <= 'z'; ++a)
        for (char b = 'a'; b <= 'e'; ++b) {
            merges.push_back(sp + a + " " + std::string(1, b));
            tokens.push_back(sp + a + b);
            types.push_back(1);
        }
    for (const char* added :
         {"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜U", "<think>"}) {
        tokens.push_back(added);
        types.push_back(tokens.size() % 2 ? 3 : 4);
    }
    int32_t bos = static_cast<int32_t>(tokens.size()) - 5;
    return std::make_unique<prefixd::Tokenizer>(tokens, types, merges, "deepseek-v3", bos, bos + 1, true);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::unique_ptr<prefixd::Tokenizer> tok = make_tokenizer();
    std::string text(reinterpret_cast<const char*>(data), size);
    std::vector<int32_t> ids;
    try {
        ids = tok->encode(text, size % 2 == 0);
    } catch (const prefixd::TokenizerError&) {
        return 0; // invalid UTF-8: a clear error is the expected outcome
    }
    std::vector<int32_t> body(ids.begin() + (size % 2 == 0 ? 1 : 0), ids.end());
    if (tok->decode(body) != text)
        std::abort();
    std::string joined;
    for (const std::string& piece : tok->pre_tokenize(text)) {
        if (piece.empty())
            std::abort();
        joined += piece;
    }
    if (joined != text)
        std::abort();
    return 0;
}
