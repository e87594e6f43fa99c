// Sampling: greedy argmax (lowest id on ties), or temperature -> top-k -> top-p -> a draw from a
// seeded mt19937_64 turned into a double by bit arithmetic (std distributions differ between
// standard libraries; this does not). Also log_prob and top_logits helpers.
#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace prefixd {

Sampler::Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) {}

int32_t Sampler::sample(std::span<const float> logits) {
    if (logits.empty())
        throw std::invalid_argument("sample: empty logits");
    if (p_.temperature <= 0.0f || p_.top_k == 1) {
        return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
    scratch_.clear();
    scratch_.reserve(logits.size());
    for (size_t i = 0; i < logits.size(); ++i)
        scratch_.emplace_back(logits[i] / p_.temperature, int32_t(i));
    auto by_logit = [](const auto& a, const auto& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    size_t k = scratch_.size();
    if (p_.top_k > 0 && p_.top_k < k) {
        k = p_.top_k;
        std::partial_sort(scratch_.begin(), scratch_.begin() + k, scratch_.end(), by_logit);
        scratch_.resize(k);
    } else {
        std::sort(scratch_.begin(), scratch_.end(), by_logit);
    }
    const float mx = scratch_[0].first;
    double sum = 0;
    for (auto& [l, id] : scratch_) {
        l = std::exp(l - mx);
        sum += l;
    }
    if (p_.top_p < 1.0f) { // smallest prefix whose mass reaches top_p
        double cum = 0;
        size_t keep = 0;
        while (keep < scratch_.size()) {
            cum += scratch_[keep++].first / sum;
            if (cum >= p_.top_p)
                break;
        }
        scratch_.resize(keep);
        sum = 0;
        for (auto& e : scratch_)
            sum += e.first;
    }
    double u = double(rng_() >> 11) * (1.0 / 9007199254740992.0) * sum; // [0, sum)
    for (auto& [w, id] : scratch_) {
        if (u < w)
            return id;
        u -= w;
    }
    return scratch_.back().second;
}

float log_prob(std::span<const float> logits, int32_t target) {
    if (target < 0 || size_t(target) >= logits.size())
        throw std::out_of_range("log_prob: target outside the logits");
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
