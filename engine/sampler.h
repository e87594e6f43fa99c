// Token sampling from logits: greedy (temperature 0), temperature, top-k, top-p, seeded RNG.
// The same seed and logits give the same tokens on every run and machine.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace prefixd {

struct SamplingParams {
    float temperature = 0.0f;  // 0 = greedy
    uint32_t top_k = 0;        // 0 = off
    float top_p = 1.0f;        // 1 = off
    uint64_t seed = 0;
};

class Sampler {
  public:
    explicit Sampler(const SamplingParams& p);
    int32_t sample(std::span<const float> logits);
  private:
    SamplingParams p_;
    std::mt19937_64 rng_;
    std::vector<std::pair<float, int32_t>> scratch_;
};

// log-softmax of logits evaluated at `target` (numerically stable).
float log_prob(std::span<const float> logits, int32_t target);
// Top n (id, logit) pairs, highest first.
std::vector<std::pair<int32_t, float>> top_logits(std::span<const float> logits, uint32_t n);

}  // namespace prefixd
