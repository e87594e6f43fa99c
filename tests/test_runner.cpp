// Runner on the CPU backend: deterministic generation, continuous batching with chunked prefill
// equal to single runs, Score log-probs equal to generation's, stop strings, cancel, PEFT prompt
// order, UTF-8-safe streamed text, and admission errors.
#include "engine/runner.h"
#include "test_core_util.h"
#include "test_env.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

using namespace prefixd;

static EngineOptions cpu_options(const std::string& path) {
    EngineOptions o;
    o.model_path = path;
    o.backend = "cpu";
    return o;
}

static std::unique_ptr<Engine> open_cpu(const char* f, uint32_t max_seqs = 16, uint32_t rows = 512) {
    EngineOptions o = cpu_options((test::models_dir() / f).string());
    o.max_seqs = max_seqs;
    o.max_batch_rows = rows;
    o.max_ctx = 256;
    return Engine::open(o);
}

static Request gen(const Engine& e, const std::string& text, uint32_t n) {
    Request r;
    r.prompt = make_prompt(e, {}, 0, text);
    r.max_tokens = n;
    return r;
}

// Runs one request to its end; `streamed` collects the text of its token events.
static RequestResult run_streamed(Runner& r, const Request& req, std::string& streamed) {
    RequestId id = r.submit(req);
    RequestResult res;
    while (!r.idle()) {
        auto ev = r.step();
        for (auto& [i, t] : ev.tokens)
            streamed += t.text;
        for (auto& [i, rr] : ev.finished)
            if (i == id)
                res = rr;
    }
    return res;
}

static bool valid_utf8(const std::string& s) {
    size_t i = 0;
    while (i < s.size()) {
        unsigned char c = s[i];
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (n == 0 || i + n > s.size())
            return false;
        for (size_t k = 1; k < n; ++k)
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
        i += n;
    }
    return true;
}

TEST_CASE("generation is deterministic; seeded sampling repeats") {
    auto e = open_cpu("tiny-v2-q8_0.gguf");
    Runner r(*e);
    auto a = r.run(gen(*e, "The quick brown fox", 8));
    auto b = r.run(gen(*e, "The quick brown fox", 8));
    CHECK(a.finish == FinishReason::Length);
    CHECK(a.token_ids.size() == 8);
    CHECK(a.token_ids == b.token_ids);
    CHECK(a.prompt_tokens == 5); // BOS + 4
    CHECK(a.completion_tokens == 8);
    CHECK(valid_utf8(a.text));
    auto s1 = gen(*e, "x", 8), s2 = gen(*e, "x", 8), s3 = gen(*e, "x", 8);
    s1.sampling = s2.sampling = {1.0f, 0, 1.0f, 77};
    s3.sampling = {1.0f, 0, 1.0f, 78};
    auto r1 = r.run(s1), r2 = r.run(s2), r3 = r.run(s3);
    CHECK(r1.token_ids == r2.token_ids);
    CHECK(r1.token_ids != r3.token_ids);
}

TEST_CASE("continuous batching with chunked prefill equals single runs; events stream the text") {
    auto e = open_cpu("tiny-v3-f32.gguf", 2, 6); // 2 slots, 6 rows per step
    Runner r(*e);
    std::vector<std::string> prompts = {"One two three four five six seven", "你好，世界", "a",
                                        "def f(x):\n    return x"};
    std::vector<RequestResult> single;
    for (auto& p : prompts)
        single.push_back(r.run(gen(*e, p, 6)));
    std::map<RequestId, size_t> ids;
    for (size_t i = 0; i < prompts.size(); ++i)
        ids[r.submit(gen(*e, prompts[i], 6))] = i;
    std::map<RequestId, std::string> streamed;
    std::map<RequestId, RequestResult> done;
    int steps = 0;
    while (!r.idle()) {
        auto ev = r.step();
        ++steps;
        for (auto& [id, t] : ev.tokens)
            streamed[id] += t.text;
        for (auto& [id, res] : ev.finished)
            done[id] = res;
        REQUIRE(steps < 200);
    }
    REQUIRE(done.size() == prompts.size());
    for (auto& [id, i] : ids) {
        CHECK(done[id].token_ids == single[i].token_ids);
        CHECK(done[id].text == single[i].text);
        CHECK(streamed[id] == done[id].text);
        for (size_t k = 0; k < single[i].token_logprobs.size(); ++k)
            CHECK(done[id].token_logprobs[k] == doctest::Approx(single[i].token_logprobs[k]).epsilon(1e-3));
    }
}

// A long prompt arriving while another request generates is prefilled in chunks that keep each
// step within max_step_seconds, by the costs measured so far, so the running request gets a token
// every step instead of waiting for a max_batch_rows chunk. A bound no step can meet (1 ns) gives
// the least chunk, kMinPrefillRows; no bound gives one chunk. The results do not change.
TEST_CASE("while a request decodes, a new prompt is prefilled in chunks that keep steps short") {
    auto e = open_cpu("tiny-v2-f32.gguf");
    std::string text;
    for (int i = 0; i < 30; ++i)
        text += " word" + std::to_string(i);
    const Request longer = gen(*e, text, 4);
    uint32_t rows = 0;
    for (auto& sg : longer.prompt)
        rows += sg.size();
    REQUIRE(rows > 4 * RunnerOptions::kMinPrefillRows);
    struct Outcome {
        int steps_to_first = 0;   // steps from the long prompt's submit to its first token
        int running_tokens = 0;   // tokens the running request got in those steps
        std::vector<int32_t> ids; // the long prompt's tokens
        StepCosts costs;
    };
    auto run = [&](double bound) {
        RunnerOptions o;
        o.max_step_seconds = bound;
        Runner r(*e, o);
        RequestId a = r.submit(gen(*e, "running", 200));
        for (int i = 0; i < 3; ++i) // a decodes from here on; the steps measured decode rows
            r.step();
        RequestId b = r.submit(longer);
        Outcome out;
        bool first = false;
        while (!r.idle()) {
            auto ev = r.step();
            if (!first)
                ++out.steps_to_first;
            for (auto& [id, t] : ev.tokens) {
                if (id == a && !first)
                    ++out.running_tokens;
                if (id == b) {
                    first = true;
                    out.ids.push_back(t.id);
                }
            }
            if (first && out.ids.size() == 4)
                r.cancel(a);
            REQUIRE(out.steps_to_first < 1000);
        }
        out.costs = r.step_costs();
        return out;
    };
    const Outcome unbounded = run(0), tight = run(1e-9), loose = run(3600);
    CHECK(unbounded.steps_to_first == 1);
    CHECK(tight.steps_to_first ==
          int((rows + RunnerOptions::kMinPrefillRows - 1) / RunnerOptions::kMinPrefillRows));
    CHECK(tight.running_tokens == tight.steps_to_first); // a token every step
    CHECK(tight.costs.last_prefill_budget == RunnerOptions::kMinPrefillRows);
    CHECK(tight.costs.decode_row_s > 0);
    CHECK(tight.costs.prefill_row_s > 0);
    CHECK(loose.steps_to_first == 1); // an hour: the whole prompt fits one step
    CHECK(tight.ids == unbounded.ids);
    CHECK(loose.ids == unbounded.ids);
}

// The cost model alone, fed step times. A decode step's cost is partly fixed, so the per-row
// decode estimate from one stream over-counts two streams' share of a mixed step. Those steps leave
// nothing for the prefill rows and must not be folded in: folding ~0 drove the prefill estimate to
// nothing, and the first step after a stream ended took a whole 511-row chunk (a minute on lavapipe).
TEST_CASE("step budget: a decode estimate that over-counts does not collapse the prefill estimate") {
    StepBudget b(2.0);
    CHECK(b.prefill_rows(0, 512) == 512);                                // nothing decodes: the whole chunk
    CHECK(b.prefill_rows(1, 511) == 4 * RunnerOptions::kMinPrefillRows); // nothing measured yet
    b.measured(1.0, 1, 0);                                               // one stream: 1.0 s per decode step
    b.measured(3.0, 1, 16); // a mixed step: 16 prefill rows took 2.0 s
    CHECK(b.costs().prefill_row_s == doctest::Approx(0.125));
    CHECK(b.prefill_rows(1, 511) == 8); // (2.0 - 1.0) / 0.125
    for (int i = 0; i < 20; ++i) {      // two streams (1.1 s, not 2 x 1.0) and 8 prefill rows
        CHECK(b.prefill_rows(2, 510) == RunnerOptions::kMinPrefillRows);
        b.measured(2.1, 2, 8);
    }
    CHECK(b.costs().prefill_row_s == doctest::Approx(0.125)); // unchanged, not ~0
    CHECK(b.prefill_rows(1, 511) == 8);                       // one stream again: not 511
    b.measured(1.5, 1, 8);                                    // 8 rows in 0.5 s: cheaper
    CHECK(b.costs().prefill_row_s == doctest::Approx(0.5 * 0.125 + 0.5 * 0.0625));
    CHECK(b.prefill_rows(1, 511) == 10); // 1.0 / 0.09375 = 10.7
    StepBudget off(0);
    off.measured(1.0, 1, 0);
    CHECK(off.prefill_rows(1, 511) == 511); // no bound
}

TEST_CASE("score log-probs equal the generation's") {
    auto e = open_cpu("tiny-v2-f32.gguf", 4, 5);
    Runner r(*e);
    auto g = r.run(gen(*e, "Scoring a continuation", 6));
    Request s;
    s.kind = RequestKind::Score;
    s.prompt = make_prompt(*e, {}, 0, "Scoring a continuation");
    s.continuation = g.token_ids;
    auto sc = r.run(s);
    REQUIRE(sc.token_logprobs.size() == 6);
    for (size_t i = 0; i < 6; ++i)
        CHECK(sc.token_logprobs[i] == doctest::Approx(g.token_logprobs[i]).epsilon(1e-3));
    CHECK(sc.logprob_sum == doctest::Approx(g.logprob_sum).epsilon(1e-3));
    for (float lp : sc.token_logprobs)
        CHECK(lp <= 0.0f);
}

TEST_CASE("stop strings end the text before the stop; text held back until decided") {
    auto e = open_cpu("tiny-v2-q8_0.gguf");
    Runner r(*e);
    auto full = r.run(gen(*e, "Once upon a time", 24));
    REQUIRE(full.text.size() > 12);
    // Pick a stop string from the middle of the generated text, on character boundaries.
    size_t at = full.text.size() / 2;
    while (at > 0 && (full.text[at] & 0xc0) == 0x80)
        --at;
    size_t end = at + 1;
    while (end < full.text.size() && (full.text[end] & 0xc0) == 0x80)
        ++end;
    std::string stop = full.text.substr(at, end - at); // one character
    auto req = gen(*e, "Once upon a time", 24);
    req.stop = {"<never appears>", stop};
    std::string streamed;
    RequestResult res = run_streamed(r, req, streamed);
    CHECK(res.finish == FinishReason::Stop);
    CHECK(res.text == full.text.substr(0, full.text.find(stop)));
    CHECK(streamed == res.text);
    CHECK(valid_utf8(res.text));
}

// Two stop strings where the one listed first matches later in the text: the text ends at the
// earliest match of any (the bug was: at the first one in list order that matched anywhere).
TEST_CASE("several stop strings: the text ends at the earliest match, whatever the list order") {
    auto e = open_cpu("tiny-v2-q8_0.gguf");
    Runner r(*e);
    auto full = r.run(gen(*e, "Once upon a time", 32));
    // a 3-byte ASCII window [i, i+3) whose first occurrence is at i and whose last two bytes first
    // occur at i+1 (so "text[i+1..i+3)" alone would cut one byte later than "text[i..i+3)")
    size_t i = std::string::npos;
    for (size_t k = 1; k + 3 <= full.text.size(); ++k) {
        const std::string w = full.text.substr(k, 3);
        if (std::all_of(w.begin(), w.end(), [](char ch) { return (ch & 0x80) == 0; }) &&
            full.text.find(w) == k && full.text.find(w.substr(1)) == k + 1) {
            i = k;
            break;
        }
    }
    REQUIRE(i != std::string::npos);
    auto req = gen(*e, "Once upon a time", 32);
    req.stop = {full.text.substr(i + 1, 2), full.text.substr(i, 3)};
    std::string streamed;
    RequestResult res = run_streamed(r, req, streamed);
    CHECK(res.finish == FinishReason::Stop);
    CHECK(res.text == full.text.substr(0, i));
    CHECK(streamed == res.text);
}

// A backend that refuses every new sequence while no request holds one (out of device memory;
// here its only slot is taken outside the runner) can never free one: the request ends with the
// error instead of waiting forever.
TEST_CASE("a request that can never get a sequence ends with an error, not a hang") {
    auto e = open_cpu("tiny-v2-q8_0.gguf", 1);
    Runner r(*e);
    const SeqId taken = e->backend().create_sequence();
    RequestId id = r.submit(gen(*e, "no room", 4));
    std::map<RequestId, RequestResult> done;
    for (int k = 0; k < 50 && !r.idle(); ++k)
        for (auto& [i, res] : r.step().finished)
            done[i] = res;
    REQUIRE(done.count(id) == 1);
    CHECK(done[id].finish == FinishReason::Error);
    CHECK(done[id].error.find("cannot start") != std::string::npos);
    CHECK(r.idle());
    // With the slot back the same request runs.
    e->backend().free_sequence(taken);
    CHECK(r.run(gen(*e, "no room", 4)).finish == FinishReason::Length);
}

TEST_CASE("cancel, PEFT order, admission errors") {
    auto e = open_cpu("tiny-v3-q4_0.gguf");
    const auto& c = e->config();
    Runner r(*e);
    RequestId id = r.submit(gen(*e, "cancel me", 50));
    r.step();
    r.cancel(id);
    auto ev = r.step();
    REQUIRE(ev.finished.size() == 1);
    CHECK(ev.finished[0].second.finish == FinishReason::Cancelled);
    CHECK(r.idle());

    std::vector<float> rows(3 * c.hidden, 0.25f);
    auto p = make_prompt(*e, rows, 3, "after");
    REQUIRE(p.size() == 2);
    CHECK(p[0].n_embed_rows == 3);
    CHECK(p[1].tokens.front() == c.bos_id);
    Request v;
    v.prompt = p;
    v.max_tokens = 2;
    auto res = r.run(v);
    CHECK(res.virtual_tokens == 3);
    CHECK(res.prompt_tokens == 2);

    auto bad = gen(*e, "x", 4);
    bad.prompt[0].tokens.push_back(int32_t(c.n_vocab));
    CHECK_THROWS_AS(r.submit(bad), EngineError);
    Request empty;
    CHECK_THROWS_AS(r.submit(empty), EngineError);
    CHECK_THROWS_AS(r.submit(gen(*e, "x", 1000)), EngineError); // beyond max_ctx 256
    auto nan = v;
    nan.prompt[0].embeds[5] = NAN;
    CHECK_THROWS_AS(r.submit(nan), EngineError);
    for (const float big : {1.5e6f, -2e19f, 3e38f}) { // finite, but a row's sum of squares overflows
        auto huge = v;
        huge.prompt[0].embeds[c.hidden + 7] = big;
        CHECK_THROWS_WITH_AS(r.submit(huge), doctest::Contains("at row 1 is outside +-1e6"), EngineError);
    }
    auto edge = v; // the bound itself is allowed
    edge.prompt[0].embeds[7] = -1e6f;
    CHECK(r.run(edge).finish == FinishReason::Length);
    auto width = v;
    width.prompt[0].embeds.resize(3 * c.hidden - 3);
    CHECK_THROWS_AS(r.submit(width), EngineError);
    auto temp = gen(*e, "x", 2);
    temp.sampling.temperature = NAN;
    CHECK_THROWS_AS(r.submit(temp), EngineError);

    // stop_at_eos off: generation runs to max_tokens.
    auto noeos = gen(*e, "y", 3);
    noeos.stop_at_eos = false;
    CHECK(r.run(noeos).token_ids.size() == 3);
}

// The daemon cuts a step short (StepInterrupted from the progress callback) when cancelled jobs
// fill most of it: nothing advances, the next step runs the same rows, and the results are those
// of a run never cut. step_share tells the callback how much of the step is whose.
TEST_CASE("a step cut short by its progress callback advances nothing; results equal an uncut run") {
    auto e = open_cpu("tiny-v2-f32.gguf");
    const Request a = gen(*e, "a prompt long enough to be most of the first step, in words", 10);
    const Request b = gen(*e, "short", 10);
    const uint32_t rows_a = a.prompt[0].size(), rows_b = b.prompt[0].size();
    REQUIRE(rows_a > rows_b);
    struct Run {
        std::map<RequestId, RequestResult> res;
        int cuts = 0;
        std::vector<double> shares; // step_share({a}) at each cut
    };
    // cut at these calls of the callback (the CPU reference calls it per layer per item)
    auto run = [&](std::vector<int> cut_at) {
        Runner r(*e);
        Run out;
        const RequestId ia = r.submit(a);
        r.submit(b);
        int calls = 0;
        e->backend().set_progress([&] {
            if (std::find(cut_at.begin(), cut_at.end(), ++calls) == cut_at.end())
                return;
            out.shares.push_back(r.step_share({ia}));
            throw StepInterrupted();
        });
        while (!r.idle()) {
            auto ev = r.step();
            if (ev.interrupted) {
                ++out.cuts;
                CHECK(ev.tokens.empty());
                CHECK(ev.finished.empty());
            }
            for (auto& [id, rr] : ev.finished)
                out.res[id] = rr;
        }
        e->backend().set_progress({});
        CHECK(r.step_share({ia}) == 0.0); // outside a step
        return out;
    };
    const Run clean = run({});
    const uint32_t layers = e->config().n_layer;
    // 2 items x layers calls per step. The first step cut at its next-to-last call (both prompts
    // all but done), its rerun at its third; the second rerun's last call does not cut (the work
    // is done: cutting would only throw it away); the first decode step cut at its second call.
    const int per_step = int(2 * layers);
    const int first = per_step - 1, second = first + 3, last_call = second + per_step, decode = last_call + 2;
    const Run cut = run({first, second, last_call, decode});
    CHECK(clean.cuts == 0);
    CHECK(cut.cuts == 3);
    REQUIRE(cut.shares.size() == 4);
    for (int i = 0; i < 3; ++i) // the same step each time
        CHECK(cut.shares[i] == doctest::Approx(double(rows_a) / (rows_a + rows_b)));
    CHECK(cut.shares[3] == doctest::Approx(0.5)); // one decode row each
    REQUIRE(clean.res.size() == 2);
    REQUIRE(cut.res.size() == 2);
    for (auto& [id, rr] : clean.res) {
        INFO("request " << id);
        CHECK(rr.finish == FinishReason::Length);
        CHECK(cut.res.at(id).token_ids == rr.token_ids);
        CHECK(cut.res.at(id).text == rr.text);
        CHECK(cut.res.at(id).prompt_tokens == rr.prompt_tokens);
    }
}

TEST_CASE("a failing item fails alone; the others in its batch continue") {
    auto e = open_cpu("tiny-v2-q8_0.gguf");
    Runner r(*e);
    auto solo = r.run(gen(*e, "survivor", 5));
    RequestId a = r.submit(gen(*e, "victim", 5));
    RequestId b = r.submit(gen(*e, "survivor", 5));
    r.step(); // both prefilled and holding sequences
    // Break the victim's sequence underneath the runner (the CPU backend numbers them from 1;
    // the solo run used 1, so the victim holds 2).
    e->backend().free_sequence(2);
    std::map<RequestId, RequestResult> done;
    for (int i = 0; i < 20 && !r.idle(); ++i)
        for (auto& [id, res] : r.step().finished)
            done[id] = res;
    REQUIRE(done.size() == 2);
    CHECK(done[a].finish == FinishReason::Error);
    CHECK(done[a].error.find("unknown sequence") != std::string::npos);
    CHECK_FALSE(done[a].error_from_model); // a backend error, not the model's output
    CHECK(done[b].finish == FinishReason::Length);
    CHECK(done[b].token_ids == solo.token_ids);
}

TEST_CASE("NaN logits (broken weights the loader does not scan) end the request with an error, not garbage") {
    auto dir = test::temp_dir("runner-nan");
    const auto path = (dir / "nan-output.gguf").string();
    test::GgufEdit poison; // one NaN in the output projection: the logit of token 9 is NaN
    poison.data = [](const std::string& name, std::vector<uint8_t>& d) {
        if (name == "output.weight") {
            const float nan = NAN;
            std::memcpy(d.data() + 9 * 128 * 4, &nan, 4); // F32 rows of hidden 128: row 9, column 0
        }
    };
    test::rewrite_gguf((test::models_dir() / "tiny-v2-f32.gguf").string(), path, poison);
    EngineOptions o;
    o.model_path = path;
    o.backend = "cpu";
    o.max_ctx = 64;
    auto e = Engine::open(o);
    Runner r(*e);
    for (const float top_p : {1.0f, 0.9f}) { // top-p: the quickselect had no order on NaN
        auto g = gen(*e, "hello", 4);
        g.sampling.temperature = 1.0f;
        g.sampling.top_p = top_p;
        auto res = r.run(g);
        CHECK(res.finish == FinishReason::Error);
        CHECK(res.error.find("NaN or +Inf") != std::string::npos);
        CHECK(res.error_from_model);
        CHECK(res.token_ids.empty());
        CHECK(res.prompt_tokens == 2); // usage still counts what the model read
    }
    // Score: the CPU backend's log_prob refuses the logits inside the step; the Vulkan backend
    // computes log-probs on the device, NaN, and the runner refuses those
    for (const char* backend : {"cpu", "vulkan"}) {
        INFO(backend);
        o.backend = backend;
        auto eb = Engine::open(o);
        Runner rb(*eb);
        Request s;
        s.kind = RequestKind::Score;
        s.prompt = make_prompt(*eb, {}, 0, "hello");
        s.continuation = {5, 6};
        auto sc = rb.run(s);
        CHECK(sc.finish == FinishReason::Error);
        CHECK_MESSAGE(sc.error.find(o.backend == "cpu" ? "logits contain NaN"
                                                       : "log-probabilities are NaN") != std::string::npos,
                      sc.error);
        CHECK(sc.error_from_model);
        CHECK(rb.idle());
    }
    std::filesystem::remove_all(dir);
}

// Byte-level BPE needs a token for every byte that UTF-8 text can hold. Without one the model
// loaded and every job whose text held that byte failed at encode, as if its input were wrong.
TEST_CASE("a vocabulary without a token for a byte UTF-8 text can hold is refused at load") {
    auto dir = test::temp_dir("runner-bytes");
    const auto src = (test::models_dir() / "tiny-v2-q8_0.gguf").string();
    gguf::File f = gguf::File::open(src);
    // The byte-level alphabet maps byte 0xF4 (the lead byte of U+100000..U+10FFFF) to U+00F4 and
    // 0xFF (never in UTF-8) to U+00FF: rename one of these tokens, and drop merges naming it.
    auto without = [&](const std::string& token, const std::string& path) {
        test::GgufEdit e;
        e.kv = [&f, token](gguf::Writer& w) {
            gguf::Value tokens = *f.parsed().get("tokenizer.ggml.tokens");
            gguf::Value merges = *f.parsed().get("tokenizer.ggml.merges");
            size_t renamed = 0;
            for (auto& t : std::get<gguf::Array>(tokens.v))
                if (auto* s = std::get_if<std::string>(&t.v); s && *s == token) {
                    *s = "<not a byte>";
                    ++renamed;
                }
            REQUIRE(renamed == 1);
            auto& ma = std::get<gguf::Array>(merges.v);
            std::erase_if(ma, [&](const gguf::Value& m) {
                const std::string& s = std::get<std::string>(m.v);
                const size_t sp = s.find(' ');
                return s.substr(0, sp) == token || s.substr(sp + 1) == token;
            });
            w.set("tokenizer.ggml.tokens", tokens);
            w.set("tokenizer.ggml.merges", merges);
        };
        test::rewrite_gguf(src, path, e);
        return cpu_options(path);
    };
    const auto f4 = (dir / "no-f4.gguf").string(), ff = (dir / "no-ff.gguf").string();
    CHECK_THROWS_WITH_AS(
        Engine::open(without("\u00f4", f4)),
        doctest::Contains("no-f4.gguf: tokenizer: the vocabulary has no token for byte 0xF4"), ModelError);
    // 0xFF never occurs in UTF-8 text: the model loads and encodes any text, U+10FFFF included.
    auto e = Engine::open(without("\u00ff", ff));
    const std::string top = "\U0010FFFF";
    CHECK(e->tokenizer().decode(e->tokenizer().encode(top, false)) == top);
    e.reset();
    std::filesystem::remove_all(dir);
}

TEST_CASE("a tokenizer that does not cover the model's vocabulary is refused at load") {
    auto dir = test::temp_dir("runner-vocab");
    const auto src = (test::models_dir() / "tiny-v2-q8_0.gguf").string();
    const auto path = (dir / "vocab.gguf").string();
    gguf::File f = gguf::File::open(src);
    test::GgufEdit extra; // one more token than token_embd has rows
    extra.kv = [&f](gguf::Writer& w) {
        gguf::Value tokens = *f.parsed().get("tokenizer.ggml.tokens");
        gguf::Value types = *f.parsed().get("tokenizer.ggml.token_type");
        auto& ta = std::get<gguf::Array>(tokens.v);
        auto& ya = std::get<gguf::Array>(types.v);
        gguf::Value t = ta.back(), y = ya.back();
        t.v = std::string("<extra_token>");
        ta.push_back(t);
        ya.push_back(y);
        w.set("tokenizer.ggml.tokens", tokens);
        w.set("tokenizer.ggml.token_type", types);
    };
    test::rewrite_gguf(src, path, extra);
    CHECK_THROWS_WITH_AS(
        Engine::open(cpu_options(path)),
        doctest::Contains(
            "the tokenizer has 129281 tokens, the model's vocabulary (token_embd rows) is 129280"),
        ModelError);
    std::filesystem::remove_all(dir);
}
