// The warm-up self-check: every kind of kernel the model's forward uses runs once on small random
// inputs of the model's own shapes and is compared with its CPU twin (engine/cpu/ops.h):
//   matmul:    every matmul kernel the model's weight types use (the layouts its weights can take,
//              one-token and token-tile variants, plain and SwiGLU with the fused RMS norm);
//   kv_store:  c_kv RMS-normed and k_pe rotated (the model's RoPE/YaRN) into a two-layer cache;
//   attention: the absorbed MLA kernels this device runs (attn_mla, or the tiled QPREP/SCORE/PV in
//              several key passes) with the model's heads, ranks and scale;
//   moe_route: the device router (the model's gating, groups, bias, normalisation and scaling);
//   moe_group: its slots grouped by expert (devices that group multi-row steps on the device);
//   moe_combine: the weighted sum of expert slots into the residual.
// Warm-up runs it before a server reports READY, so a driver, or a stale driver shader cache, that
// computes wrong answers stops start-up with an error that names the kernel instead of serving
// wrong tokens. PREFIXD_VK_SELFCHECK_FAULT perturbs references so tests can reach each error: "1"
// (every check; the first to run fails) or the name of one check above. The references of
// matmul, kv_store, attention, moe_combine and moe_route's weights are scaled by 1/0.99 (a
// normalised error of exactly 0.01); for moe_group the first expert with slots counts as wrong.
// PREFIXD_VK_SELFCHECK_VERBOSE=1 prints every check's error (lavapipe: 1e-8 to 1e-6 against limits
// of 1e-4).
#pragma GCC diagnostic ignored "-Wmissing-field-initializers" // Vk*Info{sType} idiom
#include "vk_forward.h"

#include "../cpu/ops.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace prefixd::vk {

using gguf::GgmlType;

namespace {

// The reference scale for check `name` under PREFIXD_VK_SELFCHECK_FAULT (1: no fault).
float fault_scale(const char* name) {
    const char* e = std::getenv("PREFIXD_VK_SELFCHECK_FAULT");
    if (!e || !*e)
        return 1.0f;
    const std::string v(e);
    return v == "1" || v == name ? 1.0f / 0.99f : 1.0f;
}

std::vector<float> random_vector(std::mt19937& rng, size_t n, float scale, float offset = 0.0f) {
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    std::vector<float> v(n);
    for (float& x : v)
        x = offset + scale * uni(rng);
    return v;
}

// A host-visible device buffer holding v.
Buffer upload(Context& ctx, const std::vector<float>& v) {
    Buffer b = ctx.create_buffer(std::max<size_t>(v.size(), 1) * 4, true);
    std::memcpy(b.map(), v.data(), v.size() * 4);
    return b;
}

[[noreturn]] void fail(const Context& ctx, const std::string& what, const std::string& how) {
    throw EngineError("Vulkan self-check failed on " + ctx.device_name() + ": " + what + " " + how +
                      ". A broken driver or stale driver shader cache (lavapipe: try "
                      "MESA_SHADER_CACHE_DISABLE=true) or a kernel bug; not serving wrong results");
}

void expect_close(const Context& ctx, const std::string& what, const float* got, const std::vector<float>& ref,
                  double tol) {
    const double err = cpu::normalised_error(got, ref.data(), ref.size());
    static const bool verbose = [] {
        const char* v = std::getenv("PREFIXD_VK_SELFCHECK_VERBOSE");
        return v && *v && *v != '0';
    }();
    if (verbose)
        std::fprintf(stderr, "vk self-check: %s: normalised error %.3g (limit %.0e)\n", what.c_str(), err, tol);
    if (err > tol)
        fail(ctx, what, "differs from the CPU reference by " + std::to_string(err) + " of its largest value");
}

Tensor f32_row(const std::vector<float>& v) {
    Tensor t;
    t.type = GgmlType::F32;
    t.rows = 1;
    t.cols = v.size();
    t.data = reinterpret_cast<const uint8_t*>(v.data());
    return t;
}

} // namespace

void VulkanBackend::self_check() {
    if (const char* e = std::getenv("PREFIXD_VK_SELFCHECK"); e && std::string(e) == "0") {
        std::fprintf(stderr, "warning: Vulkan self-check skipped (PREFIXD_VK_SELFCHECK=0): kernel results on %s "
                             "are not verified\n", ctx_->device_name().c_str());
        return;
    }
    std::mt19937 rng(20261124); // reproducible inputs
    check_matmuls(weight_types(), rng);
    check_attention(rng);
    check_moe(rng);
}

void VulkanBackend::check_matmuls(const std::set<GgmlType>& types, std::mt19937& rng) {
    constexpr uint32_t rows = 40, cols = 256, n_tok = 3; // 40: a partial 8-row group; 256: K-quant blocks
    constexpr float eps = 1e-6f;
    const float fault = fault_scale("matmul");
    const std::vector<float> xs = random_vector(rng, n_tok * cols, 1.0f), nw = random_vector(rng, cols, 0.25f, 1.0f);
    std::vector<float> xn(n_tok * cols);
    for (uint32_t t = 0; t < n_tok; ++t)
        cpu::rmsnorm(xs.data() + t * cols, f32_row(nw), xn.data() + t * cols, cols, eps);
    Buffer x = upload(*ctx_, xs), norm = upload(*ctx_, nw), y = ctx_->create_buffer(uint64_t(n_tok) * rows * 4, true);
    for (GgmlType type : types) {
        std::vector<uint8_t> bytes[2];
        Tensor mt[2];
        for (int m = 0; m < 2; ++m) {
            for (uint32_t r = 0; r < rows; ++r) {
                const std::vector<float> row = random_vector(rng, cols, 0.5f);
                const std::vector<uint8_t> enc = cpu::quantize_row(type, row.data(), cols);
                bytes[m].insert(bytes[m].end(), enc.begin(), enc.end());
            }
            mt[m].type = type;
            mt[m].rows = rows;
            mt[m].cols = cols;
            mt[m].data = bytes[m].data();
        }
        std::vector<float> ra(n_tok * rows), rg(n_tok * rows), ru(n_tok * rows);
        cpu::matmul(mt[0], 0, xs.data(), ra.data(), n_tok);
        cpu::matmul(mt[0], 0, xn.data(), rg.data(), n_tok);
        cpu::matmul(mt[1], 0, xn.data(), ru.data(), n_tok);
        for (size_t i = 0; i < rg.size(); ++i) {
            rg[i] = cpu::silu(rg[i]) * ru[i] * fault;
            ra[i] *= fault;
        }
        for (bool allow_il : {true, false}) {
            if (!allow_il && !(ctx_->interleave() && GpuWeights::interleavable(type)))
                break; // one layout only: already checked
            GpuWeights gw(*ctx_, 0); // exact-size chunks: a few KiB, not the tests' 256 MiB
            const GpuTensor a = gw.add(mt[0], "self-check", false, allow_il),
                            b = gw.add(mt[1], "self-check", false, allow_il);
            for (bool swiglu : {false, true})
                for (bool one_token : {true, false}) {
                    MatmulPush p{};
                    p.x = x.addr();
                    p.y = y.addr();
                    p.norm = norm.addr();
                    p.eps = eps;
                    p.n_tok = n_tok;
                    p.x_stride = cols;
                    p.y_stride = rows;
                    p.flags = swiglu ? MM_NORM_X : 0;
                    dispatch_matmul(*ctx_, a, swiglu ? &b : nullptr, p, 1, one_token);
                    ctx_->submit_wait();
                    // the kernels sum in a different order than the reference: ~1e-6 here
                    expect_close(*ctx_,
                                 std::string(swiglu ? "swiglu" : "matmul") + " (" + gguf::type_name(type) +
                                     (a.il ? ", interleaved" : "") + (one_token ? ", one token" : ", token tile") + ")",
                                 static_cast<const float*>(y.map()), swiglu ? rg : ra, 1e-4);
                }
        }
    }
}

// kv_store then attention over a two-layer position-major cache (layer 1 checked, as in the
// forward's [pos][layer][W] rows), three rows at positions whose last keys fall in different key
// passes of the tiled kernels (passes of 16 keys here). With a float16 cache (EngineOptions::kv_f16)
// the _f16 kernels run: kv_store is held to the reference rounded to float16, attention to the
// reference over the float16 values the cache holds.
void VulkanBackend::check_attention(std::mt19937& rng) {
    const uint32_t rank = cfg_.kv_lora_rank, rope = cfg_.qk_rope, nh = cfg_.n_head, nope = cfg_.qk_nope;
    const uint32_t qh = cfg_.qk_head(), W = rank + rope, layers = 2, R = 3, kc = 16;
    const uint32_t pos[R] = {0, 17, 40}, keys = 41;
    const std::vector<float> freqs = rope_freqs(cfg_), kva = random_vector(rng, size_t(R) * W, 1.0f),
                             nw = random_vector(rng, rank, 0.25f, 1.0f),
                             cache0 = random_vector(rng, size_t(keys) * layers * W, 1.0f);
    const bool f16 = opts_.kv_f16;
    Buffer cache = ctx_->create_buffer(cache0.size() * kv_elem(), true), dfreq = upload(*ctx_, freqs),
           dkva = upload(*ctx_, kva), dnorm = upload(*ctx_, nw), rows = ctx_->create_buffer(R * 16, true);
    for (size_t i = 0; i < cache0.size(); ++i)
        if (f16)
            static_cast<uint16_t*>(cache.map())[i] = cpu::f32_to_f16(cache0[i]);
        else
            static_cast<float*>(cache.map())[i] = cache0[i];
    auto* rw = static_cast<uint32_t*>(rows.map());
    for (uint32_t t = 0; t < R; ++t) {
        rw[4 * t] = uint32_t(cache.addr());
        rw[4 * t + 1] = uint32_t(cache.addr() >> 32);
        rw[4 * t + 2] = pos[t];
        rw[4 * t + 3] = 0;
    }
    KvStorePush kp = kv_push(1, layers, R);
    kp.kva = dkva.addr();
    kp.norm = dnorm.addr();
    kp.rows = rows.addr();
    kp.freqs = dfreq.addr();
    ctx_->dispatch(kv_pipeline("kv_store"), &kp, sizeof kp, R);
    ctx_->submit_wait();
    std::vector<float> cached(cache0.size()); // what the cache holds now, as floats
    for (size_t i = 0; i < cached.size(); ++i)
        cached[i] = f16 ? cpu::f16_to_f32(static_cast<const uint16_t*>(cache.map())[i])
                        : static_cast<const float*>(cache.map())[i];
    {
        const float fault = fault_scale("kv_store");
        std::vector<float> ref(size_t(R) * W), got(size_t(R) * W);
        for (uint32_t t = 0; t < R; ++t) {
            float* r = ref.data() + t * W;
            cpu::rmsnorm(kva.data() + t * W, f32_row(nw), r, rank, cfg_.rms_eps);
            std::memcpy(r + rank, kva.data() + t * W + rank, rope * 4);
            cpu::rope(r + rank, rope, int32_t(pos[t]), cfg_);
            std::memcpy(got.data() + t * W, cached.data() + (uint64_t(pos[t]) * layers + 1) * W, W * 4);
        }
        for (float& v : ref)
            v = (f16 ? cpu::f16_to_f32(cpu::f32_to_f16(v)) : v) * fault;
        // float16: a value the device rounds the other way from the reference is off by one f16 step
        expect_close(*ctx_, std::string(f16 ? "kv_store_f16" : "kv_store") + " (" + std::to_string(rank) + " + " +
                         std::to_string(rope) + " channels)",
                     got.data(), ref, f16 ? 2e-3 : 1e-4);
    }
    // queries of full scale: the softmax is far from flat, so errors in the scores show in the output
    const std::vector<float> qlat = random_vector(rng, size_t(R) * nh * rank, 1.0f),
                             q = random_vector(rng, size_t(R) * nh * qh, 1.0f);
    Buffer dql = upload(*ctx_, qlat), dq = upload(*ctx_, q), out = ctx_->create_buffer(uint64_t(R) * nh * rank * 4, true);
    AttnPush ap = attn_push(kp);
    ap.qlat = dql.addr();
    ap.q = dq.addr();
    ap.rows = rows.addr();
    ap.freqs = dfreq.addr();
    ap.dst = out.addr();
    std::string what;
    if (attn_tiled_) {
        Buffer qr = ctx_->create_buffer(uint64_t(R) * nh * W * 4, false),
               sc = ctx_->create_buffer(uint64_t(R) * nh * kc * 4, false),
               st = ctx_->create_buffer(uint64_t(R) * nh * ((rank + 63) / 64) * 68 * 4, false);
        dispatch_attention_tiled(*ctx_, ap, qr.addr(), sc.addr(), st.addr(), kc, keys, f16);
        ctx_->submit_wait();
        what = "attention (attn_qprep, " + kv_pipeline("attn_score") + ", " + kv_pipeline("attn_pv") + " in " +
               std::to_string((keys + kc - 1) / kc) + " key passes";
    } else {
        ctx_->dispatch(kv_pipeline("attn_mla"), &ap, sizeof ap, R, nh);
        ctx_->submit_wait();
        what = "attention (" + kv_pipeline("attn_mla");
    }
    what += ", " + std::to_string(nh) + " heads, rank " + std::to_string(rank) + ")";
    const float fault = fault_scale("attention");
    std::vector<float> ref(size_t(R) * nh * rank);
    for (uint32_t t = 0; t < R; ++t)
        for (uint32_t h = 0; h < nh; ++h) {
            std::vector<float> qpe(q.begin() + (t * nh + h) * qh + nope, q.begin() + (t * nh + h + 1) * qh);
            cpu::rope(qpe.data(), rope, int32_t(pos[t]), cfg_);
            float* o = ref.data() + (t * nh + h) * rank;
            cpu::mla_attend(qlat.data() + (t * nh + h) * rank, qpe.data(), cached.data() + W, uint64_t(layers) * W,
                            pos[t] + 1, rank, rope, ap.scale, o);
            for (uint32_t c = 0; c < rank; ++c)
                o[c] *= fault;
        }
    // ~1e-7 on lavapipe; a 5% error in the rotary part of the scores gives ~1e-3
    expect_close(*ctx_, what, static_cast<const float*>(out.map()), ref, 1e-4);
}

void VulkanBackend::check_moe(std::mt19937& rng) {
    const uint32_t E = cfg_.n_expert, K = cfg_.n_expert_used, H = cfg_.hidden, R = 3;
    if (E == 0 || K == 0)
        return;
    if (route_on_device(1)) {
        const uint32_t G = R * K;
        bool has_bias = false;
        for (const auto& l : model_.weights().layers)
            has_bias = has_bias || bool(l.exp_probs_b);
        const std::vector<float> logits = random_vector(rng, size_t(R) * E, 2.0f), bias = random_vector(rng, E, 0.3f);
        Buffer dl = upload(*ctx_, logits), db = upload(*ctx_, bias), wts = ctx_->create_buffer(G * 4, true),
               maps = ctx_->create_buffer(uint64_t(10) * G * 4, true);
        RoutePush rp{};
        rp.logits = dl.addr();
        rp.bias = has_bias ? db.addr() : 0;
        rp.wts = wts.addr();
        rp.map_a = maps.addr();
        rp.map_b = maps.addr() + uint64_t(5) * G * 4;
        rp.n_expert = E;
        rp.k = K;
        rp.n_group = cfg_.n_group;
        rp.n_group_used = cfg_.n_group_used;
        rp.n_groups = G;
        rp.flags = (cfg_.gating == GatingFunc::Sigmoid ? ROUTE_SIGMOID : 0u) | (cfg_.expert_weights_norm ? ROUTE_NORM : 0u);
        rp.scale = cfg_.routed_scale;
        ctx_->dispatch("moe_route", &rp, sizeof rp, R);
        ctx_->submit_wait();
        const float fault = fault_scale("moe_route");
        const auto* map_a = static_cast<const uint32_t*>(maps.map());
        std::vector<float> ref(G);
        for (uint32_t t = 0; t < R; ++t) {
            const cpu::Route r = cpu::route(logits.data() + uint64_t(t) * E, has_bias ? bias.data() : nullptr, cfg_);
            for (uint32_t k = 0; k < K; ++k) {
                const uint32_t got = map_a[3 * (t * K + k)];
                if (got != uint32_t(r.ids[k]))
                    fail(*ctx_, "moe_route (" + std::to_string(E) + " experts, top " + std::to_string(K) + ")",
                         "chose expert " + std::to_string(got) + " where the CPU reference chose " +
                             std::to_string(r.ids[k]) + " (row " + std::to_string(t) + ", rank " + std::to_string(k) + ")");
                ref[t * K + k] = r.weights[k] * fault;
            }
        }
        expect_close(*ctx_, "moe_route weights (" + std::to_string(E) + " experts, top " + std::to_string(K) + ")",
                     static_cast<const float*>(wts.map()), ref, 1e-4);
        if (device_group_) {
            // moe_group over those slots: each expert's count, packed offsets, and its slots
            Buffer grouped = ctx_->create_buffer(uint64_t(2 * (3 * E + 2 * G)) * 4, true);
            GroupPush gp{};
            gp.src = maps.addr();
            gp.map_a = grouped.addr();
            gp.map_b = grouped.addr() + uint64_t(3 * E + 2 * G) * 4;
            gp.n_expert = E;
            gp.k = K;
            gp.n_slots = G;
            ctx_->dispatch("moe_group", &gp, sizeof gp, 1);
            ctx_->submit_wait();
            const auto* m = static_cast<const uint32_t*>(grouped.map());
            std::vector<std::vector<uint32_t>> per(E);
            for (uint32_t g = 0; g < G; ++g)
                per[map_a[3 * g]].push_back(g);
            uint32_t next = 3 * E;
            const bool faulty = fault_scale("moe_group") != 1.0f;
            for (uint32_t e = 0; e < E; ++e) {
                std::vector<uint32_t> got;
                const bool header = m[3 * e] == e && m[3 * e + 1] == per[e].size() && m[3 * e + 2] == next;
                for (uint32_t i = 0; header && i < per[e].size(); ++i)
                    if (m[next + 2 * i] == m[next + 2 * i + 1] / K) // row of the slot
                        got.push_back(m[next + 2 * i + 1]);
                std::sort(got.begin(), got.end());
                if (!header || got != per[e] || (faulty && !per[e].empty()))
                    fail(*ctx_, "moe_group (" + std::to_string(E) + " experts, " + std::to_string(G) + " slots)",
                         "put other slots in expert " + std::to_string(e) + "'s group than the router chose");
                next += 2 * uint32_t(per[e].size());
            }
        }
    }
    const std::vector<float> x = random_vector(rng, size_t(R) * H, 1.0f), slots = random_vector(rng, size_t(R) * K * H, 1.0f),
                             w = random_vector(rng, size_t(R) * K, 1.0f);
    Buffer dx = upload(*ctx_, x), ds = upload(*ctx_, slots), dw = upload(*ctx_, w);
    CombinePush cp{};
    cp.x = dx.addr();
    cp.slots = ds.addr();
    cp.wts = dw.addr();
    cp.n_rows = R;
    cp.hidden = H;
    cp.k = K;
    ctx_->dispatch("moe_combine", &cp, sizeof cp, R);
    ctx_->submit_wait();
    const float fault = fault_scale("moe_combine");
    std::vector<float> ref(x);
    for (uint32_t t = 0; t < R; ++t)
        for (uint32_t c = 0; c < H; ++c) {
            for (uint32_t k = 0; k < K; ++k)
                ref[t * H + c] += w[t * K + k] * slots[(uint64_t(t) * K + k) * H + c];
            ref[t * H + c] *= fault;
        }
    expect_close(*ctx_, "moe_combine (hidden " + std::to_string(H) + ", top " + std::to_string(K) + ")",
                 static_cast<const float*>(dx.map()), ref, 1e-4);
}

} // namespace prefixd::vk
