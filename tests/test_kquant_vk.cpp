// Vulkan K-quant and Q5_0 matmuls (shaders/matmul.comp W_Q4_K / W_Q6_K / W_Q5_0 over
// engine/vk/vk_kquant.cpp's repacked rows) against cpu::matmul on fresh random inputs, in every matmul mode
// and layout, and the tiny Q4_K_M-style model (Q4_K, Q6_K, Q5_0 fallback, F32 norms) against the CPU
// reference: logits at every prompt position and greedy tokens.
#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/ops.h"
#include "engine/vk/vk_backend.h"
#include "engine/vk/vk_forward.h"
#include "engine/vk/vk_kquant.h"
#include "test_env.h"
#include "test_model_util.h"
#include "test_vk_util.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

using namespace prefixd;
using namespace prefixd::vk;
using gguf::GgmlType;
using prefixd::test::draw_away_from_ties;
using prefixd::test::greedy_run;
using prefixd::test::GreedyRun;
using prefixd::test::random_tokens;
using prefixd::test::ctx;
using prefixd::test::DevBuf;
using prefixd::test::HostTensor;
using prefixd::test::make_tensor;
using prefixd::test::norm_err;
using prefixd::test::randv;
using prefixd::test::row_err;

namespace {

// uneven sub-block ranges and offsets
void uneven(std::vector<float>& v) {
    for (uint64_t c = 0; c < v.size(); c += 64)
        for (uint64_t k = 0; k < 32; ++k)
            v[c + k] = v[c + k] * 2.0f + 0.3f;
}
HostTensor make_kq_tensor(GgmlType type, uint64_t rows, uint64_t cols, uint64_t n_mat, std::mt19937& rng) {
    return make_tensor(type, rows, cols, n_mat, rng, uneven);
}

} // namespace

TEST_CASE("repacked K-quant rows: sizes are whole 16-byte units, bad widths are refused") {
    CHECK(kquant_row_bytes(GgmlType::Q4_K, 256) == 144);
    CHECK(kquant_row_bytes(GgmlType::Q4_K, 2048) == 1024 + 128);
    CHECK(kquant_row_bytes(GgmlType::Q6_K, 256) == 256); // 32 B per 32 elements
    CHECK(kquant_row_bytes(GgmlType::Q5_0, 32) == 32);   // 16 B nibbles + 8 B qh/d, padded
    CHECK(kquant_row_bytes(GgmlType::Q5_0, 1408) == 1056);
    for (uint64_t c : {256, 512, 768, 1280, 2048, 10944 / 64 * 256})
        for (GgmlType t : {GgmlType::Q4_K, GgmlType::Q6_K})
            CHECK(kquant_row_bytes(t, c) % 16 == 0);
    std::vector<uint8_t> src(144), dst(1024);
    CHECK_THROWS_AS(kquant_repack(GgmlType::Q4_K, src.data(), 1, 128, dst.data()), std::invalid_argument);
    GpuWeights gw(ctx());
    Tensor t;
    t.type = GgmlType::Q4_K;
    t.rows = 2;
    t.cols = 128; // not whole blocks: refused with the tensor's name
    t.data = src.data();
    try {
        gw.add(t, "bad_q4k");
        FAIL("uploaded");
    } catch (const EngineError& e) {
        CHECK(std::string(e.what()).find("bad_q4k") != std::string::npos);
    }
}

TEST_CASE("Q4_K, Q6_K and Q5_0 matmul/swiglu shaders match cpu::matmul in every mode and layout") {
    const uint32_t seed = std::random_device{}();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    const uint32_t rows = 37, n_mat = 3, n_tok = 11; // odd rows; 11 tokens cross the 8-token tile
    const bool lane_rows_default = ctx().lane_rows(), texel_default = ctx().texel(),
               il_default = ctx().interleave();
    // layouts: subgroup rows, lane rows, and on texel devices (CPU drivers) the texel matmuls with
    // a row per invocation (2) or lanes splitting rows (3), both again with the one-token
    // shaders (4, 5), and the row-interleaved layout (37 rows padded to 40) with the 8-token tile
    // (6) and one token (7)
    for (int variant = 0; variant < 8 * 3; ++variant) {
        const GgmlType type = variant % 3 == 0   ? GgmlType::Q4_K
                              : variant % 3 == 1 ? GgmlType::Q6_K
                                                 : GgmlType::Q5_0;
        const int layout = variant / 3;
        const bool one_token = layout == 4 || layout == 5 || layout == 7, il = layout >= 6;
        const uint32_t cols = type == GgmlType::Q5_0 ? 96 : 512; // Q5_0: 3 blocks, a padded row
        ctx().set_lane_rows(layout >= 1);
        ctx().set_texel(layout >= 2);
        ctx().set_interleave(il);
        if (layout >= 2 && !ctx().texel())
            continue;
        if (il && !ctx().interleave())
            continue; // subgroups other than 8 lanes: no interleaved layout
        setenv("PREFIXD_VK_SPLIT_BYTES", layout == 3 || layout == 5 ? "0" : "1000000000", 1);
        INFO("type " << std::string(gguf::type_name(type)) << " layout " << layout);
        GpuWeights gw(ctx());
        HostTensor A = make_kq_tensor(type, rows, cols, n_mat, rng),
                   B = make_kq_tensor(type, rows, cols, n_mat, rng);
        GpuTensor ga = gw.add(A.t, "A"), gb = gw.add(B.t, "B");
        CHECK(ga.il == il);
        auto xs = randv(size_t(n_mat) * n_tok * cols, rng);
        auto nw = randv(cols, rng);
        auto y0 = randv(size_t(n_mat) * n_tok * rows, rng);
        Tensor normt;
        normt.type = GgmlType::F32;
        normt.rows = 1;
        normt.cols = cols;
        normt.data = reinterpret_cast<const uint8_t*>(nw.data());
        DevBuf x(xs.size() * 4), y(y0.size() * 4), norm(cols * 4), map(4096);
        std::memcpy(x.as<float>(), xs.data(), xs.size() * 4);
        std::memcpy(norm.as<float>(), nw.data(), cols * 4);
        for (int mode = 0; mode < 5; ++mode) {
            INFO("mode " << mode); // 0 plain (3 matrices), 1 accumulate, 2 norm, 3 swiglu+norm, 4 row map
            std::memcpy(y.as<float>(), y0.data(), y0.size() * 4);
            MatmulPush p{};
            p.x = x.addr();
            p.y = y.addr();
            p.norm = norm.addr();
            p.eps = 1e-6f;
            p.n_tok = n_tok;
            p.x_stride = cols;
            p.y_stride = rows;
            p.x_mat_off = n_tok * cols;
            p.y_mat_off = n_tok * rows;
            p.flags = mode == 1 ? MM_ACCUM : mode == 2 || mode == 3 ? MM_NORM_X : 0;
            std::vector<std::pair<uint32_t, uint32_t>> pairs;
            uint32_t groups = n_mat;
            if (mode == 4) { // matrix 2, 6 (x row, y row) pairs
                uint32_t* m = map.as<uint32_t>();
                m[0] = 2;
                m[1] = 6;
                m[2] = 3;
                for (uint32_t i = 0; i < 6; ++i) {
                    pairs.push_back({(i * 5 + 1) % (n_tok * n_mat), i * 3});
                    m[3 + 2 * i] = pairs[i].first;
                    m[4 + 2 * i] = pairs[i].second;
                }
                p.flags = MM_MAP;
                p.map = map.addr();
                p.x_mat_off = p.y_mat_off = 0;
                groups = 1;
            }
            dispatch_matmul(ctx(), ga, mode == 3 ? &gb : nullptr, p, groups, one_token);
            ctx().submit_wait();
            std::vector<float> ref(y0), xin(cols), ya(rows), yb(rows);
            auto ref_row = [&](uint32_t mat, const float* xr, float* out, bool accum) {
                std::memcpy(xin.data(), xr, cols * 4);
                if (mode == 2 || mode == 3)
                    cpu::rmsnorm(xr, normt, xin.data(), cols, 1e-6f);
                cpu::matmul(A.t, mat, xin.data(), ya.data(), 1);
                if (mode == 3) {
                    cpu::matmul(B.t, mat, xin.data(), yb.data(), 1);
                    for (uint32_t r = 0; r < rows; ++r)
                        ya[r] = cpu::silu(ya[r]) * yb[r];
                }
                for (uint32_t r = 0; r < rows; ++r)
                    out[r] = (accum ? out[r] : 0.0f) + ya[r];
            };
            if (mode == 4) {
                for (auto [xr, yr] : pairs)
                    ref_row(2, xs.data() + size_t(xr) * cols, ref.data() + size_t(yr) * rows, false);
            } else {
                for (uint32_t g = 0; g < n_mat; ++g)
                    for (uint32_t t = 0; t < n_tok; ++t)
                        ref_row(g, xs.data() + (size_t(g) * n_tok + t) * cols,
                                ref.data() + (size_t(g) * n_tok + t) * rows, mode == 1);
            }
            // Same decoded fp32 weights on both sides; only summation order differs.
            CHECK(norm_err(y.as<float>(), ref.data(), ref.size()) < 1e-5);
        }
    }
    unsetenv("PREFIXD_VK_SPLIT_BYTES");
    ctx().set_lane_rows(lane_rows_default);
    ctx().set_texel(texel_default);
    ctx().set_interleave(il_default);
}

// The shaders decode each K-quant element with the same fp32 operations as cpu::dequantize_row
// ((d*sc)*q - dmin*m, (d*sc)*(q-32); f16 -> f32 is exact), so both backends compute with the
// same weight values and differ only in summation order (and at most an FMA's rounding per
// weight): the 1e-3-of-the-largest-logit tolerance of the other quantised-model tests applies.
TEST_CASE("tiny Q4_K_M model: Vulkan logits at every position and greedy tokens match the CPU reference") {
    const auto path = test::models_dir() / "tiny-v2k-q4_k_m.gguf";
    REQUIRE_MESSAGE(std::filesystem::exists(path),
                    "missing test model " << path << " (ctest fixture test_models)");
    auto model = Model::load(path.string());
    const Weights& w = model->weights();
    // the mix really is there: Q4_K, Q6_K (dense and expert stacks), Q5_0 fallback
    CHECK(w.token_embd.type == GgmlType::Q4_K);
    CHECK(w.output.type == GgmlType::Q6_K);
    CHECK(w.layers[0].ffn_gate.type == GgmlType::Q4_K);
    CHECK(w.layers[0].ffn_down.type == GgmlType::Q6_K);
    CHECK(w.layers[1].gate_exps.type == GgmlType::Q4_K);
    CHECK(w.layers[1].down_exps.type == GgmlType::Q6_K);
    CHECK(w.layers[1].wv_b.type == GgmlType::Q6_K);
    CHECK(w.layers[1].wk_b.type == GgmlType::Q5_0); // 32-element rows: llama.cpp's Q4_K fallback
    EngineOptions o;
    o.max_seqs = 4;
    o.max_ctx = 128;
    auto cb = cpu::make_cpu_backend(*model, o);
    auto gb = make_vulkan_backend(*model, o);
    const ModelConfig& c = model->config();
    std::mt19937 rng(std::random_device{}());
    // 48 prompt tokens, then 12 greedy ones; the reference's inputs away from routing ties (fp32
    // sum orders move a selection score by ~1e-7)
    auto draw = [&] { return std::vector<Segment>{Segment::from_tokens(random_tokens(48, c.n_vocab, rng))}; };
    const auto [prompt, ref] = draw_away_from_ties(*cb, draw, 12, c.n_vocab, 1e-5);
    SeqId sg = gb->create_sequence();
    const GreedyRun got = greedy_run(*gb, sg, prompt, 12, c.n_vocab);
    REQUIRE(got.logits.size() == ref.logits.size());
    double worst = 0;
    for (size_t r = 0; r < got.logits.size() / c.n_vocab; ++r)
        worst = std::max(
            worst, row_err(got.logits.data() + r * c.n_vocab, ref.logits.data() + r * c.n_vocab, c.n_vocab));
    MESSAGE("tiny-v2k-q4_k_m: worst normalised logit error " << worst);
    CHECK(worst <= 1e-3);
    CHECK(got.tokens == ref.tokens);
}
