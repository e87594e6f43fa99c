// Weight upload: repacking GGUF blocks for 16-byte loads in the matmul shaders and arena
// placement under the device's allocation limit.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers" // Vk*Info{sType} idiom
#include "vk_weights.h"

#include "../cpu/ops.h"
#include "vk_kquant.h"

#include <cstring>

namespace prefixd::vk {

using gguf::GgmlType;

static uint64_t round16(uint64_t x) {
    return (x + 15) & ~uint64_t(15);
}

uint64_t GpuWeights::packed_mat_bytes(GgmlType type, uint64_t rows, uint64_t cols) {
    switch (type) {
    case GgmlType::F32:
        return round16(rows * cols * 4);
    case GgmlType::F16:
    case GgmlType::BF16:
        return round16(rows * cols * 2);
    case GgmlType::Q8_0:
        return round16(rows * cols + rows * (cols / 32) * 4);
    case GgmlType::Q4_0:
        return round16(rows * cols / 2 + rows * (cols / 32) * 4);
    case GgmlType::Q4_K: // K-quants: per-row layout of vk_kquant.cpp
    case GgmlType::Q6_K:
        return rows * kquant_row_bytes(type, cols);
    default:
        throw EngineError(std::string("Vulkan: unsupported weight type ") + gguf::type_name(type));
    }
}

void GpuWeights::repack(GgmlType type, const uint8_t* src, uint64_t rows, uint64_t cols, uint8_t* dst) {
    const uint64_t n = rows * cols;
    if (type == GgmlType::F32 || type == GgmlType::F16 || type == GgmlType::BF16) {
        std::memcpy(dst, src, n * (type == GgmlType::F32 ? 4 : 2));
        return;
    }
    if (is_kquant(type))
        return kquant_repack(type, src, rows, cols, dst);
    const uint64_t nb = n / 32;
    const bool q8 = type == GgmlType::Q8_0;
    const uint64_t bsz = q8 ? 34 : 18, qbytes = q8 ? 32 : 16;
    uint8_t* qs = dst;
    float* d = reinterpret_cast<float*>(dst + n / 32 * qbytes);
    for (uint64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = src + b * bsz;
        uint16_t h;
        std::memcpy(&h, blk, 2);
        d[b] = cpu::f16_to_f32(h);
        std::memcpy(qs + b * qbytes, blk + 2, qbytes);
    }
}

uint64_t GpuWeights::alloc(uint64_t bytes) {
    bytes = round16(bytes);
    if (chunks_.empty() || chunk_used_ + bytes > chunk_size_) {
        uint64_t cap = std::min<uint64_t>(ctx_.limits().max_alloc, 1ull << 30);
        if (bytes > cap)
            throw EngineError("Vulkan: a tensor of " + std::to_string(bytes) +
                              " bytes exceeds the allocation limit");
        chunk_size_ = std::max<uint64_t>(bytes, std::min<uint64_t>(cap, 256ull << 20));
        chunks_.push_back(ctx_.create_buffer(chunk_size_, false));
        chunk_used_ = 0;
    }
    uint64_t off = chunk_used_;
    chunk_used_ += bytes;
    used_ += bytes;
    return off;
}

GpuTensor GpuWeights::add(const Tensor& t, const char* what, bool as_f32) {
    GpuTensor g;
    if (!t)
        return g;
    g.type = as_f32 ? GgmlType::F32 : t.type;
    g.rows = t.rows;
    g.cols = t.cols;
    g.n_mat = t.n_mat;
    const uint64_t vec = g.type == GgmlType::F32                                 ? 4
                         : (g.type == GgmlType::F16 || g.type == GgmlType::BF16) ? 8
                         : is_kquant(g.type)                                     ? 256
                                                                                 : 32;
    if (!as_f32 && g.cols % vec != 0)
        throw EngineError(std::string("Vulkan: tensor ") + what + " has " + std::to_string(g.cols) +
                          " columns, not a multiple of " + std::to_string(vec));
    g.mat_stride = packed_mat_bytes(g.type, g.rows, g.cols);
    g.d_off = g.rows * g.cols * (g.type == GgmlType::Q8_0 ? 1 : 0) +
              (g.type == GgmlType::Q4_0 ? g.rows * g.cols / 2 : 0);
    const uint64_t total = g.mat_stride * g.n_mat;
    const uint64_t off = alloc(total);
    std::vector<uint8_t> tmp(total);
    for (uint64_t m = 0; m < g.n_mat; ++m) {
        const uint8_t* src = t.data + m * t.mat_bytes();
        uint8_t* dst = tmp.data() + m * g.mat_stride;
        if (as_f32) {
            for (uint64_t r = 0; r < g.rows; ++r)
                cpu::dequantize_row(t.type, src + r * t.row_bytes(),
                                    reinterpret_cast<float*>(dst) + r * g.cols, g.cols);
        } else {
            repack(g.type, src, g.rows, g.cols, dst);
        }
    }
    ctx_.upload(chunks_.back(), off, tmp.data(), total);
    g.addr = chunks_.back().addr() + off;
    return g;
}

GpuWeights::GpuWeights(Context& ctx, const Model& model, bool verbose) : ctx_(ctx) {
    const Weights& w = model.weights();
    output_norm_ = add(w.output_norm, "output_norm", true);
    output_ = add(w.output, "output");
    for (size_t il = 0; il < w.layers.size(); ++il) {
        const LayerWeights& s = w.layers[il];
        GpuLayer l;
        l.attn_norm = add(s.attn_norm, "attn_norm", true);
        l.wq = add(s.wq, "attn_q");
        l.wq_a = add(s.wq_a, "attn_q_a");
        l.q_a_norm = add(s.q_a_norm, "attn_q_a_norm", true);
        l.wq_b = add(s.wq_b, "attn_q_b");
        l.wkv_a = add(s.wkv_a, "attn_kv_a_mqa");
        l.kv_a_norm = add(s.kv_a_norm, "attn_kv_a_norm", true);
        l.wk_b = add(s.wk_b, "attn_k_b");
        l.wv_b = add(s.wv_b, "attn_v_b");
        l.wo = add(s.wo, "attn_output");
        l.ffn_norm = add(s.ffn_norm, "ffn_norm", true);
        l.ffn_gate = add(s.ffn_gate, "ffn_gate");
        l.ffn_up = add(s.ffn_up, "ffn_up");
        l.ffn_down = add(s.ffn_down, "ffn_down");
        l.gate_inp = add(s.gate_inp, "ffn_gate_inp");
        l.gate_exps = add(s.gate_exps, "ffn_gate_exps");
        l.up_exps = add(s.up_exps, "ffn_up_exps");
        l.down_exps = add(s.down_exps, "ffn_down_exps");
        l.gate_shexp = add(s.gate_shexp, "ffn_gate_shexp");
        l.up_shexp = add(s.up_shexp, "ffn_up_shexp");
        l.down_shexp = add(s.down_shexp, "ffn_down_shexp");
        layers_.push_back(l);
        if (verbose)
            std::fprintf(stderr, "vulkan: uploaded layer %zu/%zu\n", il + 1, w.layers.size());
    }
}

} // namespace prefixd::vk
