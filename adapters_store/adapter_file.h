// Strict parsers for adapter embedding files: NumPy .npy (v1/v2/v3, '<f4'/'<f2', 2-D, C order),
// safetensors (bounds-checked header, F32/F16/BF16 tensors, PEFT "prompt_embeddings") and raw
// little-endian f32 with an explicit shape. No SQLite here, so the fuzz target links only this.
#pragma once

#include "errors.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace prefixd::store {

enum class DType : uint8_t { F32 = 0, F16 = 1 };
const char* dtype_name(DType);         // "f32" | "f16"
size_t dtype_size(DType);              // 4 | 2
DType parse_dtype(const std::string&); // "f32"/"float32"/"f16"/"float16"; throws InvalidArgument

// Limits applied to every imported tensor (a virtual-token prefix is small).
constexpr uint64_t kMaxRows = 1u << 16; // n_virtual
constexpr uint64_t kMaxCols = 1u << 17; // hidden
// Below SQLite's default SQLITE_MAX_LENGTH (1,000,000,000 bytes per blob and per row), with room
// for the rest of the adapter row; a larger tensor could never be stored.
constexpr uint64_t kMaxTensorBytes = 900ull << 20; // 900 MiB = 943,718,400 bytes
constexpr const char* kMaxTensorBytesText = "900 MiB";

// A 2-D row-major tensor [rows, cols] whose bytes are little-endian values of `dtype`.
struct Tensor2D {
    DType dtype = DType::F32;
    uint32_t rows = 0;
    uint32_t cols = 0;
    std::vector<uint8_t> data; // rows * cols * dtype_size(dtype) bytes
    size_t byte_size() const { return size_t(rows) * cols * dtype_size(dtype); }
    std::vector<float> to_f32() const; // converts f16 -> f32 when needed
};

enum class AdapterFormat : uint8_t { Npy, Safetensors, Raw };
// "npy" | "safetensors" | "raw"; throws InvalidArgument on anything else.
AdapterFormat parse_format(const std::string&);
// Guess from the file extension (.npy, .safetensors, .bin/.raw/.f32); nullopt when unknown.
std::optional<AdapterFormat> format_from_path(const std::string& path);

// Each parser validates everything (magic, header, dtype, rank, bounds, exact length) and
// rejects non-finite values; it throws AdapterFileError with context on any problem.
Tensor2D parse_npy(std::span<const uint8_t> bytes);
// `tensor`: which tensor to take. Without it the file must hold exactly one tensor, or one
// named "prompt_embeddings" (PEFT prompt tuning). BF16 tensors are converted to F32.
Tensor2D parse_safetensors(std::span<const uint8_t> bytes, const std::optional<std::string>& tensor = {});
// Names and shapes of all tensors in a safetensors file (for error messages / listings).
std::vector<std::string> safetensors_tensor_names(std::span<const uint8_t> bytes);
Tensor2D parse_raw_f32(std::span<const uint8_t> bytes, uint64_t rows, uint64_t cols);
// Parses "N,H" (also "NxH"); throws InvalidArgument.
std::pair<uint64_t, uint64_t> parse_shape(const std::string&);

// Parses `bytes` in the given format. `shape` is required for Raw and ignored otherwise.
Tensor2D parse_adapter_file(std::span<const uint8_t> bytes, AdapterFormat fmt,
                            std::optional<std::pair<uint64_t, uint64_t>> shape = {},
                            const std::optional<std::string>& tensor = {});
// Reads a whole file (throws AdapterFileError on I/O errors, and before reading anything for files
// over kMaxTensorBytes + 1 MiB).
std::vector<uint8_t> read_file_bytes(const std::string& path);

// Throws AdapterFileError naming the first element (row, col) that is NaN, Inf, or outside
// +-kMaxEmbedAbs (engine/input_limits.h).
void check_finite(const Tensor2D&);
// A version-1 .npy file ('<f4' or '<f2', C order) holding `t`.
std::vector<uint8_t> write_npy(const Tensor2D& t);

// Byte length of the character at s[i] when it is valid UTF-8 (no overlong forms, surrogates or
// code points past U+10FFFF) and not a control character (C0, DEL, C1); 0 otherwise. Used to
// refuse unprintable adapter text and to escape it when printing.
size_t printable_utf8_len(std::string_view s, size_t i);

// IEEE half <-> float conversions (round-to-nearest-even), exposed for tests and the daemon.
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float bf16_to_f32(uint16_t b);

} // namespace prefixd::store
