// K-quant (Q4_K, Q6_K) and Q5_0 CPU codecs: literal hand-computed blocks, random blocks against a
// per-element reading of the ggml layout written independently of engine/cpu/kquant.cpp, the
// encoder's worst-case error bound, the type table, and clear load errors for bad K-quant tensors.
#include "engine/cpu/kquant.h"
#include "engine/cpu/ops.h"
#include "engine/model.h"
#include "test_core_util.h"
#include "test_env.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>

using namespace prefixd;
using gguf::GgmlType;

namespace {

uint32_t fresh_seed() {
    return std::random_device{}();
}

uint16_t h16(float f) {
    return cpu::f32_to_f16(f);
}

// Element i (0..255) of a Q4_K block, read straight from the byte layout: sub-block i/32; quant
// byte 32*(i/64) + i%32, low nibble when i%64 < 32; 6-bit scale/min split over the 12 bytes.
float q4_k_element(const uint8_t* blk, int i) {
    uint16_t hd, hm;
    std::memcpy(&hd, blk, 2);
    std::memcpy(&hm, blk + 2, 2);
    const uint8_t* s = blk + 4;
    const int j = i / 32;
    const int byte = blk[16 + 32 * (i / 64) + i % 32];
    const int q = (i % 64 < 32) ? (byte & 0x0f) : (byte >> 4);
    int sc, m;
    if (j < 4) { // low 6 bits of bytes j and j+4
        sc = s[j] % 64;
        m = s[j + 4] % 64;
    } else { // low 4 bits from byte j+4's nibbles, top 2 bits from the top of bytes j-4 / j
        sc = (s[j + 4] % 16) + 16 * (s[j - 4] / 64);
        m = (s[j + 4] / 16) + 16 * (s[j] / 64);
    }
    return (cpu::f16_to_f32(hd) * float(sc)) * float(q) - cpu::f16_to_f32(hm) * float(m);
}

// Element i of a Q6_K block: half i/128; within it r = i%128 -> l = r%32, k = r/32; low 4 bits
// from ql[64*half + l + 32*(k%2)] (low nibble for k < 2), high 2 bits = bits 2k..2k+1 of
// qh[32*half + l]; scale scales[i/16] (int8); value (d*scale) * (q - 32).
float q6_k_element(const uint8_t* blk, int i) {
    const int half = i / 128, r = i % 128, l = r % 32, k = r / 32;
    const int lb = blk[64 * half + l + 32 * (k % 2)];
    const int lo = k < 2 ? (lb & 0x0f) : (lb >> 4);
    const int hi = (blk[128 + 32 * half + l] >> (2 * k)) & 3;
    uint16_t hd;
    std::memcpy(&hd, blk + 208, 2);
    const int8_t sc = int8_t(blk[192 + i / 16]);
    return (cpu::f16_to_f32(hd) * float(sc)) * float((lo | hi << 4) - 32);
}

std::vector<float> dequant(GgmlType t, const std::vector<uint8_t>& b, uint64_t n) {
    std::vector<float> y(n);
    cpu::dequantize_row(t, b.data(), y.data(), n);
    return y;
}

} // namespace

TEST_CASE("type table: Q4_K and Q6_K are 256-element blocks of 144 and 210 bytes, supported") {
    CHECK(gguf::type_block_elems(GgmlType::Q4_K) == 256);
    CHECK(gguf::type_block_bytes(GgmlType::Q4_K) == 144);
    CHECK(gguf::type_block_elems(GgmlType::Q6_K) == 256);
    CHECK(gguf::type_block_bytes(GgmlType::Q6_K) == 210);
    CHECK(gguf::engine_supports(GgmlType::Q4_K));
    CHECK(gguf::engine_supports(GgmlType::Q6_K));
    CHECK_FALSE(gguf::engine_supports(GgmlType::Q5_K));
    CHECK(gguf::engine_supports(GgmlType::Q5_0));
    CHECK(std::string(gguf::engine_supported_types()).find("Q5_0, Q4_K, Q6_K") != std::string::npos);
    std::vector<float> x(128, 1.0f);
    CHECK_THROWS_AS(cpu::quantize_row(GgmlType::Q4_K, x.data(), 128), std::invalid_argument);
    CHECK_THROWS_AS(cpu::quantize_row(GgmlType::Q6_K, x.data(), 128), std::invalid_argument);
}

TEST_CASE("Q4_K: a hand-built block decodes to hand-computed values") {
    std::vector<uint8_t> b(144, 0);
    const uint16_t d = h16(0.5f), dmin = h16(0.25f);
    std::memcpy(b.data(), &d, 2);
    std::memcpy(b.data() + 2, &dmin, 2);
    uint8_t* s = b.data() + 4;
    s[0] = 0x07; // sub-block 0: sc 7
    s[4] = 0x03; //              m 3
    s[8] = 0x21; // sub-block 4: sc 1 (low nibble), m 2 (high nibble)
    s[9] = 0x65; // sub-block 5: sc low bits 5, m low bits 6
    s[1] = 0x80; //              sc top bits 2 (37); sub-block 1: sc 0
    s[5] = 0x40; //              m top bits 1 (22); sub-block 1: m 0
    uint8_t* qs = b.data() + 16;
    qs[0] = 0x0f;  // element 0 (sub-block 0) = 15, element 32 (sub-block 1) = 0
    qs[71] = 0xa3; // element 135 (sub-block 4) = 3, element 167 (sub-block 5) = 10
    auto y = dequant(GgmlType::Q4_K, b, 256);
    CHECK(y[0] == 0.5f * 7 * 15 - 0.25f * 3);     // 51.75
    CHECK(y[1] == -0.75f);                        // q 0 in sub-block 0
    CHECK(y[32] == 0.0f);                         // sub-block 1: sc 0, m 0
    CHECK(y[135] == 0.5f * 1 * 3 - 0.25f * 2);    // 1.0
    CHECK(y[167] == 0.5f * 37 * 10 - 0.25f * 22); // 179.5
    CHECK(y[160] == -0.25f * 22);                 // q 0 in sub-block 5
    CHECK(y[128] == -0.5f);                       // q 0 in sub-block 4
}

TEST_CASE("Q6_K: a hand-built block decodes to hand-computed values") {
    std::vector<uint8_t> b(210, 0);
    const uint16_t d = h16(0.5f);
    std::memcpy(b.data() + 208, &d, 2);
    b[192 + 9] = uint8_t(int8_t(-3)); // elements 144..159
    b[192 + 11] = 2;                  // elements 176..191
    b[192 + 13] = 4;                  // elements 208..223
    b[64 + 22] = 0x5c;                // half 1, l 22: low nibble 12 -> element 150, high 5 -> element 214
    b[128 + 32 + 22] = 0x9e;          // high bits: k0 2 (150), k1 3 (182), k2 1 (214), k3 2 (246)
    auto y = dequant(GgmlType::Q6_K, b, 256);
    for (int i = 0; i < 256; ++i) {
        INFO("element " << i);
        float want = 0.0f; // scale 0 everywhere else
        if (i == 150)
            want = 0.5f * -3 * (44 - 32); // -18
        else if (i == 182)
            want = 0.5f * 2 * (48 - 32); // 16
        else if (i == 214)
            want = 0.5f * 4 * (21 - 32); // -22
        else if (i / 16 == 9)
            want = 0.5f * -3 * -32; // q 0 -> 48
        else if (i / 16 == 11)
            want = 0.5f * 2 * -32; // -32
        else if (i / 16 == 13)
            want = 0.5f * 4 * -32; // -64
        CHECK(y[i] == want);
    }
}

TEST_CASE("random Q4_K/Q6_K blocks decode like a per-element reading of the layout") {
    const uint32_t seed = fresh_seed();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> byte(0, 255);
    std::uniform_real_distribution<float> scale(-0.05f, 0.05f);
    for (GgmlType t : {GgmlType::Q4_K, GgmlType::Q6_K}) {
        INFO(std::string(gguf::type_name(t)));
        const uint64_t bb = gguf::type_block_bytes(t), nblk = 5;
        std::vector<uint8_t> b(nblk * bb);
        for (auto& v : b)
            v = uint8_t(byte(rng));
        for (uint64_t k = 0; k < nblk; ++k) { // finite f16 scales (random bytes could be inf/nan)
            uint16_t h0 = h16(scale(rng)), h1 = h16(std::fabs(scale(rng)));
            std::memcpy(b.data() + k * bb + (t == GgmlType::Q4_K ? 0 : 208), &h0, 2);
            if (t == GgmlType::Q4_K)
                std::memcpy(b.data() + k * bb + 2, &h1, 2);
        }
        auto y = dequant(t, b, nblk * 256);
        int bad = 0;
        for (uint64_t k = 0; k < nblk; ++k)
            for (int i = 0; i < 256; ++i) {
                const uint8_t* blk = b.data() + k * bb;
                float want = t == GgmlType::Q4_K ? q4_k_element(blk, i) : q6_k_element(blk, i);
                // same fp32 operations in the same order; the slack only allows a compiler's FMA
                bad += std::fabs(y[k * 256 + i] - want) > 1e-6f * std::fabs(want) + 1e-7f;
            }
        CHECK(bad == 0);
    }
}

// Encoder bounds (engine/cpu/kquant.cpp): with s' = d*sc the stored step and d, dmin the block's
// f16 scales, every element is within max(s'/2, 7.5*d + dmin/2) (Q4_K) or max(s'/2, 15.5*d)
// (Q6_K), plus float rounding. The data mixes scales and signs per sub-block, all-positive
// stretches, exact zeros and a tiny-magnitude block.
TEST_CASE("quantise then dequantise stays within the encoders' error bounds") {
    const uint32_t seed = fresh_seed();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    const uint64_t n = 256 * 24;
    std::vector<float> x(n);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (uint64_t i = 0; i < n; ++i) {
        const uint64_t blk = i / 256, sub = i / 32;
        float sd = std::exp2(float(int(sub % 7) - 3)); // sub-block scales 1/8 .. 8
        float v = nd(rng) * sd;
        if (blk % 4 == 1)
            v = std::fabs(v) + 0.5f; // all positive: Q4_K min 0
        if (blk % 4 == 2 && sub % 3 == 0)
            v = 0.0f; // zero sub-blocks
        if (blk == 3)
            v *= 1e-4f;
        x[i] = v;
    }
    for (GgmlType t : {GgmlType::Q4_K, GgmlType::Q6_K}) {
        INFO(std::string(gguf::type_name(t)));
        auto q = cpu::quantize_row(t, x.data(), n);
        REQUIRE(q.size() == n / 256 * gguf::type_block_bytes(t));
        auto y = dequant(t, q, n);
        double se = 0, sx = 0;
        int bad = 0;
        for (uint64_t i = 0; i < n; ++i) {
            const uint8_t* blk = q.data() + (i / 256) * gguf::type_block_bytes(t);
            const int e = int(i % 256);
            float bound;
            if (t == GgmlType::Q4_K) {
                uint16_t hd, hm;
                std::memcpy(&hd, blk, 2);
                std::memcpy(&hm, blk + 2, 2);
                const float d = cpu::f16_to_f32(hd), dmin = cpu::f16_to_f32(hm);
                int sc, m;
                cpu::q4_k_scale_min(blk + 4, e / 32, sc, m);
                bound = std::max(d * sc / 2, 7.5f * d + dmin / 2);
            } else {
                uint16_t hd;
                std::memcpy(&hd, blk + 208, 2);
                const float d = cpu::f16_to_f32(hd);
                bound = std::max(d * std::abs(int(int8_t(blk[192 + e / 16]))) / 2, 15.5f * d);
            }
            const float err = std::fabs(y[i] - x[i]);
            if (err > bound * 1.001f + 1e-6f * std::fabs(x[i])) {
                if (bad++ < 5)
                    MESSAGE("element " << i << ": x " << x[i] << " y " << y[i] << " bound " << bound);
            }
            se += double(err) * err;
            sx += double(x[i]) * x[i];
        }
        CHECK(bad == 0);
        // Typical quality (not only the worst case): relative RMS error of a 4-bit / 6-bit code.
        const double rel = std::sqrt(se / sx);
        MESSAGE(std::string(gguf::type_name(t)) << " relative RMS error " << rel);
        CHECK(rel < (t == GgmlType::Q4_K ? 0.12 : 0.03));
    }
}

namespace {
// Patches the ggml type or a dim of tensor `name` in a GGUF file's tensor-info table
// (name string, u32 n_dims, u64 dims[n_dims], u32 type, u64 offset).
void patch_tensor_info(const std::string& path, const std::string& name, int dim, uint64_t value,
                       bool type_field) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(f)), {});
    std::string key;
    const uint64_t len = name.size();
    key.append(reinterpret_cast<const char*>(&len), 8);
    key += name;
    size_t at = bytes.find(key);
    REQUIRE(at != std::string::npos);
    at += key.size();
    uint32_t nd;
    std::memcpy(&nd, bytes.data() + at, 4);
    at += 4;
    if (type_field) {
        at += 8 * nd;
        const uint32_t t = uint32_t(value);
        std::memcpy(bytes.data() + at, &t, 4);
    } else {
        std::memcpy(bytes.data() + at + 8 * dim, &value, 8);
    }
    f.seekp(0);
    f.write(bytes.data(), std::streamsize(bytes.size()));
}

void expect_load_error(const std::string& path, const std::string& needle) {
    INFO(path);
    try {
        Model::load(path);
        FAIL("loaded");
    } catch (const ModelError& e) {
        INFO(e.what());
        CHECK(std::string(e.what()).find(needle) != std::string::npos);
    }
}
} // namespace

TEST_CASE("bad K-quant tensors give clear load errors") {
    const auto src = (test::models_dir() / "tiny-v2k-q4_k_m.gguf").string();
    REQUIRE_MESSAGE(std::filesystem::exists(src), "missing " << src << " (ctest fixture test_models)");
    auto m = Model::load(src); // the good file loads, with both K-quant types in it
    CHECK(m->weights().layers[0].wq.type == GgmlType::Q4_K);
    CHECK(m->weights().layers[0].ffn_down.type == GgmlType::Q6_K);
    auto dir = test::temp_dir("kquant-bad");
    auto p = [&](const char* n) { return (dir / n).string(); };
    // a Q8_0 row of 32 elements relabelled Q4_K: not whole 256-element blocks
    std::filesystem::copy_file(src, p("rows.gguf"));
    patch_tensor_info(p("rows.gguf"), "blk.0.attn_k_b.weight", 0, uint64_t(GgmlType::Q4_K), true);
    expect_load_error(p("rows.gguf"),
                      "tensor 'blk.0.attn_k_b.weight': row of 32 not a multiple of Q4_K block size (256)");
    // a Q6_K matrix claiming more rows than its blocks in the file
    std::filesystem::copy_file(src, p("count.gguf"));
    patch_tensor_info(p("count.gguf"), "output.weight", 1, 129280 * 2, false);
    expect_load_error(p("count.gguf"), "output.weight");
    // an unsupported K-quant lists what is supported
    test::GgufEdit type;
    type.retype_tensor = "blk.0.ffn_down.weight";
    type.new_type = GgmlType::Q5_K;
    test::rewrite_gguf(src, p("type.gguf"), type);
    expect_load_error(p("type.gguf"),
                      "tensor blk.0.ffn_down.weight has unsupported type Q5_K (supported: F32, "
                      "F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K, Q6_K)");
    std::filesystem::remove_all(dir);
}

// Q5_0 (llama.cpp's fallback for Q4_K rows that are not whole 256-blocks): f16 d, u32 qh, qs[16];
// element j < 16: low nibble of qs[j] + bit j of qh as bit 4; element j+16: high nibble + bit j+16.
TEST_CASE("Q5_0: hand-computed block, random blocks per element, quantise/dequantise bound") {
    std::vector<uint8_t> b(22, 0);
    const uint16_t d = h16(0.5f);
    std::memcpy(b.data(), &d, 2);
    const uint32_t qh = (1u << 3) | (1u << 20); // 5th bit of elements 3 and 20
    std::memcpy(b.data() + 2, &qh, 4);
    b[6 + 3] = 0x7a; // element 3: 10 | 16 = 26; element 19: 7
    b[6 + 4] = 0x0c; // element 4: 12 (bit clear); element 20: 0 | 16 = 16
    auto y = dequant(GgmlType::Q5_0, b, 32);
    CHECK(y[3] == 0.5f * (26 - 16));
    CHECK(y[19] == 0.5f * (7 - 16));
    CHECK(y[4] == 0.5f * (12 - 16));
    CHECK(y[20] == 0.0f);
    CHECK(y[0] == 0.5f * -16);

    const uint32_t seed = fresh_seed();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> byte(0, 255);
    std::vector<uint8_t> r(22 * 7);
    for (auto& v : r)
        v = uint8_t(byte(rng));
    for (int k = 0; k < 7; ++k) {
        const uint16_t h = h16(std::uniform_real_distribution<float>(-1, 1)(rng));
        std::memcpy(r.data() + 22 * k, &h, 2);
    }
    auto yr = dequant(GgmlType::Q5_0, r, 7 * 32);
    int bad = 0;
    for (int i = 0; i < 7 * 32; ++i) {
        const uint8_t* blk = r.data() + 22 * (i / 32);
        const int e = i % 32;
        uint16_t hd;
        std::memcpy(&hd, blk, 2);
        const int nib = e < 16 ? (blk[6 + e] & 15) : (blk[6 + e - 16] >> 4);
        const int hi = (blk[2 + e / 8] >> (e % 8)) & 1; // qh little-endian: bit e in byte e/8
        const float want = cpu::f16_to_f32(hd) * float(nib + 16 * hi - 16);
        bad += std::fabs(yr[i] - want) > 1e-6f * std::fabs(want);
    }
    CHECK(bad == 0);

    // d = (signed extreme)/-16 so the extreme maps to q 0; |error| <= |d|/2 elsewhere (f16 rounding
    // of d can push the opposite extreme one step past 31: clamped, error <= |d|).
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(32 * 40);
    for (auto& v : x)
        v = nd(rng);
    auto q = cpu::quantize_row(GgmlType::Q5_0, x.data(), x.size());
    auto yq = dequant(GgmlType::Q5_0, q, x.size());
    bad = 0;
    for (size_t i = 0; i < x.size(); ++i) {
        uint16_t hd;
        std::memcpy(&hd, q.data() + 22 * (i / 32), 2);
        bad += std::fabs(yq[i] - x[i]) > std::fabs(cpu::f16_to_f32(hd)) * 1.001f + 1e-6f;
    }
    CHECK(bad == 0);
}
