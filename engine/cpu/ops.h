// CPU reference operations (plain fp32, readable, single-threaded or lightly threaded).
// Each function says what it computes and the shapes. These are the oracles that the Vulkan
// shaders are compared against on fresh random inputs, and the parts of cpu/forward.
#pragma once

#include "../model.h"

#include <cstdint>
#include <span>
#include <vector>

namespace prefixd::cpu {

// Decodes n elements of a row stored as `type` (n is a multiple of the block size) into f32.
void dequantize_row(gguf::GgmlType type, const uint8_t* src, float* dst, uint64_t n);
// Encoders used by the test-model generator and tests: f32 -> stored bytes of `type`.
std::vector<uint8_t> quantize_row(gguf::GgmlType type, const float* src, uint64_t n);
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);

// y[t, r] = sum_c W[r, c] * x[t, c] for matrix `mat` of w (0 for single matrices).
// x: (n_tok, w.cols), y: (n_tok, w.rows). Rows are dequantised to f32 first.
void matmul(const Tensor& w, uint64_t mat, const float* x, float* y, uint32_t n_tok);

// out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]; x, out: (n). w: F32 (n).
void rmsnorm(const float* x, const Tensor& w, float* out, uint32_t n, float eps);

// Rotates adjacent pairs (x[2i], x[2i+1]) of x (n_dims) for position `pos` with YaRN.
void rope(float* x, uint32_t n_dims, int32_t pos, const ModelConfig& cfg);

// max|got - ref| / max|ref| (a non-finite got counts as 1e30): the normalised error the Vulkan
// kernels are held to against these references (tests, the warm-up self-check).
double normalised_error(const float* got, const float* ref, size_t n);

// In-place softmax over n values.
void softmax(float* x, uint32_t n);

// Absorbed MLA attention of one query head (the form the Vulkan kernels compute):
// out (rank) = sum_j softmax_j(scale * (q_lat . c_kv_j + q_pe . k_pe_j)) c_kv_j over keys j < n_keys,
// key j holding c_kv (rank floats) then k_pe (rope floats, already rotated) at keys + j * key_stride;
// q_pe is rotated by the caller (rope()).
void mla_attend(const float* q_lat, const float* q_pe, const float* keys, uint64_t key_stride,
                uint32_t n_keys, uint32_t rank, uint32_t rope, float scale, float* out);
inline float silu(float x);

// MoE router for one token: logits (n_expert) -> chosen expert ids and their final weights
// (gating, optional selection bias, group-limited top-k, normalisation, routed scaling).
struct Route {
    std::vector<int32_t> ids;
    std::vector<float> weights;
};
Route route(const float* router_logits, const float* selection_bias /*nullable*/, const ModelConfig& cfg);

// While one is alive, route() calls on this thread record their smallest selection margin: the gap
// between the last chosen expert's selection score and the best unchosen one, and between the
// last kept group's score and the next (group-limited routing). Where it is tiny, two backends
// whose fp32 sums differ in the last bits may choose different experts, and their outputs then
// differ by far more than rounding: comparisons against the reference draw inputs away from such
// ties (tests).
class RouteMarginWatch {
  public:
    RouteMarginWatch();
    ~RouteMarginWatch();
    RouteMarginWatch(const RouteMarginWatch&) = delete;
    RouteMarginWatch& operator=(const RouteMarginWatch&) = delete;
    float min() const { return min_; } // +inf when no route() ran
  private:
    float min_;
    RouteMarginWatch* outer_;
    friend void note_route_margin(float);
};

} // namespace prefixd::cpu

inline float prefixd::cpu::silu(float x) {
    return x / (1.0f + __builtin_expf(-x));
}
