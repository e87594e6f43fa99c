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

inline std::vector<float> randv(size_t n, std::mt19937& rng, float sd = 1.0f) {
    std::normal_distribution<float> d(0.0f, sd);
    std::vector<float> v(n);
    for (auto& x : v)
        x = d(rng);
    return v;
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
