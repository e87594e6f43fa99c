// GGUF container implementation: a bounds-checked parser over a byte span (fuzzed by
// tests/fuzz/fuzz_gguf.cpp), a read-only mmap File, and a streaming Writer used by gen_model.
// Every malformed input throws GgufError with the offset and what was wrong.
#include "gguf.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <tuple>
#include <unistd.h>

namespace prefixd::gguf {

const char* type_name(GgmlType t) {
    switch (t) {
    case GgmlType::F32:
        return "F32";
    case GgmlType::F16:
        return "F16";
    case GgmlType::Q4_0:
        return "Q4_0";
    case GgmlType::Q4_1:
        return "Q4_1";
    case GgmlType::Q5_0:
        return "Q5_0";
    case GgmlType::Q5_1:
        return "Q5_1";
    case GgmlType::Q8_0:
        return "Q8_0";
    case GgmlType::Q8_1:
        return "Q8_1";
    case GgmlType::Q2_K:
        return "Q2_K";
    case GgmlType::Q3_K:
        return "Q3_K";
    case GgmlType::Q4_K:
        return "Q4_K";
    case GgmlType::Q5_K:
        return "Q5_K";
    case GgmlType::Q6_K:
        return "Q6_K";
    case GgmlType::Q8_K:
        return "Q8_K";
    case GgmlType::I8:
        return "I8";
    case GgmlType::I16:
        return "I16";
    case GgmlType::I32:
        return "I32";
    case GgmlType::I64:
        return "I64";
    case GgmlType::F64:
        return "F64";
    case GgmlType::BF16:
        return "BF16";
    }
    // ggml types the engine does not read, named for the error message (GGUF's type numbering)
    switch (unsigned(t)) {
    case 16:
        return "IQ2_XXS";
    case 17:
        return "IQ2_XS";
    case 18:
        return "IQ3_XXS";
    case 19:
        return "IQ1_S";
    case 20:
        return "IQ4_NL";
    case 21:
        return "IQ3_S";
    case 22:
        return "IQ2_S";
    case 23:
        return "IQ4_XS";
    case 29:
        return "IQ1_M";
    case 31:
        return "Q4_0_4_4";
    case 32:
        return "Q4_0_4_8";
    case 33:
        return "Q4_0_8_8";
    case 34:
        return "TQ1_0";
    case 35:
        return "TQ2_0";
    case 36:
        return "IQ4_NL_4_4";
    case 37:
        return "IQ4_NL_4_8";
    case 38:
        return "IQ4_NL_8_8";
    case 39:
        return "MXFP4";
    default:
        break;
    }
    static thread_local char buf[32];
    std::snprintf(buf, sizeof buf, "type#%u", unsigned(t));
    return buf;
}

uint64_t type_block_elems(GgmlType t) {
    switch (t) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::I8:
    case GgmlType::I16:
    case GgmlType::I32:
    case GgmlType::I64:
    case GgmlType::F64:
        return 1;
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::Q8_0:
    case GgmlType::Q8_1:
        return 32;
    case GgmlType::Q2_K:
    case GgmlType::Q3_K:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
    case GgmlType::Q8_K:
        return 256;
    }
    return 0;
}

uint64_t type_block_bytes(GgmlType t) {
    switch (t) {
    case GgmlType::F32:
        return 4;
    case GgmlType::F16:
        return 2;
    case GgmlType::BF16:
        return 2;
    case GgmlType::I8:
        return 1;
    case GgmlType::I16:
        return 2;
    case GgmlType::I32:
        return 4;
    case GgmlType::I64:
        return 8;
    case GgmlType::F64:
        return 8;
    case GgmlType::Q4_0:
        return 18;
    case GgmlType::Q4_1:
        return 20;
    case GgmlType::Q5_0:
        return 22;
    case GgmlType::Q5_1:
        return 24;
    case GgmlType::Q8_0:
        return 34;
    case GgmlType::Q8_1:
        return 36;
    case GgmlType::Q2_K:
        return 84;
    case GgmlType::Q3_K:
        return 110;
    case GgmlType::Q4_K:
        return 144;
    case GgmlType::Q5_K:
        return 176;
    case GgmlType::Q6_K:
        return 210;
    case GgmlType::Q8_K:
        return 292;
    }
    return 0;
}

bool engine_supports(GgmlType t) {
    return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16 || t == GgmlType::Q8_0 ||
           t == GgmlType::Q4_0 || t == GgmlType::Q5_0 || t == GgmlType::Q4_K || t == GgmlType::Q6_K;
}

const char* engine_supported_types() {
    return "F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K, Q6_K";
}

// ---- Value accessors ----
static bool is_int(ValueType t) {
    return t == ValueType::U8 || t == ValueType::I8 || t == ValueType::U16 || t == ValueType::I16 ||
           t == ValueType::U32 || t == ValueType::I32 || t == ValueType::U64 || t == ValueType::I64;
}
static const char* vt_name(ValueType t) {
    static const char* names[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                  "bool", "string", "array", "u64", "i64", "f64"};
    return uint32_t(t) < 13 ? names[uint32_t(t)] : "unknown";
}

uint64_t Value::as_u64() const {
    if (auto p = std::get_if<uint64_t>(&v))
        return *p;
    if (auto p = std::get_if<int64_t>(&v)) {
        if (*p < 0)
            throw GgufError("negative value where unsigned expected");
        return uint64_t(*p);
    }
    throw GgufError(std::string("expected integer, got ") + vt_name(type));
}
int64_t Value::as_i64() const {
    if (auto p = std::get_if<int64_t>(&v))
        return *p;
    if (auto p = std::get_if<uint64_t>(&v)) {
        if (*p > uint64_t(INT64_MAX))
            throw GgufError("integer too large");
        return int64_t(*p);
    }
    throw GgufError(std::string("expected integer, got ") + vt_name(type));
}
double Value::as_f64() const {
    if (auto p = std::get_if<double>(&v))
        return *p;
    if (auto p = std::get_if<uint64_t>(&v))
        return double(*p);
    if (auto p = std::get_if<int64_t>(&v))
        return double(*p);
    throw GgufError(std::string("expected number, got ") + vt_name(type));
}
bool Value::as_bool() const {
    if (auto p = std::get_if<bool>(&v))
        return *p;
    throw GgufError(std::string("expected bool, got ") + vt_name(type));
}
const std::string& Value::as_str() const {
    if (auto p = std::get_if<std::string>(&v))
        return *p;
    throw GgufError(std::string("expected string, got ") + vt_name(type));
}
const Array& Value::as_array() const {
    if (auto p = std::get_if<Array>(&v))
        return *p;
    throw GgufError(std::string("expected array, got ") + vt_name(type));
}

uint64_t TensorInfo::n_elements() const {
    uint64_t n = 1;
    for (auto d : ne)
        n *= d;
    return n;
}

// ---- Parser ----
namespace {

constexpr uint32_t kMaxDims = 4;
constexpr int kMaxArrayDepth = 2;
// Metadata array elements, all arrays together. A parsed element takes ~48 bytes (Value) where
// the file may spend 1, so a crafted 1 GB array would need ~48 GB. Tokenizers need ~3 arrays of
// up to ~260k entries (tokens, types, merges); 16M leaves room for any real vocabulary.
constexpr uint64_t kMaxArrayElems = 16u << 20;

struct Reader {
    std::span<const uint8_t> b;
    size_t pos = 0;
    uint64_t array_elems = 0; // metadata array elements read so far (kMaxArrayElems)
    [[noreturn]] void fail(const std::string& what) const {
        throw GgufError("GGUF: " + what + " at offset " + std::to_string(pos));
    }
    void need(uint64_t n, const char* what) const {
        if (n > b.size() - pos)
            fail(std::string("truncated file reading ") + what);
    }
    template <class T> T get(const char* what) {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, b.data() + pos, sizeof(T));
        pos += sizeof(T);
        return v;
    }
    std::string str(const char* what) {
        uint64_t n = get<uint64_t>(what);
        need(n, what);
        std::string s(reinterpret_cast<const char*>(b.data() + pos), size_t(n));
        pos += size_t(n);
        return s;
    }
    size_t remaining() const { return b.size() - pos; }
};

size_t min_value_bytes(ValueType t) {
    switch (t) {
    case ValueType::U8:
    case ValueType::I8:
    case ValueType::BOOL:
        return 1;
    case ValueType::U16:
    case ValueType::I16:
        return 2;
    case ValueType::U32:
    case ValueType::I32:
    case ValueType::F32:
        return 4;
    case ValueType::U64:
    case ValueType::I64:
    case ValueType::F64:
    case ValueType::STRING:
        return 8;
    case ValueType::ARRAY:
        return 12;
    }
    return 1;
}

Value read_value(Reader& r, ValueType t, int depth) {
    Value out;
    out.type = t;
    switch (t) {
    case ValueType::U8:
        out.v = uint64_t(r.get<uint8_t>("u8"));
        break;
    case ValueType::I8:
        out.v = int64_t(r.get<int8_t>("i8"));
        break;
    case ValueType::U16:
        out.v = uint64_t(r.get<uint16_t>("u16"));
        break;
    case ValueType::I16:
        out.v = int64_t(r.get<int16_t>("i16"));
        break;
    case ValueType::U32:
        out.v = uint64_t(r.get<uint32_t>("u32"));
        break;
    case ValueType::I32:
        out.v = int64_t(r.get<int32_t>("i32"));
        break;
    case ValueType::U64:
        out.v = r.get<uint64_t>("u64");
        break;
    case ValueType::I64:
        out.v = r.get<int64_t>("i64");
        break;
    case ValueType::F32:
        out.v = double(r.get<float>("f32"));
        break;
    case ValueType::F64:
        out.v = r.get<double>("f64");
        break;
    case ValueType::BOOL: {
        uint8_t b = r.get<uint8_t>("bool");
        if (b > 1)
            r.fail("bool value " + std::to_string(b));
        out.v = b != 0;
        break;
    }
    case ValueType::STRING:
        out.v = r.str("string");
        break;
    case ValueType::ARRAY: {
        if (depth >= kMaxArrayDepth)
            r.fail("arrays nested too deeply");
        uint32_t et = r.get<uint32_t>("array type");
        if (et > uint32_t(ValueType::F64))
            r.fail("unknown array element type " + std::to_string(et));
        uint64_t n = r.get<uint64_t>("array length");
        out.elem_type = ValueType(et);
        if (n > r.remaining() / min_value_bytes(out.elem_type))
            r.fail("array length " + std::to_string(n) + " exceeds the file (truncated?)");
        if (n > kMaxArrayElems - r.array_elems)
            r.fail("array length " + std::to_string(n) + " takes the metadata arrays past " +
                   std::to_string(kMaxArrayElems) + " elements");
        r.array_elems += n;
        Array a;
        a.reserve(size_t(n));
        for (uint64_t i = 0; i < n; ++i)
            a.push_back(read_value(r, out.elem_type, depth + 1));
        out.v = std::move(a);
        break;
    }
    default:
        r.fail("unknown value type " + std::to_string(uint32_t(t)));
    }
    return out;
}

} // namespace

Parsed Parsed::parse(std::span<const uint8_t> bytes) {
    Reader r{bytes};
    Parsed p;
    uint32_t magic = r.get<uint32_t>("magic");
    if (std::memcmp(&magic, "GGUF", 4) != 0)
        r.fail("not a GGUF file (bad magic)");
    p.version = r.get<uint32_t>("version");
    if (p.version != 2 && p.version != 3)
        r.fail("unsupported GGUF version " + std::to_string(p.version));
    uint64_t n_tensors = r.get<uint64_t>("tensor count");
    uint64_t n_kv = r.get<uint64_t>("metadata count");
    if (n_kv > r.remaining() / 13)
        r.fail("metadata count " + std::to_string(n_kv) + " exceeds the file (truncated?)");
    if (n_tensors > r.remaining() / 28)
        r.fail("tensor count " + std::to_string(n_tensors) + " exceeds the file (truncated?)");
    for (uint64_t i = 0; i < n_kv; ++i) {
        std::string key = r.str("metadata key");
        uint32_t t = r.get<uint32_t>("metadata value type");
        if (t > uint32_t(ValueType::F64))
            r.fail("key '" + key + "': unknown value type " + std::to_string(t));
        Value v = read_value(r, ValueType(t), 0);
        if (!p.kv.emplace(key, std::move(v)).second)
            r.fail("duplicate metadata key '" + key + "'");
    }
    if (auto it = p.kv.find("general.alignment"); it != p.kv.end()) {
        if (!is_int(it->second.type))
            r.fail("general.alignment is not an integer");
        if (it->second.type == ValueType::I8 || it->second.type == ValueType::I16 ||
            it->second.type == ValueType::I32 || it->second.type == ValueType::I64)
            if (it->second.as_i64() <= 0)
                r.fail("bad general.alignment " + std::to_string(it->second.as_i64()));
        uint64_t a = it->second.as_u64();
        if (a == 0 || (a & (a - 1)) != 0 || a > (1u << 20))
            r.fail("bad general.alignment " + std::to_string(a));
        p.alignment = a;
    }
    p.tensors.reserve(size_t(n_tensors));
    for (uint64_t i = 0; i < n_tensors; ++i) {
        TensorInfo ti;
        ti.name = r.str("tensor name");
        uint32_t nd = r.get<uint32_t>("tensor dims");
        if (nd == 0 || nd > kMaxDims)
            r.fail("tensor '" + ti.name + "': bad dimension count " + std::to_string(nd));
        uint64_t n = 1;
        for (uint32_t d = 0; d < nd; ++d) {
            uint64_t e = r.get<uint64_t>("tensor dim");
            if (e == 0 || e > (uint64_t(1) << 40) || n > (uint64_t(1) << 50) / e)
                r.fail("tensor '" + ti.name + "': bad or overflowing dimension " + std::to_string(e));
            n *= e;
            ti.ne.push_back(e);
        }
        ti.type = GgmlType(r.get<uint32_t>("tensor type"));
        ti.offset = r.get<uint64_t>("tensor offset");
        uint64_t be = type_block_elems(ti.type), bb = type_block_bytes(ti.type);
        if (be != 0) {
            if (ti.ne[0] % be != 0)
                r.fail("tensor '" + ti.name + "': row of " + std::to_string(ti.ne[0]) +
                       " not a multiple of " + type_name(ti.type) + " block size (" + std::to_string(be) +
                       ")");
            ti.nbytes = n / be * bb;
        }
        if (ti.offset % p.alignment != 0)
            r.fail("tensor '" + ti.name + "': misaligned data offset");
        if (p.index_.count(ti.name))
            r.fail("duplicate tensor name '" + ti.name + "'");
        p.index_[ti.name] = p.tensors.size();
        p.tensors.push_back(std::move(ti));
    }
    uint64_t data_start = (r.pos + p.alignment - 1) / p.alignment * p.alignment;
    if (n_tensors > 0 && data_start > bytes.size())
        r.fail("truncated file: data section missing");
    uint64_t data_size = bytes.size() - std::min<uint64_t>(data_start, bytes.size());
    // Bounds and overlap of tensor data (tensors of unknown type only get a start check).
    std::vector<std::tuple<uint64_t, uint64_t, const TensorInfo*>> ranges;
    for (auto& ti : p.tensors) {
        if (ti.offset > data_size || ti.nbytes > data_size - ti.offset)
            throw GgufError("GGUF: tensor '" + ti.name + "' data (" + std::to_string(ti.nbytes) +
                            " bytes at " + std::to_string(ti.offset) +
                            ") lies beyond the end of the file (truncated?)");
        ti.data = bytes.data() + data_start + ti.offset;
        if (ti.nbytes)
            ranges.emplace_back(ti.offset, ti.offset + ti.nbytes, &ti);
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i)
        if (std::get<0>(ranges[i]) < std::get<1>(ranges[i - 1]))
            throw GgufError("GGUF: tensor '" + std::get<2>(ranges[i - 1])->name + "' (" +
                            type_name(std::get<2>(ranges[i - 1])->type) + ", " +
                            std::to_string(std::get<2>(ranges[i - 1])->nbytes) +
                            " bytes) overlaps the data of '" + std::get<2>(ranges[i])->name +
                            "': a wrong type or shape in the tensor table?");
    return p;
}

const TensorInfo* Parsed::find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors[it->second];
}
const Value* Parsed::get(const std::string& key) const {
    auto it = kv.find(key);
    return it == kv.end() ? nullptr : &it->second;
}
uint64_t Parsed::get_u64(const std::string& key) const {
    const Value* v = get(key);
    if (!v)
        throw GgufError("missing key " + key);
    try {
        return v->as_u64();
    } catch (const GgufError& e) {
        throw GgufError("key " + key + ": " + e.what());
    }
}
uint64_t Parsed::get_u64(const std::string& key, uint64_t def) const {
    return get(key) ? get_u64(key) : def;
}
double Parsed::get_f64(const std::string& key, double def) const {
    const Value* v = get(key);
    if (!v)
        return def;
    try {
        return v->as_f64();
    } catch (const GgufError& e) {
        throw GgufError("key " + key + ": " + e.what());
    }
}
bool Parsed::get_bool(const std::string& key, bool def) const {
    const Value* v = get(key);
    if (!v)
        return def;
    try {
        return v->as_bool();
    } catch (const GgufError& e) {
        throw GgufError("key " + key + ": " + e.what());
    }
}
std::string Parsed::get_str(const std::string& key, const std::string& def) const {
    const Value* v = get(key);
    if (!v)
        return def;
    try {
        return v->as_str();
    } catch (const GgufError& e) {
        throw GgufError("key " + key + ": " + e.what());
    }
}

// ---- File ----
File File::open(const std::string& path) {
    // O_NONBLOCK: opening a FIFO would otherwise block until a writer comes (regular files ignore it)
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        throw GgufError("cannot open " + path + ": " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw GgufError("not a regular file: " + path);
    }
    File f;
    f.path_ = path;
    f.size_ = size_t(st.st_size);
    if (f.size_ > 0) {
        void* m = ::mmap(nullptr, f.size_, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            ::close(fd);
            throw GgufError("cannot mmap " + path + ": " + std::strerror(e));
        }
        f.map_ = m;
    }
    ::close(fd);
    try {
        f.parsed_ = Parsed::parse({static_cast<const uint8_t*>(f.map_), f.size_});
    } catch (const GgufError& e) {
        throw GgufError(path + ": " + e.what());
    }
    return f;
}
File::File(File&& o) noexcept
    : path_(std::move(o.path_)), map_(o.map_), size_(o.size_), parsed_(std::move(o.parsed_)) {
    o.map_ = nullptr;
    o.size_ = 0;
}
File& File::operator=(File&& o) noexcept {
    if (this != &o) {
        if (map_)
            ::munmap(map_, size_);
        path_ = std::move(o.path_);
        map_ = o.map_;
        size_ = o.size_;
        parsed_ = std::move(o.parsed_);
        o.map_ = nullptr;
        o.size_ = 0;
    }
    return *this;
}
File::~File() {
    if (map_)
        ::munmap(map_, size_);
}

} // namespace prefixd::gguf
