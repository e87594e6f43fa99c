// Per-op Vulkan tests: every shader against its CPU twin (engine/cpu/ops.h) on fresh random
// inputs (a new seed each run, printed on failure), compared by normalised error
// max|gpu - ref| / max|ref|. Includes a weight matrix larger than lavapipe's 128 MiB
// storage-buffer range, reached through its device address.
#include "engine/cpu/ops.h"
#include "engine/vk/vk_forward.h"
#include "test_vk_util.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <set>

using namespace prefixd;
using namespace prefixd::vk;
using gguf::GgmlType;
using prefixd::test::ctx;
using prefixd::test::fresh_seed;
using prefixd::test::HostTensor;
using prefixd::test::make_tensor;
using prefixd::test::DevBuf;
using prefixd::test::norm_err;
using prefixd::test::randv;

namespace {

const GgmlType kTypes[] = {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0};

} // namespace

TEST_CASE("matmul and swiglu shaders match cpu::matmul for every weight type and mode") {
    const uint32_t seed = fresh_seed();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    const uint32_t rows = 37, cols = 320, n_mat = 3, n_tok = 11; // 11 tokens cross the 8-token tile
    const bool lane_rows_default = ctx().lane_rows(), texel_default = ctx().texel(),
               il_default = ctx().interleave();
    // every type x {subgroup rows, lane rows} over device addresses, and on texel devices x the
    // texel matmul with a row per invocation and with lanes splitting rows (each also with the
    // one-token TB1 shaders), and the row-interleaved layout (37 rows: padded to 40) with both
    for (int variant = 0; variant < 8 * 5; ++variant) {
        const GgmlType type = kTypes[variant % 5];
        const int layout = variant / 5; // 0 BDA subgroup rows, 1 BDA lane rows, 2/3 texel (3 split),
                                        // 4/5 = 2/3 with TB1, 6 interleaved, 7 interleaved TB1
        const bool one_token = layout == 4 || layout == 5 || layout == 7, il = layout >= 6;
        setenv("PREFIXD_VK_SPLIT_BYTES", layout == 3 || layout == 5 ? "0" : "1000000000", 1);
        ctx().set_lane_rows(layout >= 1);
        ctx().set_texel(layout >= 2);
        ctx().set_interleave(il);
        if (layout >= 2 && !ctx().texel())
            continue; // no texel mode on this device (GPUs): the device-address paths ran above
        if (il && !ctx().interleave())
            continue; // subgroups other than 8 lanes: no interleaved layout on this device
        INFO("type " << std::string(gguf::type_name(type)) << " layout " << layout << " one_token " << one_token);
        GpuWeights gw(ctx());
        HostTensor A = make_tensor(type, rows, cols, n_mat, rng),
                   B = make_tensor(type, rows, cols, n_mat, rng);
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
            INFO("mode " << mode); // 0 plain+heads, 1 accum, 2 norm, 3 swiglu+norm, 4 map
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
            std::vector<std::pair<uint32_t, uint32_t>> pairs; // mode 4: (xrow, yrow) into matrix 1
            uint32_t groups = n_mat;
            if (mode == 4) {
                uint32_t* m = map.as<uint32_t>();
                m[0] = 1; // matrix 1
                m[1] = 5;
                m[2] = 3;
                for (uint32_t i = 0; i < 5; ++i) {
                    pairs.push_back({(i * 7 + 3) % (n_tok * n_mat), i * 2});
                    m[3 + 2 * i] = pairs[i].first;
                    m[4 + 2 * i] = pairs[i].second;
                }
                p.flags = MM_MAP;
                p.map = map.addr();
                p.x_mat_off = p.y_mat_off = 0;
                groups = 1;
            }
            // texel layouts also run the one-token (TB1) variants: correct for any token count
            dispatch_matmul(ctx(), ga, mode == 3 ? &gb : nullptr, p, groups, one_token);
            ctx().submit_wait();
            std::vector<float> ref(y0);
            std::vector<float> xin(cols), ya(rows), yb(rows);
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
                    ref_row(1, xs.data() + size_t(xr) * cols, ref.data() + size_t(yr) * rows, false);
            } else {
                for (uint32_t g = 0; g < n_mat; ++g)
                    for (uint32_t t = 0; t < n_tok; ++t)
                        ref_row(g, xs.data() + (size_t(g) * n_tok + t) * cols,
                                ref.data() + (size_t(g) * n_tok + t) * rows, mode == 1);
            }
            CHECK(norm_err(y.as<float>(), ref.data(), ref.size()) < 1e-5);
        }
    }
    ctx().set_lane_rows(lane_rows_default);
    ctx().set_texel(texel_default);
    ctx().set_interleave(il_default);
    unsetenv("PREFIXD_VK_SPLIT_BYTES");
}

TEST_CASE("interleaved weights refuse the paths that cannot read them with an EngineError") {
    const bool texel_default = ctx().texel(), il_default = ctx().interleave();
    ctx().set_interleave(true);
    if (!ctx().interleave()) {
        ctx().set_interleave(il_default);
        return; // no interleaved layout on this device
    }
    std::mt19937 rng(fresh_seed());
    GpuWeights gw(ctx());
    HostTensor A = make_tensor(GgmlType::Q8_0, 16, 64, 1, rng);
    const GpuTensor ga = gw.add(A.t, "A");
    REQUIRE(ga.il);
    DevBuf x(64 * 4 + 16), y(16 * 4);
    MatmulPush p{};
    p.y = y.addr();
    p.n_tok = 1;
    p.x_stride = 64;
    p.y_stride = 16;
    p.x = x.addr() + 4; // x rows not 16-byte aligned
    CHECK_THROWS_AS(dispatch_matmul(ctx(), ga, nullptr, p, 1), EngineError);
    p.x = x.addr();
    ctx().set_texel(false); // device-address shaders read the plain layout only
    CHECK_THROWS_AS(dispatch_matmul(ctx(), ga, nullptr, p, 1), EngineError);
    ctx().set_texel(texel_default);
    CHECK_NOTHROW(dispatch_matmul(ctx(), ga, nullptr, p, 1));
    ctx().submit_wait();
    ctx().set_interleave(il_default);
}

TEST_CASE("matmul reads an F32 weight matrix larger than the 128 MiB storage-buffer range") {
    const uint32_t seed = fresh_seed();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    const uint32_t cols = 1024, rows = 34 * 1024; // 136 MiB of F32 weights
    HostTensor A;
    A.t.type = GgmlType::F32;
    A.t.rows = rows;
    A.t.cols = cols;
    A.bytes.resize(uint64_t(rows) * cols * 4);
    {
        std::uniform_real_distribution<float> u(-1.0f, 1.0f);
        float* f = reinterpret_cast<float*>(A.bytes.data());
        for (uint64_t i = 0; i < uint64_t(rows) * cols; ++i)
            f[i] = u(rng);
    }
    A.t.data = A.bytes.data();
    CHECK(A.bytes.size() > (128ull << 20));
    const bool il_default = ctx().interleave();
    ctx().set_interleave(false);
    GpuWeights gw(ctx());
    GpuTensor ga = gw.add(A.t, "big");
    auto xs = randv(cols * 2, rng);
    DevBuf x(xs.size() * 4), y(uint64_t(rows) * 2 * 4);
    std::memcpy(x.as<float>(), xs.data(), xs.size() * 4);
    MatmulPush p{};
    p.x = x.addr();
    p.y = y.addr();
    p.n_tok = 2;
    p.x_stride = cols;
    p.y_stride = rows;
    std::vector<float> ref(uint64_t(rows) * 2);
    cpu::matmul(A.t, 0, xs.data(), ref.data(), 2);
    const bool texel_default = ctx().texel();
    std::unique_ptr<GpuWeights> gw_il; // the same matrix row-interleaved (CPU devices)
    GpuTensor ga_il;
    ctx().set_interleave(true);
    if (ctx().interleave()) {
        gw_il = std::make_unique<GpuWeights>(ctx());
        ga_il = gw_il->add(A.t, "big interleaved");
        CHECK(ga_il.il);
    }
    // device addresses; texel split rows; texel lane rows; interleaved (8-token tile, one token)
    for (int mode = 0; mode < 5; ++mode) {
        if (mode >= 3 && !gw_il)
            break;
        ctx().set_texel(mode >= 1 && texel_default);
        setenv("PREFIXD_VK_SPLIT_BYTES", mode == 2 ? "1000000000" : "0", 1);
        INFO("mode " << mode);
        std::memset(y.as<float>(), 0, uint64_t(rows) * 2 * 4);
        dispatch_matmul(ctx(), mode >= 3 ? ga_il : ga, nullptr, p, 1, mode == 4);
        ctx().submit_wait();
        CHECK(norm_err(y.as<float>(), ref.data(), ref.size()) < 1e-5);
        // The last rows live past 128 MiB from the tensor start: check them on their own too.
        CHECK(norm_err(y.as<float>() + rows - 64, ref.data() + rows - 64, 64) < 1e-5);
    }
    ctx().set_texel(texel_default);
    ctx().set_interleave(il_default);
    unsetenv("PREFIXD_VK_SPLIT_BYTES");
}

namespace {
ModelConfig rope_cfg(bool yarn) {
    ModelConfig c;
    c.qk_rope = 16;
    c.rope_base = 10000.0f;
    c.n_ctx_train = 4096;
    if (yarn) {
        c.rope_factor = 40.0f;
        c.rope_orig_ctx = 128;
    }
    return c;
}
void put_row(uint32_t* rows, uint32_t t, uint64_t addr, uint32_t pos) {
    rows[4 * t] = uint32_t(addr);
    rows[4 * t + 1] = uint32_t(addr >> 32);
    rows[4 * t + 2] = pos;
    rows[4 * t + 3] = 0;
}
} // namespace

// kv_store_f16 (a float16 cache) is held to the same reference rounded to float16: a value the
// device rounds the other way (its fp32 input differs in the last bits) is one f16 step off.
TEST_CASE(
    "a weight tensor takes one allocation up to the device's limit, past 1 GiB; beyond it a clear error") {
    GpuWeights gw(ctx());
    const uint64_t cap = gw.chunk_cap();
    // DeepSeek-V2's Q8_0 expert stacks are 1.34 GB: they must fit wherever the device allows it
    // (lavapipe: 2 GiB allocations, texel views to 2^31 bytes)
    CHECK(cap >= std::min<uint64_t>(ctx().limits().max_alloc & ~uint64_t(15), (uint64_t(1) << 31) - 16));
    CHECK(cap > (uint64_t(1) << 30));
    // One matrix past the limit is refused before any byte is read (data stays unread) and named.
    // (A stack past it goes in parts of whole matrices: test_vk_memory.)
    Tensor t;
    t.type = GgmlType::Q8_0;
    t.cols = 7168;
    t.rows = cap / 7168 + 8; // ~1.06 bytes per weight: over the cap
    t.n_mat = 1;
    static const uint8_t dummy[16] = {};
    t.data = dummy;
    const uint64_t before = ctx().allocated_bytes();
    CHECK_THROWS_WITH_AS(gw.add(t, "blk.3.ffn_gate_exps"),
                         doctest::Contains("tensor blk.3.ffn_gate_exps needs"), EngineError);
    CHECK(ctx().allocated_bytes() == before); // no chunk was made for it
}

TEST_CASE("kv_store matches cpu::rmsnorm and cpu::rope (plain and YaRN; f32 and f16 cache)") {
    const uint32_t seed = fresh_seed();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    for (bool yarn : {false, true})
    for (bool f16 : {false, true}) {
        INFO("yarn " << yarn << " f16 " << f16);
        const uint32_t elem = f16 ? 2 : 4;
        ModelConfig cfg = rope_cfg(yarn);
        const uint32_t rank = 72, rope = cfg.qk_rope, W = rank + rope, R = 5, ctxlen = 4096;
        const uint32_t pos[R] = {0, 3, 100, 1000, 4000};
        auto kva = randv(size_t(R) * W, rng), nw = randv(rank, rng);
        auto freqs = rope_freqs(cfg);
        DevBuf dk(kva.size() * 4), dn(rank * 4), drows(R * 16), dfreq(freqs.size() * 4),
            cache(uint64_t(2) * ctxlen * W * elem);
        std::memcpy(dk.as<float>(), kva.data(), kva.size() * 4);
        std::memcpy(dn.as<float>(), nw.data(), rank * 4);
        std::memcpy(dfreq.as<float>(), freqs.data(), freqs.size() * 4);
        for (uint32_t t = 0; t < R; ++t)
            put_row(drows.as<uint32_t>(), t, cache.addr(), pos[t]);
        KvStorePush p{};
        p.kva = dk.addr();
        p.norm = dn.addr();
        p.rows = drows.addr();
        p.freqs = dfreq.addr();
        p.layer_off = uint64_t(W) * elem; // layer 1 of 2, cache rows position-major [pos][layer][W]
        p.pos_stride = 2 * W;
        p.n_rows = R;
        p.rank = rank;
        p.rope = rope;
        p.kva_stride = W;
        p.eps = 1e-6f;
        p.mscale = 1.0f;
        ctx().dispatch(f16 ? "kv_store_f16" : "kv_store", &p, sizeof p, R);
        ctx().submit_wait();
        Tensor nt;
        nt.type = GgmlType::F32;
        nt.rows = 1;
        nt.cols = rank;
        nt.data = reinterpret_cast<const uint8_t*>(nw.data());
        for (uint32_t t = 0; t < R; ++t) {
            std::vector<float> ref(W);
            cpu::rmsnorm(kva.data() + t * W, nt, ref.data(), rank, 1e-6f);
            std::memcpy(ref.data() + rank, kva.data() + t * W + rank, rope * 4);
            cpu::rope(ref.data() + rank, rope, int32_t(pos[t]), cfg);
            std::vector<float> got(W);
            for (uint32_t c = 0; c < W; ++c) {
                const uint64_t i = (uint64_t(pos[t]) * 2 + 1) * W + c;
                got[c] = f16 ? cpu::f16_to_f32(cache.as<uint16_t>()[i]) : cache.as<float>()[i];
                if (f16)
                    ref[c] = cpu::f16_to_f32(cpu::f32_to_f16(ref[c]));
            }
            INFO("pos " << pos[t]);
            CHECK(norm_err(got.data(), ref.data(), rank) < (f16 ? 2e-3 : 1e-5));
            CHECK(norm_err(got.data() + rank, ref.data() + rank, rope) < (f16 ? 2e-3 : 1e-4));
        }
    }
}

// Absorbed MLA attention inputs (a two-layer position-major cache, the test reads layer 1) and the
// CPU reference: out[t][h] = sum_j softmax_j(scale * (q_lat . c_kv[j] + rope(q_pe) . k_pe[j])) c_kv[j].
// f16: the cache holds float16 (the _f16 kernels); the reference uses the same rounded values.
struct AttnCase {
    bool f16;
    uint32_t rank, rope, W, nh, nope, qh, R;
    std::vector<uint32_t> pos;
    float scale = 0.17f;
    ModelConfig cfg;
    std::vector<float> cache_h, qlat, q, freqs;
    DevBuf cache, dql, dq, drows, dfreq, dout;
    AttnCase(std::mt19937& rng, uint32_t rank_, uint32_t nh_, std::vector<uint32_t> pos_, bool f16_ = false)
        : f16(f16_), rank(rank_), rope(16), W(rank_ + 16), nh(nh_), nope(8), qh(8 + 16), R(uint32_t(pos_.size())),
          pos(std::move(pos_)), cfg(rope_cfg(true)),
          cache_h(randv(size_t(*std::max_element(pos.begin(), pos.end()) + 1) * 2 * W, rng)),
          qlat(randv(size_t(R) * nh * rank, rng, 0.3f)), q(randv(size_t(R) * nh * qh, rng, 0.3f)),
          freqs(rope_freqs(cfg)), cache(cache_h.size() * (f16 ? 2 : 4)), dql(qlat.size() * 4), dq(q.size() * 4),
          drows(R * 16), dfreq(freqs.size() * 4), dout(size_t(R) * nh * rank * 4) {
        for (size_t i = 0; i < cache_h.size(); ++i)
            if (f16) {
                cache.as<uint16_t>()[i] = cpu::f32_to_f16(cache_h[i]);
                cache_h[i] = cpu::f16_to_f32(cache.as<uint16_t>()[i]);
            } else {
                cache.as<float>()[i] = cache_h[i];
            }
        std::memcpy(dql.as<float>(), qlat.data(), qlat.size() * 4);
        std::memcpy(dq.as<float>(), q.data(), q.size() * 4);
        std::memcpy(dfreq.as<float>(), freqs.data(), freqs.size() * 4);
        for (uint32_t t = 0; t < R; ++t)
            put_row(drows.as<uint32_t>(), t, cache.addr(), pos[t]);
    }
    AttnPush push() {
        AttnPush p{};
        p.qlat = dql.addr();
        p.q = dq.addr();
        p.rows = drows.addr();
        p.freqs = dfreq.addr();
        p.dst = dout.addr();
        p.n_rows = R;
        p.n_head = nh;
        p.rank = rank;
        p.rope = rope;
        p.q_stride = nh * qh;
        p.q_head = qh;
        p.q_nope = nope;
        p.layer_off = uint64_t(W) * (f16 ? 2 : 4);
        p.pos_stride = 2 * W;
        p.scale = scale;
        p.mscale = 1.0f;
        return p;
    }
    std::vector<float> reference(uint32_t t, uint32_t h) const {
        std::vector<float> qpe(q.begin() + t * nh * qh + h * qh + nope, q.begin() + t * nh * qh + h * qh + qh);
        cpu::rope(qpe.data(), rope, int32_t(pos[t]), cfg);
        std::vector<float> ref(rank);
        cpu::mla_attend(qlat.data() + (t * nh + h) * rank, qpe.data(), cache_h.data() + W, 2 * W, pos[t] + 1, rank,
                        rope, scale, ref.data());
        return ref;
    }
    void check() {
        for (uint32_t t = 0; t < R; ++t)
            for (uint32_t h = 0; h < nh; ++h) {
                INFO("row " << t << " head " << h);
                CHECK(norm_err(dout.as<float>() + (t * nh + h) * rank, reference(t, h).data(), rank) < 1e-4);
            }
    }
};

TEST_CASE("attn_mla matches a CPU absorbed-attention reference across key tiles (f32 and f16 cache)") {
    const uint32_t seed = fresh_seed();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    for (bool f16 : {false, true}) {
        INFO("f16 " << f16);
        AttnCase a(rng, 72, 3, {0, 31, 33, 70}, f16);
        AttnPush p = a.push();
        ctx().dispatch(f16 ? "attn_mla_f16" : "attn_mla", &p, sizeof p, a.R, a.nh);
        ctx().submit_wait();
        a.check();
    }
}

// The CPU-driver attention (QPREP, then SCORE and PV per pass of kc keys, state carried between
// passes) against the same reference: head counts that are not multiples of the 16-head SCORE and
// 8-head PV blocks, a rank that leaves a partial 64-channel slice, rows ending in every pass, and
// passes that some rows never reach.
TEST_CASE("attn_tiled (qprep, score, pv in key passes) matches the CPU absorbed-attention reference (f32 and f16 cache)") {
    const uint32_t seed = fresh_seed();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    struct Shape { uint32_t rank, nh; std::vector<uint32_t> pos; uint32_t kc; };
    const Shape shapes[] = {{72, 3, {0, 31, 33, 70}, 128},       // one pass
                            {72, 19, {0, 15, 31, 33, 70}, 24},   // 3 passes, rows ending early
                            {128, 16, {5, 47, 48, 130}, 16},     // 9 passes
                            {64, 4, {200}, 40},                  // decode-like row, long context
                            {512, 16, {3, 40}, 32}};             // the DeepSeek shape
    for (bool f16 : {false, true})
    for (const Shape& sh : shapes) {
        AttnCase a(rng, sh.rank, sh.nh, sh.pos, f16);
        const AttnPush ap = a.push();
        const uint32_t keys = *std::max_element(sh.pos.begin(), sh.pos.end()) + 1;
        DevBuf qr(size_t(a.R) * a.nh * a.W * 4), sc(size_t(a.R) * a.nh * sh.kc * 4),
            st(size_t(a.R) * a.nh * ((a.rank + 63) / 64) * 68 * 4);
        dispatch_attention_tiled(ctx(), ap, qr.addr(), sc.addr(), st.addr(), sh.kc, keys, f16);
        ctx().submit_wait();
        INFO("rank " << sh.rank << " heads " << sh.nh << " kc " << sh.kc << " f16 " << f16);
        a.check();
    }
}

TEST_CASE("moe_combine adds the weighted expert slots to the residual") {
    const uint32_t seed = fresh_seed();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    const uint32_t R = 3, H = 100, K = 6;
    auto x = randv(R * H, rng), slots = randv(R * K * H, rng), w = randv(R * K, rng);
    DevBuf dx(x.size() * 4), ds(slots.size() * 4), dw(w.size() * 4);
    std::memcpy(dx.as<float>(), x.data(), x.size() * 4);
    std::memcpy(ds.as<float>(), slots.data(), slots.size() * 4);
    std::memcpy(dw.as<float>(), w.data(), w.size() * 4);
    CombinePush p{};
    p.x = dx.addr();
    p.slots = ds.addr();
    p.wts = dw.addr();
    p.n_rows = R;
    p.hidden = H;
    p.k = K;
    ctx().dispatch("moe_combine", &p, sizeof p, R);
    ctx().submit_wait();
    for (uint32_t t = 0; t < R; ++t)
        for (uint32_t c = 0; c < H; ++c)
            for (uint32_t k = 0; k < K; ++k)
                x[t * H + c] += w[t * K + k] * slots[(t * K + k) * H + c];
    CHECK(norm_err(dx.as<float>(), x.data(), x.size()) < 1e-5);
}

TEST_CASE("moe_route picks the same experts and weights as cpu::route and writes the expert maps") {
    const uint32_t seed = fresh_seed();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    struct Case {
        const char* name;
        uint32_t E, K, ng, ngu;
        GatingFunc gating;
        bool bias, norm;
        float scale;
    };
    const Case cases[] = {
        {"V2-Lite: softmax, no groups", 64, 6, 1, 1, GatingFunc::Softmax, false, false, 1.0f},
        {"V2: softmax, 8 groups keep 3", 160, 6, 8, 3, GatingFunc::Softmax, false, false, 16.0f},
        {"V3: sigmoid + bias, 8 groups keep 4, normalised, scaled", 256, 8, 8, 4, GatingFunc::Sigmoid, true, true, 2.5f},
        {"tiny V3: sigmoid + bias, 4 groups keep 2", 16, 4, 4, 2, GatingFunc::Sigmoid, true, true, 2.5f},
        {"experts not a multiple of the workgroup, softmax normalised", 72, 7, 1, 1, GatingFunc::Softmax, false, true, 1.0f},
    };
    for (const Case& c : cases) {
        INFO(std::string(c.name));
        ModelConfig cfg;
        cfg.n_expert = c.E;
        cfg.n_expert_used = c.K;
        cfg.n_group = c.ng;
        cfg.n_group_used = c.ngu;
        cfg.gating = c.gating;
        cfg.expert_weights_norm = c.norm;
        cfg.routed_scale = c.scale;
        const uint32_t R = 5, G = R * c.K;
        // The random rows (0, 3, 4) are drawn away from near-ties: where the reference's k-th and
        // (k+1)-th scores (or kept and dropped groups) are within rounding of each other, two correct
        // implementations may choose differently (cpu::RouteMarginWatch). Exact ties come below.
        std::vector<float> logits, bias;
        for (int draw = 0;; ++draw) {
            REQUIRE(draw < 8);
            logits = randv(uint64_t(R) * c.E, rng, 2.0f);
            bias = randv(c.E, rng, 0.3f);
            cpu::RouteMarginWatch watch;
            for (uint32_t t : {0u, 3u, 4u})
                cpu::route(logits.data() + uint64_t(t) * c.E, c.bias ? bias.data() : nullptr, cfg);
            if (watch.min() >= 1e-4f)
                break;
        }
        // row 1: a tie between the two best experts (same logit and bias): the lower index ranks first
        logits[c.E + 3] = logits[c.E + c.E - 2] = 12.0f;
        bias[c.E - 2] = bias[3];
        // row 2: one strong expert per group, weaker group by group, the rest weak: the kept groups
        // decide which experts are chosen
        if (c.ng > 1) {
            const uint32_t per = c.E / c.ng;
            for (uint32_t e = 0; e < c.E; ++e)
                logits[2 * c.E + e] = e % per == 0 ? 8.0f - 0.5f * float(e / per) : -5.0f + 0.01f * float(e);
        }
        DevBuf dl(logits.size() * 4), db(bias.size() * 4), dw(G * 4), dm(10 * G * 4);
        std::memcpy(dl.as<float>(), logits.data(), logits.size() * 4);
        std::memcpy(db.as<float>(), bias.data(), bias.size() * 4);
        std::memset(dm.as<uint32_t>(), 0xff, 10 * G * 4);
        RoutePush p{};
        p.logits = dl.addr();
        p.bias = c.bias ? db.addr() : 0;
        p.wts = dw.addr();
        p.map_a = dm.addr();
        p.map_b = dm.addr() + 5 * G * 4;
        p.n_expert = c.E;
        p.k = c.K;
        p.n_group = c.ng;
        p.n_group_used = c.ngu;
        p.n_groups = G;
        p.flags = (c.gating == GatingFunc::Sigmoid ? ROUTE_SIGMOID : 0u) | (c.norm ? ROUTE_NORM : 0u);
        p.scale = c.scale;
        ctx().dispatch("moe_route", &p, sizeof p, R);
        ctx().submit_wait();
        const uint32_t* ma = dm.as<uint32_t>();
        const uint32_t* mb = ma + 5 * G;
        const float* w = dw.as<float>();
        // row 4 of a second run: NaN logits (a broken model) still give K distinct valid experts
        std::vector<float> bad(logits);
        for (uint32_t e = 0; e < c.E; e += 3)
            bad[4 * c.E + e] = std::nanf("");
        DevBuf dbad(bad.size() * 4), dmb(10 * G * 4), dwb(G * 4);
        std::memcpy(dbad.as<float>(), bad.data(), bad.size() * 4);
        RoutePush pb = p;
        pb.logits = dbad.addr();
        pb.wts = dwb.addr();
        pb.map_a = dmb.addr();
        pb.map_b = dmb.addr() + 5 * G * 4;
        ctx().dispatch("moe_route", &pb, sizeof pb, R);
        ctx().submit_wait();
        std::vector<uint32_t> chosen;
        for (uint32_t k = 0; k < c.K; ++k)
            chosen.push_back(dmb.as<uint32_t>()[3 * (4 * c.K + k)]);
        std::sort(chosen.begin(), chosen.end());
        CHECK(chosen.back() < c.E);
        CHECK(std::adjacent_find(chosen.begin(), chosen.end()) == chosen.end());
        for (uint32_t t = 0; t < R; ++t) {
            INFO("row " << t);
            const cpu::Route ref = cpu::route(logits.data() + uint64_t(t) * c.E, c.bias ? bias.data() : nullptr, cfg);
            for (uint32_t k = 0; k < c.K; ++k) {
                const uint32_t g = t * c.K + k, off = 3 * G + 2 * g;
                INFO("slot " << k);
                CHECK(ma[3 * g] == uint32_t(ref.ids[k]));
                CHECK(mb[3 * g] == uint32_t(ref.ids[k]));
                CHECK(w[g] == doctest::Approx(ref.weights[k]).epsilon(1e-5));
                CHECK((ma[3 * g + 1] == 1 && mb[3 * g + 1] == 1));
                CHECK((ma[3 * g + 2] == off && mb[3 * g + 2] == off));
                CHECK((ma[off] == t && ma[off + 1] == g && mb[off] == g && mb[off + 1] == g));
            }
        }
    }
}

// moe_group against the grouping the host does (cpu side of VulkanBackend::ffn): every expert a
// header {e, count, offset} in expert order with offsets packed without gaps, and exactly its slots
// (as {row, slot} in map A, {slot, slot} in map B) at that offset, in any order.
TEST_CASE("moe_group groups routed slots by expert like the host's maps") {
    const uint32_t seed = fresh_seed();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    struct Case { uint32_t E, K, R; };
    for (const Case c : {Case{64, 6, 8}, Case{256, 8, 300}, Case{8, 2, 1}, Case{512, 8, 64}, Case{16, 4, 33}}) {
        INFO("E " << c.E << " K " << c.K << " R " << c.R);
        const uint32_t G = c.R * c.K;
        DevBuf src(5 * G * 4), out(2 * (3 * c.E + 2 * G) * 4);
        std::vector<std::vector<uint32_t>> per(c.E); // slots per expert, in slot order
        std::uniform_int_distribution<uint32_t> pick(0, c.E - 1);
        for (uint32_t t = 0; t < c.R; ++t) {
            std::set<uint32_t> chosen; // K distinct experts per row, as the router gives
            while (chosen.size() < c.K)
                chosen.insert(c.E > 16 ? pick(rng) % (c.E / 2) : pick(rng)); // half the experts: some stay empty
            uint32_t k = 0;
            for (uint32_t e : chosen) {
                src.as<uint32_t>()[3 * (t * c.K + k)] = e;
                per[e].push_back(t * c.K + k);
                ++k;
            }
        }
        std::memset(out.as<uint32_t>(), 0xff, 2 * (3 * c.E + 2 * G) * 4);
        GroupPush p{};
        p.src = src.addr();
        p.map_a = out.addr();
        p.map_b = out.addr() + uint64_t(3 * c.E + 2 * G) * 4;
        p.n_expert = c.E;
        p.k = c.K;
        p.n_slots = G;
        ctx().dispatch("moe_group", &p, sizeof p, 1);
        ctx().submit_wait();
        const uint32_t* ma = out.as<uint32_t>();
        const uint32_t* mb = ma + 3 * c.E + 2 * G;
        uint32_t next = 3 * c.E;
        for (uint32_t e = 0; e < c.E; ++e) {
            INFO("expert " << e);
            const uint32_t n = uint32_t(per[e].size());
            REQUIRE((ma[3 * e] == e && mb[3 * e] == e));
            REQUIRE((ma[3 * e + 1] == n && mb[3 * e + 1] == n));
            REQUIRE((ma[3 * e + 2] == next && mb[3 * e + 2] == next));
            std::vector<uint32_t> got_a, got_b;
            for (uint32_t i = 0; i < n; ++i) {
                const uint32_t slot = ma[next + 2 * i + 1];
                CHECK(ma[next + 2 * i] == slot / c.K);
                CHECK((mb[next + 2 * i] == mb[next + 2 * i + 1]));
                got_a.push_back(slot);
                got_b.push_back(mb[next + 2 * i]);
            }
            std::sort(got_a.begin(), got_a.end());
            std::sort(got_b.begin(), got_b.end());
            CHECK(got_a == per[e]);
            CHECK(got_b == per[e]);
            next += 2 * n;
        }
        CHECK(next == 3 * c.E + 2 * G);
    }
}

// llvmpipe at 512 bits (tests/vk.cmake test_vk_ops_sg16) fills only 8 of its 16 lanes in the
// split-row and row-interleaved matmuls' imageLoad, so the context must pick the device-address
// matmuls there; with 8 lanes, lavapipe's default is texel mode with row-interleaved weights.
TEST_CASE("texel mode is on for lavapipe with 8-lane subgroups and off with 16") {
    if (std::getenv("PREFIXD_VK_TEXEL") || std::getenv("PREFIXD_VK_IL") ||
        ctx().device_name().find("llvmpipe") == std::string::npos)
        return; // a forced setting or another device: nothing to decide here
    INFO(ctx().device_name() << ", " << ctx().limits().subgroup_size << " lanes");
    if (ctx().limits().subgroup_size > 8) {
        CHECK_FALSE(ctx().texel());
        CHECK_FALSE(ctx().interleave());
    } else {
        CHECK(ctx().texel());
        CHECK(ctx().interleave());
    }
}

TEST_CASE("every matmul pipeline the dispatcher can pick is embedded and compiles (warm-up list)") {
    const bool lane_rows_default = ctx().lane_rows(), texel_default = ctx().texel(),
               il_default = ctx().interleave();
    for (int layout = 0; layout < 4; ++layout) {
        ctx().set_lane_rows(layout >= 1);
        ctx().set_texel(layout >= 2);
        ctx().set_interleave(layout == 3);
        for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0,
                           GgmlType::Q4_K, GgmlType::Q6_K}) {
            const auto names = matmul_pipelines(ctx(), t);
            CHECK(names.size() >= 2);
            for (const auto& n : names) {
                INFO("pipeline " << n);
                CHECK_NOTHROW(ctx().precompile(n));
            }
        }
    }
    CHECK_THROWS_AS(ctx().precompile("matmul_no_such_type"), EngineError);
    ctx().set_lane_rows(lane_rows_default);
    ctx().set_texel(texel_default);
    ctx().set_interleave(il_default);
}

TEST_CASE("a dispatch past maxComputeWorkGroupCount in any dimension is refused with an EngineError") {
    const DeviceLimits& lim = ctx().limits();
    MatmulPush p{};
    CHECK_THROWS_AS(ctx().dispatch("moe_combine", &p, sizeof p, lim.max_groups_x + 1u, 1, 1), EngineError);
    CHECK_THROWS_AS(ctx().dispatch("moe_combine", &p, sizeof p, 1, lim.max_groups_y + 1u, 1), EngineError);
    CHECK_THROWS_AS(ctx().dispatch("moe_combine", &p, sizeof p, 1, 1, lim.max_groups_z + 1u), EngineError);
    ctx().discard();
}
