// Token sampling from logits: greedy (temperature 0), temperature, top-k, top-p, seeded RNG.
// The same seed and logits give the same tokens on every run and machine.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <vector>

namespace prefixd {

struct SamplingParams {
    float temperature = 0.0f;  // 0 = greedy
    uint32_t top_k = 0;        // 0 = off
    float top_p = 1.0f;        // 1 = off
    std::optional<uint64_t> seed; // none: 0 here; Runner::submit draws one for a sampled Generate
};

// A fresh seed (64 bits from std::random_device) for a sampled request that names none.
uint64_t random_seed();

// sample(), sampling_candidates() and log_prob() throw std::domain_error when the logits hold a
// NaN or +Inf, or are all -Inf (a broken model or overflowing inputs): nothing can be drawn then.
class Sampler {
  public:
    explicit Sampler(const SamplingParams& p);
    int32_t sample(std::span<const float> logits);
  private:
    SamplingParams p_;
    std::mt19937_64 rng_;
    std::vector<std::pair<float, int32_t>> scratch_;
};

// The ids a sample() with p draws from, ascending: the top_k highest logits (all where 0), then
// of those the smallest set of the highest (lower id first on ties) whose softmax mass at
// p.temperature reaches p.top_p. Greedy parameters: the argmax alone.
std::vector<int32_t> sampling_candidates(std::span<const float> logits, const SamplingParams& p);
// log-softmax of logits evaluated at `target` (numerically stable).
float log_prob(std::span<const float> logits, int32_t target);
// Top n (id, logit) pairs, highest first.
std::vector<std::pair<int32_t, float>> top_logits(std::span<const float> logits, uint32_t n);

}  // namespace prefixd
