// Internal helpers shared by the adapter-file parsers (adapter_file.cpp, adapter_npy.cpp,
// adapter_safetensors.cpp). Not part of the public API.
#pragma once

#include <cstddef>
#include <cstdint>

namespace prefixd::store::detail {
// Checks shape limits (kMaxRows/kMaxCols/kMaxTensorBytes) and that `avail` bytes hold exactly
// rows*cols elements of `elem` bytes; throws AdapterFileError prefixed with `what`. `stored_elem`:
// the element size once converted (BF16 is stored as F32), when larger than `elem`.
void check_shape(uint64_t rows, uint64_t cols, size_t elem, uint64_t avail, const char* what,
                 size_t stored_elem = 0);
} // namespace prefixd::store::detail
