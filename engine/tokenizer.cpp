// Byte-level BPE tokenizer (GPT-2 byte<->unicode mapping, merge ranks) with a DeepSeek pre-tokenizer
// chosen by tokenizer.ggml.pre (deepseek-v3, deepseek-llm, deepseek-coder; engine/pretokenizer.h):
// added tokens are cut out first (leftmost-longest), the rest is split by the pre-tokenizer's rules,
// then every piece is BPE-merged (cached per piece).
#include "engine/tokenizer.h"

#include "engine/gguf.h"
#include "engine/pretokenizer.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <mutex>
#include <unordered_map>

namespace prefixd {
namespace {

TokenizerError no_token_for_byte(unsigned b) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02X", b);
    return TokenizerError(std::string("tokenizer: the vocabulary has no token for byte ") + hex);
}

// GGUF token types.
constexpr int32_t kTypeNormal = 1, kTypeUnknown = 2, kTypeControl = 3, kTypeUserDefined = 4, kTypeUnused = 5,
                  kTypeByte = 6;

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

void check_utf8(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        char32_t cp;
        size_t n = utf8_next(s, i, cp);
        if (n == 0)
            throw TokenizerError("tokenizer: input is not valid UTF-8 (byte offset " + std::to_string(i) +
                                 ")");
        i += n;
    }
}

// Open-addressing map (left id, right id) -> (rank, merged id): BPE's hot lookup, one probe
// sequence in a flat array instead of a node per entry.
class MergeMap {
  public:
    struct Entry {
        uint64_t key = kEmpty;
        int32_t rank = 0, id = 0;
    };
    void reserve(size_t n) {
        size_t cap = 16;
        while (cap < n * 2)
            cap <<= 1;
        slots_.assign(cap, Entry{});
        mask_ = cap - 1;
    }
    // Keeps the first (lowest-rank) entry for a key, like a map's emplace.
    void insert(int32_t a, int32_t b, int32_t rank, int32_t id) {
        uint64_t k = key(a, b);
        for (size_t i = hash(k);; i = (i + 1) & mask_) {
            if (slots_[i].key == k)
                return;
            if (slots_[i].key == kEmpty) {
                slots_[i] = {k, rank, id};
                return;
            }
        }
    }
    const Entry* find(int32_t a, int32_t b) const {
        uint64_t k = key(a, b);
        for (size_t i = hash(k);; i = (i + 1) & mask_) {
            if (slots_[i].key == k)
                return &slots_[i];
            if (slots_[i].key == kEmpty)
                return nullptr;
        }
    }

  private:
    static constexpr uint64_t kEmpty = ~uint64_t{0};
    static uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
    size_t hash(uint64_t k) const { return size_t((k * 0x9E3779B97F4A7C15ull) >> 20) & mask_; }
    std::vector<Entry> slots_;
    size_t mask_ = 0;
};

} // namespace

struct Tokenizer::Impl {
    std::vector<std::string> tokens;
    std::vector<int32_t> types;
    std::vector<std::string> bytes_of; // decoded bytes per id
    int32_t bos = -1, eos = -1;
    bool add_bos = false;
    PreTokenizerKind pre_kind = PreTokenizerKind::DeepSeekV3;

    std::array<int32_t, 256> byte_id{}; // id of each single-byte token
    MergeMap merges;                    // (left, right) -> (rank, merged id)

    // Byte trie over added (control / user-defined) tokens: edge key = node*256 + byte.
    std::unordered_map<uint64_t, int32_t> trie_edges;
    std::vector<int32_t> trie_token;    // node -> token id ending there, or -1
    std::array<bool, 256> trie_first{}; // bytes that can start an added token

    mutable std::mutex cache_mu;
    mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

    void build(const std::string& pre, const std::vector<std::string>& merge_list);
    void split_added(std::string_view text, std::vector<int32_t>& out) const;
    void encode_plain(std::string_view text, std::vector<int32_t>& out) const;
    void bpe(std::string_view piece, std::vector<int32_t>& out) const;
    void bpe_uncached(std::string_view piece, std::vector<int32_t>& out) const;
};

void Tokenizer::Impl::build(const std::string& pre, const std::vector<std::string>& merge_list) {
    pre_kind = pre_tokenizer_kind(pre); // throws TokenizerError for unsupported names
    if (tokens.empty())
        throw TokenizerError("tokenizer: empty vocabulary");
    if (types.size() != tokens.size())
        throw TokenizerError("tokenizer: " + std::to_string(types.size()) + " token types for " +
                             std::to_string(tokens.size()) + " tokens");
    const int32_t n = static_cast<int32_t>(tokens.size());
    for (int32_t id : {bos, eos})
        if (id >= n)
            throw TokenizerError("tokenizer: BOS/EOS id " + std::to_string(id) + " outside the vocabulary");
    if (add_bos && bos < 0)
        throw TokenizerError("tokenizer: add_bos_token is set but there is no BOS id");

    // Lookup of byte-level (normal) token strings; first occurrence wins.
    std::unordered_map<std::string_view, int32_t> normal_id;
    normal_id.reserve(tokens.size());
    for (int32_t i = 0; i < n; ++i)
        if (types[i] == kTypeNormal)
            normal_id.emplace(tokens[i], i);

    // Byte <-> unicode mapping, byte tokens, decoded bytes.
    const auto b2u = byte_to_unicode();
    std::array<int16_t, 512> u2b; // mapped code point (all < 512) -> byte, or -1
    u2b.fill(-1);
    for (int b = 0; b < 256; ++b) {
        u2b[b2u[b]] = static_cast<int16_t>(b);
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
                int b = len && cp < u2b.size() ? u2b[cp] : -1;
                if (b < 0)
                    ok = false;
                else
                    out += static_cast<char>(b), k += len;
            }
            bytes_of[i] = ok ? out : t; // like HF's ByteLevel decoder: unmappable -> raw text
            break;
        }
        case kTypeUnused:
            break; // placeholders render as nothing
        case kTypeByte: { // "<0xHH>" is that byte; any other text (even "<0xZZ>") stays text
            unsigned v = 0;
            const bool hex = t.size() == 6 && t.rfind("<0x", 0) == 0 && t[5] == '>' &&
                             std::isxdigit(uint8_t(t[3])) && std::isxdigit(uint8_t(t[4]));
            if (hex)
                std::from_chars(t.data() + 3, t.data() + 5, v, 16);
            bytes_of[i] = hex ? std::string(1, static_cast<char>(v)) : t;
            break;
        }
        default:
            bytes_of[i] = t; // control, user-defined, unknown: their text
        }
    }

    // Merges "left right" -> (rank, id of left+right); merges naming unknown tokens are skipped,
    // as they can never apply.
    merges.reserve(merge_list.size());
    for (size_t r = 0; r < merge_list.size(); ++r) {
        const std::string& m = merge_list[r];
        size_t sp = m.find(' ', 1);
        if (sp == std::string::npos || sp + 1 >= m.size())
            throw TokenizerError("tokenizer: merge #" + std::to_string(r) + " '" + m +
                                 "' is not 'left right'");
        auto l = normal_id.find(std::string_view(m).substr(0, sp));
        auto rt = normal_id.find(std::string_view(m).substr(sp + 1));
        auto res = normal_id.find(m.substr(0, sp) + m.substr(sp + 1));
        if (l == normal_id.end() || rt == normal_id.end() || res == normal_id.end())
            continue;
        merges.insert(l->second, rt->second, static_cast<int32_t>(r), res->second);
    }

    // Added-token trie (control and user-defined tokens are matched literally in text).
    trie_token.assign(1, -1);
    for (int32_t i = 0; i < n; ++i) {
        if ((types[i] != kTypeControl && types[i] != kTypeUserDefined) || tokens[i].empty())
            continue;
        int32_t node = 0;
        trie_first[static_cast<unsigned char>(tokens[i][0])] = true;
        for (unsigned char c : tokens[i]) {
            auto [it, fresh] =
                trie_edges.emplace(uint64_t(node) * 256 + c, static_cast<int32_t>(trie_token.size()));
            if (fresh)
                trie_token.push_back(-1);
            node = it->second;
        }
        if (trie_token[node] < 0)
            trie_token[node] = i;
    }
}

// Cuts added tokens out of `text` (leftmost, longest match first) and encodes the rest.
void Tokenizer::Impl::split_added(std::string_view text, std::vector<int32_t>& out) const {
    size_t start = 0, i = 0;
    while (i < text.size()) {
        if (!trie_first[static_cast<unsigned char>(text[i])]) {
            ++i;
            continue;
        }
        int32_t node = 0, match = -1;
        size_t match_end = 0;
        for (size_t j = i; j < text.size(); ++j) {
            auto it = trie_edges.find(uint64_t(node) * 256 + static_cast<unsigned char>(text[j]));
            if (it == trie_edges.end())
                break;
            node = it->second;
            if (trie_token[node] >= 0)
                match = trie_token[node], match_end = j + 1;
        }
        if (match < 0) {
            ++i;
            continue;
        }
        if (i > start)
            encode_plain(text.substr(start, i - start), out);
        out.push_back(match);
        i = start = match_end;
    }
    if (start < text.size())
        encode_plain(text.substr(start), out);
}

void Tokenizer::Impl::encode_plain(std::string_view text, std::vector<int32_t>& out) const {
    std::vector<std::string_view> pieces;
    prefixd::pre_tokenize(pre_kind, text, pieces);
    for (std::string_view p : pieces)
        bpe(p, out);
}

void Tokenizer::Impl::bpe(std::string_view piece, std::vector<int32_t>& out) const {
    constexpr size_t kMaxCachedPiece = 64, kMaxCacheEntries = 1 << 16;
    if (piece.size() > kMaxCachedPiece)
        return bpe_uncached(piece, out);
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
    if (cache.size() >= kMaxCacheEntries)
        cache.clear();
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
    struct Cand {
        int32_t rank, pos, id;
        bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    thread_local std::vector<Sym> sym; // scratch reused across calls (no allocation per piece)
    thread_local std::vector<Cand> heap;
    sym.resize(n);
    heap.clear();
    for (int32_t i = 0; i < n; ++i) {
        unsigned char c = static_cast<unsigned char>(piece[i]);
        if (byte_id[c] < 0)
            throw no_token_for_byte(c);
        sym[i] = {byte_id[c], i - 1, i + 1 < n ? i + 1 : -1, true};
    }
    const std::greater<Cand> later; // min-heap on (rank, pos)
    auto lookup = [&](int32_t a, int32_t b) { return merges.find(a, b); };
    auto consider = [&](int32_t pos) {
        if (pos < 0 || sym[pos].next < 0)
            return;
        if (auto* m = lookup(sym[pos].id, sym[sym[pos].next].id)) {
            heap.push_back({m->rank, pos, m->id});
            std::push_heap(heap.begin(), heap.end(), later);
        }
    };
    for (int32_t i = 0; i + 1 < n; ++i)
        consider(i);
    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), later);
        Cand c = heap.back();
        heap.pop_back();
        Sym& s = sym[c.pos];
        if (!s.alive || s.next < 0)
            continue;
        auto* m = lookup(s.id, sym[s.next].id);
        if (!m || m->id != c.id || m->rank != c.rank)
            continue; // stale entry
        int32_t nx = s.next;
        s.id = c.id;
        s.next = sym[nx].next;
        sym[nx].alive = false;
        if (s.next >= 0)
            sym[s.next].prev = c.pos;
        consider(s.prev);
        consider(c.pos);
    }
    for (int32_t i = 0; i >= 0 && i < n; i = sym[i].next)
        out.push_back(sym[i].id);
    if (sym.capacity() > (size_t{1} << 16)) { // do not keep a huge piece's scratch alive in the thread
        std::vector<Sym>().swap(sym);
        std::vector<Cand>().swap(heap);
    }
}

Tokenizer::Tokenizer(std::vector<std::string> tokens, std::vector<int32_t> token_types,
                     std::vector<std::string> merges, std::string pre, int32_t bos, int32_t eos, bool add_bos)
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
    if (!v)
        throw TokenizerError("tokenizer: GGUF has no " + key);
    std::vector<std::string> out;
    try {
        const gguf::Array& a = v->as_array();
        out.reserve(a.size());
        for (const gguf::Value& e : a)
            out.push_back(e.as_str());
    } catch (const gguf::GgufError& e) {
        throw TokenizerError("tokenizer: GGUF " + key + " is not an array of strings: " + e.what());
    }
    return out;
}
} // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const gguf::Parsed& g) {
    try {
        std::string model = g.get_str("tokenizer.ggml.model", "");
        if (model != "gpt2")
            throw TokenizerError("tokenizer: tokenizer.ggml.model is '" + model +
                                 "', only 'gpt2' (byte-level BPE) is supported");
        std::string pre = g.get_str("tokenizer.ggml.pre", "");
        if (pre.empty())
            throw TokenizerError("tokenizer: GGUF has no tokenizer.ggml.pre (expected 'deepseek-v3', "
                                 "'deepseek-llm' or 'deepseek-coder')");
        std::vector<std::string> tokens = gguf_str_array(g, "tokenizer.ggml.tokens");
        std::vector<std::string> merges = gguf_str_array(g, "tokenizer.ggml.merges");
        std::vector<int32_t> types(tokens.size(), kTypeNormal);
        if (const gguf::Value* tt = g.get("tokenizer.ggml.token_type")) {
            const gguf::Array& a = tt->as_array();
            if (a.size() != tokens.size())
                throw TokenizerError("tokenizer: tokenizer.ggml.token_type has " + std::to_string(a.size()) +
                                     " entries for " + std::to_string(tokens.size()) + " tokens");
            for (size_t i = 0; i < a.size(); ++i)
                types[i] = static_cast<int32_t>(a[i].as_i64());
        }
        auto id_or = [&](const char* key) -> int32_t {
            if (!g.get(key))
                return -1;
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
        return std::make_unique<Tokenizer>(std::move(tokens), std::move(types), std::move(merges), pre, bos,
                                           eos, add_bos);
    } catch (const gguf::GgufError& e) {
        throw TokenizerError(std::string("tokenizer: bad GGUF metadata: ") + e.what());
    }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos) const {
    check_utf8(text);
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 2);
    if (add_bos) {
        if (impl_->bos < 0)
            throw TokenizerError("tokenizer: BOS requested but the vocabulary has no BOS id");
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

std::vector<std::string> Tokenizer::pre_tokenize(std::string_view text) const {
    std::vector<std::string_view> views;
    prefixd::pre_tokenize(impl_->pre_kind, text, views);
    return std::vector<std::string>(views.begin(), views.end());
}

void Tokenizer::check_bytes() const {
    for (unsigned b = 0; b < 0xF5; ++b)
        if (impl_->byte_id[b] < 0 && b != 0xC0 && b != 0xC1)
            throw no_token_for_byte(b);
}

size_t Tokenizer::vocab_size() const {
    return impl_->tokens.size();
}
int32_t Tokenizer::bos() const {
    return impl_->bos;
}
int32_t Tokenizer::eos() const {
    return impl_->eos;
}
bool Tokenizer::add_bos() const {
    return impl_->add_bos;
}

} // namespace prefixd
