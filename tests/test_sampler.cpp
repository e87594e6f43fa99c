// Sampler: greedy, determinism per seed, top-k/top-p restriction, frequencies near the softmax,
// the candidate set against a full sort on fresh random logits (with ties),
// log_prob and top_logits.
#include "engine/sampler.h"

#include <doctest/doctest.h>

#include <cmath>
#include <algorithm>
#include <map>
#include <random>

using namespace prefixd;

TEST_CASE("greedy picks the argmax, lowest id on ties") {
    Sampler s({0.0f, 0, 1.0f, 1});
    std::vector<float> l = {0.1f, 3.0f, -1.0f, 3.0f};
    CHECK(s.sample(l) == 1);
    Sampler k1({1.0f, 1, 1.0f, 9});
    CHECK(k1.sample(l) == 1);
}

TEST_CASE("same seed, same tokens; different seed, different tokens") {
    std::vector<float> l(1000);
    for (size_t i = 0; i < l.size(); ++i)
        l[i] = float(std::sin(i * 0.37)) * 2;
    auto run = [&](uint64_t seed) {
        Sampler s({0.9f, 0, 1.0f, seed});
        std::vector<int32_t> out;
        for (int i = 0; i < 50; ++i)
            out.push_back(s.sample(l));
        return out;
    };
    CHECK(run(5) == run(5));
    CHECK(run(5) != run(6));
}

TEST_CASE("top-k and top-p restrict the candidates; frequencies follow the softmax") {
    std::vector<float> l = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
    Sampler k2({1.0f, 2, 1.0f, 3});
    Sampler p({1.0f, 0, 0.7f, 3}); // 0.5 + 0.3 >= 0.7 -> {0, 1}
    Sampler all({1.0f, 0, 1.0f, 3});
    std::map<int32_t, int> ck, cp, ca;
    const int N = 20000;
    for (int i = 0; i < N; ++i) {
        ck[k2.sample(l)]++;
        cp[p.sample(l)]++;
        ca[all.sample(l)]++;
    }
    CHECK(ck.size() == 2);
    CHECK(cp.size() == 2);
    CHECK(ck[0] / double(N) == doctest::Approx(0.5 / 0.8).epsilon(0.05));
    CHECK(ca[0] / double(N) == doctest::Approx(0.5).epsilon(0.05));
    CHECK(ca[3] / double(N) == doctest::Approx(0.05).epsilon(0.2));
    Sampler cold({0.01f, 0, 1.0f, 3}); // near-greedy
    for (int i = 0; i < 100; ++i)
        CHECK(cold.sample(l) == 0);
}

TEST_CASE("log_prob and top_logits") {
    std::vector<float> l = {1.0f, 2.0f, 3.0f};
    double z = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
    CHECK(log_prob(l, 2) == doctest::Approx(3.0 - z));
    CHECK(log_prob(l, 0) == doctest::Approx(1.0 - z));
    std::vector<float> big = {1000.0f, 0.0f};
    CHECK(std::isfinite(log_prob(big, 1)));
    CHECK_THROWS(log_prob(l, 3));
    auto t = top_logits(l, 2);
    REQUIRE(t.size() == 2);
    CHECK(t[0].first == 2);
    CHECK(t[1].first == 1);
    CHECK(top_logits(l, 10).size() == 3);
}

TEST_CASE("sampling candidates equal the prefix of a full sort, on fresh random logits with ties") {
    const uint32_t seed = std::random_device{}();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 3.0f);
    for (int trial = 0; trial < 300; ++trial) {
        const size_t n = 1 + rng() % 3000;
        std::vector<float> l(n);
        const bool ties = trial % 3 == 0; // few distinct values: many equal weights
        for (auto& v : l)
            v = ties ? std::round(nd(rng)) : nd(rng);
        SamplingParams p;
        p.temperature = 0.2f + float(rng() % 1000) / 500.0f;
        p.top_k = trial % 4 == 1 ? uint32_t(1 + rng() % n) : 0;
        p.top_p = trial % 5 == 2 ? 1.0f : float(rng() % 1000 + 1) / 1000.0f;
        INFO("trial " << trial << " n " << n << " T " << p.temperature << " top_k " << p.top_k << " top_p "
                      << p.top_p);
        // reference: everything sorted (by logit for top-k, then by weight), prefix by cumulative mass
        std::vector<std::pair<float, int32_t>> c(n);
        const float mx = *std::max_element(l.begin(), l.end());
        for (size_t i = 0; i < n; ++i)
            c[i] = {l[i], int32_t(i)};
        auto ahead = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
        std::sort(c.begin(), c.end(), ahead);
        if (p.top_k > 1 && p.top_k < n)
            c.resize(p.top_k);
        for (auto& e : c)
            e.first = std::exp((e.first - mx) / p.temperature);
        if (p.top_k == 0)
            std::sort(c.begin(), c.end(), ahead);
        double total = 0;
        for (auto& e : c)
            total += e.first;
        size_t keep = c.size();
        if (p.top_k == 1) {
            keep = 1;
        } else if (p.top_p < 1.0f) {
            double cum = 0;
            for (keep = 0; keep < c.size();)
                if ((cum += c[keep++].first) >= double(p.top_p) * total)
                    break;
        }
        std::vector<int32_t> want;
        for (size_t i = 0; i < keep; ++i)
            want.push_back(c[i].second);
        std::sort(want.begin(), want.end());
        CHECK(sampling_candidates(l, p) == want);
    }
}

TEST_CASE("top-p draws stay in the candidates and follow their renormalised softmax") {
    const uint32_t seed = std::random_device{}();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 2.0f);
    std::vector<float> l(500);
    for (auto& v : l)
        v = nd(rng);
    const SamplingParams p{0.8f, 0, 0.9f, seed};
    const auto cand = sampling_candidates(l, p);
    REQUIRE(cand.size() > 3);
    REQUIRE(cand.size() < l.size());
    double z = 0;
    const float mx = *std::max_element(l.begin(), l.end());
    for (int32_t id : cand)
        z += std::exp(double(l[id] - mx) / 0.8);
    Sampler s(p);
    std::map<int32_t, int> count;
    const int N = 40000;
    for (int i = 0; i < N; ++i)
        count[s.sample(l)]++;
    for (auto& [id, k] : count)
        CHECK(std::binary_search(cand.begin(), cand.end(), id));
    for (int32_t id : cand) {
        const double q = std::exp(double(l[id] - mx) / 0.8) / z;
        const double sd = std::sqrt(q * (1 - q) / N);
        CHECK(std::abs(count[id] / double(N) - q) < 5 * sd + 1e-4);
    }
}

TEST_CASE("a temperature near zero (the protocol allows any in [0, 100]) samples the argmax") {
    std::mt19937 rng(std::random_device{}());
    std::normal_distribution<float> nd;
    std::vector<float> l(129280);
    for (auto& v : l)
        v = nd(rng);
    const int32_t best = int32_t(std::max_element(l.begin(), l.end()) - l.begin());
    for (float top_p : {1.0f, 0.9f}) {
        Sampler s({1e-38f, 0, top_p, 7});
        for (int i = 0; i < 5; ++i)
            CHECK(s.sample(l) == best);
        if (top_p < 1.0f) // without top-p every id stays a candidate, the others at weight 0
            CHECK(sampling_candidates(l, {1e-38f, 0, top_p, 7}) == std::vector<int32_t>{best});
    }
}

TEST_CASE("NaN, +Inf or all -Inf logits are an error for every sampling mode; -Inf entries are never drawn") {
    std::mt19937 rng(11);
    std::normal_distribution<float> nd(0.0f, 2.0f);
    std::vector<float> good(129280);
    for (float& v : good)
        v = nd(rng);
    const SamplingParams modes[] = {
        {0.0f, 0, 1.0f, 1},  // greedy
        {1.0f, 0, 1.0f, 2},  // temperature
        {1.0f, 40, 1.0f, 3}, // top-k
        {1.0f, 0, 0.9f, 4},  // top-p (the quickselect: NaN gave it no order, O(V^2) passes)
        {0.7f, 50, 0.5f, 5}, // both
    };
    for (const SamplingParams& p : modes) {
        INFO("temperature " << p.temperature << " top_k " << p.top_k << " top_p " << p.top_p);
        for (const float bad : {NAN, INFINITY}) {
            for (const size_t at : {size_t(0), size_t(777), good.size() - 1}) {
                auto l = good;
                l[at] = bad;
                Sampler s(p);
                CHECK_THROWS_WITH_AS(s.sample(l), doctest::Contains("NaN or +Inf"), std::domain_error);
                CHECK_THROWS_AS(sampling_candidates(l, p), std::domain_error);
            }
        }
        std::vector<float> none(good.size(), -INFINITY);
        Sampler s(p);
        CHECK_THROWS_WITH_AS(s.sample(none), doctest::Contains("all -Inf"), std::domain_error);
        // -Inf marks tokens of probability 0: never drawn, never the argmax
        auto masked = good;
        for (size_t i = 0; i < masked.size(); i += 2)
            masked[i] = -INFINITY;
        Sampler m(p);
        for (int i = 0; i < 50; ++i)
            CHECK(m.sample(masked) % 2 == 1);
    }
    auto l = good;
    l[5] = NAN;
    CHECK_THROWS_AS(log_prob(l, 3), std::domain_error);
    CHECK(std::isfinite(log_prob(good, 3)));
}
