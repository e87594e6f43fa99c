// Adapter-file parser tests: .npy (v1/v2, f32/f16), safetensors (single tensor, PEFT
// prompt_embeddings, BF16, --tensor selection) and raw f32, plus every malformed case the
// parsers must reject (truncation, NaN/Inf, wrong dtype/rank, bad JSON, offsets out of range).
#include "adapters_store/adapter_file.h"
#include "adapters_store/adapter_file_detail.h"
#include "test_store_util.h"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <sys/stat.h>
#include <unistd.h>

using namespace prefixd::store;
using namespace prefixd::test;

static std::vector<float> floats(const Tensor2D& t) {
    return t.to_f32();
}

TEST_CASE("npy: f32 and f16 round trip through write_npy and a hand-built header") {
    for (DType dt : {DType::F32, DType::F16}) {
        Tensor2D t = random_tensor(5, 12, 7, dt);
        auto file = write_npy(t);
        CHECK(file.size() % 64 == t.byte_size() % 64); // header is 64-byte aligned
        Tensor2D back = parse_npy(file);
        CHECK(back.dtype == dt);
        CHECK(back.rows == 5);
        CHECK(back.cols == 12);
        CHECK(back.data == t.data);
        // Same data under a header written the way numpy does (trailing comma, spaces).
        std::string descr = dt == DType::F32 ? "<f4" : "<f2";
        auto hand =
            make_npy("{'descr': '" + descr + "', 'fortran_order': False, 'shape': (5, 12), }", t.data);
        CHECK(parse_npy(hand).data == t.data);
    }
}

TEST_CASE("npy: version 2 header and unaligned v1 header are accepted") {
    Tensor2D t = random_tensor(2, 3, 1);
    std::string h = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}\n";
    std::vector<uint8_t> v2 = {0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, uint8_t(h.size()), 0, 0, 0};
    v2.insert(v2.end(), h.begin(), h.end());
    v2.insert(v2.end(), t.data.begin(), t.data.end());
    CHECK(parse_npy(v2).data == t.data);
    CHECK(parse_npy(make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", t.data, false))
              .rows == 2);
}

TEST_CASE("npy: malformed files are rejected with a clear message") {
    Tensor2D t = random_tensor(4, 6, 3);
    auto good = write_npy(t);
    auto msg = [](const std::vector<uint8_t>& b) -> std::string {
        try {
            parse_npy(b);
        } catch (const AdapterFileError& e) {
            return e.what();
        }
        return "accepted";
    };
    // Truncated anywhere: in the magic, the header, the data.
    for (size_t n : {size_t(0), size_t(5), size_t(9), size_t(40), good.size() - 1, good.size() - 24})
        CHECK(msg({good.begin(), good.begin() + long(n)}) != "accepted");
    CHECK(msg({good.begin(), good.end() - 1}).find("truncated") != std::string::npos);
    auto extra = good;
    extra.push_back(0);
    CHECK(msg(extra).find("trailing") != std::string::npos);
    auto d = [&](const std::string& dict) { return msg(make_npy(dict, t.data)); };
    CHECK(d("{'descr': '<i4', 'fortran_order': False, 'shape': (4, 6), }").find("dtype") !=
          std::string::npos);
    CHECK(d("{'descr': '<f8', 'fortran_order': False, 'shape': (4, 3), }").find("dtype") !=
          std::string::npos);
    CHECK(d("{'descr': '>f4', 'fortran_order': False, 'shape': (4, 6), }").find("big-endian") !=
          std::string::npos);
    CHECK(d("{'descr': '<f4', 'fortran_order': True, 'shape': (4, 6), }").find("Fortran") !=
          std::string::npos);
    CHECK(d("{'descr': '<f4', 'fortran_order': False, 'shape': (24,), }").find("2-D") != std::string::npos);
    CHECK(d("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 6), }").find("2-D") !=
          std::string::npos);
    CHECK(d("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 6), }").find("empty") !=
          std::string::npos);
    CHECK(d("{'descr': '<f4', 'fortran_order': False, 'shape': (4, 6), 'x': 1}") != "accepted");
    CHECK(d("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (4, 6)}").find("duplicate") !=
          std::string::npos);
    CHECK(d("{'descr': '<f4', 'shape': (4, 6)}") != "accepted");
    CHECK(d("{'descr': '<f4', 'fortran_order': False, 'shape': (4, 6)") != "accepted");
    CHECK(d("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999)}") != "accepted");
    CHECK(d("{'descr': '<f4', 'fortran_order': False, 'shape': (4, 7)}").find("truncated") !=
          std::string::npos);
    auto bad_version = good;
    bad_version[6] = 9;
    CHECK(msg(bad_version).find("version") != std::string::npos);
}

TEST_CASE("NaN and Inf are rejected in every format, with their position") {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
        Tensor2D t = random_tensor(3, 5, 11);
        std::memcpy(t.data.data() + 4 * (2 * 5 + 4), &bad, 4); // row 2, col 4
        auto f = make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 5), }", t.data);
        try {
            parse_npy(f);
            FAIL("accepted a non-finite value");
        } catch (const AdapterFileError& e) {
            CHECK(std::string(e.what()).find("row 2, column 4") != std::string::npos);
        }
        CHECK_THROWS_AS(parse_raw_f32(t.data, 3, 5), AdapterFileError);
        auto st = make_safetensors(
            R"({"prompt_embeddings":{"dtype":"F32","shape":[3,5],"data_offsets":[0,60]}})", t.data);
        CHECK_THROWS_AS(parse_safetensors(st), AdapterFileError);
    }
    for (float big : {2e6f, -1e30f}) { // finite but past kMaxEmbedAbs: rejected at registration
        Tensor2D t = random_tensor(3, 5, 12);
        std::memcpy(t.data.data() + 4 * (1 * 5 + 3), &big, 4); // row 1, col 3
        try {
            parse_raw_f32(t.data, 3, 5);
            FAIL("accepted a value outside +-1e6");
        } catch (const AdapterFileError& e) {
            CHECK(std::string(e.what()).find("row 1, column 3 is outside +-1e6") != std::string::npos);
        }
    }
    Tensor2D h = random_tensor(2, 2, 5, DType::F16);
    uint16_t nan16 = 0x7e00;
    std::memcpy(h.data.data() + 2, &nan16, 2);
    CHECK_THROWS_AS(
        parse_npy(make_npy("{'descr': '<f2', 'fortran_order': False, 'shape': (2, 2), }", h.data)),
        AdapterFileError);
}

TEST_CASE("raw f32: exact length for the given shape") {
    Tensor2D t = random_tensor(3, 4, 2);
    Tensor2D r = parse_raw_f32(t.data, 3, 4);
    CHECK(r.data == t.data);
    CHECK_THROWS_AS(parse_raw_f32(t.data, 4, 4), AdapterFileError);
    CHECK_THROWS_AS(parse_raw_f32(t.data, 2, 4), AdapterFileError);
    CHECK_THROWS_AS(parse_raw_f32(t.data, 0, 4), AdapterFileError);
    CHECK_THROWS_AS(parse_adapter_file(t.data, AdapterFormat::Raw), InvalidArgument);
    CHECK(parse_shape("3,4") == std::pair<uint64_t, uint64_t>{3, 4});
    CHECK(parse_shape("3x4") == std::pair<uint64_t, uint64_t>{3, 4});
    for (const char* bad : {"", "3", "3,", ",4", "a,b", "-3,4", "0,4", "3,4,5", "1234567890,4"})
        CHECK_THROWS_AS(parse_shape(bad), InvalidArgument);
}

TEST_CASE("tensors over kMaxTensorBytes (below SQLite's 1e9-byte blob limit) are refused from the shape") {
    // 65536 x 4000 f32 = 1,048,576,000 bytes: under the old 1 GiB limit, over SQLite's 1e9 limit.
    static_assert(65536ull * 4000 * 4 > 1000000000 && 65536ull * 4000 * 4 < (1ull << 30));
    static_assert(kMaxTensorBytes + (1u << 20) < 1000000000);
    Tensor2D t = random_tensor(2, 4, 1); // the declared shape fails before the data length is looked at
    auto limit_msg = [](auto&& parse) -> std::string {
        try {
            parse();
        } catch (const AdapterFileError& e) {
            return e.what();
        }
        return "accepted";
    };
    std::string raw = limit_msg([&] { parse_raw_f32(t.data, 65536, 4000); });
    CHECK_MESSAGE(raw.find("over the adapter limit of 900 MiB (943718400 bytes)") != std::string::npos, raw);
    std::string npy = limit_msg([&] {
        parse_npy(make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (65536, 4000), }", t.data));
    });
    CHECK_MESSAGE(npy.find("900 MiB") != std::string::npos, npy);
    // f16 of the same shape is half the size and fits: only the length is wrong.
    std::string f16 = limit_msg([&] {
        parse_npy(make_npy("{'descr': '<f2', 'fortran_order': False, 'shape': (65536, 4000), }", t.data));
    });
    CHECK_MESSAGE(f16.find("truncated") != std::string::npos, f16);
    // BF16 is stored as F32: its stored size counts (file data of 2 bytes per element).
    std::string bf16 = limit_msg([] { detail::check_shape(65536, 4000, 2, 0, "bf16", 4); });
    CHECK_MESSAGE(bf16.find("900 MiB") != std::string::npos, bf16);
}

TEST_CASE("printable_utf8_len: printable UTF-8 characters only") {
    auto len = [](const std::string& s) { return printable_utf8_len(s, 0); };
    CHECK(len("a") == 1);
    CHECK(len(" ") == 1);
    CHECK(len("~") == 1);
    CHECK(len("\xc3\xa9") == 2);         // é
    CHECK(len("\xc2\xa0") == 2);         // no-break space, first after C1
    CHECK(len("\xe2\x9c\x93") == 3);     // check mark
    CHECK(len("\xf0\x9f\x98\x80") == 4); // emoji
    for (std::string bad :
         {std::string(1, '\0'), std::string("\n"), std::string("\t"), std::string("\x1b"),
          std::string("\x7f"), std::string("\xc2\x9b"), std::string("\xc2\x80"), std::string("\xc0\xaf"),
          std::string("\xe0\x80\xaf"), std::string("\xed\xa0\x80"), std::string("\xf4\x90\x80\x80"),
          std::string("\xf8\x88\x80\x80\x80"), std::string("\x80"), std::string("\xc3"),
          std::string("\xe2\x9c"), std::string("\xc3(")})
        CHECK_MESSAGE(len(bad) == 0, bad.size());
}

TEST_CASE("safetensors: PEFT prompt_embeddings, single tensor, selection, BF16") {
    Tensor2D a = random_tensor(4, 8, 21), b = random_tensor(2, 8, 22, DType::F16);
    std::vector<uint8_t> data = a.data;
    data.insert(data.end(), b.data.begin(), b.data.end());
    std::string hdr =
        R"({"__metadata__":{"format":"pt"},"prompt_embeddings":{"dtype":"F32","shape":[4,8],)"
        R"("data_offsets":[0,128]},"other":{"dtype":"F16","shape":[2,8],"data_offsets":[128,160]}})";
    auto file = make_safetensors(hdr, data);
    Tensor2D p = parse_safetensors(file);
    CHECK(p.dtype == DType::F32);
    CHECK(p.rows == 4);
    CHECK(p.data == a.data);
    Tensor2D o = parse_safetensors(file, std::string("other"));
    CHECK(o.dtype == DType::F16);
    CHECK(o.data == b.data);
    CHECK_THROWS_WITH_AS(parse_safetensors(file, std::string("nope")), doctest::Contains("no tensor named"),
                         AdapterFileError);
    CHECK(safetensors_tensor_names(file).size() == 2);

    // Two tensors, neither named prompt_embeddings: must choose.
    std::string hdr2 = R"({"x":{"dtype":"F32","shape":[4,8],"data_offsets":[0,128]},)"
                       R"("y":{"dtype":"F16","shape":[2,8],"data_offsets":[128,160]}})";
    CHECK_THROWS_WITH_AS(parse_safetensors(make_safetensors(hdr2, data)), doctest::Contains("--tensor"),
                         AdapterFileError);

    // BF16 becomes f32 exactly (bf16 is the top half of an f32).
    std::vector<uint8_t> bf(2 * 6);
    std::vector<float> want(6);
    std::mt19937 rng(5);
    for (int i = 0; i < 6; ++i) {
        uint16_t v = uint16_t(0x3c00 + rng() % 0x800);
        bf[size_t(2 * i)] = uint8_t(v), bf[size_t(2 * i + 1)] = uint8_t(v >> 8);
        want[size_t(i)] = bf16_to_f32(v);
    }
    auto bfile = make_safetensors(R"({"t":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]}})", bf);
    Tensor2D bt = parse_safetensors(bfile);
    CHECK(bt.dtype == DType::F32);
    CHECK(floats(bt) == want);
}

TEST_CASE("safetensors: malformed headers and offsets are rejected") {
    Tensor2D a = random_tensor(2, 4, 9);
    auto bad = [&](const std::string& hdr, const std::vector<uint8_t>& data) -> std::string {
        try {
            parse_safetensors(make_safetensors(hdr, data));
        } catch (const AdapterFileError& e) {
            return e.what();
        }
        return "accepted";
    };
    const auto& d = a.data; // 32 bytes
    CHECK(bad(R"({"t":{"dtype":"F32","shape":[2,4],"data_offsets":[0,32]})", d).find("JSON") !=
          std::string::npos);
    CHECK(bad(R"([1,2])", d).find("object") != std::string::npos);
    CHECK(bad(R"({"t":{"dtype":"F32","shape":[2,4],"data_offsets":[0,64]}})", d).find("out of range") !=
          std::string::npos);
    CHECK(bad(R"({"t":{"dtype":"F32","shape":[2,4],"data_offsets":[16,8]}})", d).find("out of range") !=
          std::string::npos);
    CHECK(bad(R"({"t":{"dtype":"F32","shape":[2,5],"data_offsets":[0,32]}})", d).find("match") !=
          std::string::npos);
    CHECK(bad(R"({"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})", d).find("trailing") !=
          std::string::npos);
    CHECK(bad(R"({"t":{"dtype":"F32","shape":[1,4],"data_offsets":[16,32]}})", d).find("hole") !=
          std::string::npos);
    CHECK(bad(R"({"t":{"dtype":"F32","shape":[2,4],"data_offsets":[0,32]},)"
              R"("u":{"dtype":"F32","shape":[1,4],"data_offsets":[0,16]}})",
              d) != "accepted");
    CHECK(bad(R"({"t":{"dtype":"I32","shape":[2,4],"data_offsets":[0,32]}})", d).find("dtype") !=
          std::string::npos);
    CHECK(bad(R"({"t":{"dtype":"Q9","shape":[2,4],"data_offsets":[0,32]}})", d).find("dtype") !=
          std::string::npos);
    CHECK(bad(R"({"t":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", d).find("2-D") !=
          std::string::npos);
    CHECK(bad(R"({"t":{"dtype":"F32","shape":[2,-4],"data_offsets":[0,32]}})", d) != "accepted");
    CHECK(bad(R"({"t":{"dtype":"F32","shape":[2,4],"data_offsets":[0,32.0]}})", d) != "accepted");
    CHECK(bad(R"({"t":{"dtype":"F32","shape":[2,4],"data_offsets":[0,32],"x":1}})", d) != "accepted");
    CHECK(bad(R"({"t":{"dtype":"F32","shape":[2,4]}})", d) != "accepted");
    CHECK(bad(R"({"t":{"dtype":"F32","shape":[2,4],"data_offsets":[0,32]},"t":{"dtype":"F32","shape":[2,4],)"
              R"("data_offsets":[0,32]}})",
              d)
              .find("duplicate") != std::string::npos);
    CHECK(bad(R"({"t":{"dtype":"F32","shape":[[[[2]]],4],"data_offsets":[0,32]}})", d) != "accepted");
    CHECK(bad(R"({})", {}).find("no tensors") != std::string::npos);
    CHECK(bad(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,32]}})", d) !=
          "accepted");
    // Header length beyond the file, tiny, and absurd.
    auto f = make_safetensors(R"({"t":{"dtype":"F32","shape":[2,4],"data_offsets":[0,32]}})", d);
    CHECK_NOTHROW(parse_safetensors(f));
    for (size_t n : {size_t(0), size_t(7), size_t(8), size_t(20), f.size() - 1})
        CHECK_THROWS_AS(parse_safetensors(std::span<const uint8_t>(f.data(), n)), AdapterFileError);
    auto huge = f;
    huge[7] = 0x7f;
    CHECK_THROWS_AS(parse_safetensors(huge), AdapterFileError);
}

TEST_CASE("f16 conversion matches exact references and rounds to nearest even") {
    CHECK(f16_to_f32(0x3c00) == 1.0f);
    CHECK(f16_to_f32(0xc000) == -2.0f);
    CHECK(f16_to_f32(0x7bff) == 65504.0f);
    CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24)); // smallest subnormal
    CHECK(f16_to_f32(0x03ff) == std::ldexp(1023.0f, -24));
    CHECK(std::isinf(f16_to_f32(0x7c00)));
    CHECK(std::isnan(f16_to_f32(0x7e00)));
    CHECK(f32_to_f16(1.0f) == 0x3c00);
    CHECK(f32_to_f16(65520.0f) == 0x7c00);                     // rounds up to inf
    CHECK(f32_to_f16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00); // tie -> even
    CHECK(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);
    CHECK(f32_to_f16(std::ldexp(1.0f, -25)) == 0x0000); // tie -> even (0)
    CHECK(f32_to_f16(std::ldexp(3.0f, -25)) == 0x0002);
    // Every finite half survives half -> float -> half.
    for (uint32_t h = 0; h < 0x10000; ++h) {
        if (((h >> 10) & 0x1f) == 0x1f)
            continue;
        REQUIRE(f32_to_f16(f16_to_f32(uint16_t(h))) == h);
    }
}

TEST_CASE("format detection and names") {
    CHECK(format_from_path("x/adapter_model.safetensors") == AdapterFormat::Safetensors);
    CHECK(format_from_path("a.npy") == AdapterFormat::Npy);
    CHECK(format_from_path("a.bin") == AdapterFormat::Raw);
    CHECK(!format_from_path("a.txt"));
    CHECK_THROWS_AS(parse_format("pickle"), InvalidArgument);
    CHECK_THROWS_AS(parse_dtype("f64"), InvalidArgument);
    CHECK_THROWS_AS(read_file_bytes("/nonexistent/file.npy"), AdapterFileError);
    CHECK_THROWS_AS(read_file_bytes("/tmp"), AdapterFileError);
    // a FIFO fails at once (a blocking open would wait for a writer forever)
    const std::string fifo = "/tmp/prefixd-test-fifo-" + std::to_string(::getpid());
    ::unlink(fifo.c_str());
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK_THROWS_WITH_AS(read_file_bytes(fifo), doctest::Contains("not a regular file"), AdapterFileError);
    ::unlink(fifo.c_str());
}
