// Runner prefix cache: a keyed prefix (an adapter's virtual rows) is prefilled once and copied into
// later requests; results equal uncached runs (CPU and Vulkan), keys and rows must both match,
// cached prefixes give way to live requests under slot pressure, usage counts do not change.
// Also prints time to first token with and without a hit (a figure, not asserted).
#include "engine/runner.h"
#include "test_env.h"

#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <map>
#include <random>

using namespace prefixd;

namespace {

std::unique_ptr<Engine> open_engine(const char* f, const char* backend, uint32_t max_seqs,
                                    uint32_t rows = 512) {
    const auto path = test::models_dir() / f;
    REQUIRE_MESSAGE(std::filesystem::exists(path),
                    "missing test model " << path << " (ctest fixture test_models)");
    EngineOptions o;
    o.model_path = path.string();
    o.backend = backend;
    o.max_seqs = max_seqs;
    o.max_batch_rows = rows;
    o.max_ctx = 256;
    return Engine::open(o);
}

std::vector<float> adapter_rows(const Engine& e, uint32_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, 0.5f);
    std::vector<float> v(uint64_t(n) * e.config().hidden);
    for (auto& x : v)
        x = d(rng);
    return v;
}

// A greedy adapter job: n virtual rows then text; top raw logits per token to compare numerics.
Request job(const Engine& e, const std::vector<float>& rows, uint32_t n, const std::string& text,
            uint32_t max_tokens, std::string key = {}) {
    Request r;
    r.prompt = make_prompt(e, rows, n, text);
    r.max_tokens = max_tokens;
    r.stop_at_eos = false;
    r.top_logprobs = 4;
    r.top_raw_logits = true;
    r.prefix_key = std::move(key);
    r.prefix_rows = r.prefix_key.empty() ? 0 : n;
    return r;
}

// Runs one request and keeps its token events (the top raw logits live there).
struct Run {
    RequestResult res;
    std::vector<TokenEvent> events;
};
Run run(Runner& r, Request q) {
    Run out;
    RequestId id = r.submit(std::move(q));
    for (int steps = 0; steps < 500; ++steps) {
        auto ev = r.step();
        for (auto& [i, t] : ev.tokens)
            if (i == id)
                out.events.push_back(t);
        for (auto& [i, res] : ev.finished)
            if (i == id) {
                out.res = res;
                return out;
            }
    }
    FAIL("request did not finish");
    return out;
}

void check_same(const Run& a, const Run& b, float tol) {
    REQUIRE(a.res.finish == b.res.finish);
    CHECK(a.res.token_ids == b.res.token_ids);
    CHECK(a.res.text == b.res.text);
    CHECK(a.res.virtual_tokens == b.res.virtual_tokens);
    CHECK(a.res.prompt_tokens == b.res.prompt_tokens);
    CHECK(a.res.completion_tokens == b.res.completion_tokens);
    REQUIRE(a.events.size() == b.events.size());
    for (size_t k = 0; k < a.events.size(); ++k) {
        REQUIRE(a.events[k].top.size() == b.events[k].top.size());
        for (size_t j = 0; j < a.events[k].top.size(); ++j) {
            CHECK(a.events[k].top[j].first == b.events[k].top[j].first);
            CHECK(std::fabs(a.events[k].top[j].second - b.events[k].top[j].second) <=
                  tol * std::max(1.0f, std::fabs(b.events[k].top[j].second)));
        }
        CHECK(std::fabs(a.events[k].logprob - b.events[k].logprob) <=
              tol * std::max(1.0f, std::fabs(b.events[k].logprob)));
    }
}

// Uncached reference vs first keyed run (miss, saves) vs second keyed run with other text (hit).
void miss_then_hit(const char* model, const char* backend, uint32_t batch_rows, uint32_t n_virt,
                   uint32_t n_tok, float tol) {
    auto e = open_engine(model, backend, 4, batch_rows);
    Runner r(*e);
    auto rows = adapter_rows(*e, n_virt, 1);
    auto ref1 = run(r, job(*e, rows, n_virt, "first job text", n_tok));
    auto ref2 = run(r, job(*e, rows, n_virt, "another job entirely", n_tok));
    CHECK(r.prefix_cache_stats().entries == 0);
    auto a = run(r, job(*e, rows, n_virt, "first job text", n_tok, "global/ad1/v1/m"));
    CHECK(a.res.cached_rows == 0);
    auto s = r.prefix_cache_stats();
    CHECK(s.misses == 1);
    CHECK(s.saves == 1);
    CHECK(s.entries == 1);
    auto b = run(r, job(*e, rows, n_virt, "another job entirely", n_tok, "global/ad1/v1/m"));
    CHECK(b.res.cached_rows == n_virt);
    CHECK(r.prefix_cache_stats().hits == 1);
    CHECK(b.res.virtual_tokens == n_virt); // still billed per job
    check_same(a, ref1, tol);
    check_same(b, ref2, tol);
    CHECK(r.idle());
}

} // namespace

TEST_CASE("CPU: a cache hit gives the same tokens and logits as an uncached run") {
    miss_then_hit("tiny-v2-f32.gguf", "cpu", 512, 32, 6, 1e-4f);
    miss_then_hit("tiny-v3-f32.gguf", "cpu", 512, 16, 4, 1e-4f);
}

TEST_CASE("CPU: prefix completed in the middle of a prefill chunk, and chunked hits") {
    miss_then_hit("tiny-v2-f32.gguf", "cpu", 7, 20, 4, 1e-4f); // 20 rows end inside the third chunk
}

TEST_CASE("Vulkan: a cache hit gives the same tokens and logits as an uncached run") {
    miss_then_hit("tiny-v2-f32.gguf", "vulkan", 512, 32, 3, 2e-3f);
}

TEST_CASE("keys and rows must both match; a whole-prompt prefix and Score requests work") {
    auto e = open_engine("tiny-v2-f32.gguf", "cpu", 6);
    Runner r(*e);
    auto rows = adapter_rows(*e, 8, 2), other = adapter_rows(*e, 8, 3);
    run(r, job(*e, rows, 8, "x", 2, "tenantA/ad/v1/m"));
    // Same rows, another key (another tenant): no hit, its own entry.
    auto b = run(r, job(*e, rows, 8, "x", 2, "tenantB/ad/v1/m"));
    CHECK(b.res.cached_rows == 0);
    CHECK(r.prefix_cache_stats().entries == 2);
    // Same key, other rows (a caller bug or a changed adapter): no hit, and the results are those
    // of the other rows, not of the cached ones; the entry is replaced.
    auto ref = run(r, job(*e, other, 8, "x", 3));
    auto c = run(r, job(*e, other, 8, "x", 3, "tenantA/ad/v1/m"));
    CHECK(c.res.cached_rows == 0);
    check_same(c, ref, 1e-4f);
    CHECK(r.prefix_cache_stats().entries == 2);
    CHECK(run(r, job(*e, other, 8, "y", 2, "tenantA/ad/v1/m")).res.cached_rows == 8);
    CHECK(run(r, job(*e, rows, 8, "y", 2, "tenantA/ad/v1/m")).res.cached_rows == 0);
    CHECK(r.prefix_cache_stats().hits == 1);

    // The prefix is the whole prompt: the hit copies all but the last row (which gives the logits).
    Request whole;
    whole.prompt = {Segment::from_embeds(rows, 8)};
    whole.max_tokens = 3;
    whole.stop_at_eos = false;
    auto w0 = r.run(whole);
    whole.prefix_key = "global/whole";
    whole.prefix_rows = 8;
    auto w1 = r.run(whole), w2 = r.run(whole);
    CHECK(w1.cached_rows == 0);
    CHECK(w2.cached_rows == 7);
    CHECK(w1.token_ids == w0.token_ids);
    CHECK(w2.token_ids == w0.token_ids);

    // Score with a cached prefix: the same log-probs.
    Request sc;
    sc.kind = RequestKind::Score;
    sc.prompt = make_prompt(*e, rows, 8, "score this");
    sc.continuation = w0.token_ids;
    auto s0 = r.run(sc);
    sc.prefix_key = "global/score";
    sc.prefix_rows = 8;
    auto s1 = r.run(sc), s2 = r.run(sc);
    CHECK(s2.cached_rows == 8);
    REQUIRE(s2.token_logprobs.size() == s0.token_logprobs.size());
    for (size_t i = 0; i < s0.token_logprobs.size(); ++i) {
        CHECK(s1.token_logprobs[i] == doctest::Approx(s0.token_logprobs[i]).epsilon(1e-4));
        CHECK(s2.token_logprobs[i] == doctest::Approx(s0.token_logprobs[i]).epsilon(1e-4));
    }
    CHECK(s2.virtual_tokens == 8);

    // Dropping by key prefix (e.g. an adapter deleted), then bad prefix_rows.
    CHECK(r.drop_prefixes("tenantA/") == 1);
    CHECK(r.drop_prefixes("") == 3); // tenantB, global/whole, global/score
    CHECK(r.prefix_cache_stats().entries == 0);
    auto bad = job(*e, rows, 8, "x", 2, "k");
    bad.prefix_rows = 0;
    CHECK_THROWS_AS(r.submit(bad), EngineError);
    bad.prefix_rows = 100;
    CHECK_THROWS_AS(r.submit(bad), EngineError);
}

TEST_CASE("same-key requests running together: one save, later ones hit, all equal to uncached runs") {
    auto e = open_engine("tiny-v3-f32.gguf", "cpu", 6, 10);
    Runner r(*e);
    auto rows = adapter_rows(*e, 12, 6);
    const std::vector<std::string> texts = {"alpha", "beta gamma", "delta epsilon zeta"};
    std::vector<Run> ref;
    for (auto& t : texts)
        ref.push_back(run(r, job(*e, rows, 12, t, 3)));
    std::map<RequestId, size_t> ids;
    for (size_t i = 0; i < texts.size(); ++i)
        ids[r.submit(job(*e, rows, 12, texts[i], 3, "global/ad/v1/m"))] = i;
    std::map<RequestId, RequestResult> done;
    for (int steps = 0; steps < 100 && !r.idle(); ++steps)
        for (auto& [id, res] : r.step().finished)
            done[id] = res;
    REQUIRE(done.size() == texts.size());
    for (auto& [id, i] : ids) {
        CHECK(done[id].token_ids == ref[i].res.token_ids);
        CHECK(done[id].virtual_tokens == 12);
    }
    auto s = r.prefix_cache_stats();
    CHECK(s.saves == 1);
    CHECK(s.entries == 1);
    CHECK(s.misses == 1); // the later ones waited for the first save (no duplicate prefill)
    CHECK(s.hits == texts.size() - 1);
    auto later = run(r, job(*e, rows, 12, texts[2], 3, "global/ad/v1/m"));
    CHECK(later.res.cached_rows == 12);
    check_same(later, ref[2], 1e-4f);
}

TEST_CASE("cached prefixes give way to live requests; the entry count is bounded") {
    auto e = open_engine("tiny-v2-f32.gguf", "cpu", 3);
    Runner r(*e);
    auto rows = adapter_rows(*e, 8, 4);
    std::vector<Run> ref;
    for (int i = 0; i < 3; ++i)
        ref.push_back(run(r, job(*e, rows, 8, "job " + std::to_string(i), 3)));
    run(r, job(*e, rows, 8, "a", 2, "A"));
    run(r, job(*e, rows, 8, "b", 2, "B"));
    REQUIRE(r.prefix_cache_stats().entries == 2); // 2 of the 3 slots hold cached prefixes
    // Three live requests need all three slots: both entries are evicted, none waits.
    std::map<RequestId, int> ids;
    for (int i = 0; i < 3; ++i)
        ids[r.submit(job(*e, rows, 8, "job " + std::to_string(i), 3))] = i;
    auto ev = r.step();
    CHECK(ev.tokens.size() == 3); // all three admitted and prefilled in the first step
    CHECK(r.prefix_cache_stats().entries == 0);
    CHECK(r.prefix_cache_stats().evictions == 2);
    std::map<RequestId, RequestResult> done;
    while (!r.idle())
        for (auto& [id, res] : r.step().finished)
            done[id] = res;
    for (auto& [id, i] : ids)
        CHECK(done[id].token_ids == ref[i].res.token_ids);

    // A keyed request while the other slots are busy: its prefix is not saved (no free slot).
    RequestId x = r.submit(job(*e, rows, 8, "x", 4));
    RequestId y = r.submit(job(*e, rows, 8, "y", 4));
    RequestId z = r.submit(job(*e, rows, 8, "z", 2, "Z"));
    (void)x, (void)y, (void)z;
    while (!r.idle())
        r.step();
    CHECK(r.prefix_cache_stats().skipped == 1);

    // Count bound: with one entry allowed, B replaces A (LRU), so A misses again.
    Runner one(*e, RunnerOptions{1});
    run(one, job(*e, rows, 8, "a", 2, "A"));
    run(one, job(*e, rows, 8, "b", 2, "B"));
    CHECK(one.prefix_cache_stats().entries == 1);
    CHECK(run(one, job(*e, rows, 8, "a", 2, "A")).res.cached_rows == 0);
    CHECK(run(one, job(*e, rows, 8, "a", 2, "A")).res.cached_rows == 8);
    // Disabled cache: keys are accepted, nothing is kept.
    Runner off(*e, RunnerOptions{0});
    run(off, job(*e, rows, 8, "a", 2, "A"));
    CHECK(run(off, job(*e, rows, 8, "a", 2, "A")).res.cached_rows == 0);
    CHECK(off.prefix_cache_stats().entries == 0);
}

TEST_CASE("figure: time to first token, 32 virtual rows, with and without a cache hit (CPU)") {
    for (const char* model : {"tiny-v2-f32.gguf", "tiny-v3-f32.gguf"}) {
        auto e = open_engine(model, "cpu", 4);
        Runner r(*e);
        auto rows = adapter_rows(*e, 32, 5);
        auto ttft = [&](const std::string& key, const std::string& text) {
            auto t0 = std::chrono::steady_clock::now();
            RequestId id = r.submit(job(*e, rows, 32, text, 1, key));
            double ms = -1;
            while (!r.idle()) {
                auto ev = r.step();
                for (auto& [i, t] : ev.tokens)
                    if (i == id && ms < 0)
                        ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                                 .count();
            }
            return ms;
        };
        double cold = 0, hit = 0;
        const uint32_t text_tokens = r.run(job(*e, rows, 32, "the job text 0", 1)).prompt_tokens;
        const int reps = 5;
        for (int i = 0; i < reps; ++i) {
            r.drop_prefixes("");
            cold += ttft("k", "the job text " + std::to_string(i)); // miss (prefill 32 + text, then save)
            hit += ttft("k", "the job text " + std::to_string(i));  // hit: only the text is prefilled
        }
        CHECK(r.prefix_cache_stats().hits == reps);
        MESSAGE(std::string(model) << ": TTFT 32 virtual rows + " << text_tokens << " text tokens, CPU: miss "
                                   << cold / reps << " ms, hit " << hit / reps << " ms");
    }
}
