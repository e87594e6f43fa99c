// Test helpers for the engine core: copy a GGUF file with edits (drop/reshape/retype a tensor,
// change a key) to produce the broken model files that loaders and the CLI must reject.
#pragma once

#include "engine/gguf.h"

#include <functional>
#include <random>
#include <string>

namespace prefixd::test {

struct GgufEdit {
    std::function<void(gguf::Writer&)> kv; // applied after copying metadata
    std::string drop_tensor;
    std::string retype_tensor;
    gguf::GgmlType new_type = gguf::GgmlType::F32;
    std::string reshape_tensor;
    std::vector<uint64_t> new_ne;
    std::function<void(const std::string& name, std::vector<uint8_t>& data)> data; // edits tensor bytes
};

inline void rewrite_gguf(const std::string& in, const std::string& out, const GgufEdit& e) {
    gguf::File f = gguf::File::open(in);
    gguf::Writer w;
    for (auto& [k, v] : f.parsed().kv)
        w.set(k, v);
    if (e.kv)
        e.kv(w);
    for (auto& t : f.parsed().tensors) {
        if (t.name == e.drop_tensor)
            continue;
        auto ne = t.ne;
        auto type = t.type;
        if (t.name == e.reshape_tensor)
            ne = e.new_ne;
        if (t.name == e.retype_tensor)
            type = e.new_type;
        uint64_t n = 1;
        for (auto d : ne)
            n *= d;
        uint64_t nbytes = n / gguf::type_block_elems(type) * gguf::type_block_bytes(type);
        const uint8_t* src = t.data;
        uint64_t have = t.nbytes;
        w.add_tensor_lazy(t.name, ne, type, [src, have, nbytes, name = t.name, edit = e.data] {
            std::vector<uint8_t> b(nbytes);
            std::mt19937 rng(1);
            for (uint64_t i = 0; i < nbytes; ++i)
                b[i] = i < have ? src[i] : uint8_t(rng());
            if (edit)
                edit(name, b);
            return b;
        });
    }
    w.write(out);
}

} // namespace prefixd::test
