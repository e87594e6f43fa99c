// Runner prefix cache, requests arriving together: N same-key requests submitted at once prefill
// the prefix once (1 miss, N-1 hits after waiting for the first to save it) with results equal to
// uncached runs; a cancelled leader or a save skipped for want of a slot never strands the waiters;
// same key with other rows does not wait. CPU and Vulkan (lavapipe).
#include "engine/runner.h"
#include "test_env.h"

#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <random>

using namespace prefixd;

namespace {

std::unique_ptr<Engine> open_engine(const char* backend, uint32_t max_seqs, uint32_t rows) {
    const auto path = test::models_dir() / "tiny-v2-f32.gguf";
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

// Greedy adapter job; top raw logits per token so that numerics can be compared, not only ids.
Request job(const Engine& e, const std::vector<float>& rows, uint32_t n, const std::string& text,
            uint32_t max_tokens, std::string key = {}) {
    Request r;
    r.prompt = make_prompt(e, rows, n, text);
    r.max_tokens = max_tokens;
    r.stop_at_eos = false;
    r.top_logprobs = 3;
    r.top_raw_logits = true;
    r.prefix_key = std::move(key);
    r.prefix_rows = r.prefix_key.empty() ? 0 : n;
    return r;
}

struct Out {
    RequestResult res;
    std::vector<TokenEvent> events;
};

// Steps until every submitted request finished (bounded); returns results by id.
std::map<RequestId, Out> drain(Runner& r, int max_steps = 400) {
    std::map<RequestId, Out> out;
    for (int s = 0; s < max_steps && !r.idle(); ++s) {
        auto ev = r.step();
        for (auto& [id, t] : ev.tokens)
            out[id].events.push_back(t);
        for (auto& [id, res] : ev.finished)
            out[id].res = res;
    }
    REQUIRE_MESSAGE(r.idle(), "requests still running after " << max_steps << " steps");
    return out;
}

Out run_one(Runner& r, Request q) {
    RequestId id = r.submit(std::move(q));
    auto all = drain(r);
    return all[id];
}

void check_same(const Out& a, const Out& b, float tol) {
    REQUIRE(a.res.finish == b.res.finish);
    CHECK(a.res.token_ids == b.res.token_ids);
    CHECK(a.res.text == b.res.text);
    CHECK(a.res.virtual_tokens == b.res.virtual_tokens);
    CHECK(a.res.prompt_tokens == b.res.prompt_tokens);
    REQUIRE(a.events.size() == b.events.size());
    for (size_t k = 0; k < a.events.size(); ++k) {
        REQUIRE(a.events[k].top.size() == b.events[k].top.size());
        for (size_t j = 0; j < a.events[k].top.size(); ++j) {
            CHECK(a.events[k].top[j].first == b.events[k].top[j].first);
            CHECK(std::fabs(a.events[k].top[j].second - b.events[k].top[j].second) <=
                  tol * std::max(1.0f, std::fabs(b.events[k].top[j].second)));
        }
    }
}

// N same-key jobs (different texts) submitted together: one miss, N-1 hits, equal results.
void together(const char* backend, uint32_t batch_rows, uint32_t n_virt, float tol) {
    const size_t N = 4;
    auto e = open_engine(backend, 6, batch_rows);
    Runner r(*e);
    auto rows = adapter_rows(*e, n_virt, 11);
    std::vector<std::string> texts;
    for (size_t i = 0; i < N; ++i)
        texts.push_back("request number " + std::to_string(i) + (i % 2 ? " with more words" : ""));
    std::vector<Out> ref;
    for (auto& t : texts)
        ref.push_back(run_one(r, job(*e, rows, n_virt, t, 4)));
    REQUIRE(r.prefix_cache_stats().entries == 0);
    std::map<RequestId, size_t> ids;
    for (size_t i = 0; i < N; ++i)
        ids[r.submit(job(*e, rows, n_virt, texts[i], 4, "global/ad/v1/m"))] = i;
    auto done = drain(r);
    auto s = r.prefix_cache_stats();
    CHECK(s.misses == 1);
    CHECK(s.hits == N - 1);
    CHECK(s.saves == 1);
    CHECK(s.entries == 1);
    CHECK(s.waits >= N - 1);
    size_t cached = 0;
    for (auto& [id, i] : ids) {
        const Out& o = done.at(id);
        CHECK(o.res.virtual_tokens == n_virt); // billed alike, hit or not
        cached += o.res.cached_rows == n_virt;
        check_same(o, ref[i], tol);
    }
    CHECK(cached == N - 1);
}

} // namespace

TEST_CASE("CPU: same-key requests submitted together prefill the prefix once") {
    together("cpu", 512, 24, 1e-4f);
}

TEST_CASE("CPU: same-key requests together, prefix spread over several prefill chunks") {
    together("cpu", 9, 30, 1e-4f); // 30 prefix rows take four 9-row chunks
}

TEST_CASE("Vulkan: same-key requests submitted together prefill the prefix once") {
    together("vulkan", 512, 16, 2e-3f);
}

TEST_CASE("a cancelled leader does not strand the requests behind it; the next one leads") {
    auto e = open_engine("cpu", 6, 8); // 8-row chunks: a 24-row prefix takes three steps
    Runner r(*e);
    auto rows = adapter_rows(*e, 24, 12);
    auto ref_b = run_one(r, job(*e, rows, 24, "second", 3));
    auto ref_c = run_one(r, job(*e, rows, 24, "third one", 3));
    auto ref_d = run_one(r, job(*e, rows, 24, "fourth", 3));
    // Cancelled mid-prefill: the leader takes the whole row budget until its last chunk, so the
    // others had not been looked at yet; b then leads and c waits for b's save.
    RequestId a = r.submit(job(*e, rows, 24, "first", 3, "K"));
    RequestId b = r.submit(job(*e, rows, 24, "second", 3, "K"));
    RequestId c = r.submit(job(*e, rows, 24, "third one", 3, "K"));
    CHECK(r.step().tokens.empty());
    r.cancel(a);
    auto done = drain(r);
    CHECK(done.at(a).res.finish == FinishReason::Cancelled);
    check_same(done.at(b), ref_b, 1e-4f);
    check_same(done.at(c), ref_c, 1e-4f);
    auto s = r.prefix_cache_stats();
    CHECK(s.misses == 2); // a, then b took over
    CHECK(s.hits == 1);   // c waited for b
    CHECK(s.saves == 1);
    CHECK(done.at(b).res.cached_rows == 0);
    CHECK(done.at(c).res.cached_rows == 24);

    // Cancelled before its first step: the next same-key request leads at once.
    r.drop_prefixes("");
    RequestId x = r.submit(job(*e, rows, 24, "first", 3, "K"));
    RequestId d = r.submit(job(*e, rows, 24, "fourth", 3, "K"));
    r.cancel(x);
    auto done2 = drain(r);
    CHECK(done2.at(x).res.finish == FinishReason::Cancelled);
    check_same(done2.at(d), ref_d, 1e-4f);
    CHECK(done2.at(d).res.cached_rows == 0);
}

TEST_CASE("a save skipped for want of a slot releases the waiters; other rows never wait") {
    auto e = open_engine("cpu", 2, 512);
    Runner r(*e);
    auto rows = adapter_rows(*e, 8, 13), other = adapter_rows(*e, 8, 14);
    auto ref_b = run_one(r, job(*e, rows, 8, "bee", 3));
    // a leads, b waits, c (no key) takes the second slot: a's save finds no free slot.
    RequestId a = r.submit(job(*e, rows, 8, "ay", 3, "K"));
    RequestId b = r.submit(job(*e, rows, 8, "bee", 3, "K"));
    RequestId c = r.submit(job(*e, rows, 8, "sea", 5));
    auto done = drain(r);
    for (RequestId id : {a, b, c})
        CHECK(done.at(id).res.finish == FinishReason::Length);
    check_same(done.at(b), ref_b, 1e-4f);
    auto s = r.prefix_cache_stats();
    CHECK(s.skipped >= 1);
    CHECK(s.hits + s.misses == 2);

    // Same key, other rows (e.g. a changed adapter under a stale key): no waiting, both computed.
    Runner r2(*e);
    auto ref_o = run_one(r2, job(*e, other, 8, "x", 3));
    RequestId p = r2.submit(job(*e, rows, 8, "x", 3, "K2"));
    RequestId q = r2.submit(job(*e, other, 8, "x", 3, "K2"));
    auto ev = r2.step();
    CHECK(ev.tokens.size() == 2); // both admitted and prefilled in the first step
    auto done2 = drain(r2);
    for (auto& [id, t] : ev.tokens) // first tokens came from the step above
        done2[id].events.insert(done2[id].events.begin(), t);
    CHECK(done2.at(p).res.finish == FinishReason::Length);
    check_same(done2.at(q), ref_o, 1e-4f);
    CHECK(r2.prefix_cache_stats().waits == 0);
    CHECK(r2.prefix_cache_stats().misses == 2);
}
