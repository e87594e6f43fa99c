// DeepSeek-V3 pre-tokenizer matched by hand over ICU character properties (see pretokenizer.h).
// tests/test_tokenizer.cpp checks it against tokenizer.json's own regexes run by ICU's regex engine.
#include "engine/pretokenizer.h"

#include "engine/tokenizer.h"

#include <unicode/uchar.h>

#include <array>
#include <cstdint>

namespace prefixd {
namespace {

// DeepSeek-V3 pre-tokenizer (tokenizer.json "pre_tokenizer": a Sequence of three Split/Isolated
// regexes, then ByteLevel without its own regex):
//   1. \p{N}{1,3}
//   2. [\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+
//   3. [ASCII punctuation][A-Za-z]+ | [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ | ?[\p{P}\p{S}]+[\r\n]*
//      | \s*[\r\n]+ | \s+(?!\S) | \s+
// Each rule is applied to every piece the previous one produced; matches and the gaps between them
// both become pieces. The rules are matched by hand below over per-character ICU properties (\s is
// Unicode White_Space, as in Oniguruma, which HF tokenizers uses); tests check this scanner
// against the same regexes run by ICU's regex engine, and the ids against the reference tokenizer.
enum CharClass : uint16_t {
    kN = 1,
    kCjk = 2,
    kL = 4,
    kM = 8,
    kP = 16,
    kS = 32,
    kWs = 64,
    kCrLf = 128,
    kAsciiPunct = 256,
    kAsciiLetter = 512,
    kSpace = 1024,
};

uint16_t char_class(char32_t c) {
    uint32_t gc = U_GET_GC_MASK(static_cast<UChar32>(c));
    uint16_t f = 0;
    if (gc & U_GC_N_MASK)
        f |= kN;
    if (gc & U_GC_L_MASK)
        f |= kL;
    if (gc & U_GC_M_MASK)
        f |= kM;
    if (gc & U_GC_P_MASK)
        f |= kP;
    if (gc & U_GC_S_MASK)
        f |= kS;
    if (u_isUWhiteSpace(static_cast<UChar32>(c)))
        f |= kWs;
    if ((c >= 0x4E00 && c <= 0x9FA5) || (c >= 0x3040 && c <= 0x30FF))
        f |= kCjk;
    if (c == '\r' || c == '\n')
        f |= kCrLf;
    if (c == ' ')
        f |= kSpace;
    if ((c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
        (c >= 0x7B && c <= 0x7E))
        f |= kAsciiPunct;
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'))
        f |= kAsciiLetter;
    return f;
}

struct Range {
    int32_t b, e;
};

// Length (in characters) of the rule-3 match starting at i within [i, e), or 0 if no alternative
// matches there. Alternatives are tried in regex order; the first that matches wins.
int32_t rule3_match(const uint16_t* f, int32_t i, int32_t e) {
    auto run = [&](int32_t k, uint16_t mask) {
        while (k < e && (f[k] & mask))
            ++k;
        return k;
    };
    // [ASCII punctuation][A-Za-z]+
    if ((f[i] & kAsciiPunct) && i + 1 < e && (f[i + 1] & kAsciiLetter))
        return run(i + 1, kAsciiLetter) - i;
    // [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
    bool opt = !(f[i] & (kCrLf | kL | kP | kS));
    if (opt && i + 1 < e && (f[i + 1] & (kL | kM)))
        return run(i + 1, kL | kM) - i;
    if (f[i] & (kL | kM))
        return run(i, kL | kM) - i;
    //  ?[\p{P}\p{S}]+[\r\n]*
    if ((f[i] & kSpace) && i + 1 < e && (f[i + 1] & (kP | kS)))
        return run(run(i + 1, kP | kS), kCrLf) - i;
    if (f[i] & (kP | kS))
        return run(run(i, kP | kS), kCrLf) - i;
    if (!(f[i] & kWs))
        return 0;
    int32_t w = run(i, kWs); // maximal whitespace run [i, w)
    // \s*[\r\n]+ : greedy \s* backs off to the last CR/LF of the run, which [\r\n]+ then takes.
    for (int32_t k = w - 1; k >= i; --k)
        if (f[k] & kCrLf)
            return k + 1 - i;
    // \s+(?!\S) : the whole run at the end of the piece, else all but its last character.
    if (w == e)
        return w - i;
    if (w - i >= 2)
        return w - 1 - i;
    return w - i; // \s+
}

} // namespace

// Decodes one well-formed UTF-8 sequence at s[i]; returns its length or 0 when ill-formed
// (overlong forms, surrogates, > U+10FFFF and truncation are all rejected).
size_t utf8_next(std::string_view s, size_t i, char32_t& cp) {
    auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    unsigned char c = b(i);
    size_t n = s.size() - i;
    if (c < 0x80)
        return cp = c, 1;
    auto cont = [&](size_t k) { return (b(k) & 0xC0) == 0x80; };
    if (c >= 0xC2 && c <= 0xDF) {
        if (n < 2 || !cont(i + 1))
            return 0;
        cp = ((c & 0x1F) << 6) | (b(i + 1) & 0x3F);
        return 2;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || !cont(i + 1) || !cont(i + 2))
            return 0;
        if ((c == 0xE0 && b(i + 1) < 0xA0) || (c == 0xED && b(i + 1) > 0x9F))
            return 0;
        cp = ((c & 0x0F) << 12) | ((b(i + 1) & 0x3F) << 6) | (b(i + 2) & 0x3F);
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || !cont(i + 1) || !cont(i + 2) || !cont(i + 3))
            return 0;
        if ((c == 0xF0 && b(i + 1) < 0x90) || (c == 0xF4 && b(i + 1) > 0x8F))
            return 0;
        cp = ((c & 0x07) << 18) | ((b(i + 1) & 0x3F) << 12) | ((b(i + 2) & 0x3F) << 6) | (b(i + 3) & 0x3F);
        return 4;
    }
    return 0;
}

void append_utf8(std::string& out, char32_t c) {
    if (c < 0x80) {
        out += char(c);
    } else if (c < 0x800) {
        out += char(0xC0 | (c >> 6));
        out += char(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        out += char(0xE0 | (c >> 12));
        out += char(0x80 | ((c >> 6) & 0x3F));
        out += char(0x80 | (c & 0x3F));
    } else {
        out += char(0xF0 | (c >> 18));
        out += char(0x80 | ((c >> 12) & 0x3F));
        out += char(0x80 | ((c >> 6) & 0x3F));
        out += char(0x80 | (c & 0x3F));
    }
}

// Splits text without added tokens into pre-tokenizer pieces (views into `text`).
void pre_tokenize_deepseek_v3(std::string_view text, std::vector<std::string_view>& pieces) {
    static const std::array<uint16_t, 128> ascii = [] {
        std::array<uint16_t, 128> a{};
        for (char32_t c = 0; c < 128; ++c)
            a[c] = char_class(c);
        return a;
    }();
    // Characters, their byte offsets and classes.
    std::vector<int32_t> off;
    std::vector<uint16_t> cls;
    off.reserve(text.size() + 1);
    cls.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
        char32_t cp = 0;
        size_t n = utf8_next(text, i, cp);
        if (n == 0)
            throw TokenizerError("tokenizer: input is not valid UTF-8 (byte offset " + std::to_string(i) +
                                 ")");
        off.push_back(static_cast<int32_t>(i));
        cls.push_back(cp < 0x80 ? ascii[cp] : char_class(cp));
        i += n;
    }
    off.push_back(static_cast<int32_t>(text.size()));
    const int32_t n = static_cast<int32_t>(cls.size());
    const uint16_t* f = cls.data();

    std::vector<Range> r1, r2, r3;
    auto emit = [&](std::vector<Range>& v, int32_t b, int32_t e) {
        if (e > b)
            v.push_back({b, e});
    };
    // Rule 1: \p{N}{1,3}.
    {
        int32_t prev = 0;
        for (int32_t i = 0; i < n;) {
            if (!(f[i] & kN)) {
                ++i;
                continue;
            }
            emit(r1, prev, i);
            int32_t e = i;
            while (e < n && e - i < 3 && (f[e] & kN))
                ++e;
            emit(r1, i, e);
            prev = i = e;
        }
        emit(r1, prev, n);
    }
    // Rule 2: CJK / kana runs.
    for (const Range& r : r1) {
        int32_t prev = r.b;
        for (int32_t i = r.b; i < r.e;) {
            if (!(f[i] & kCjk)) {
                ++i;
                continue;
            }
            emit(r2, prev, i);
            int32_t e = i;
            while (e < r.e && (f[e] & kCjk))
                ++e;
            emit(r2, i, e);
            prev = i = e;
        }
        emit(r2, prev, r.e);
    }
    // Rule 3: letters / punctuation / whitespace.
    for (const Range& r : r2) {
        int32_t prev = r.b;
        for (int32_t i = r.b; i < r.e;) {
            int32_t len = rule3_match(f, i, r.e);
            if (len == 0) {
                ++i;
                continue;
            }
            emit(r3, prev, i);
            emit(r3, i, i + len);
            prev = i = i + len;
        }
        emit(r3, prev, r.e);
    }
    pieces.clear();
    for (const Range& r : r3)
        pieces.push_back(text.substr(off[r.b], off[r.e] - off[r.b]));
}

}  // namespace prefixd
