// Sampling: greedy argmax (lowest id on ties), or temperature -> top-k -> top-p -> a draw from a
// seeded mt19937_64 turned into a double by bit arithmetic (std distributions differ between
// standard libraries; this does not), over the candidates in an order that our own code fixes.
// Also log_prob and top_logits helpers.
#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>

namespace prefixd {

uint64_t random_seed() {
    std::random_device rd;
    return (uint64_t(rd()) << 32) | rd();
}

Sampler::Sampler(const SamplingParams& p) : p_(p), rng_(p.seed.value_or(0)) {}

namespace {

using Cand = std::pair<float, int32_t>; // (weight or logit, id)

// The sampling order: higher first, lower id first on ties (a total order, so any sort of a set
// by it gives the same sequence).
bool ahead(const Cand& a, const Cand& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
}

// Moves to the front of c[0, n) the smallest set that is a prefix of c in `ahead` order and whose
// weights sum to at least target (> 0), in no particular order, and returns its size. A
// quickselect on the weights' mass: expected O(n) where sorting 129k candidates per token took
// ~12 ms. Its own pivot and partition, so the order left behind (and so the draw) is the same
// with every standard library.
size_t mass_prefix(std::vector<Cand>& c, size_t n, double target) {
    size_t lo = 0, hi = n;  // the element at which the prefix's mass reaches target is in [lo, hi)
    double mass_lo = 0;     // of c[0, lo), all ahead of c[lo, hi); below target
    while (hi - lo > 32) {
        const Cand piv = c[lo + (hi - lo) / 2];
        size_t g = lo;
        double mass = 0;
        for (size_t i = lo; i < hi; ++i)
            if (ahead(c[i], piv)) {
                mass += c[i].first;
                std::swap(c[i], c[g++]);
            }
        for (size_t i = g; i < hi; ++i) // the pivot right after the ones ahead of it
            if (c[i].second == piv.second) {
                std::swap(c[i], c[g]);
                break;
            }
        if (mass_lo + mass >= target) {
            hi = g;
        } else if (mass_lo + mass + piv.first >= target) {
            return g + 1;
        } else {
            mass_lo += mass + piv.first;
            lo = g + 1;
        }
    }
    std::sort(c.begin() + lo, c.begin() + hi, ahead);
    for (size_t i = lo; i < hi; ++i) {
        mass_lo += c[i].first;
        if (mass_lo >= target)
            return i + 1;
    }
    return std::max<size_t>(hi, 1); // rounding left the target just out of reach: all of them
}

// Fills c with the candidates' (weight, id), weight = exp((logit - max) / T), and moves the ones a
// draw takes from to c[0, returned count): the top_k highest (sorted), then the smallest set of
// the highest whose mass reaches top_p of theirs. The difference is taken before the division, so
// a tiny T (the protocol allows any in [0, 100]) gives weights 1 and 0, never inf - inf = NaN.
size_t candidates(std::span<const float> logits, const SamplingParams& p, std::vector<Cand>& c) {
    c.clear();
    c.reserve(logits.size());
    float mx = -INFINITY;
    for (size_t i = 0; i < logits.size(); ++i) {
        c.emplace_back(logits[i], int32_t(i));
        mx = std::max(mx, logits[i]);
    }
    size_t n = c.size();
    const bool top_k = p.top_k > 0 && p.top_k < n;
    if (top_k) {
        n = p.top_k;
        std::partial_sort(c.begin(), c.begin() + n, c.end(), ahead);
    }
    double sum = 0;
    for (size_t i = 0; i < n; ++i) {
        c[i].first = std::exp((c[i].first - mx) / p.temperature);
        sum += c[i].first;
    }
    if (p.top_p >= 1.0f)
        return n;
    const double target = double(p.top_p) * sum;
    if (target <= 0) { // top_p 0: the best one alone
        if (!top_k)
            std::iter_swap(c.begin(), std::min_element(c.begin(), c.begin() + n, ahead));
        return 1;
    }
    if (!top_k)
        return mass_prefix(c, n, target);
    double cum = 0; // already sorted
    for (size_t i = 0; i < n; ++i)
        if ((cum += c[i].first) >= target)
            return i + 1;
    return n;
}

// NaN or +Inf logits come from a broken model (NaN/Inf weights) or from inputs that overflow it.
// Nothing can be drawn from them: NaN is no order (std::sort and the quickselect need one) and
// +Inf no distribution. -Inf is a logit of probability 0, allowed while one logit is finite.
// One branch-free pass (it runs for every sampled token and every log_prob): !(l < +Inf) holds
// for NaN and +Inf alone.
void check_logits(std::span<const float> logits) {
    bool bad = false, finite = false;
    for (float l : logits) {
        bad |= !(l < INFINITY);
        finite |= l > -INFINITY;
    }
    if (bad)
        throw std::domain_error("the model's logits contain NaN or +Inf (broken weights, or inputs "
                                "so large that the model overflows)");
    if (!finite)
        throw std::domain_error("the model's logits are all -Inf");
}

bool greedy(const SamplingParams& p) {
    return p.temperature <= 0.0f || p.top_k == 1;
}

int32_t argmax(std::span<const float> logits) { // lowest id on ties
    return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

} // namespace

int32_t Sampler::sample(std::span<const float> logits) {
    if (logits.empty())
        throw std::invalid_argument("sample: empty logits");
    check_logits(logits);
    if (greedy(p_))
        return argmax(logits);
    const size_t keep = candidates(logits, p_, scratch_);
    double sum = 0;
    for (size_t i = 0; i < keep; ++i)
        sum += scratch_[i].first;
    double u = double(rng_() >> 11) * (1.0 / 9007199254740992.0) * sum; // [0, sum)
    for (size_t i = 0; i < keep; ++i) {
        if (u < scratch_[i].first)
            return scratch_[i].second;
        u -= scratch_[i].first;
    }
    return scratch_[keep - 1].second;
}

std::vector<int32_t> sampling_candidates(std::span<const float> logits, const SamplingParams& p) {
    if (logits.empty())
        return {};
    check_logits(logits);
    if (greedy(p))
        return {argmax(logits)};
    std::vector<Cand> c;
    const size_t keep = candidates(logits, p, c);
    std::vector<int32_t> ids;
    for (size_t i = 0; i < keep; ++i)
        ids.push_back(c[i].second);
    std::sort(ids.begin(), ids.end());
    return ids;
}

float log_prob(std::span<const float> logits, int32_t target) {
    if (target < 0 || size_t(target) >= logits.size())
        throw std::out_of_range("log_prob: target outside the logits");
    check_logits(logits);
    float mx = *std::max_element(logits.begin(), logits.end());
    double sum = 0;
    for (float l : logits)
        sum += std::exp(double(l) - mx);
    return float(double(logits[target]) - mx - std::log(sum));
}

std::vector<std::pair<int32_t, float>> top_logits(std::span<const float> logits, uint32_t n) {
    std::vector<std::pair<int32_t, float>> v;
    v.reserve(logits.size());
    for (size_t i = 0; i < logits.size(); ++i)
        v.emplace_back(int32_t(i), logits[i]);
    n = std::min<uint32_t>(n, uint32_t(v.size()));
    std::partial_sort(v.begin(), v.begin() + n, v.end(), [](const auto& a, const auto& b) {
        return a.second > b.second || (a.second == b.second && a.first < b.first);
    });
    v.resize(n);
    return v;
}

} // namespace prefixd
