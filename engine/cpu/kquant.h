// ggml K-quant super-blocks (256 elements): Q4_K and Q6_K decoders (the CPU reference the Vulkan
// shaders are checked against) and simple encoders for the test-model generator. Layouts in
// kquant.cpp. Callers pass whole blocks (n a multiple of 256); cpu/ops.cpp dispatches here.
#pragma once

#include <cstdint>

namespace prefixd::cpu {

inline constexpr uint64_t kQK_K = 256;       // elements per K-quant super-block
inline constexpr uint64_t kQ4_K_BLOCK = 144; // f16 d, f16 dmin, 12 B scales/mins, 128 B quants
inline constexpr uint64_t kQ6_K_BLOCK = 210; // 128 B ql, 64 B qh, 16 int8 scales, f16 d

void dequantize_q4_k(const uint8_t* src, float* dst, uint64_t n);
void dequantize_q6_k(const uint8_t* src, float* dst, uint64_t n);
// dst must hold n / 256 blocks.
void quantize_q4_k(const float* src, uint8_t* dst, uint64_t n);
void quantize_q6_k(const float* src, uint8_t* dst, uint64_t n);

// Q4_K sub-block j (0..7) scale and min, 6 bits each, unpacked from the 12 packed bytes.
void q4_k_scale_min(const uint8_t* scales12, int j, int& sc, int& m);

} // namespace prefixd::cpu
