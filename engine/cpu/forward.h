// The fp32 reference forward pass of a deepseek2 model, one function per part (embed, MLA
// attention done the naive decompressed way, dense FFN, MoE, output). Slow and readable: the
// oracle the Vulkan forward (absorbed MLA) is compared against.
#pragma once

#include "../model.h"

#include <cstdint>
#include <functional>
#include <vector>

namespace prefixd::cpu {

// Latent KV cache of one sequence: per layer and token, c_kv (kv_lora_rank, after kv_a_norm)
// followed by k_pe (qk_rope, after RoPE) — kv_cache_width() floats.
struct LatentCache {
    std::vector<std::vector<float>> layers; // [n_layer][n_tok * width]
    uint32_t n_tok = 0;
    bool f16 = false; // values rounded to float16 as they are stored (EngineOptions::kv_f16)
    void init(const ModelConfig& c) {
        layers.assign(c.n_layer, {});
        n_tok = 0;
    }
    void truncate(uint32_t n, uint32_t width);
};

// out (n, hidden) = rows `ids` of token_embd, dequantised. Ids must be < n_vocab.
void embed(const Model& m, const int32_t* ids, uint32_t n, float* out);

// MLA for n rows xn (n, hidden; already attn_norm'ed) at positions cache.n_tok + i. Appends the
// rows' (c_kv, k_pe) to cache.layers[il]; out (n, hidden) = W_o · attention over all cached rows.
void attention(const Model& m, uint32_t il, LatentCache& cache, const float* xn, uint32_t n, float* out);

// Dense SwiGLU: out (n, hidden) = W_down (silu(W_gate x) * (W_up x)).
void ffn_dense(const Model& m, uint32_t il, const float* xn, uint32_t n, float* out);

// MoE: router -> route() per row; out = sum_k w_k expert_k(x) + shared experts(x).
void moe(const Model& m, uint32_t il, const float* xn, uint32_t n, float* out);

// Runs rows x (n, hidden) through every layer, appending to the cache; on return x holds the
// final residual stream (before output_norm) and cache.n_tok has grown by n. progress (if set) is
// called after each layer. If a layer throws, the cache is cut back to where it was.
void forward(const Model& m, LatentCache& cache, float* x, uint32_t n,
             const std::function<void()>* progress = nullptr);

// logits (n, n_vocab) = W_out · rmsnorm(x, output_norm).
void output(const Model& m, const float* x, uint32_t n, float* logits);

} // namespace prefixd::cpu
