// safetensors reader for adapters: u64 LE header length, a JSON header (parsed strictly with
// nlohmann-json: no duplicate keys, bounded depth) mapping tensor names to dtype/shape/
// data_offsets, then the byte buffer. Offsets are bounds-checked, must match the shape, must not
// overlap and must cover the buffer. F32/F16 tensors are kept, BF16 is converted to F32.
#include "adapter_file.h"
#include "adapter_file_detail.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

namespace prefixd::store {
namespace {

using nlohmann::json;
[[noreturn]] void fail(const std::string& m) {
    throw AdapterFileError("safetensors: " + m);
}

struct Entry {
    std::string dtype;
    std::vector<uint64_t> shape;
    uint64_t begin = 0, end = 0;
};

size_t elem_size(const std::string& dt) {
    static const std::map<std::string, size_t> sizes = {
        {"F64", 8}, {"F32", 4}, {"F16", 2},  {"BF16", 2},    {"I64", 8},
        {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U64", 8},     {"U32", 4},
        {"U16", 2}, {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
    auto it = sizes.find(dt);
    if (it == sizes.end())
        fail("unknown dtype '" + dt + "'");
    return it->second;
}

// Parses the header JSON rejecting duplicate keys and nesting deeper than 3.
json parse_json(std::string_view text) {
    std::vector<std::set<std::string>> keys;
    auto cb = [&](int depth, json::parse_event_t ev, json& parsed) {
        if (depth > 3)
            fail("header JSON nested too deeply");
        if (ev == json::parse_event_t::object_start)
            keys.emplace_back();
        else if (ev == json::parse_event_t::object_end)
            keys.pop_back();
        else if (ev == json::parse_event_t::key) {
            if (keys.empty())
                fail("malformed header JSON");
            if (!keys.back().insert(parsed.get<std::string>()).second)
                fail("duplicate key '" + parsed.get<std::string>() + "' in header");
        }
        return true;
    };
    try {
        return json::parse(text.begin(), text.end(), cb);
    } catch (const json::exception& e) {
        fail(std::string("header is not valid JSON: ") + e.what());
    }
}

std::map<std::string, Entry> parse_header(std::span<const uint8_t> b, uint64_t& data_off) {
    if (b.size() < 8)
        fail("file too short for a header length");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i)
        n = (n << 8) | b[size_t(i)];
    if (n < 2)
        fail("header length " + std::to_string(n) + " is too small");
    if (n > (16u << 20))
        fail("header length " + std::to_string(n) + " exceeds 16 MiB");
    if (n > b.size() - 8)
        fail("truncated header (" + std::to_string(n) + " bytes declared)");
    data_off = 8 + n;
    std::string_view text(reinterpret_cast<const char*>(b.data() + 8), n);
    json h = parse_json(text);
    if (!h.is_object())
        fail("header is not a JSON object");
    uint64_t data_size = b.size() - data_off;
    std::map<std::string, Entry> out;
    for (auto& [name, v] : h.items()) {
        if (name == "__metadata__") {
            if (!v.is_object())
                fail("__metadata__ must be an object");
            for (auto& [k, mv] : v.items())
                if (!mv.is_string())
                    fail("__metadata__ value '" + k + "' is not a string");
            continue;
        }
        if (!v.is_object())
            fail("entry '" + name + "' is not an object");
        for (auto& [k, _] : v.items())
            if (k != "dtype" && k != "shape" && k != "data_offsets")
                fail("entry '" + name + "' has unknown field '" + k + "'");
        if (!v.contains("dtype") || !v["dtype"].is_string())
            fail("entry '" + name + "' lacks a string dtype");
        if (!v.contains("shape") || !v["shape"].is_array())
            fail("entry '" + name + "' lacks a shape array");
        auto& off = v["data_offsets"];
        if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
            !off[1].is_number_unsigned())
            fail("entry '" + name + "' needs data_offsets [begin, end] of non-negative integers");
        Entry e;
        e.dtype = v["dtype"].get<std::string>();
        size_t es = elem_size(e.dtype);
        unsigned __int128 count = 1;
        for (auto& d : v["shape"]) {
            if (!d.is_number_unsigned())
                fail("entry '" + name + "' has a non-integer dimension");
            e.shape.push_back(d.get<uint64_t>());
            count *= e.shape.back();
            if (count > (unsigned __int128)1 << 62)
                fail("entry '" + name + "' shape is too large");
        }
        if (e.shape.size() > 8)
            fail("entry '" + name + "' has too many dimensions");
        e.begin = off[0].get<uint64_t>();
        e.end = off[1].get<uint64_t>();
        if (e.end < e.begin || e.end > data_size)
            fail("entry '" + name + "' data_offsets [" + std::to_string(e.begin) + ", " +
                 std::to_string(e.end) + "] out of range (buffer has " + std::to_string(data_size) +
                 " bytes)");
        if ((unsigned __int128)(e.end - e.begin) != count * es)
            fail("entry '" + name + "' byte range does not match its shape and dtype");
        out.emplace(name, std::move(e));
    }
    // The buffer must be covered exactly, without overlaps or holes.
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (auto& [_, e] : out)
        ranges.emplace_back(e.begin, e.end);
    std::sort(ranges.begin(), ranges.end());
    uint64_t pos = 0;
    for (auto& [bg, en] : ranges) {
        if (bg != pos)
            fail(bg < pos ? "tensor data ranges overlap" : "hole in the tensor data buffer");
        pos = en;
    }
    if (pos != data_size)
        fail("trailing bytes after the last tensor");
    return out;
}

} // namespace

std::vector<std::string> safetensors_tensor_names(std::span<const uint8_t> bytes) {
    uint64_t off = 0;
    std::vector<std::string> names;
    for (auto& [name, e] : parse_header(bytes, off)) {
        std::string dims;
        for (auto d : e.shape) {
            if (!dims.empty())
                dims += ",";
            dims += std::to_string(d);
        }
        names.push_back(name + " " + e.dtype + "[" + dims + "]");
    }
    return names;
}

Tensor2D parse_safetensors(std::span<const uint8_t> b, const std::optional<std::string>& tensor) {
    uint64_t data_off = 0;
    auto entries = parse_header(b, data_off);
    if (entries.empty())
        fail("file holds no tensors");
    const Entry* e = nullptr;
    std::string name;
    if (tensor) {
        auto it = entries.find(*tensor);
        if (it == entries.end())
            fail("no tensor named '" + *tensor + "'");
        e = &it->second, name = *tensor;
    } else if (entries.size() == 1) {
        e = &entries.begin()->second, name = entries.begin()->first;
    } else if (auto it = entries.find("prompt_embeddings"); it != entries.end()) {
        e = &it->second, name = it->first;
    } else {
        std::string list;
        for (auto& [n, _] : entries) {
            if (!list.empty())
                list += ", ";
            list += n;
        }
        fail("file holds several tensors (" + list + "); choose one with --tensor");
    }
    if (e->shape.size() != 2)
        fail("tensor '" + name + "' must be 2-D [n_virtual, hidden], has " + std::to_string(e->shape.size()) +
             " dimension(s)");
    std::span<const uint8_t> data = b.subspan(size_t(data_off + e->begin), size_t(e->end - e->begin));
    uint64_t rows = e->shape[0], cols = e->shape[1];
    std::string what = "safetensors tensor '" + name + "'";
    Tensor2D t;
    if (e->dtype == "F32" || e->dtype == "F16") {
        t.dtype = e->dtype == "F32" ? DType::F32 : DType::F16;
        detail::check_shape(rows, cols, dtype_size(t.dtype), data.size(), what.c_str());
        t.data.assign(data.begin(), data.end());
    } else if (e->dtype == "BF16") {
        detail::check_shape(rows, cols, 2, data.size(), what.c_str(), 4); // stored as F32
        t.dtype = DType::F32;
        t.data.resize(data.size() * 2);
        for (size_t i = 0; i < data.size() / 2; ++i) {
            float f = bf16_to_f32(uint16_t(data[2 * i] | data[2 * i + 1] << 8));
            std::memcpy(t.data.data() + 4 * i, &f, 4);
        }
    } else {
        fail("tensor '" + name + "' has dtype " + e->dtype + " (expected F32, F16 or BF16)");
    }
    t.rows = uint32_t(rows), t.cols = uint32_t(cols);
    check_finite(t);
    return t;
}

} // namespace prefixd::store
