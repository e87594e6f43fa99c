// CPU reference ops: number formats, Q8_0/Q4_0 codecs, matmul, rmsnorm, YaRN rope and the MoE
// router on hand-checkable cases plus invariants on random inputs.
#include "engine/cpu/ops.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <set>

using namespace prefixd;
using namespace prefixd::cpu;
using gguf::GgmlType;

static std::vector<float> randv(size_t n, uint32_t seed, float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v)
        x = d(rng);
    return v;
}

TEST_CASE("f16 conversion round-trips every half value and rounds to nearest even") {
    for (uint32_t h = 0; h < 65536; ++h) {
        float f = f16_to_f32(uint16_t(h));
        if (std::isnan(f)) {
            CHECK(std::isnan(f16_to_f32(f32_to_f16(f))));
            continue;
        }
        CHECK(f32_to_f16(f) == h);
    }
    CHECK(f16_to_f32(0x3c00) == 1.0f);
    CHECK(f16_to_f32(0xc000) == -2.0f);
    CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));
    CHECK(f32_to_f16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);     // tie -> even
    CHECK(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02); // tie -> even (up)
    CHECK(f32_to_f16(70000.0f) == 0x7c00);
    CHECK(f32_to_f16(std::ldexp(1.0f, -26)) == 0);
}

TEST_CASE("bf16 conversion") {
    CHECK(bf16_to_f32(f32_to_bf16(1.5f)) == 1.5f);
    CHECK(f32_to_bf16(1.0f) == 0x3f80);
    auto v = randv(1000, 1);
    for (float x : v)
        CHECK(std::fabs(bf16_to_f32(f32_to_bf16(x)) - x) <= std::fabs(x) * (1.0f / 256));
    CHECK(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

TEST_CASE("quantize/dequantize rows") {
    const uint64_t n = 256;
    auto x = randv(n, 7);
    for (auto t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0}) {
        auto bytes = quantize_row(t, x.data(), n);
        CHECK(bytes.size() == n / gguf::type_block_elems(t) * gguf::type_block_bytes(t));
        std::vector<float> y(n);
        dequantize_row(t, bytes.data(), y.data(), n);
        for (uint64_t b = 0; b < n / 32; ++b) {
            float amax = 0;
            for (int j = 0; j < 32; ++j)
                amax = std::max(amax, std::fabs(x[b * 32 + j]));
            float tol = t == GgmlType::F32    ? 0
                        : t == GgmlType::Q8_0 ? amax / 127 * 0.5f + 1e-3f * amax
                        : t == GgmlType::Q4_0 ? amax / 8 + 1e-3f * amax // a full step at the clamped end
                                              : amax / 128;
            for (int j = 0; j < 32; ++j)
                CHECK(std::fabs(y[b * 32 + j] - x[b * 32 + j]) <= tol);
        }
        // Re-quantising the decoded values is lossless for the block formats.
        auto again = quantize_row(t, y.data(), n);
        if (t == GgmlType::Q8_0 || t == GgmlType::F16 || t == GgmlType::BF16)
            CHECK(again == bytes);
    }
}

TEST_CASE("Q8_0 and Q4_0 block layouts are ggml's") {
    float x[32];
    for (int j = 0; j < 32; ++j)
        x[j] = float(j - 16); // max |x| = 16 at j = 0 (value -16)
    auto q8 = quantize_row(GgmlType::Q8_0, x, 32);
    REQUIRE(q8.size() == 34);
    uint16_t d;
    std::memcpy(&d, q8.data(), 2);
    CHECK(f16_to_f32(d) == doctest::Approx(16.0f / 127).epsilon(1e-3));
    CHECK(int8_t(q8[2]) == -127);
    auto q4 = quantize_row(GgmlType::Q4_0, x, 32);
    REQUIRE(q4.size() == 18);
    std::memcpy(&d, q4.data(), 2);
    CHECK(f16_to_f32(d) == 2.0f); // d = max / -8 = -16 / -8
    // x[0] = -16 -> q = -16/2 + 8.5 = 0.5 -> 0 (low nibble of byte 0); x[16] = 0 -> 8 (high nibble)
    CHECK((q4[2] & 15) == 0);
    CHECK((q4[2] >> 4) == 8);
    float y[32];
    dequantize_row(GgmlType::Q4_0, q4.data(), y, 32);
    CHECK(y[0] == -16.0f);
    CHECK(y[16] == 0.0f);
}

TEST_CASE("matmul matches a direct sum for every type") {
    const uint64_t rows = 7, cols = 64, n_mat = 2;
    auto wf = randv(rows * cols * n_mat, 3);
    auto x = randv(3 * cols, 4);
    for (auto t : {GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0}) {
        std::vector<uint8_t> bytes;
        for (uint64_t r = 0; r < rows * n_mat; ++r) {
            auto b = quantize_row(t, wf.data() + r * cols, cols);
            bytes.insert(bytes.end(), b.begin(), b.end());
        }
        Tensor w{nullptr, t, rows, cols, n_mat, bytes.data()};
        std::vector<float> deq(rows * cols * n_mat), y(3 * rows);
        for (uint64_t r = 0; r < rows * n_mat; ++r)
            dequantize_row(t, bytes.data() + r * w.row_bytes(), deq.data() + r * cols, cols);
        matmul(w, 1, x.data(), y.data(), 3);
        for (uint32_t tk = 0; tk < 3; ++tk)
            for (uint64_t r = 0; r < rows; ++r) {
                double ref = 0;
                for (uint64_t c = 0; c < cols; ++c)
                    ref += double(deq[(rows + r) * cols + c]) * x[tk * cols + c];
                CHECK(y[tk * rows + r] == doctest::Approx(ref).epsilon(1e-4).scale(1));
            }
    }
}

TEST_CASE("rmsnorm and softmax") {
    std::vector<float> g = {1, 2, 3, 4};
    Tensor w{nullptr, GgmlType::F32, 1, 4, 1, reinterpret_cast<const uint8_t*>(g.data())};
    float x[4] = {1, -1, 1, -1}, out[4];
    rmsnorm(x, w, out, 4, 0.0f);
    CHECK(out[0] == doctest::Approx(1));
    CHECK(out[3] == doctest::Approx(-4));
    float s[3] = {0, std::log(2.0f), std::log(5.0f)};
    softmax(s, 3);
    CHECK(s[0] == doctest::Approx(0.125));
    CHECK(s[2] == doctest::Approx(0.625));
}

TEST_CASE("rope without scaling rotates adjacent pairs by pos * base^(-2i/n)") {
    ModelConfig c;
    c.rope_base = 10000;
    auto x = randv(16, 9);
    auto y = x;
    rope(y.data(), 16, 5, c);
    for (uint32_t i = 0; i < 8; ++i) {
        double th = 5.0 * std::pow(10000.0, -2.0 * i / 16);
        CHECK(y[2 * i] ==
              doctest::Approx(x[2 * i] * std::cos(th) - x[2 * i + 1] * std::sin(th)).epsilon(1e-4));
        CHECK(y[2 * i + 1] ==
              doctest::Approx(x[2 * i] * std::sin(th) + x[2 * i + 1] * std::cos(th)).epsilon(1e-4));
        // norm of each pair is preserved
        CHECK(std::hypot(y[2 * i], y[2 * i + 1]) == doctest::Approx(std::hypot(x[2 * i], x[2 * i + 1])));
    }
    auto z = x;
    rope(z.data(), 16, 0, c);
    CHECK(z == x);
}

TEST_CASE("rope with YaRN: fast dims extrapolate, slow dims interpolate, mscale in attn_scale") {
    ModelConfig c;
    c.rope_base = 10000;
    c.rope_factor = 40;
    c.rope_orig_ctx = 4096;
    c.yarn_log_mul = 0.0707f;
    c.qk_nope = 128;
    c.qk_rope = 64;
    const uint32_t n = 64;
    std::vector<float> x(n, 0.0f);
    for (uint32_t i = 0; i < n; i += 2)
        x[i] = 1.0f; // pair (1, 0): angle of the result = theta
    auto y = x;
    rope(y.data(), n, 100, c);
    // corr dims for these values: low = floor(64*ln(4096/(32*2pi))/(2 ln 1e4)) = 10, high = ceil(...1...) =
    // 23
    double th0 = 100.0; // pair 0: pure extrapolation
    CHECK(std::atan2(y[1], y[0]) == doctest::Approx(std::remainder(th0, 2 * M_PI)).epsilon(1e-3));
    double th31 = 100.0 * std::pow(10000.0, -62.0 / 64) / 40; // last pair: pure interpolation
    CHECK(std::atan2(y[63], y[62]) == doctest::Approx(th31).epsilon(1e-3));
    for (uint32_t i = 0; i < n; i += 2)
        CHECK(std::hypot(y[i], y[i + 1]) == doctest::Approx(1.0)); // unscaled
    float ms = 1 + 0.0707f * std::log(40.0f);
    CHECK(c.attn_scale() == doctest::Approx(ms * ms / std::sqrt(192.0f)));
}

static ModelConfig router_cfg(GatingFunc g, uint32_t n, uint32_t k, uint32_t groups, uint32_t used, bool norm,
                              float scale) {
    ModelConfig c;
    c.gating = g;
    c.n_expert = n;
    c.n_expert_used = k;
    c.n_group = groups;
    c.n_group_used = used;
    c.expert_weights_norm = norm;
    c.routed_scale = scale;
    return c;
}

TEST_CASE("route: softmax gating, no groups, unnormalised") {
    auto c = router_cfg(GatingFunc::Softmax, 4, 2, 1, 1, false, 1.0f);
    float logits[4] = {0, std::log(3.0f), std::log(2.0f), std::log(4.0f)}; // probs 0.1 0.3 0.2 0.4
    auto r = route(logits, nullptr, c);
    CHECK(r.ids == std::vector<int32_t>{3, 1});
    CHECK(r.weights[0] == doctest::Approx(0.4));
    CHECK(r.weights[1] == doctest::Approx(0.3));
    c.expert_weights_norm = true;
    c.routed_scale = 2.0f;
    r = route(logits, nullptr, c);
    CHECK(r.weights[0] == doctest::Approx(2 * 4.0 / 7));
    CHECK(r.weights[1] == doctest::Approx(2 * 3.0 / 7));
}

TEST_CASE("route: sigmoid + bias selects by biased score, weights from unbiased probs, top-2-sum groups") {
    // 8 experts, 4 groups of 2, keep 2 groups, top-2.
    auto c = router_cfg(GatingFunc::Sigmoid, 8, 2, 4, 2, true, 2.5f);
    float logits[8] = {0, 0, 0, 0, 0, 0, 0, 0}; // sigmoid = 0.5 everywhere
    float bias[8] = {0.9f, 0.0f, 0.5f, 0.5f, 0.0f, 0.0f, 0.3f, 0.3f};
    // group sums: g0 = 1.4+0.5=1.9, g1 = 1.0+1.0=2.0, g2 = 1.0, g3 = 1.6 -> keep g1, g0
    // selection among {0,1,2,3}: 1.4 (e0), 1.0 (e2), 1.0 (e3), 0.5 (e1) -> e0, e2 (tie -> lower id)
    auto r = route(logits, bias, c);
    CHECK(r.ids == std::vector<int32_t>{0, 2});
    CHECK(r.weights[0] == doctest::Approx(1.25)); // 0.5/(0.5+0.5) * 2.5
    CHECK(r.weights[1] == doctest::Approx(1.25));
    // With the max rule (softmax/V2) group 0 would win alone over group 1: check V2 grouping.
    auto c2 = router_cfg(GatingFunc::Softmax, 8, 2, 4, 1, false, 1.0f);
    float l2[8] = {3, -5, 2.9f, 2.9f, 0, 0, 0, 0}; // g0 max 3 beats g1 max 2.9 though g1 sums higher
    r = route(l2, nullptr, c2);
    CHECK(r.ids == std::vector<int32_t>{0, 1});
}

TEST_CASE("RouteMarginWatch: the smallest gap at a choice boundary (experts, then groups), nested watches") {
    auto c = router_cfg(GatingFunc::Softmax, 4, 2, 1, 1, false, 1.0f);
    float logits[4] = {0, std::log(3.0f), std::log(2.0f), std::log(4.0f)}; // probs 0.1 0.3 0.2 0.4
    route(logits, nullptr, c);                                             // no watch: nothing kept
    cpu::RouteMarginWatch outer;
    CHECK(std::isinf(outer.min()));
    {
        cpu::RouteMarginWatch inner;
        route(logits, nullptr, c); // 2nd chosen 0.3, best unchosen 0.2
        CHECK(inner.min() == doctest::Approx(0.1));
    }
    CHECK(outer.min() == doctest::Approx(0.1)); // the inner watch's minimum reaches the outer one
    float close[4] = {0, std::log(3.0f), std::log(2.9f), std::log(4.0f)};
    route(close, nullptr, c);
    CHECK(outer.min() == doctest::Approx(0.1 / 10.9)); // 3/10.9 vs 2.9/10.9
    // groups: sigmoid 0.5 + bias as in the test above; kept g1 (2.0), g0 (1.9), next g3 (1.6);
    // in the kept groups the 2nd choice e2 (1.0) ties e3 (1.0): margin 0
    auto g = router_cfg(GatingFunc::Sigmoid, 8, 2, 4, 2, true, 2.5f);
    float zero[8] = {};
    float bias[8] = {0.9f, 0.0f, 0.5f, 0.5f, 0.0f, 0.0f, 0.3f, 0.3f};
    cpu::RouteMarginWatch groups;
    route(zero, bias, g);
    CHECK(groups.min() == 0.0f);
    float bias2[8] = {0.9f, 0.0f, 0.5f, 0.45f, 0.0f, 0.0f, 0.3f, 0.3f}; // g1 1.95, g0 1.9, g3 1.6
    cpu::RouteMarginWatch groups2;
    route(zero, bias2, g);
    CHECK(groups2.min() == doctest::Approx(0.05)); // e2 1.0 vs e3 0.95, and g0 1.9 vs g3 1.6
}

TEST_CASE("route invariants on random logits") {
    std::mt19937 rng(11);
    for (int it = 0; it < 200; ++it) {
        bool sig = it % 2;
        auto c =
            router_cfg(sig ? GatingFunc::Sigmoid : GatingFunc::Softmax, 16, 4, 4, 2, sig, sig ? 2.5f : 1.0f);
        auto l = randv(16, rng(), 2.0f);
        auto b = randv(16, rng(), 0.1f);
        auto r = route(l.data(), sig ? b.data() : nullptr, c);
        REQUIRE(r.ids.size() == 4);
        std::set<int32_t> ids(r.ids.begin(), r.ids.end());
        CHECK(ids.size() == 4);
        std::set<int32_t> groups;
        for (auto id : r.ids)
            groups.insert(id / 4);
        CHECK(groups.size() <= 2);
        double sum = 0;
        for (auto w : r.weights) {
            CHECK(w > 0);
            sum += w;
        }
        if (sig)
            CHECK(sum == doctest::Approx(2.5));
        else
            CHECK(sum < 1.0);
    }
}
