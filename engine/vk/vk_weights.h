// Model weights on the device: each tensor repacked for wide loads (Q8_0/Q4_0 as quants then
// f32 scales per matrix) and placed in arena chunks below maxMemoryAllocationSize, addressed by
// device address so no tensor needs descriptor-range splitting.
#pragma once

#include "vk_context.h"

#include <memory>
#include <vector>

namespace prefixd::vk {

struct GpuTensor {
    uint64_t addr = 0; // device address of matrix 0
    gguf::GgmlType type = gguf::GgmlType::F32;
    uint64_t rows = 0, cols = 0, n_mat = 1;
    uint64_t mat_stride = 0; // bytes between stacked matrices
    uint64_t d_off = 0;      // bytes from a matrix start to its scales (Q8_0/Q4_0)
    bool il = false;         // rows interleaved by 8 (Context::interleave, shaders/matmul_il.comp)
    // A stack larger than one allocation (GpuWeights::chunk_cap): its matrices in parts, each one
    // GpuTensor holding matrices mat_first .. mat_first + n_mat - 1 (dispatch_matmul runs one
    // dispatch per part). Empty when the stack is whole; addr is then part 0's.
    uint64_t mat_first = 0;
    std::vector<GpuTensor> parts;
    explicit operator bool() const { return addr != 0; }
};

struct GpuLayer {
    GpuTensor attn_norm, wq, wq_a, q_a_norm, wq_b, wkv_a, kv_a_norm, wk_b, wv_b, wo, ffn_norm;
    GpuTensor ffn_gate, ffn_up, ffn_down, gate_inp, exp_probs_b, gate_exps, up_exps, down_exps;
    GpuTensor gate_shexp, up_shexp, down_shexp;
};

class GpuWeights {
  public:
    GpuWeights(Context& ctx, const Model& model, bool verbose);
    static constexpr uint64_t kMinChunk = 256ull << 20;
    // Empty arena (tests, the warm-up self-check add tensors): chunks of at least min_chunk bytes.
    explicit GpuWeights(Context& ctx, uint64_t min_chunk = kMinChunk) : ctx_(ctx), min_chunk_(min_chunk) {}
    const GpuTensor& token_embd() const { return token_embd_; }
    const GpuTensor& output_norm() const { return output_norm_; }
    const GpuTensor& output() const { return output_; }
    const std::vector<GpuLayer>& layers() const { return layers_; }
    // The most bytes one tensor (a whole expert stack included) may take: one allocation
    uint64_t chunk_cap() const;
    uint64_t stack_cap() const; // the most bytes of a stack in one part (<= chunk_cap())
    uint64_t bytes() const { return used_; }

    // Repacked byte size of one matrix (rows, cols) of `type`, rounded to 16.
    static uint64_t packed_mat_bytes(gguf::GgmlType type, uint64_t rows, uint64_t cols);
    // Repacks one matrix from GGUF encoding into `dst` (packed_mat_bytes long).
    static void repack(gguf::GgmlType type, const uint8_t* src, uint64_t rows, uint64_t cols, uint8_t* dst);
    // Types the row-interleaved layout takes, and the permutation of one repacked matrix whose row
    // count is a multiple of 8 into it (layout in shaders/matmul_il.comp).
    static bool interleavable(gguf::GgmlType type);
    static void interleave_rows(gguf::GgmlType type, const uint8_t* src, uint64_t rows, uint64_t cols,
                                uint8_t* dst);
    static uint64_t interleaved_mat_bytes(gguf::GgmlType type, uint64_t rows, uint64_t cols);
    // Uploads a tensor (weights: as stored; as_f32: dequantised, for norms). allow_il = false keeps
    // the plain layout where the matmul's activation rows may not be 16-byte aligned.
    GpuTensor add(const Tensor& t, const char* what, bool as_f32 = false, bool allow_il = true);

  private:
    struct Slot {
        size_t chunk = 0;
        uint64_t off = 0;
    };
    Slot alloc(uint64_t bytes);
    void plan_chunks();
    void add_model(const Model& model, bool verbose);
    Context& ctx_;
    uint64_t min_chunk_ = kMinChunk;
    std::vector<Buffer> chunks_;
    std::vector<uint64_t> chunk_used_;
    uint64_t used_ = 0;
    bool planning_ = false;            // add() records sizes only (first pass over a model)
    std::vector<uint64_t> plan_sizes_; // per add() call with a tensor, in call order
    std::vector<Slot> placement_;      // where each of those goes (empty: alloc() on demand)
    size_t next_slot_ = 0;
    std::unique_ptr<uint8_t[]> host_; // add()'s upload buffer where chunks are not mapped
    uint64_t host_cap_ = 0;
    GpuTensor token_embd_, output_norm_, output_;
    std::vector<GpuLayer> layers_;
};

} // namespace prefixd::vk
