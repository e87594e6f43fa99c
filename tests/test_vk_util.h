// Helpers shared by the per-op Vulkan tests (test_vk_ops, test_kquant_vk): one Context for the test
// binary, random normal vectors, host-visible device buffers, and the normalised error
// max|got - ref| / max|ref| the tolerances are stated in.
#pragma once

#include "engine/cpu/ops.h"
#include "engine/vk/vk_context.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace prefixd::test {

inline vk::Context& ctx() {
    static vk::Context c("");
    return c;
}

// A seed for one test case's generator (printed with INFO so that a failure can be replayed).
inline uint32_t fresh_seed() {
    static std::random_device rd;
    return rd();
}

inline std::vector<float> randv(size_t n, std::mt19937& rng, float sd = 1.0f) {
    std::normal_distribution<float> d(0.0f, sd);
    std::vector<float> v(n);
    for (auto& x : v)
        x = d(rng);
    return v;
}

// A weight tensor of n_mat stacked (rows, cols) matrices of `type`, quantised from normal values
// (sd 0.5; `shape`, when given, edits each row's values first), with its GGUF-encoded bytes.
struct HostTensor {
    std::vector<uint8_t> bytes;
    Tensor t;
};
inline HostTensor make_tensor(gguf::GgmlType type, uint64_t rows, uint64_t cols, uint64_t n_mat, std::mt19937& rng,
                              void (*shape)(std::vector<float>&) = nullptr) {
    HostTensor h;
    h.t.type = type;
    h.t.rows = rows;
    h.t.cols = cols;
    h.t.n_mat = n_mat;
    for (uint64_t r = 0; r < rows * n_mat; ++r) {
        auto v = randv(cols, rng, 0.5f);
        if (shape)
            shape(v);
        const auto enc = cpu::quantize_row(type, v.data(), cols);
        h.bytes.insert(h.bytes.end(), enc.begin(), enc.end());
    }
    h.t.data = h.bytes.data();
    return h;
}

// Host-visible device buffer holding floats/uints for one test.
struct DevBuf {
    vk::Buffer b;
    explicit DevBuf(uint64_t bytes) : b(ctx().create_buffer(bytes, true)) {}
    template <class T> T* as() { return static_cast<T*>(b.map()); }
    uint64_t addr() const { return b.addr(); }
};

inline double norm_err(const float* got, const float* ref, size_t n) {
    return cpu::normalised_error(got, ref, n);
}

} // namespace prefixd::test
