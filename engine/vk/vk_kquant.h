// Upload layout of K-quant weight rows (Q4_K, Q6_K) for shaders/matmul.comp's W_Q4_K / W_Q6_K:
// each row is repacked on its own into units of 32 consecutive elements plus scale data (per
// row or per unit; layouts in vk_kquant.cpp and the shader). Rows are whole 256-element blocks.
#pragma once

#include "../gguf.h"

#include <cstdint>

namespace prefixd::vk {

bool is_kquant(gguf::GgmlType t); // Q4_K or Q6_K
// Repacked bytes of one row of `cols` elements (a multiple of 256 and of 16 bytes).
uint64_t kquant_row_bytes(gguf::GgmlType t, uint64_t cols);
// Repacks `rows` GGUF rows (src: rows * cols/256 blocks) into dst (rows * kquant_row_bytes).
void kquant_repack(gguf::GgmlType t, const uint8_t* src, uint64_t rows, uint64_t cols, uint8_t* dst);

} // namespace prefixd::vk
