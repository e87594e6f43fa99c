// GGUF container: parse (from any byte span, fuzzable), open by mmap, and write (test models).
// Format facts (GGUF v2/v3): "GGUF" magic, version, tensor count, metadata KV pairs, tensor infos,
// then the data section aligned to general.alignment (default 32). Dims are ggml order (ne[0]
// is the fastest-varying). Every parse error throws GgufError naming what was wrong.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace prefixd::gguf {

struct GgufError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// ggml tensor types (values as in the GGUF spec). Only some are supported by the engine.
enum class GgmlType : uint32_t {
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, I8 = 24, I16 = 25,
    I32 = 26, I64 = 27, F64 = 28, BF16 = 30,
};
const char* type_name(GgmlType t);          // "Q8_0", or "type#N" for unknown values
uint64_t type_block_elems(GgmlType t);      // per block: 32 Q8_0/Q4_0, 256 K-quants, 1 F32; 0 = unknown
uint64_t type_block_bytes(GgmlType t);      // bytes per block; 0 = unknown
bool engine_supports(GgmlType t);           // F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K, Q6_K
const char* engine_supported_types();       // "F32, F16, ..., Q6_K" (for error messages)

// Metadata value types (GGUF spec numbering).
enum class ValueType : uint32_t {
    U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9,
    U64 = 10, I64 = 11, F64 = 12,
};

struct Value;
using Array = std::vector<Value>;
struct Value {
    ValueType type = ValueType::U32;
    ValueType elem_type = ValueType::U32;  // for arrays
    std::variant<uint64_t, int64_t, double, bool, std::string, Array> v;
    // Typed accessors throw GgufError on a type mismatch.
    uint64_t as_u64() const;
    int64_t as_i64() const;
    double as_f64() const;
    bool as_bool() const;
    const std::string& as_str() const;
    const Array& as_array() const;
};

struct TensorInfo {
    std::string name;
    std::vector<uint64_t> ne;     // dims, ne[0] fastest
    GgmlType type = GgmlType::F32;
    uint64_t offset = 0;          // relative to the data section
    uint64_t nbytes = 0;          // computed from ne and type
    const uint8_t* data = nullptr;  // points into the mapped file
    uint64_t n_elements() const;
};

// A parsed GGUF view over bytes the caller keeps alive (or the mmap owned by File).
class Parsed {
  public:
    // Parses and validates: bounds of every string/array/tensor, alignment, overlapping or
    // out-of-file tensor data, dims overflow. Unknown tensor types are allowed at this layer
    // (the model loader reports them with the tensor name).
    static Parsed parse(std::span<const uint8_t> bytes);

    uint32_t version = 0;
    uint64_t alignment = 32;
    std::map<std::string, Value> kv;
    std::vector<TensorInfo> tensors;

    const TensorInfo* find(const std::string& name) const;
    const Value* get(const std::string& key) const;
    // Convenience getters: throw GgufError("missing key ...") when absent and no default given.
    uint64_t get_u64(const std::string& key) const;
    uint64_t get_u64(const std::string& key, uint64_t def) const;
    double get_f64(const std::string& key, double def) const;
    bool get_bool(const std::string& key, bool def) const;
    std::string get_str(const std::string& key, const std::string& def = {}) const;

  private:
    std::map<std::string, size_t> index_;
};

// A GGUF file mapped read-only. Move-only; unmaps on destruction.
class File {
  public:
    static File open(const std::string& path);
    File(File&&) noexcept;
    File& operator=(File&&) noexcept;
    File(const File&) = delete;
    ~File();
    const Parsed& parsed() const { return parsed_; }
    const std::string& path() const { return path_; }
    size_t size() const { return size_; }

  private:
    File() = default;
    std::string path_;
    void* map_ = nullptr;
    size_t size_ = 0;
    Parsed parsed_;
};

// Streams a GGUF v3 file: metadata and tensor infos first, then tensor data in add order.
class Writer {
  public:
    void set(const std::string& key, Value v);
    void set_u32(const std::string& key, uint32_t v);
    void set_f32(const std::string& key, float v);
    void set_bool(const std::string& key, bool v);
    void set_str(const std::string& key, const std::string& v);
    void set_str_array(const std::string& key, const std::vector<std::string>& v);
    void set_i32_array(const std::string& key, const std::vector<int32_t>& v);
    // Adds a tensor whose bytes are already in `type`'s encoding (see quant.h for encoders).
    void add_tensor(const std::string& name, std::vector<uint64_t> ne, GgmlType type, std::vector<uint8_t> bytes);
    // Same, but the bytes are produced only while writing (multi-GB models never sit in RAM).
    void add_tensor_lazy(const std::string& name, std::vector<uint64_t> ne, GgmlType type,
                         std::function<std::vector<uint8_t>()> produce);
    void write(const std::string& path) const;  // throws GgufError on I/O failure

  private:
    std::vector<std::pair<std::string, Value>> kv_;
    struct Pending { TensorInfo info; std::function<std::vector<uint8_t>()> produce; };
    std::vector<Pending> tensors_;
};

}  // namespace prefixd::gguf
