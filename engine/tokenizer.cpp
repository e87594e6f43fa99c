// Byte-level BPE tokenizer (GPT-2 byte<->unicode mapping, merge ranks) with DeepSeek-V3's
// pre-tokenizer: added tokens are cut out first (leftmost-longest), the rest is split by three
// ICU regexes in sequence (digits 1-3, CJK/kana runs, the letter/punctuation/space rule), each match
// "Isolated", then every piece is BPE-merged. Results per piece are cached.
#include "engine/tokenizer.h"

#include "engine/gguf.h"

#include <unicode/regex.h>
#include <unicode/unistr.h>

#include <mutex>
#include <queue>
#include <unordered_map>

namespace prefixd {
namespace {

// GGUF token types.
constexpr int32_t kTypeNormal = 1, kTypeUnknown = 2, kTypeControl = 3, kTypeUserDefined = 4, kTypeUnused = 5,
                  kTypeByte = 6;

// DeepSeek-V3 pre-tokenizer (tokenizer.json "pre_tokenizer": Sequence of Split/Isolated).
// The first set of the third rule is the 32 ASCII punctuation characters, written as ranges so
// no ICU set-syntax character needs escaping. ICU's \s is Unicode White_Space, like Oniguruma's.
const char* const kDeepSeekV3Regexes[] = {
    "\\p{N}{1,3}",
    "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
    "[\\x{21}-\\x{2F}\\x{3A}-\\x{40}\\x{5B}-\\x{60}\\x{7B}-\\x{7E}][A-Za-z]+"
    "|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
    "| ?[\\p{P}\\p{S}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+"
    "|\\s+(?!\\S)"
    "|\\s+",
};

// GPT-2 byte-level mapping: printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100 upwards in byte order.
std::array<char32_t, 256> byte_to_unicode() {
    std::array<char32_t, 256> m{};
    int n = 0;
    for (int b = 0; b < 256; ++b) {
        bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        m[b] = keep ? char32_t(b) : char32_t(256 + n++);
    }
    return m;
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

// Decodes one well-formed UTF-8 sequence at s[i]; returns its length or 0 when ill-formed
// (overlong forms, surrogates, > U+10FFFF and truncation are all rejected).
size_t utf8_next(std::string_view s, size_t i, char32_t& cp) {
    auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    unsigned char c = b(i);
    size_t n = s.size() - i;
    if (c < 0x80) return cp = c, 1;
    auto cont = [&](size_t k) { return (b(k) & 0xC0) == 0x80; };
    if (c >= 0xC2 && c <= 0xDF) {
        if (n < 2 || !cont(i + 1)) return 0;
        cp = ((c & 0x1F) << 6) | (b(i + 1) & 0x3F);
        return 2;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || !cont(i + 1) || !cont(i + 2)) return 0;
        if ((c == 0xE0 && b(i + 1) < 0xA0) || (c == 0xED && b(i + 1) > 0x9F)) return 0;
        cp = ((c & 0x0F) << 12) | ((b(i + 1) & 0x3F) << 6) | (b(i + 2) & 0x3F);
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || !cont(i + 1) || !cont(i + 2) || !cont(i + 3)) return 0;
        if ((c == 0xF0 && b(i + 1) < 0x90) || (c == 0xF4 && b(i + 1) > 0x8F)) return 0;
        cp = ((c & 0x07) << 18) | ((b(i + 1) & 0x3F) << 12) | ((b(i + 2) & 0x3F) << 6) | (b(i + 3) & 0x3F);
        return 4;
    }
    return 0;
}

void check_utf8(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        char32_t cp;
        size_t n = utf8_next(s, i, cp);
        if (n == 0) throw TokenizerError("tokenizer: input is not valid UTF-8 (byte offset " + std::to_string(i) + ")");
        i += n;
    }
}

struct Range {
    int32_t b, e;
};

}  // namespace

struct Tokenizer::Impl {
    std::vector<std::string> tokens;
    std::vector<int32_t> types;
    std::vector<std::string> bytes_of;  // decoded bytes per id
    int32_t bos = -1, eos = -1;
    bool add_bos = false;

    std::array<int32_t, 256> byte_id{};                          // id of each single-byte token
    std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (left<<32|right) -> (rank, merged id)

    // Byte trie over added (control / user-defined) tokens: edge key = node*256 + byte.
    std::unordered_map<uint64_t, int32_t> trie_edges;
    std::vector<int32_t> trie_token;  // node -> token id ending there, or -1

    std::vector<std::unique_ptr<icu::RegexPattern>> regexes;

    mutable std::mutex cache_mu;
    mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

    void build(const std::string& pre, const std::vector<std::string>& merge_list);
    void split_added(std::string_view text, std::vector<int32_t>& out) const;
    void encode_plain(std::string_view text, std::vector<int32_t>& out) const;
    void bpe(std::string_view piece, std::vector<int32_t>& out) const;
    void bpe_uncached(std::string_view piece, std::vector<int32_t>& out) const;
};

void Tokenizer::Impl::build(const std::string& pre, const std::vector<std::string>& merge_list) {
    if (pre != "deepseek-v3")
        throw TokenizerError("tokenizer: pre-tokenizer '" + pre +
                             "' is not supported (only 'deepseek-v3'; deepseek-llm/deepseek-coder are not implemented)");
    if (tokens.empty()) throw TokenizerError("tokenizer: empty vocabulary");
    if (types.size() != tokens.size())
        throw TokenizerError("tokenizer: " + std::to_string(types.size()) + " token types for " +
                             std::to_string(tokens.size()) + " tokens");
    const int32_t n = static_cast<int32_t>(tokens.size());
    for (int32_t id : {bos, eos})
        if (id >= n) throw TokenizerError("tokenizer: BOS/EOS id " + std::to_string(id) + " outside the vocabulary");
    if (add_bos && bos < 0) throw TokenizerError("tokenizer: add_bos_token is set but there is no BOS id");

    // Lookup of byte-level (normal) token strings; first occurrence wins.
    std::unordered_map<std::string_view, int32_t> normal_id;
    normal_id.reserve(tokens.size());
    for (int32_t i = 0; i < n; ++i)
        if (types[i] == kTypeNormal) normal_id.emplace(tokens[i], i);

    // Byte <-> unicode mapping, byte tokens, decoded bytes.
    const auto b2u = byte_to_unicode();
    std::unordered_map<char32_t, uint8_t> u2b;
    for (int b = 0; b < 256; ++b) {
        u2b[b2u[b]] = static_cast<uint8_t>(b);
        std::string s;
        append_utf8(s, b2u[b]);
        auto it = normal_id.find(s);
        byte_id[b] = it == normal_id.end() ? -1 : it->second;
    }
    bytes_of.resize(tokens.size());
    for (int32_t i = 0; i < n; ++i) {
        const std::string& t = tokens[i];
        switch (types[i]) {
        case kTypeNormal: {
            std::string out;
            bool ok = true;
            for (size_t k = 0; k < t.size() && ok;) {
                char32_t cp = 0;
                size_t len = utf8_next(t, k, cp);
                auto it = len ? u2b.find(cp) : u2b.end();
                if (it == u2b.end()) ok = false;
                else out += static_cast<char>(it->second), k += len;
            }
            bytes_of[i] = ok ? out : t;  // like HF's ByteLevel decoder: unmappable -> raw text
            break;
        }
        case kTypeUnused: break;  // placeholders render as nothing
        case kTypeByte:
            if (t.size() == 6 && t.rfind("<0x", 0) == 0 && t[5] == '>')
                bytes_of[i] = std::string(1, static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16)));
            else bytes_of[i] = t;
            break;
        default: bytes_of[i] = t;  // control, user-defined, unknown: their text
        }
    }

    // Merges "left right" -> (rank, id of left+right); merges naming unknown tokens are skipped,
    // as they can never apply.
    merges.reserve(merge_list.size());
    for (size_t r = 0; r < merge_list.size(); ++r) {
        const std::string& m = merge_list[r];
        size_t sp = m.find(' ', 1);
        if (sp == std::string::npos || sp + 1 >= m.size())
            throw TokenizerError("tokenizer: merge #" + std::to_string(r) + " '" + m + "' is not 'left right'");
        auto l = normal_id.find(std::string_view(m).substr(0, sp));
        auto rt = normal_id.find(std::string_view(m).substr(sp + 1));
        auto res = normal_id.find(m.substr(0, sp) + m.substr(sp + 1));
        if (l == normal_id.end() || rt == normal_id.end() || res == normal_id.end()) continue;
        uint64_t key = (uint64_t(uint32_t(l->second)) << 32) | uint32_t(rt->second);
        merges.emplace(key, std::make_pair(static_cast<int32_t>(r), res->second));
    }

    // Added-token trie (control and user-defined tokens are matched literally in text).
    trie_token.assign(1, -1);
    for (int32_t i = 0; i < n; ++i) {
        if ((types[i] != kTypeControl && types[i] != kTypeUserDefined) || tokens[i].empty()) continue;
        int32_t node = 0;
        for (unsigned char c : tokens[i]) {
            auto [it, fresh] = trie_edges.emplace(uint64_t(node) * 256 + c, static_cast<int32_t>(trie_token.size()));
            if (fresh) trie_token.push_back(-1);
            node = it->second;
        }
        if (trie_token[node] < 0) trie_token[node] = i;
    }

    for (const char* re : kDeepSeekV3Regexes) {
        UErrorCode st = U_ZERO_ERROR;
        UParseError pe;
        std::unique_ptr<icu::RegexPattern> p(icu::RegexPattern::compile(icu::UnicodeString::fromUTF8(re), pe, st));
        if (U_FAILURE(st)) throw TokenizerError(std::string("tokenizer: ICU regex failed: ") + u_errorName(st));
        regexes.push_back(std::move(p));
    }
}

// Cuts added tokens out of `text` (leftmost, longest match first) and encodes the rest.
void Tokenizer::Impl::split_added(std::string_view text, std::vector<int32_t>& out) const {
    size_t start = 0, i = 0;
    while (i < text.size()) {
        int32_t node = 0, match = -1;
        size_t match_end = 0;
        for (size_t j = i; j < text.size(); ++j) {
            auto it = trie_edges.find(uint64_t(node) * 256 + static_cast<unsigned char>(text[j]));
            if (it == trie_edges.end()) break;
            node = it->second;
            if (trie_token[node] >= 0) match = trie_token[node], match_end = j + 1;
        }
        if (match < 0) {
            ++i;
            continue;
        }
        if (i > start) encode_plain(text.substr(start, i - start), out);
        out.push_back(match);
        i = start = match_end;
    }
    if (start < text.size()) encode_plain(text.substr(start), out);
}

// Pre-tokenizes text without added tokens (three Isolated regex splits) and BPE-encodes each piece.
void Tokenizer::Impl::encode_plain(std::string_view text, std::vector<int32_t>& out) const {
    icu::UnicodeString u = icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
    // UTF-16 index -> UTF-8 byte offset.
    std::vector<int32_t> off(static_cast<size_t>(u.length()) + 1);
    {
        int32_t byte = 0;
        for (int32_t k = 0; k < u.length();) {
            UChar32 c = u.char32At(k);
            int32_t units = U16_LENGTH(c);
            for (int32_t q = 0; q < units; ++q) off[k + q] = byte;
            byte += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
            k += units;
        }
        off[u.length()] = byte;
    }
    std::vector<Range> cur{{0, u.length()}}, next;
    for (const auto& re : regexes) {
        UErrorCode st = U_ZERO_ERROR;
        std::unique_ptr<icu::RegexMatcher> m(re->matcher(u, st));
        if (U_FAILURE(st)) throw TokenizerError(std::string("tokenizer: ICU matcher: ") + u_errorName(st));
        next.clear();
        for (const Range& r : cur) {
            m->region(r.b, r.e, st);
            int32_t prev = r.b;
            while (m->find()) {
                int32_t s = m->start(st), e = m->end(st);
                if (s > prev) next.push_back({prev, s});
                if (e > s) next.push_back({s, e});
                prev = e;
            }
            if (U_FAILURE(st)) throw TokenizerError(std::string("tokenizer: ICU match: ") + u_errorName(st));
            if (prev < r.e) next.push_back({prev, r.e});
        }
        cur.swap(next);
    }
    for (const Range& r : cur) bpe(text.substr(off[r.b], off[r.e] - off[r.b]), out);
}

void Tokenizer::Impl::bpe(std::string_view piece, std::vector<int32_t>& out) const {
    constexpr size_t kMaxCachedPiece = 64, kMaxCacheEntries = 1 << 16;
    if (piece.size() > kMaxCachedPiece) return bpe_uncached(piece, out);
    std::string key(piece);
    {
        std::lock_guard<std::mutex> lock(cache_mu);
        auto it = cache.find(key);
        if (it != cache.end()) {
            out.insert(out.end(), it->second.begin(), it->second.end());
            return;
        }
    }
    size_t first = out.size();
    bpe_uncached(piece, out);
    std::lock_guard<std::mutex> lock(cache_mu);
    if (cache.size() >= kMaxCacheEntries) cache.clear();
    cache.emplace(std::move(key), std::vector<int32_t>(out.begin() + first, out.end()));
}

// Classic BPE over one piece: start from byte tokens and repeatedly apply the lowest-ranked
// merge (leftmost first on ties) using a heap and a linked list of symbols: O(n log n).
void Tokenizer::Impl::bpe_uncached(std::string_view piece, std::vector<int32_t>& out) const {
    const int32_t n = static_cast<int32_t>(piece.size());
    struct Sym {
        int32_t id, prev, next;
        bool alive;
    };
    std::vector<Sym> sym(n);
    for (int32_t i = 0; i < n; ++i) {
        unsigned char c = static_cast<unsigned char>(piece[i]);
        if (byte_id[c] < 0) {
            char hex[8];
            std::snprintf(hex, sizeof hex, "0x%02X", c);
            throw TokenizerError(std::string("tokenizer: the vocabulary has no token for byte ") + hex);
        }
        sym[i] = {byte_id[c], i - 1, i + 1 < n ? i + 1 : -1, true};
    }
    struct Cand {
        int32_t rank, pos, id;
        bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    auto lookup = [&](int32_t a, int32_t b) -> const std::pair<int32_t, int32_t>* {
        auto it = merges.find((uint64_t(uint32_t(a)) << 32) | uint32_t(b));
        return it == merges.end() ? nullptr : &it->second;
    };
    auto consider = [&](int32_t pos) {
        if (pos < 0 || sym[pos].next < 0) return;
        if (auto* m = lookup(sym[pos].id, sym[sym[pos].next].id)) heap.push({m->first, pos, m->second});
    };
    for (int32_t i = 0; i + 1 < n; ++i) consider(i);
    while (!heap.empty()) {
        Cand c = heap.top();
        heap.pop();
        Sym& s = sym[c.pos];
        if (!s.alive || s.next < 0) continue;
        auto* m = lookup(s.id, sym[s.next].id);
        if (!m || m->second != c.id || m->first != c.rank) continue;  // stale entry
        int32_t nx = s.next;
        s.id = c.id;
        s.next = sym[nx].next;
        sym[nx].alive = false;
        if (s.next >= 0) sym[s.next].prev = c.pos;
        consider(s.prev);
        consider(c.pos);
    }
    for (int32_t i = 0; i >= 0 && i < n; i = sym[i].next) out.push_back(sym[i].id);
}

Tokenizer::Tokenizer(std::vector<std::string> tokens, std::vector<int32_t> token_types, std::vector<std::string> merges,
                     std::string pre, int32_t bos, int32_t eos, bool add_bos)
    : impl_(std::make_unique<Impl>()) {
    impl_->tokens = std::move(tokens);
    impl_->types = std::move(token_types);
    impl_->bos = bos;
    impl_->eos = eos;
    impl_->add_bos = add_bos;
    impl_->build(pre, merges);
}

Tokenizer::~Tokenizer() = default;

namespace {
std::vector<std::string> gguf_str_array(const gguf::Parsed& g, const std::string& key) {
    const gguf::Value* v = g.get(key);
    if (!v) throw TokenizerError("tokenizer: GGUF has no " + key);
    std::vector<std::string> out;
    try {
        const gguf::Array& a = v->as_array();
        out.reserve(a.size());
        for (const gguf::Value& e : a) out.push_back(e.as_str());
    } catch (const gguf::GgufError& e) {
        throw TokenizerError("tokenizer: GGUF " + key + " is not an array of strings: " + e.what());
    }
    return out;
}
}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const gguf::Parsed& g) {
    try {
        std::string model = g.get_str("tokenizer.ggml.model", "");
        if (model != "gpt2")
            throw TokenizerError("tokenizer: tokenizer.ggml.model is '" + model + "', only 'gpt2' (byte-level BPE) is supported");
        std::string pre = g.get_str("tokenizer.ggml.pre", "");
        if (pre.empty()) throw TokenizerError("tokenizer: GGUF has no tokenizer.ggml.pre (expected 'deepseek-v3')");
        std::vector<std::string> tokens = gguf_str_array(g, "tokenizer.ggml.tokens");
        std::vector<std::string> merges = gguf_str_array(g, "tokenizer.ggml.merges");
        std::vector<int32_t> types(tokens.size(), kTypeNormal);
        if (const gguf::Value* tt = g.get("tokenizer.ggml.token_type")) {
            const gguf::Array& a = tt->as_array();
            if (a.size() != tokens.size())
                throw TokenizerError("tokenizer: tokenizer.ggml.token_type has " + std::to_string(a.size()) +
                                     " entries for " + std::to_string(tokens.size()) + " tokens");
            for (size_t i = 0; i < a.size(); ++i) types[i] = static_cast<int32_t>(a[i].as_i64());
        }
        auto id_or = [&](const char* key) -> int32_t {
            if (!g.get(key)) return -1;
            uint64_t v = g.get_u64(key);
            if (v >= tokens.size())
                throw TokenizerError(std::string("tokenizer: ") + key + " = " + std::to_string(v) +
                                     " is outside the vocabulary of " + std::to_string(tokens.size()));
            return static_cast<int32_t>(v);
        };
        int32_t bos = id_or("tokenizer.ggml.bos_token_id");
        int32_t eos = id_or("tokenizer.ggml.eos_token_id");
        // DeepSeek GGUFs set add_bos_token; when absent, add BOS whenever there is one.
        bool add_bos = g.get_bool("tokenizer.ggml.add_bos_token", bos >= 0);
        return std::make_unique<Tokenizer>(std::move(tokens), std::move(types), std::move(merges), pre, bos, eos,
                                           add_bos);
    } catch (const gguf::GgufError& e) {
        throw TokenizerError(std::string("tokenizer: bad GGUF metadata: ") + e.what());
    }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos) const {
    check_utf8(text);
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 2);
    if (add_bos) {
        if (impl_->bos < 0) throw TokenizerError("tokenizer: BOS requested but the vocabulary has no BOS id");
        out.push_back(impl_->bos);
    }
    impl_->split_added(text, out);
    return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
    std::string out;
    for (int32_t id : ids) {
        if (id < 0 || static_cast<size_t>(id) >= impl_->bytes_of.size())
            throw TokenizerError("tokenizer: token id " + std::to_string(id) + " outside the vocabulary of " +
                                 std::to_string(impl_->bytes_of.size()));
        out += impl_->bytes_of[id];
    }
    return out;
}

std::string Tokenizer::token_bytes(int32_t id) const {
    int32_t one[1] = {id};
    return decode(one);
}

size_t Tokenizer::vocab_size() const { return impl_->tokens.size(); }
int32_t Tokenizer::bos() const { return impl_->bos; }
int32_t Tokenizer::eos() const { return impl_->eos; }
bool Tokenizer::add_bos() const { return impl_->add_bos; }

}  // namespace prefixd
