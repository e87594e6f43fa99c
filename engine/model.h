// DeepSeek-V2/V3 (llama.cpp `deepseek2`) model: hyper-parameters read from GGUF metadata and
// weight views into the mapped file. Shapes are written math-style as (rows, cols) of the
// row-major matrix, i.e. (ne[1], ne[0]) of the ggml tensor; y = W x contracts over cols.
#pragma once

#include "gguf.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace prefixd {

struct ModelError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

enum class GatingFunc : uint32_t { Softmax = 1, Sigmoid = 2 };

struct ModelConfig {
    std::string name;                // general.name
    uint32_t n_vocab = 0;            // rows of token_embd
    uint32_t n_ctx_train = 0;        // deepseek2.context_length
    uint32_t hidden = 0;             // deepseek2.embedding_length
    uint32_t n_layer = 0;            // deepseek2.block_count
    uint32_t n_head = 0;             // attention.head_count
    uint32_t n_ff = 0;               // feed_forward_length (dense layers)
    uint32_t n_ff_exp = 0;           // expert_feed_forward_length (per expert)
    uint32_t n_expert = 0;           // expert_count (routed)
    uint32_t n_expert_used = 0;      // expert_used_count (top-k)
    uint32_t n_expert_shared = 0;    // expert_shared_count
    uint32_t n_dense_lead = 0;       // leading_dense_block_count (first_k_dense)
    uint32_t n_group = 1;            // expert_group_count
    uint32_t n_group_used = 1;       // expert_group_used_count
    float routed_scale = 1.0f;       // expert_weights_scale
    bool expert_weights_norm = false;
    GatingFunc gating = GatingFunc::Softmax;
    uint32_t q_lora_rank = 0;        // 0 = no q_lora (V2-Lite)
    uint32_t kv_lora_rank = 0;       // attention.kv_lora_rank (512 for V2-Lite/V3)
    uint32_t qk_nope = 0;            // per-head non-rotary q/k dim (128)
    uint32_t qk_rope = 0;            // rope.dimension_count (64)
    uint32_t v_head = 0;             // per-head value dim (128)
    float rms_eps = 1e-6f;
    float rope_base = 10000.0f;
    // YaRN (rope.scaling.*); factor 1 = none.
    float rope_factor = 1.0f;
    uint32_t rope_orig_ctx = 0;
    float yarn_log_mul = 0.0f;       // rope.scaling.yarn_log_multiplier (0.1707 for V2)
    float yarn_beta_fast = 32.0f;
    float yarn_beta_slow = 1.0f;
    // Tokenizer specials
    int32_t bos_id = -1, eos_id = -1, pad_id = -1;
    bool add_bos = true;

    uint32_t qk_head() const { return qk_nope + qk_rope; }
    uint32_t kv_cache_width() const { return kv_lora_rank + qk_rope; }  // per token per layer
    bool is_moe_layer(uint32_t il) const { return n_expert > 0 && il >= n_dense_lead; }
    // Softmax scale including YaRN mscale^2 (DeepSeek folds mscale into the scale).
    float attn_scale() const;
    // A short digest of the shape, used as the adapter "model fingerprint".
    std::string fingerprint() const;
};

// A weight matrix view (rows, cols) in its stored type; data points into the mmap.
// For stacked expert tensors, n_mat > 1 and matrix e starts at data + e * mat_bytes().
struct Tensor {
    const gguf::TensorInfo* info = nullptr;
    gguf::GgmlType type = gguf::GgmlType::F32;
    uint64_t rows = 0, cols = 0, n_mat = 1;
    const uint8_t* data = nullptr;
    uint64_t row_bytes() const;
    uint64_t mat_bytes() const { return row_bytes() * rows; }
    explicit operator bool() const { return data != nullptr; }
};

struct LayerWeights {
    Tensor attn_norm;      // (hidden)
    // Query: either a direct projection or the low-rank q_lora path.
    Tensor wq;             // (n_head*qk_head, hidden)           when q_lora_rank == 0
    Tensor wq_a;           // (q_lora_rank, hidden)              when q_lora_rank > 0
    Tensor q_a_norm;       // (q_lora_rank)
    Tensor wq_b;           // (n_head*qk_head, q_lora_rank)
    Tensor wkv_a;          // (kv_lora_rank + qk_rope, hidden)   attn_kv_a_mqa
    Tensor kv_a_norm;      // (kv_lora_rank)
    // Either the fused kv_b or the split k_b / v_b (current converters). The loader fills
    // wk_b/wv_b from kv_b when only kv_b is present (dequantised to F32 then, small).
    Tensor wkv_b;          // (n_head*(qk_nope+v_head), kv_lora_rank)
    Tensor wk_b;           // n_mat=n_head of (kv_lora_rank, qk_nope): q_lat_h = wk_b_h q_nope_h
    Tensor wv_b;           // n_mat=n_head of (v_head, kv_lora_rank):   v_h = wv_b_h latent_h
    Tensor wo;             // (hidden, n_head*v_head)
    Tensor ffn_norm;       // (hidden)
    // Dense FFN (layers < n_dense_lead)
    Tensor ffn_gate, ffn_up;  // (n_ff, hidden)
    Tensor ffn_down;          // (hidden, n_ff)
    // MoE
    Tensor gate_inp;          // (n_expert, hidden) router, F32
    Tensor exp_probs_b;       // (n_expert) score-correction bias (V3), F32
    Tensor gate_exps, up_exps;   // n_mat=n_expert of (n_ff_exp, hidden)
    Tensor down_exps;            // n_mat=n_expert of (hidden, n_ff_exp)
    Tensor gate_shexp, up_shexp; // (n_ff_exp*n_expert_shared, hidden)
    Tensor down_shexp;           // (hidden, n_ff_exp*n_expert_shared)
};

struct Weights {
    Tensor token_embd;     // (n_vocab, hidden)
    Tensor output_norm;    // (hidden)
    Tensor output;         // (n_vocab, hidden)
    std::vector<LayerWeights> layers;
};

// A loaded model: the mapped file, config, weight views, and owned buffers for tensors the
// loader had to derive (k_b/v_b split from kv_b).
class Model {
  public:
    // Throws ModelError with a clear message: wrong architecture, missing key or tensor,
    // wrong shape, unsupported type (naming tensor and type), truncated file.
    static std::unique_ptr<Model> load(const std::string& path);

    const ModelConfig& config() const { return config_; }
    const Weights& weights() const { return weights_; }
    const gguf::Parsed& gguf() const { return file_.parsed(); }

  private:
    explicit Model(gguf::File f) : file_(std::move(f)) {}
    gguf::File file_;
    ModelConfig config_;
    Weights weights_;
    std::vector<std::vector<uint8_t>> derived_;  // storage for derived tensors
};

}  // namespace prefixd
