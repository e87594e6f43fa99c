// Helpers shared by the whole-model tests (test_vk_model, test_vk_memory, test_kquant_vk): random
// token ids, one-item batches, and the normalised logit-row error the tolerances are stated in.
#pragma once

#include "engine/cpu/ops.h"
#include "engine/engine.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace prefixd::test {

inline std::vector<int32_t> random_tokens(uint32_t n, uint32_t vocab, std::mt19937& rng) {
    std::uniform_int_distribution<int32_t> d(0, int32_t(vocab) - 1);
    std::vector<int32_t> t(n);
    for (auto& x : t)
        x = d(rng);
    return t;
}

// A batch item over `inputs` asking for the logits of every row, or of the last one.
inline BatchItem item(SeqId s, std::vector<Segment> inputs, bool all_logits) {
    BatchItem it;
    it.seq = s;
    it.inputs = std::move(inputs);
    uint32_t n = 0;
    for (auto& g : it.inputs)
        n += g.size();
    if (all_logits)
        for (uint32_t r = 0; r < n; ++r)
            it.logit_rows.push_back(r);
    else
        it.logit_rows.push_back(n - 1);
    return it;
}

// max |got - ref| / max |ref| over one logits row (1e30 for a non-finite value).
inline double row_err(const float* got, const float* ref, size_t n) {
    return cpu::normalised_error(got, ref, n);
}

inline int32_t argmax(const float* v, uint32_t n) {
    return int32_t(std::max_element(v, v + n) - v);
}

} // namespace prefixd::test
