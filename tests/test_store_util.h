// Helpers for the store tests: random finite tensors, hand-built .npy / safetensors files
// (independent of the parsers under test), and a temp database path.
#pragma once

#include "adapters_store/adapter_file.h"
#include "test_env.h"

#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace prefixd::test {

inline store::Tensor2D random_tensor(uint32_t rows, uint32_t cols, uint32_t seed,
                                     store::DType dt = store::DType::F32) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    store::Tensor2D t{dt, rows, cols, {}};
    t.data.resize(t.byte_size());
    for (size_t i = 0; i < size_t(rows) * cols; ++i) {
        float v = nd(rng);
        if (dt == store::DType::F32)
            std::memcpy(t.data.data() + 4 * i, &v, 4);
        else {
            uint16_t h = store::f32_to_f16(v);
            std::memcpy(t.data.data() + 2 * i, &h, 2);
        }
    }
    return t;
}

inline std::vector<uint8_t> bytes_of(const std::string& s) {
    return {s.begin(), s.end()};
}

// A .npy v1 file with the given header dict text and payload; `pad` adds the usual alignment.
inline std::vector<uint8_t> make_npy(const std::string& dict, const std::vector<uint8_t>& payload,
                                     bool pad = true) {
    std::string h = dict;
    if (pad)
        while ((10 + h.size() + 1) % 64)
            h.push_back(' ');
    h.push_back('\n');
    static const uint8_t magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    std::vector<uint8_t> out(10 + h.size() + payload.size());
    std::memcpy(out.data(), magic, 8);
    out[8] = uint8_t(h.size() & 0xff), out[9] = uint8_t(h.size() >> 8);
    std::memcpy(out.data() + 10, h.data(), h.size());
    if (!payload.empty())
        std::memcpy(out.data() + 10 + h.size(), payload.data(), payload.size());
    return out;
}

// A safetensors file: u64 LE header length + header JSON text + data.
inline std::vector<uint8_t> make_safetensors(const std::string& header, const std::vector<uint8_t>& data) {
    std::vector<uint8_t> out(8 + header.size() + data.size());
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i)
        out[size_t(i)] = uint8_t(n >> (8 * i));
    std::memcpy(out.data() + 8, header.data(), header.size());
    if (!data.empty())
        std::memcpy(out.data() + 8 + header.size(), data.data(), data.size());
    return out;
}

inline void write_bytes(const std::filesystem::path& p, const std::vector<uint8_t>& b) {
    FILE* f = std::fopen(p.c_str(), "wb");
    if (!f)
        throw std::runtime_error("cannot write " + p.string());
    std::fwrite(b.data(), 1, b.size(), f);
    std::fclose(f);
}

} // namespace prefixd::test
