// VulkanBackend: the Backend implementation on a Vulkan device. Owns the context, the uploaded
// weights, one latent KV cache per sequence and the activation scratch; step() records the
// forward of a mixed prefill/decode batch (see vk_forward.cpp for the recipe).
#pragma once

#include "vk_weights.h"

#include <memory>
#include <random>
#include <set>

namespace prefixd::vk {

// Records one matmul/SwiGLU dispatch: fills p's weight fields from w (and w2) and picks the
// pipeline by type. The caller sets x, y, map, norm, n_tok, strides, offsets, flags, eps, and may
// set ctr (a zeroed uint) for row-interleaved weights; else Context::cell_counter() gives one.
// one_token: every matrix sees at most one token per group (a single-row step) -> the texel
// path's TB1 variants. il_variant (tools/vk_op_bench): another interleaved pipeline family for
// row-interleaved weights, e.g. "il1r4" picks matmul_il1r4_<type> / swiglu_il1r4_<type>.
void dispatch_matmul(Context& ctx, const GpuTensor& w, const GpuTensor* w2, MatmulPush p, uint32_t groups,
                     bool one_token = false, const char* il_variant = nullptr);
// The matmul/SwiGLU pipelines dispatch_matmul can pick on this device for weights of `type`.
std::vector<std::string> matmul_pipelines(const Context& ctx, gguf::GgmlType type);

// Records the tiled attention for CPU drivers (shaders/attn_tiled.comp) of ap's rows: qr holds
// n_rows*n_head*(rank+rope) floats, scores n_rows*n_head*kc, state (when keys > kc)
// n_rows*n_head*ceil(rank/64)*68; keys = the largest row position + 1.
// kv_f16: the cache holds float16 (the _f16 pipelines).
void dispatch_attention_tiled(Context& ctx, const AttnPush& ap, uint64_t qr, uint64_t scores, uint64_t state,
                              uint32_t kc, uint32_t keys, bool kv_f16 = false);

// RoPE frequency per rotated pair, exactly as cpu::rope forms theta: theta_i = pos * f_i.
std::vector<float> rope_freqs(const ModelConfig& cfg);

class VulkanBackend final : public Backend {
  public:
    VulkanBackend(const Model& model, const EngineOptions& opts);
    ~VulkanBackend() override;
    std::string device_name() const override {
        const std::string& d = ctx_->driver_info();
        return d.empty() ? ctx_->device_name() : ctx_->device_name() + ", " + d;
    }
    SeqId create_sequence() override;
    void free_sequence(SeqId) noexcept override;
    uint32_t sequence_length(SeqId) const override;
    void copy_prefix(SeqId src, SeqId dst, uint32_t n) override;
    void truncate(SeqId, uint32_t n) override;
    std::vector<ItemOutput> step(const std::vector<BatchItem>& batch) override;
    uint64_t peak_device_memory() const override { return ctx_->peak_bytes(); }
    uint64_t device_memory_in_use() const override { return ctx_->allocated_bytes(); }
    StepTime step_time() const override { return step_time_; }
    uint32_t max_step_rows() const override { return ctx_->limits().max_groups_x; } // one workgroup per row
    void warm_up() override;
    // Known-answer check of every kernel kind the forward uses (vk_selfcheck.cpp: the matmuls for
    // the model's weight types, kv_store, attention, moe_route, moe_combine) against the CPU twins;
    // warm_up runs it. Throws EngineError naming the kernel whose result differs.
    // PREFIXD_VK_SELFCHECK=0 skips it (with a warning on stderr).
    void self_check() override;
    Context& context() { return *ctx_; }

  private:
    std::vector<ItemOutput> run_step(const std::vector<BatchItem>& batch);
    StepTime step_time_;
    struct Seq {
        bool used = false;
        uint32_t gen = 0; // bumped at each create: a freed id is never valid again (SeqId = slot | gen << 16)
        uint32_t len = 0;
        uint32_t cap = 0; // positions the cache holds now (grows on demand up to max_ctx)
        Buffer cache;     // (cap, n_layer, kv_lora_rank + qk_rope) f32 or f16, position-major so it grows by copy
    };
    // Scratch offsets (bytes) inside scratch_ for a step of R rows and L logit rows.
    struct Scratch {
        uint64_t x, qa, q, kva, qlat, lat, v, rlog, hs, h, slots, wts, map, rows, freqs, logits, qr, scores, state, total;
    };
    Scratch layout(uint32_t R, uint32_t L) const;
    uint64_t expert_map_words(uint32_t R) const; // the expert maps' part of Scratch::map
    Seq& seq(SeqId id);
    uint64_t kv_row_bytes() const; // one position's cache row, all layers
    uint32_t kv_elem() const { return opts_.kv_f16 ? 2 : 4; } // bytes per cached value
    std::string kv_pipeline(const char* base) const { return opts_.kv_f16 ? std::string(base) + "_f16" : base; }
    void reserve(Seq& s, uint32_t positions);
    const Seq& seq(SeqId id) const;
    const Seq* find_seq(SeqId id) const;
    void matmul(const GpuTensor& w, const GpuTensor* w2, uint64_t x, uint64_t y, uint32_t n_tok,
                uint32_t x_stride, uint32_t y_stride, uint32_t flags, uint64_t norm = 0, uint64_t map = 0,
                uint32_t groups = 1, uint32_t x_mat_off = 0, uint32_t y_mat_off = 0);
    // The model-derived fields of the kv_store push for R rows of layer il of an n_layers cache
    // ([pos][layer][W] rows), and of the attention push over the same cache; callers add addresses.
    KvStorePush kv_push(uint32_t il, uint32_t n_layers, uint32_t R) const;
    AttnPush attn_push(const KvStorePush& kp) const;
    void attention(uint32_t il, uint32_t R, const Scratch& s);
    void ffn(uint32_t il, uint32_t R, const Scratch& s);
    // Whether a step of R rows routes its MoE layers on the device (shaders/moe_route.comp; several
    // rows also moe_group.comp): one-row steps, and every step where device_group_ is on; up to 512
    // experts. PREFIXD_VK_DEVICE_ROUTE=0 keeps every step on the host.
    bool route_on_device(uint32_t R) const;
    // Tiled attention (dispatch_attention_tiled; CPU devices, PREFIXD_VK_ATTN=tiled|wg overrides):
    // keys in passes of attn_kc_ so that the step's score buffer stays under 64 MiB.
    void plan_attention(uint32_t R, uint32_t max_keys);
    std::set<gguf::GgmlType> weight_types() const; // of every matrix, plus F32 (norms, f32 operands)
    void check_matmuls(const std::set<gguf::GgmlType>& types, std::mt19937& rng);
    void check_attention(std::mt19937& rng);
    void check_moe(std::mt19937& rng);

    const Model& model_;
    const ModelConfig& cfg_;
    EngineOptions opts_;
    std::unique_ptr<Context> ctx_;
    std::unique_ptr<GpuWeights> w_;
    std::vector<Seq> seqs_;
    uint32_t max_ctx_ = 0;
    bool one_token_ = false; // this step has one row (PREFIXD_VK_TB1=0 turns the TB1 shaders off)
    bool attn_tiled_ = false;
    bool device_group_ = false; // multi-row steps group MoE slots on the device (PREFIXD_VK_DEVICE_GROUP=0|1)
    uint32_t attn_keys_ = 0, attn_kc_ = 0, attn_passes_ = 1; // this step's keys (max over rows), pass size
    Buffer scratch_;
    // The step's logits copied out of scratch_ where its memory is not host-cached (device memory
    // behind a PCIe BAR reads at a few MB/s); PREFIXD_VK_READBACK=1 copies always (tests).
    Buffer readback_;
    uint64_t base_ = 0; // scratch_.addr()
};

} // namespace prefixd::vk
