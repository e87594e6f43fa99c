// Helpers shared by the whole-model tests (test_vk_model, test_vk_memory, test_kquant_vk): random
// token ids, one-item batches, the normalised logit-row error the tolerances are stated in, greedy
// runs, and reference inputs drawn away from MoE routing ties.
#pragma once

#include "engine/cpu/ops.h"
#include "engine/engine.h"

#include <doctest/doctest.h>

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

// Sequence s reads `in` (logits of every row), then continues greedily: n_tokens ids in all, the
// first chosen after the input, each later one after feeding back the one before.
struct GreedyRun {
    std::vector<float> logits; // the input's rows, then one row per continuation step
    std::vector<int32_t> tokens;
};
inline GreedyRun greedy_run(Backend& b, SeqId s, const std::vector<Segment>& in, int n_tokens,
                            uint32_t n_vocab) {
    GreedyRun g;
    g.logits = b.step({item(s, in, true)})[0].logits;
    g.tokens.push_back(argmax(g.logits.data() + g.logits.size() - n_vocab, n_vocab));
    while (int(g.tokens.size()) < n_tokens) {
        auto o = b.step({item(s, {Segment::from_tokens({g.tokens.back()})}, false)});
        g.logits.insert(g.logits.end(), o[0].logits.begin(), o[0].logits.end());
        g.tokens.push_back(argmax(o[0].logits.data(), n_vocab));
    }
    return g;
}

// Where an expert choice sits within a hair of a tie, two backends whose sums differ in the last
// bits may choose differently, and their logits then differ by far more than rounding. This calls
// draw() (new random inputs) then ref() (the CPU reference's part of a test, on those inputs)
// until every expert choice ref() made stayed at least `margin` from a tie
// (cpu::RouteMarginWatch); 8 draws at most.
template <class Draw, class Ref> void away_from_ties(double margin, Draw&& draw, Ref&& ref) {
    for (int attempt = 0; attempt < 8; ++attempt) {
        draw();
        cpu::RouteMarginWatch watch;
        ref();
        if (watch.min() >= margin)
            return;
        MESSAGE("inputs redrawn: an expert choice " << watch.min() << " from a tie");
    }
    FAIL("8 inputs drawn, each with an expert choice within " << margin << " of a tie");
}

// Inputs from draw() and the reference's greedy run over them, away from routing ties.
template <class Draw>
std::pair<std::vector<Segment>, GreedyRun> draw_away_from_ties(Backend& ref, Draw&& draw, int n_tokens,
                                                               uint32_t n_vocab, double margin) {
    std::pair<std::vector<Segment>, GreedyRun> r;
    away_from_ties(
        margin, [&] { r.first = draw(); },
        [&] {
            const SeqId s = ref.create_sequence();
            r.second = greedy_run(ref, s, r.first, n_tokens, n_vocab);
            ref.free_sequence(s);
        });
    return r;
}

} // namespace prefixd::test
