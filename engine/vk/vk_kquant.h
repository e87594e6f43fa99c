// Upload layout of K-quant (Q4_K, Q6_K) and Q5_0 weight rows for matmul.comp's W_Q4_K/Q6_K/Q5_0:
// each row is repacked on its own into units of 32 consecutive elements plus scale data (per
// row or per unit; layouts in vk_kquant.cpp and the shader). Rows are whole blocks.
#pragma once

#include "../gguf.h"

#include <cstdint>

namespace prefixd::vk {

// Types uploaded with this file's per-row layouts and decoded by shaders/kquant.glsl: Q4_K, Q6_K,
// and Q5_0 (llama.cpp's fallback for Q4_K rows that are not whole 256-blocks). No texel variants.
bool is_kquant(gguf::GgmlType t);
// Repacked bytes of one row of `cols` elements (whole blocks; a multiple of 16 bytes).
uint64_t kquant_row_bytes(gguf::GgmlType t, uint64_t cols);
// Repacks `rows` GGUF rows (whole blocks each) into dst (rows * kquant_row_bytes).
void kquant_repack(gguf::GgmlType t, const uint8_t* src, uint64_t rows, uint64_t cols, uint8_t* dst);

} // namespace prefixd::vk
