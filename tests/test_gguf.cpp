// GGUF parser and writer: a round trip through the Writer and File, and malformed inputs
// (truncations at every length, bad magic/version, bad counts, misalignment, overlaps, FIFOs,
// oversized metadata arrays).
#include "engine/cpu/ops.h"
#include "engine/gguf.h"
#include "test_env.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <sys/stat.h>

using namespace prefixd;
using namespace prefixd::gguf;

static std::vector<uint8_t> read_all(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), {}};
}

static std::string write_sample(const std::filesystem::path& dir) {
    Writer w;
    w.set_str("general.architecture", "test");
    w.set_u32("test.count", 42);
    w.set_f32("test.eps", 1e-6f);
    w.set_bool("test.flag", true);
    w.set_str_array("test.tokens", {"a", "bc", ""});
    w.set_i32_array("test.types", {1, -3, 4});
    std::vector<float> x(64);
    for (size_t i = 0; i < x.size(); ++i)
        x[i] = float(i) * 0.25f - 3;
    w.add_tensor("t.f32", {64}, GgmlType::F32, cpu::quantize_row(GgmlType::F32, x.data(), 64));
    w.add_tensor_lazy("t.q8", {32, 2}, GgmlType::Q8_0,
                      [x] { return cpu::quantize_row(GgmlType::Q8_0, x.data(), 64); });
    w.add_tensor("t.q4", {64}, GgmlType::Q4_0, cpu::quantize_row(GgmlType::Q4_0, x.data(), 64));
    auto path = (dir / "sample.gguf").string();
    w.write(path);
    return path;
}

TEST_CASE("writer -> File round trip") {
    auto dir = test::temp_dir("gguf");
    auto path = write_sample(dir);
    File f = File::open(path);
    const Parsed& p = f.parsed();
    CHECK(p.version == 3);
    CHECK(p.get_str("general.architecture") == "test");
    CHECK(p.get_u64("test.count") == 42);
    CHECK(p.get_f64("test.eps", 0) == doctest::Approx(1e-6));
    CHECK(p.get_bool("test.flag", false));
    CHECK(p.get_u64("missing", 7) == 7);
    CHECK_THROWS_AS(p.get_u64("missing"), GgufError);
    CHECK_THROWS_AS(p.get_u64("general.architecture"), GgufError);
    auto& toks = p.get("test.tokens")->as_array();
    REQUIRE(toks.size() == 3);
    CHECK(toks[1].as_str() == "bc");
    CHECK(p.get("test.types")->as_array()[1].as_i64() == -3);
    REQUIRE(p.tensors.size() == 3);
    auto* q8 = p.find("t.q8");
    REQUIRE(q8);
    CHECK(q8->ne == std::vector<uint64_t>{32, 2});
    CHECK(q8->nbytes == 68);
    CHECK(q8->offset % 32 == 0);
    std::vector<float> y(64);
    cpu::dequantize_row(GgmlType::Q8_0, q8->data, y.data(), 64);
    CHECK(y[5] == doctest::Approx(5 * 0.25 - 3).epsilon(0.02));
    auto* f32 = p.find("t.f32");
    float v;
    std::memcpy(&v, f32->data + 4 * 10, 4);
    CHECK(v == 10 * 0.25f - 3);
    CHECK(p.find("nope") == nullptr);
    std::filesystem::remove_all(dir);
}

TEST_CASE("every truncation of a valid file fails cleanly") {
    auto dir = test::temp_dir("gguf-trunc");
    auto bytes = read_all(write_sample(dir));
    // Trailing alignment padding after the last tensor may be cut; anything before its end may not.
    Parsed whole = Parsed::parse(bytes);
    size_t end = 0;
    for (auto& t : whole.tensors)
        end = std::max<size_t>(end, t.data + t.nbytes - bytes.data());
    CHECK(end > bytes.size() - 32);
    for (size_t n = 0; n < end; ++n) {
        std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);
        CHECK_THROWS_AS(Parsed::parse(cut), GgufError);
    }
    CHECK_NOTHROW(Parsed::parse(bytes));
    std::filesystem::remove_all(dir);
}

TEST_CASE("malformed headers") {
    auto dir = test::temp_dir("gguf-bad");
    auto good = read_all(write_sample(dir));
    auto expect_error = [&](std::vector<uint8_t> b, const char* needle) {
        try {
            Parsed::parse(b);
            FAIL("parse accepted a malformed file: " << needle);
        } catch (const GgufError& e) {
            CHECK_MESSAGE(std::string(e.what()).find(needle) != std::string::npos, std::string(e.what()));
        }
    };
    auto b = good;
    b[0] = 'X';
    expect_error(b, "magic");
    b = good;
    b[4] = 1;
    expect_error(b, "version");
    b = good;
    std::memset(&b[8], 0xff, 8); // tensor count huge
    expect_error(b, "tensor count");
    b = good;
    std::memset(&b[16], 0x7f, 8); // kv count huge
    expect_error(b, "metadata count");
    b = good;
    std::memset(&b[24], 0xff, 8); // first key length huge
    expect_error(b, "truncated");
    // Random bit flips never crash (errors or a valid parse are both fine).
    std::mt19937 rng(5);
    for (int i = 0; i < 2000; ++i) {
        b = good;
        for (int k = 0; k < 3; ++k)
            b[rng() % b.size()] ^= uint8_t(1u << (rng() % 8));
        try {
            Parsed::parse(b);
        } catch (const GgufError&) {
        }
    }
    // general.alignment written signed and negative: named, not "negative value where unsigned expected"
    {
        Writer w;
        Value a;
        a.type = ValueType::I32;
        a.v = int64_t(32);
        w.set("general.alignment", a);
        const auto path = (dir / "neg-align.gguf").string();
        w.write(path);
        auto bytes = read_all(path); // the writer needs a valid alignment: the value becomes -32 here
        const std::string key = "general.alignment";
        auto at = std::search(bytes.begin(), bytes.end(), key.begin(), key.end());
        REQUIRE(at != bytes.end());
        const size_t value = size_t(at - bytes.begin()) + key.size() + 4; // past the I32 type tag
        const int32_t neg = -32;
        std::memcpy(&bytes[value], &neg, 4);
        expect_error(bytes, "bad general.alignment -32");
    }
    CHECK_THROWS_AS(File::open((dir / "does-not-exist.gguf").string()), GgufError);
    CHECK_THROWS_AS(File::open(dir.string()), GgufError);
    // A FIFO: open() would wait for a writer forever unless it does not block
    const auto fifo = (dir / "fifo.gguf").string();
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK_THROWS_WITH_AS(File::open(fifo), doctest::Contains("not a regular file"), GgufError);
    std::filesystem::remove_all(dir);
}

TEST_CASE("overlapping tensor data names both tensors") {
    auto dir = test::temp_dir("gguf-overlap");
    auto b = read_all(write_sample(dir));
    // t.f32's dims in the tensor table: name, n_dims (u32), ne0 (u64) = 64 -> 96 (384 bytes: into t.q8)
    const std::string name = "t.f32";
    auto at = std::search(b.begin(), b.end(), name.begin(), name.end());
    REQUIRE(at != b.end());
    const size_t ne0 = size_t(at - b.begin()) + name.size() + 4;
    uint64_t v;
    std::memcpy(&v, &b[ne0], 8);
    REQUIRE(v == 64);
    v = 96;
    std::memcpy(&b[ne0], &v, 8);
    CHECK_THROWS_WITH_AS(Parsed::parse(b),
                         doctest::Contains("tensor 't.f32' (F32, 384 bytes) overlaps the data of 't.q8'"),
                         GgufError);
    std::filesystem::remove_all(dir);
}

TEST_CASE("metadata arrays are capped at 16M elements in all (a parsed element takes ~48 bytes)") {
    auto file = [](std::vector<uint64_t> lengths) {
        std::vector<uint8_t> b;
        auto put = [&](const void* p, size_t n) {
            auto c = static_cast<const uint8_t*>(p);
            b.insert(b.end(), c, c + n);
        };
        const uint32_t version = 3, array = 9, u8 = 0;
        const uint64_t tensors = 0, kvs = lengths.size();
        put("GGUF", 4);
        put(&version, 4);
        put(&tensors, 8);
        put(&kvs, 8);
        for (size_t i = 0; i < lengths.size(); ++i) {
            const std::string key = "test.a" + std::to_string(i);
            const uint64_t klen = key.size();
            put(&klen, 8);
            put(key.data(), key.size());
            put(&array, 4);
            put(&u8, 4);
            put(&lengths[i], 8);
            b.resize(b.size() + lengths[i], 7);
        }
        return b;
    };
    const uint64_t cap = 16u << 20;
    CHECK(Parsed::parse(file({1000, 2000})).kv.size() == 2);
    CHECK_THROWS_WITH_AS(Parsed::parse(file({cap + 1})), doctest::Contains("past 16777216 elements"),
                         GgufError);
    CHECK_THROWS_WITH_AS(Parsed::parse(file({cap / 64, cap - cap / 64 + 1})),
                         doctest::Contains("past 16777216 elements"), GgufError);
}

TEST_CASE("writer rejects inconsistent tensors") {
    Writer w;
    CHECK_THROWS_AS(w.add_tensor("x", {33}, GgmlType::Q8_0, std::vector<uint8_t>(34)), GgufError);
    CHECK_THROWS_AS(w.add_tensor("x", {32}, GgmlType::Q8_0, std::vector<uint8_t>(33)), GgufError);
    Writer w2;
    w2.add_tensor_lazy("y", {32}, GgmlType::F32, [] { return std::vector<uint8_t>(3); });
    auto dir = test::temp_dir("gguf-w");
    CHECK_THROWS_AS(w2.write((dir / "y.gguf").string()), GgufError);
    CHECK_FALSE(std::filesystem::exists(dir / "y.gguf"));
    std::filesystem::remove_all(dir);
}
