// GGUF writer: streams metadata, tensor infos and then tensor data (produced lazily, one tensor
// at a time) into a temporary file renamed into place, so multi-GB test models never sit in RAM
// and a failed write never leaves a half file under the final name.
#include "gguf.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

namespace prefixd::gguf {

namespace {
constexpr uint32_t kMaxDims = 4;
} // namespace

// ---- Writer ----
void Writer::set(const std::string& key, Value v) {
    for (auto& kv : kv_)
        if (kv.first == key) {
            kv.second = std::move(v);
            return;
        }
    kv_.emplace_back(key, std::move(v));
}
void Writer::set_u32(const std::string& key, uint32_t v) {
    set(key, Value{ValueType::U32, ValueType::U32, uint64_t(v)});
}
void Writer::set_f32(const std::string& key, float v) {
    set(key, Value{ValueType::F32, ValueType::U32, double(v)});
}
void Writer::set_bool(const std::string& key, bool v) {
    set(key, Value{ValueType::BOOL, ValueType::U32, v});
}
void Writer::set_str(const std::string& key, const std::string& v) {
    set(key, Value{ValueType::STRING, ValueType::U32, v});
}
void Writer::set_str_array(const std::string& key, const std::vector<std::string>& v) {
    Array a;
    a.reserve(v.size());
    for (auto& s : v)
        a.push_back(Value{ValueType::STRING, ValueType::U32, s});
    set(key, Value{ValueType::ARRAY, ValueType::STRING, std::move(a)});
}
void Writer::set_i32_array(const std::string& key, const std::vector<int32_t>& v) {
    Array a;
    a.reserve(v.size());
    for (auto x : v)
        a.push_back(Value{ValueType::I32, ValueType::U32, int64_t(x)});
    set(key, Value{ValueType::ARRAY, ValueType::I32, std::move(a)});
}

static uint64_t tensor_nbytes(const std::string& name, const std::vector<uint64_t>& ne, GgmlType type) {
    uint64_t be = type_block_elems(type), bb = type_block_bytes(type);
    if (be == 0)
        throw GgufError("writer: tensor '" + name + "' has unknown type");
    if (ne.empty() || ne.size() > kMaxDims || ne[0] % be != 0)
        throw GgufError("writer: tensor '" + name + "' has a bad shape for its type");
    uint64_t n = 1;
    for (auto d : ne)
        n *= d;
    return n / be * bb;
}

void Writer::add_tensor(const std::string& name, std::vector<uint64_t> ne, GgmlType type,
                        std::vector<uint8_t> bytes) {
    auto shared = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
    add_tensor_lazy(name, std::move(ne), type, [shared] { return *shared; });
    if (shared->size() != tensors_.back().info.nbytes)
        throw GgufError("writer: tensor '" + name + "' has " + std::to_string(shared->size()) +
                        " bytes, expected " + std::to_string(tensors_.back().info.nbytes));
}

void Writer::add_tensor_lazy(const std::string& name, std::vector<uint64_t> ne, GgmlType type,
                             std::function<std::vector<uint8_t>()> produce) {
    Pending p;
    p.info.name = name;
    p.info.nbytes = tensor_nbytes(name, ne, type);
    p.info.ne = std::move(ne);
    p.info.type = type;
    p.produce = std::move(produce);
    tensors_.push_back(std::move(p));
}

namespace {
struct Out {
    FILE* f;
    std::string path;
    uint64_t pos = 0;
    void raw(const void* p, size_t n) {
        if (n && std::fwrite(p, 1, n, f) != n)
            throw GgufError("write failed: " + path + ": " + std::strerror(errno));
        pos += n;
    }
    template <class T> void put(T v) { raw(&v, sizeof v); }
    void str(const std::string& s) {
        put<uint64_t>(s.size());
        raw(s.data(), s.size());
    }
    void pad(uint64_t align) {
        static const uint8_t zeros[64] = {};
        while (pos % align)
            raw(zeros, std::min<uint64_t>(64, align - pos % align));
    }
    void value(const Value& v) {
        switch (v.type) {
        case ValueType::U8:
            put<uint8_t>(uint8_t(v.as_u64()));
            break;
        case ValueType::I8:
            put<int8_t>(int8_t(v.as_i64()));
            break;
        case ValueType::U16:
            put<uint16_t>(uint16_t(v.as_u64()));
            break;
        case ValueType::I16:
            put<int16_t>(int16_t(v.as_i64()));
            break;
        case ValueType::U32:
            put<uint32_t>(uint32_t(v.as_u64()));
            break;
        case ValueType::I32:
            put<int32_t>(int32_t(v.as_i64()));
            break;
        case ValueType::U64:
            put<uint64_t>(v.as_u64());
            break;
        case ValueType::I64:
            put<int64_t>(v.as_i64());
            break;
        case ValueType::F32:
            put<float>(float(v.as_f64()));
            break;
        case ValueType::F64:
            put<double>(v.as_f64());
            break;
        case ValueType::BOOL:
            put<uint8_t>(v.as_bool() ? 1 : 0);
            break;
        case ValueType::STRING:
            str(v.as_str());
            break;
        case ValueType::ARRAY: {
            put<uint32_t>(uint32_t(v.elem_type));
            put<uint64_t>(v.as_array().size());
            for (auto& e : v.as_array())
                value(e);
            break;
        }
        }
    }
};
} // namespace

void Writer::write(const std::string& path) const {
    uint64_t alignment = 32;
    for (auto& kv : kv_)
        if (kv.first == "general.alignment")
            alignment = kv.second.as_u64();
    std::string tmp = path + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f)
        throw GgufError("cannot create " + tmp + ": " + std::strerror(errno));
    std::vector<char> buf(1 << 20);
    std::setvbuf(f, buf.data(), _IOFBF, buf.size());
    Out o{f, tmp};
    try {
        o.raw("GGUF", 4);
        o.put<uint32_t>(3);
        o.put<uint64_t>(tensors_.size());
        o.put<uint64_t>(kv_.size());
        for (auto& [k, v] : kv_) {
            o.str(k);
            o.put<uint32_t>(uint32_t(v.type));
            o.value(v);
        }
        uint64_t off = 0;
        for (auto& t : tensors_) {
            o.str(t.info.name);
            o.put<uint32_t>(uint32_t(t.info.ne.size()));
            for (auto d : t.info.ne)
                o.put<uint64_t>(d);
            o.put<uint32_t>(uint32_t(t.info.type));
            o.put<uint64_t>(off);
            off += (t.info.nbytes + alignment - 1) / alignment * alignment;
        }
        o.pad(alignment);
        for (auto& t : tensors_) {
            std::vector<uint8_t> bytes = t.produce();
            if (bytes.size() != t.info.nbytes)
                throw GgufError("writer: tensor '" + t.info.name + "' produced " +
                                std::to_string(bytes.size()) + " bytes, expected " +
                                std::to_string(t.info.nbytes));
            o.raw(bytes.data(), bytes.size());
            o.pad(alignment);
        }
        if (std::fclose(f) != 0) {
            f = nullptr;
            throw GgufError("write failed: " + tmp + ": " + std::strerror(errno));
        }
        f = nullptr;
    } catch (...) {
        if (f)
            std::fclose(f);
        std::remove(tmp.c_str());
        throw;
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        throw GgufError("cannot rename " + tmp + " to " + path + ": " + std::strerror(errno));
    }
}

} // namespace prefixd::gguf
