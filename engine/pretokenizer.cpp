// DeepSeek pre-tokenizers matched by hand over ICU character properties (see pretokenizer.h).
// tests/test_tokenizer.cpp (V3) and tests/test_tokenizer_pre.cpp (LLM/V2, Coder) check them against
// tokenizer.json's own regexes run by ICU's regex engine.
#include "engine/pretokenizer.h"

#include "engine/tokenizer.h"

#include <unicode/uchar.h>

#include <algorithm>
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
// Decodes `text` into per-character byte offsets (plus a final end offset) and classes; invalid
// UTF-8 throws TokenizerError naming the byte offset. Shared by every pre-tokenizer.
template <class C, class Classify>
void classify_utf8(std::string_view text, std::vector<int32_t>& off, std::vector<C>& cls,
                   Classify&& classify) {
    off.reserve(text.size() + 1);
    cls.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
        char32_t cp = 0;
        size_t n = utf8_next(text, i, cp);
        if (n == 0)
            throw TokenizerError("tokenizer: input is not valid UTF-8 (byte offset " + std::to_string(i) +
                                 ")");
        off.push_back(static_cast<int32_t>(i));
        cls.push_back(static_cast<C>(classify(cp)));
        i += n;
    }
    off.push_back(static_cast<int32_t>(text.size()));
}

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
    classify_utf8(text, off, cls, [&](char32_t cp) { return cp < 0x80 ? ascii[cp] : char_class(cp); });
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

namespace {

// DeepSeek-LLM / V2 / V2-Lite / V2.5 ("deepseek-llm") and DeepSeek-Coder ("deepseek-coder")
// pre-tokenizers. tokenizer.json's pre_tokenizer is a Sequence of Split/Isolated regexes, then
// Digits(individual_digits=true), then ByteLevel without its own regex:
//   deepseek-llm:   [\r\n] | \s?[LETTERS]+ | \s?[PUNCT]+ | \s+$ | [CJK]+ | Digits
//   deepseek-coder: [\r\n] | \s?\p{L}+     | \s?\p{P}+          | [CJK]+ | Digits
// LETTERS is the explicit range list below (cased letters of a few scripts; written as code points
// because the published text contains singletons such as U+212A KELVIN SIGN that Unicode
// normalization would turn into other characters). Digits isolates every numeric character (Rust's
// char::is_numeric, i.e. \p{N}). llama.cpp writes the last rule as \p{N}+ for deepseek-llm; that
// only differs for vocabularies with merges between digits (DeepSeek-LLM/V2's was trained with digits
// split, so real models encode alike); we follow tokenizer.json. Every rule here is a character-class
// scan, so all of them run in linear time (a regex engine backtracks quadratically on \s+$ over long
// whitespace runs).
struct CpRange {
    char32_t lo, hi;
};

constexpr CpRange kLlmLetters[] = {
    {0x41, 0x5A},       {0x61, 0x7A},       {0xB5, 0xB5},       {0xC0, 0xD6},       {0xD8, 0xF6},
    {0xF8, 0x1BA},      {0x1BC, 0x1BF},     {0x1C4, 0x293},     {0x295, 0x2AF},     {0x370, 0x373},
    {0x376, 0x377},     {0x37B, 0x37D},     {0x37F, 0x37F},     {0x386, 0x386},     {0x388, 0x38A},
    {0x38C, 0x38C},     {0x38E, 0x3A1},     {0x3A3, 0x3F5},     {0x3F7, 0x481},     {0x48A, 0x52F},
    {0x531, 0x556},     {0x10A0, 0x10C5},   {0x13A0, 0x13F5},   {0x13F8, 0x13FD},   {0x1C90, 0x1CBA},
    {0x1CBD, 0x1CBF},   {0x1D00, 0x1D2B},   {0x1D6B, 0x1D77},   {0x1D79, 0x1D9A},   {0x1E00, 0x1F15},
    {0x1F18, 0x1F1D},   {0x1F20, 0x1F45},   {0x1F48, 0x1F4D},   {0x1F50, 0x1F57},   {0x1F59, 0x1F59},
    {0x1F5B, 0x1F5B},   {0x1F5D, 0x1F5D},   {0x1F5F, 0x1F7D},   {0x1F80, 0x1FB4},   {0x1FB6, 0x1FBC},
    {0x1FBE, 0x1FBE},   {0x1FC2, 0x1FC4},   {0x1FC6, 0x1FCC},   {0x1FD0, 0x1FD3},   {0x1FD6, 0x1FDB},
    {0x1FE0, 0x1FEC},   {0x1FF2, 0x1FF4},   {0x1FF6, 0x1FFC},   {0x2102, 0x2102},   {0x2107, 0x2107},
    {0x210A, 0x2113},   {0x2115, 0x2115},   {0x2119, 0x211D},   {0x2124, 0x2124},   {0x2126, 0x2126},
    {0x2128, 0x2128},   {0x212A, 0x212D},   {0x212F, 0x2134},   {0x2139, 0x2139},   {0x213C, 0x213F},
    {0x2145, 0x2149},   {0x214E, 0x214E},   {0x2183, 0x2184},   {0x2C00, 0x2C7B},   {0x2C7E, 0x2CE4},
    {0x2CEB, 0x2CEE},   {0x2CF2, 0x2CF3},   {0xA640, 0xA66D},   {0xA680, 0xA69B},   {0xA722, 0xA76F},
    {0xA771, 0xA787},   {0xA78B, 0xA78E},   {0xAB70, 0xABBF},   {0xFB00, 0xFB06},   {0xFB13, 0xFB17},
    {0xFF21, 0xFF3A},   {0xFF41, 0xFF5A},   {0x10400, 0x1044F}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB},
    {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
};
// [!-/:-~！-／：-～‘-‟　-。] (note that :-~ also spans the ASCII letters)
constexpr CpRange kLlmPunct[] = {{0x21, 0x2F},     {0x3A, 0x7E},     {0x2018, 0x201F},
                                 {0x3000, 0x3002}, {0xFF01, 0xFF0F}, {0xFF1A, 0xFF5E}};
// [一-龥ࠀ-一가-퟿]: U+0800..U+9FA5 (two overlapping ranges) and U+AC00..U+D7FF.
constexpr CpRange kCjkHangul[] = {{0x800, 0x9FA5}, {0xAC00, 0xD7FF}};

template <size_t N> bool in_ranges(const CpRange (&r)[N], char32_t c) {
    const CpRange* it = std::lower_bound(r, r + N, c, [](const CpRange& x, char32_t v) { return x.hi < v; });
    return it != r + N && it->lo <= c;
}

enum RuleClass : uint8_t { rWs = 1, rCrLf = 2, rLetter = 4, rPunct = 8, rCjk = 16, rNum = 32 };

uint8_t rule_class(char32_t c, bool coder) {
    uint32_t gc = U_GET_GC_MASK(static_cast<UChar32>(c));
    uint8_t f = 0;
    if (u_isUWhiteSpace(static_cast<UChar32>(c)))
        f |= rWs;
    if (c == '\r' || c == '\n')
        f |= rCrLf;
    if (coder ? (gc & U_GC_L_MASK) != 0 : in_ranges(kLlmLetters, c))
        f |= rLetter;
    if (coder ? (gc & U_GC_P_MASK) != 0 : in_ranges(kLlmPunct, c))
        f |= rPunct;
    if (in_ranges(kCjkHangul, c))
        f |= rCjk;
    if (gc & U_GC_N_MASK)
        f |= rNum;
    return f;
}

enum class RuleKind {
    Each,      // every character of the class on its own ([\r\n], Digits individual)
    Run,       // [CLASS]+
    OptWsRun,  // \s?[CLASS]+
    TrailingWs // \s+$
};
struct Rule {
    RuleKind kind;
    uint8_t cls;
};

// Length of the rule's leftmost match starting at i within [i, e), or 0 if none starts there.
int32_t rule_match(const Rule& r, const uint8_t* f, int32_t i, int32_t e) {
    auto run = [&](int32_t k) {
        while (k < e && (f[k] & r.cls))
            ++k;
        return k;
    };
    switch (r.kind) {
    case RuleKind::Each:
        return (f[i] & r.cls) ? 1 : 0;
    case RuleKind::Run:
        return run(i) - i;
    case RuleKind::OptWsRun:
        // \s? is tried first, but when c[i] is in the class both choices end at the same place.
        if (f[i] & r.cls)
            return run(i) - i;
        if ((f[i] & rWs) && i + 1 < e && (f[i + 1] & r.cls))
            return run(i + 1) - i;
        return 0;
    case RuleKind::TrailingWs:
        break; // handled by the caller (one match at most: the piece's trailing whitespace run)
    }
    return 0;
}

// Applies `rules` in sequence, each to every piece the previous one produced ("Isolated": matches
// and the gaps between them both become pieces).
void pre_tokenize_rules(std::string_view text, const Rule* rules, size_t n_rules, bool coder,
                        std::vector<std::string_view>& pieces) {
    static const std::array<uint8_t, 128> ascii_llm = [] {
        std::array<uint8_t, 128> a{};
        for (char32_t c = 0; c < 128; ++c)
            a[c] = rule_class(c, false);
        return a;
    }();
    static const std::array<uint8_t, 128> ascii_coder = [] {
        std::array<uint8_t, 128> a{};
        for (char32_t c = 0; c < 128; ++c)
            a[c] = rule_class(c, true);
        return a;
    }();
    const std::array<uint8_t, 128>& ascii = coder ? ascii_coder : ascii_llm;
    std::vector<int32_t> off;
    std::vector<uint8_t> cls;
    classify_utf8(text, off, cls, [&](char32_t cp) { return cp < 0x80 ? ascii[cp] : rule_class(cp, coder); });
    const int32_t n = static_cast<int32_t>(cls.size());
    const uint8_t* f = cls.data();

    std::vector<Range> cur, next;
    if (n > 0)
        cur.push_back({0, n});
    auto emit = [&](int32_t b, int32_t e) {
        if (e > b)
            next.push_back({b, e});
    };
    for (size_t k = 0; k < n_rules; ++k) {
        const Rule& rule = rules[k];
        next.clear();
        for (const Range& r : cur) {
            if (rule.kind == RuleKind::TrailingWs) {
                int32_t t = r.e;
                while (t > r.b && (f[t - 1] & rWs))
                    --t;
                emit(r.b, t);
                emit(t, r.e);
                continue;
            }
            int32_t prev = r.b;
            for (int32_t i = r.b; i < r.e;) {
                int32_t len = rule_match(rule, f, i, r.e);
                if (len == 0) {
                    ++i;
                    continue;
                }
                emit(prev, i);
                emit(i, i + len);
                prev = i = i + len;
            }
            emit(prev, r.e);
        }
        cur.swap(next);
    }
    pieces.clear();
    for (const Range& r : cur)
        pieces.push_back(text.substr(off[r.b], off[r.e] - off[r.b]));
}

} // namespace

void pre_tokenize_deepseek_llm(std::string_view text, std::vector<std::string_view>& pieces) {
    static constexpr Rule rules[] = {{RuleKind::Each, rCrLf},      {RuleKind::OptWsRun, rLetter},
                                     {RuleKind::OptWsRun, rPunct}, {RuleKind::TrailingWs, rWs},
                                     {RuleKind::Run, rCjk},        {RuleKind::Each, rNum}};
    pre_tokenize_rules(text, rules, std::size(rules), false, pieces);
}

void pre_tokenize_deepseek_coder(std::string_view text, std::vector<std::string_view>& pieces) {
    static constexpr Rule rules[] = {{RuleKind::Each, rCrLf},
                                     {RuleKind::OptWsRun, rLetter},
                                     {RuleKind::OptWsRun, rPunct},
                                     {RuleKind::Run, rCjk},
                                     {RuleKind::Each, rNum}};
    pre_tokenize_rules(text, rules, std::size(rules), true, pieces);
}

PreTokenizerKind pre_tokenizer_kind(const std::string& name) {
    if (name == "deepseek-v3")
        return PreTokenizerKind::DeepSeekV3;
    if (name == "deepseek-llm")
        return PreTokenizerKind::DeepSeekLlm;
    if (name == "deepseek-coder")
        return PreTokenizerKind::DeepSeekCoder;
    throw TokenizerError("tokenizer: pre-tokenizer '" + name +
                         "' is not supported (supported: deepseek-v3, deepseek-llm, deepseek-coder)");
}

void pre_tokenize(PreTokenizerKind kind, std::string_view text, std::vector<std::string_view>& pieces) {
    switch (kind) {
    case PreTokenizerKind::DeepSeekV3:
        return pre_tokenize_deepseek_v3(text, pieces);
    case PreTokenizerKind::DeepSeekLlm:
        return pre_tokenize_deepseek_llm(text, pieces);
    case PreTokenizerKind::DeepSeekCoder:
        return pre_tokenize_deepseek_coder(text, pieces);
    }
    throw TokenizerError("tokenizer: unknown pre-tokenizer kind");
}

} // namespace prefixd
