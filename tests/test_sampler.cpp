// Sampler: greedy, determinism per seed, top-k/top-p restriction, frequencies near the softmax,
// log_prob and top_logits.
#include "engine/sampler.h"

#include <doctest/doctest.h>

#include <cmath>
#include <map>

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
