// fp32 reference forward of DeepSeek-V2/V3 (deepseek2): embed -> per layer [attn_norm -> MLA ->
// residual -> ffn_norm -> dense FFN or MoE -> residual] -> output_norm -> output. MLA here
// materialises per-head K/V from the cached latent (the "naive" form), so it checks the Vulkan
// backend's absorbed form independently.
#include "forward.h"

#include "ops.h"

#include <cmath>
#include <cstring>
#include <stdexcept>

namespace prefixd::cpu {

void LatentCache::truncate(uint32_t n, uint32_t width) {
    if (n > n_tok)
        throw std::out_of_range("truncate beyond cache length");
    for (auto& l : layers)
        l.resize(uint64_t(n) * width);
    n_tok = n;
}

void embed(const Model& m, const int32_t* ids, uint32_t n, float* out) {
    const Tensor& te = m.weights().token_embd;
    for (uint32_t i = 0; i < n; ++i) {
        if (ids[i] < 0 || uint64_t(ids[i]) >= te.rows)
            throw std::out_of_range("token id out of range");
        dequantize_row(te.type, te.data + uint64_t(ids[i]) * te.row_bytes(), out + uint64_t(i) * te.cols,
                       te.cols);
    }
}

// A per-head matrix of a stacked tensor, dequantised: (rows, cols) f32.
static std::vector<float> dequant_mat(const Tensor& t, uint64_t mat) {
    std::vector<float> out(t.rows * t.cols);
    const uint8_t* base = t.data + mat * t.mat_bytes();
    for (uint64_t r = 0; r < t.rows; ++r)
        dequantize_row(t.type, base + r * t.row_bytes(), out.data() + r * t.cols, t.cols);
    return out;
}

void attention(const Model& m, uint32_t il, LatentCache& cache, const float* xn, uint32_t n, float* out) {
    const ModelConfig& c = m.config();
    const LayerWeights& L = m.weights().layers[il];
    const uint32_t H = c.n_head, nope = c.qk_nope, rd = c.qk_rope, qk = c.qk_head(), R = c.kv_lora_rank;
    const uint32_t vh = c.v_head, W = c.kv_cache_width(), pos0 = cache.n_tok;

    // q (n, H, qk): direct projection or the q_lora path (down, RMSNorm, up).
    std::vector<float> q(uint64_t(n) * H * qk);
    if (c.q_lora_rank) {
        std::vector<float> qa(uint64_t(n) * c.q_lora_rank);
        matmul(L.wq_a, 0, xn, qa.data(), n);
        for (uint32_t t = 0; t < n; ++t)
            rmsnorm(&qa[uint64_t(t) * c.q_lora_rank], L.q_a_norm, &qa[uint64_t(t) * c.q_lora_rank],
                    c.q_lora_rank, c.rms_eps);
        matmul(L.wq_b, 0, qa.data(), q.data(), n);
    } else {
        matmul(L.wq, 0, xn, q.data(), n);
    }
    // Latent: kv_a (n, R + rd) -> c_kv = rmsnorm(first R), k_pe = rope(last rd); append to cache.
    std::vector<float> kva(uint64_t(n) * W);
    matmul(L.wkv_a, 0, xn, kva.data(), n);
    auto& lc = cache.layers[il];
    for (uint32_t t = 0; t < n; ++t) {
        float* row = &kva[uint64_t(t) * W];
        rmsnorm(row, L.kv_a_norm, row, R, c.rms_eps);
        rope(row + R, rd, int32_t(pos0 + t), c);
        if (cache.f16)
            for (uint32_t i = 0; i < W; ++i)
                row[i] = f16_to_f32(f32_to_f16(row[i]));
        lc.insert(lc.end(), row, row + W);
        for (uint32_t h = 0; h < H; ++h)
            rope(&q[(uint64_t(t) * H + h) * qk + nope], rd, int32_t(pos0 + t), c);
    }
    const uint32_t T = pos0 + n; // cached rows visible to the last query
    const float scale = c.attn_scale();
    std::vector<float> o(uint64_t(n) * H * vh, 0.0f), k(uint64_t(T) * nope), v(uint64_t(T) * vh), s(T);
    for (uint32_t h = 0; h < H; ++h) {
        // Decompress this head's K_nope (T, nope) and V (T, vh) from every cached latent.
        auto kb = dequant_mat(L.wk_b, h); // (R, nope): k_nope[d] = sum_r kb[r, d] c[r]
        auto vb = dequant_mat(L.wv_b, h); // (vh, R):   v[d] = sum_r vb[d, r] c[r]
        for (uint32_t j = 0; j < T; ++j) {
            const float* cj = &lc[uint64_t(j) * W];
            for (uint32_t d = 0; d < nope; ++d) {
                float acc = 0;
                for (uint32_t r = 0; r < R; ++r)
                    acc += kb[uint64_t(r) * nope + d] * cj[r];
                k[uint64_t(j) * nope + d] = acc;
            }
            for (uint32_t d = 0; d < vh; ++d) {
                float acc = 0;
                for (uint32_t r = 0; r < R; ++r)
                    acc += vb[uint64_t(d) * R + r] * cj[r];
                v[uint64_t(j) * vh + d] = acc;
            }
        }
        for (uint32_t t = 0; t < n; ++t) {
            const float* qh = &q[(uint64_t(t) * H + h) * qk];
            const uint32_t visible = pos0 + t + 1; // causal
            for (uint32_t j = 0; j < visible; ++j) {
                float acc = 0;
                for (uint32_t d = 0; d < nope; ++d)
                    acc += qh[d] * k[uint64_t(j) * nope + d];
                const float* kpe = &lc[uint64_t(j) * W + R];
                for (uint32_t d = 0; d < rd; ++d)
                    acc += qh[nope + d] * kpe[d];
                s[j] = acc * scale;
            }
            softmax(s.data(), visible);
            float* oh = &o[(uint64_t(t) * H + h) * vh];
            for (uint32_t j = 0; j < visible; ++j)
                for (uint32_t d = 0; d < vh; ++d)
                    oh[d] += s[j] * v[uint64_t(j) * vh + d];
        }
    }
    matmul(L.wo, 0, o.data(), out, n);
}

// SwiGLU with matrix `mat` of stacked gate/up/down tensors, for n rows.
static void swiglu(const Tensor& gate, const Tensor& up, const Tensor& down, uint64_t mat, const float* x,
                   uint32_t n, float* out) {
    const uint64_t F = gate.rows;
    std::vector<float> g(n * F), u(n * F);
    matmul(gate, mat, x, g.data(), n);
    matmul(up, mat, x, u.data(), n);
    for (uint64_t i = 0; i < n * F; ++i)
        g[i] = silu(g[i]) * u[i];
    matmul(down, mat, g.data(), out, n);
}

void ffn_dense(const Model& m, uint32_t il, const float* xn, uint32_t n, float* out) {
    const LayerWeights& L = m.weights().layers[il];
    swiglu(L.ffn_gate, L.ffn_up, L.ffn_down, 0, xn, n, out);
}

void moe(const Model& m, uint32_t il, const float* xn, uint32_t n, float* out) {
    const ModelConfig& c = m.config();
    const LayerWeights& L = m.weights().layers[il];
    const uint32_t E = c.hidden;
    std::vector<float> logits(uint64_t(n) * c.n_expert);
    matmul(L.gate_inp, 0, xn, logits.data(), n);
    const float* bias = L.exp_probs_b ? reinterpret_cast<const float*>(L.exp_probs_b.data) : nullptr;
    // Group rows by expert so each expert's weights are read once for all its rows.
    std::vector<std::vector<std::pair<uint32_t, float>>> by_expert(c.n_expert);
    for (uint32_t t = 0; t < n; ++t) {
        Route r = route(&logits[uint64_t(t) * c.n_expert], bias, c);
        for (size_t k = 0; k < r.ids.size(); ++k)
            by_expert[r.ids[k]].emplace_back(t, r.weights[k]);
    }
    if (L.gate_shexp) {
        swiglu(L.gate_shexp, L.up_shexp, L.down_shexp, 0, xn, n, out);
    } else {
        std::memset(out, 0, sizeof(float) * n * E);
    }
    std::vector<float> xs, ys;
    for (uint32_t e = 0; e < c.n_expert; ++e) {
        const auto& rows = by_expert[e];
        if (rows.empty())
            continue;
        xs.resize(rows.size() * E);
        ys.resize(rows.size() * E);
        for (size_t i = 0; i < rows.size(); ++i)
            std::memcpy(&xs[i * E], xn + uint64_t(rows[i].first) * E, E * 4);
        swiglu(L.gate_exps, L.up_exps, L.down_exps, e, xs.data(), uint32_t(rows.size()), ys.data());
        for (size_t i = 0; i < rows.size(); ++i)
            for (uint32_t d = 0; d < E; ++d)
                out[uint64_t(rows[i].first) * E + d] += rows[i].second * ys[i * E + d];
    }
}

void forward(const Model& m, LatentCache& cache, float* x, uint32_t n,
             const std::function<void()>* progress) {
    const ModelConfig& c = m.config();
    const uint32_t E = c.hidden;
    if (cache.layers.size() != c.n_layer)
        cache.init(c);
    // attention() appends each layer's rows as it goes: a throw mid-way (e.g. bad_alloc) must not
    // leave some layers longer than n_tok, or a retry would append after the stale rows.
    struct Rollback {
        LatentCache& cache;
        uint32_t n_tok, width;
        bool done = false;
        ~Rollback() {
            if (!done)
                cache.truncate(n_tok, width);
        }
    } rollback{cache, cache.n_tok, c.kv_cache_width()};
    std::vector<float> xn(uint64_t(n) * E), y(uint64_t(n) * E);
    for (uint32_t il = 0; il < c.n_layer; ++il) {
        const LayerWeights& L = m.weights().layers[il];
        for (uint32_t t = 0; t < n; ++t)
            rmsnorm(x + uint64_t(t) * E, L.attn_norm, &xn[uint64_t(t) * E], E, c.rms_eps);
        attention(m, il, cache, xn.data(), n, y.data());
        for (uint64_t i = 0; i < uint64_t(n) * E; ++i)
            x[i] += y[i];
        for (uint32_t t = 0; t < n; ++t)
            rmsnorm(x + uint64_t(t) * E, L.ffn_norm, &xn[uint64_t(t) * E], E, c.rms_eps);
        if (c.is_moe_layer(il)) {
            moe(m, il, xn.data(), n, y.data());
        } else {
            ffn_dense(m, il, xn.data(), n, y.data());
        }
        for (uint64_t i = 0; i < uint64_t(n) * E; ++i)
            x[i] += y[i];
        if (progress && *progress)
            (*progress)();
    }
    cache.n_tok += n;
    rollback.done = true;
}

void output(const Model& m, const float* x, uint32_t n, float* logits) {
    const ModelConfig& c = m.config();
    std::vector<float> xn(uint64_t(n) * c.hidden);
    for (uint32_t t = 0; t < n; ++t)
        rmsnorm(x + uint64_t(t) * c.hidden, m.weights().output_norm, &xn[uint64_t(t) * c.hidden], c.hidden,
                c.rms_eps);
    matmul(m.weights().output, 0, xn.data(), logits, n);
}

} // namespace prefixd::cpu
