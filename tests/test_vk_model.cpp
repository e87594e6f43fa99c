// Whole-model Vulkan tests against the CPU reference backend (cpu/forward.cpp) on the generated
// tiny models: logits at every prompt position, greedy continuations, an embeddings segment
// before the text, batching of several sequences, prefix copy/truncate, and target log-probs.
#include "engine/cpu/cpu_backend.h"
#include "engine/vk/vk_backend.h"
#include "engine/vk/vk_context.h"
#include "engine/vk/vk_forward.h"
#include "test_env.h"
#include "test_model_util.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>

using namespace prefixd;
using namespace prefixd::test;

namespace {

struct Pair {
    std::unique_ptr<Model> model;
    std::unique_ptr<Backend> cpu, gpu;
};

Pair open_pair(const std::string& file, bool kv_f16 = false) {
    Pair p;
    const auto path = test::models_dir() / file;
    REQUIRE_MESSAGE(std::filesystem::exists(path),
                    "missing test model " << path << " (ctest fixture test_models)");
    p.model = Model::load(path.string());
    EngineOptions o;
    o.max_seqs = 8;
    o.max_ctx = 256;
    o.kv_f16 = kv_f16;
    p.cpu = cpu::make_cpu_backend(*p.model, o);
    p.gpu = vk::make_vulkan_backend(*p.model, o);
    return p;
}

// How far from a routing tie the reference's inputs are drawn (draw_away_from_ties): a float16
// cache rounds a value the two backends compute a few bits apart to neighbouring halves, which
// moved a selection score by 7e-6 in a draw that then chose differently; fp32 sum orders move it
// ~1e-7. About 1 in 5 of the 100-token float16 draws comes within 1e-4 of a tie.
double tie_margin(bool kv_f16) {
    return kv_f16 ? 1e-4 : 1e-5;
}

// Prompt (optional embeddings rows first) -> logits at every position must agree; then greedy
// decoding must produce identical ids. tol: max|diff| <= tol * max|ref| per position.
void check_prompt_and_greedy(const std::string& file, uint32_t n_embed_rows, double tol, int n_greedy = 32,
                             bool kv_f16 = false) {
    INFO("model " << file << std::string(kv_f16 ? ", float16 KV cache" : ""));
    Pair p = open_pair(file, kv_f16);
    const ModelConfig& c = p.model->config();
    std::mt19937 rng(std::random_device{}());
    auto draw = [&] {
        std::vector<Segment> in;
        if (n_embed_rows) {
            std::normal_distribution<float> d(0.0f, 0.05f);
            std::vector<float> e(size_t(n_embed_rows) * c.hidden);
            for (auto& v : e)
                v = d(rng);
            in.push_back(Segment::from_embeds(e, n_embed_rows));
        }
        in.push_back(Segment::from_tokens(random_tokens(64 - n_embed_rows, c.n_vocab, rng)));
        return in;
    };
    const auto [inputs, ref] = draw_away_from_ties(*p.cpu, draw, n_greedy, c.n_vocab, tie_margin(kv_f16));
    SeqId sg = p.gpu->create_sequence();
    const GreedyRun got = greedy_run(*p.gpu, sg, inputs, n_greedy, c.n_vocab); // its own tokens
    REQUIRE(got.logits.size() == ref.logits.size());
    double worst = 0;
    for (uint32_t r = 0; r < 64; ++r)
        worst = std::max(worst, row_err(got.logits.data() + size_t(r) * c.n_vocab,
                                        ref.logits.data() + size_t(r) * c.n_vocab, c.n_vocab));
    MESSAGE(file << ": worst normalised logit error over 64 positions " << worst);
    CHECK(worst <= tol);
    for (uint32_t r = 64; r < 63 + uint32_t(n_greedy); ++r)
        worst = std::max(worst, row_err(got.logits.data() + size_t(r) * c.n_vocab,
                                        ref.logits.data() + size_t(r) * c.n_vocab, c.n_vocab));
    CHECK(got.tokens == ref.tokens);
    CHECK(worst <= tol);
    CHECK(p.gpu->sequence_length(sg) == uint32_t(64 + n_greedy - 1));
}

} // namespace

// F32 weights: both sides use the same fp32 weights; only the order of fp32 sums differs
// (workgroup-strided partial sums vs a sequential loop), so 1e-3 of the largest logit is ample.
TEST_CASE("tiny-v2 f32: 64-token prompt logits and 32 greedy tokens match the CPU reference") {
    check_prompt_and_greedy("tiny-v2-f32.gguf", 0, 1e-3);
}
TEST_CASE("tiny-v3 f32: 64-token prompt logits and 32 greedy tokens match the CPU reference") {
    check_prompt_and_greedy("tiny-v3-f32.gguf", 0, 1e-3);
}
TEST_CASE("embeddings segment before the text (v2 and v3)") {
    check_prompt_and_greedy("tiny-v2-f32.gguf", 8, 1e-3);
    check_prompt_and_greedy("tiny-v3-f32.gguf", 8, 1e-3);
}
TEST_CASE("kv_b variant (split k_b/v_b derived by the loader)") {
    check_prompt_and_greedy("tiny-v2-f32-kvb.gguf", 0, 1e-3, 8);
}

// Q8_0/Q4_0: the shaders expand each block exactly as cpu::dequantize_row does (f16 scale to
// f32, times the integer quant: exact in fp32), so the GPU computes with the very same weight
// values as the reference's dequantised computation; again only summation order differs. The
// tolerance stays 1e-3 of the largest logit (observed errors are ~1e-6).
TEST_CASE("quantised models (Q8_0, Q4_0) match the reference's dequantised computation") {
    for (const char* f : {"tiny-v2-q8_0.gguf", "tiny-v2-q4_0.gguf", "tiny-v3-q8_0.gguf", "tiny-v3-q4_0.gguf"})
        check_prompt_and_greedy(f, 0, 1e-3, 8); // 8 greedy tokens keep the suite lean
}

// A float16 latent cache (EngineOptions::kv_f16): the CPU reference rounds every cached value to
// float16 as it stores it, as kv_store does, so both sides attend over the same rounded values; a
// value the two round differently (their fp32 inputs differ in the last bits) moves the logits by
// far less than 1e-3. The cache takes exactly half the device memory.
TEST_CASE("float16 KV cache: logits and greedy tokens match the reference with its cache rounded alike") {
    check_prompt_and_greedy("tiny-v2-f32.gguf", 0, 1e-3, 32, true);
    check_prompt_and_greedy("tiny-v3-q8_0.gguf", 8, 1e-3, 16, true);
    // rounding is what is being tested: the f16 caches must differ from the f32 ones somewhere
    Pair f32 = open_pair("tiny-v3-f32.gguf"), f16 = open_pair("tiny-v3-f32.gguf", true);
    const ModelConfig& c = f32.model->config();
    std::mt19937 rng(std::random_device{}());
    // the rounded reference first, its inputs away from routing ties
    auto draw = [&] {
        return std::vector<Segment>{Segment::from_tokens(random_tokens(100, c.n_vocab, rng))};
    };
    const auto [in, ref] = draw_away_from_ties(*f16.cpu, draw, 1, c.n_vocab, tie_margin(true));
    SeqId a = f32.gpu->create_sequence(), b = f16.gpu->create_sequence();
    auto la = f32.gpu->step({item(a, in, true)});
    auto lb = f16.gpu->step({item(b, in, true)});
    // 100 positions: the cache grew to 128 (doubling from 64); freeing the sequence returns it, and
    // float16 holds half the bytes
    const uint64_t held32 = f32.gpu->device_memory_in_use(), held16 = f16.gpu->device_memory_in_use();
    f32.gpu->free_sequence(a);
    f16.gpu->free_sequence(b);
    const uint64_t cache32 = held32 - f32.gpu->device_memory_in_use(),
                   cache16 = held16 - f16.gpu->device_memory_in_use();
    CHECK(cache32 == uint64_t(128) * c.n_layer * c.kv_cache_width() * 4);
    CHECK(cache16 == cache32 / 2);
    double f16_vs_f32 = 0, f16_vs_ref = 0;
    for (uint32_t r = 0; r < 100; ++r) {
        const size_t o = size_t(r) * c.n_vocab;
        f16_vs_f32 =
            std::max(f16_vs_f32, row_err(lb[0].logits.data() + o, la[0].logits.data() + o, c.n_vocab));
        f16_vs_ref = std::max(f16_vs_ref, row_err(lb[0].logits.data() + o, ref.logits.data() + o, c.n_vocab));
    }
    MESSAGE("float16 KV: worst logit error vs the f32 cache " << f16_vs_f32 << ", vs the rounded reference "
                                                              << f16_vs_ref);
    CHECK(f16_vs_f32 > 0.0);
    CHECK(f16_vs_ref <= 1e-3);
}

TEST_CASE("4 sequences of different lengths batched together equal their single-sequence results") {
    for (const char* file : {"tiny-v2-f32.gguf", "tiny-v3-f32.gguf"}) {
        INFO("model " << file);
        Pair p = open_pair(file);
        const ModelConfig& c = p.model->config();
        std::mt19937 rng(std::random_device{}());
        const uint32_t lens[4] = {5, 17, 40, 64};
        std::vector<std::vector<Segment>> inputs;
        std::vector<float> ref3; // the reference's last row of the longest sequence
        auto draw = [&] {
            inputs.clear();
            for (uint32_t len : lens) {
                std::vector<Segment> in;
                if (len == 17) { // one of them starts with embedding rows
                    std::normal_distribution<float> d(0.0f, 0.05f);
                    std::vector<float> e(size_t(3) * c.hidden);
                    for (auto& v : e)
                        v = d(rng);
                    in.push_back(Segment::from_embeds(e, 3));
                    len -= 3;
                }
                in.push_back(Segment::from_tokens(random_tokens(len, c.n_vocab, rng)));
                inputs.push_back(in);
            }
        };
        auto reference = [&] { // every prompt: the batched and single GPU runs must route alike
            for (const auto& in : inputs) {
                SeqId sc = p.cpu->create_sequence();
                ref3 = p.cpu->step({item(sc, in, false)})[0].logits;
                p.cpu->free_sequence(sc);
            }
        };
        away_from_ties(tie_margin(false), draw, reference);
        // Single-sequence runs (GPU), then all four in one batch, then 3 batched decode steps.
        // Logits at the first, middle and last row keep this test lean (the vocabulary is 129k).
        auto sparse = [](BatchItem it) {
            const uint32_t n = it.logit_rows.back() + 1;
            it.logit_rows = {0, n / 2, n - 1};
            return it;
        };
        std::vector<std::vector<float>> single(4), single_dec(4);
        std::vector<int32_t> next(4);
        for (int i = 0; i < 4; ++i) {
            SeqId s = p.gpu->create_sequence();
            auto o = p.gpu->step({sparse(item(s, inputs[i], false))});
            single[i] = o[0].logits;
            next[i] = argmax(o[0].logits.data() + o[0].logits.size() - c.n_vocab, c.n_vocab);
            for (int k = 0; k < 3; ++k) {
                auto d = p.gpu->step({item(s, {Segment::from_tokens({next[i] + k})}, false)});
                single_dec[i].insert(single_dec[i].end(), d[0].logits.begin(), d[0].logits.end());
            }
            p.gpu->free_sequence(s);
        }
        std::vector<SeqId> ids;
        std::vector<BatchItem> batch;
        for (int i = 0; i < 4; ++i) {
            ids.push_back(p.gpu->create_sequence());
            batch.push_back(sparse(item(ids[i], inputs[i], false)));
        }
        auto ob = p.gpu->step(batch);
        std::vector<std::vector<float>> batched_dec(4);
        for (int k = 0; k < 3; ++k) {
            std::vector<BatchItem> dec;
            for (int i = 0; i < 4; ++i)
                dec.push_back(item(ids[i], {Segment::from_tokens({next[i] + k})}, false));
            auto od = p.gpu->step(dec);
            for (int i = 0; i < 4; ++i)
                batched_dec[i].insert(batched_dec[i].end(), od[i].logits.begin(), od[i].logits.end());
        }
        for (int i = 0; i < 4; ++i) {
            INFO("sequence " << i);
            REQUIRE(ob[i].logits.size() == single[i].size());
            for (size_t r = 0; r < single[i].size() / c.n_vocab; ++r)
                CHECK(row_err(ob[i].logits.data() + r * c.n_vocab, single[i].data() + r * c.n_vocab,
                              c.n_vocab) <= 1e-5);
            for (int k = 0; k < 3; ++k)
                CHECK(row_err(batched_dec[i].data() + k * c.n_vocab, single_dec[i].data() + k * c.n_vocab,
                              c.n_vocab) <= 1e-5);
        }
        // The batched result also agrees with the CPU reference for the longest sequence.
        CHECK(row_err(ob[3].logits.data() + 2 * size_t(c.n_vocab), ref3.data(), c.n_vocab) <= 1e-3);
    }
}

TEST_CASE("target log-probs, copy_prefix and truncate agree with the CPU reference") {
    Pair p = open_pair("tiny-v3-f32.gguf");
    const ModelConfig& c = p.model->config();
    std::mt19937 rng(std::random_device{}());
    std::vector<int32_t> toks, cont;
    auto scored = [&](Backend& b, SeqId s) {
        BatchItem it = item(s, {Segment::from_tokens(cont)}, false);
        it.logit_rows.clear();
        for (uint32_t r = 0; r + 1 < cont.size(); ++r)
            it.targets.push_back({r, cont[r + 1]});
        return b.step({it})[0].logprobs;
    };
    std::vector<float> lc; // the reference's log-probs of the continuation after the prompt
    away_from_ties(
        tie_margin(false),
        [&] {
            toks = random_tokens(24, c.n_vocab, rng);
            cont = random_tokens(6, c.n_vocab, rng);
        },
        [&] {
            SeqId ca = p.cpu->create_sequence();
            p.cpu->step({item(ca, {Segment::from_tokens(toks)}, false)});
            lc = scored(*p.cpu, ca);
            p.cpu->free_sequence(ca);
        });
    SeqId a = p.gpu->create_sequence(), b = p.gpu->create_sequence();
    p.gpu->step({item(a, {Segment::from_tokens(toks)}, false)});
    p.gpu->copy_prefix(a, b, 20); // b: first 20 rows of a, then the last 4 prompt tokens again
    p.gpu->step({item(b, {Segment::from_tokens({toks.begin() + 20, toks.end()})}, false)});
    auto lg = scored(*p.gpu, b);
    REQUIRE(lg.size() == lc.size());
    for (size_t i = 0; i < lg.size(); ++i)
        CHECK(lg[i] == doctest::Approx(lc[i]).epsilon(1e-3));
    p.gpu->truncate(a, 24); // no-op length, then rewind to 24 after scoring a as well
    auto la = scored(*p.gpu, a);
    p.gpu->truncate(a, 24);
    auto la2 = scored(*p.gpu, a);
    for (size_t i = 0; i < la.size(); ++i) {
        CHECK(la[i] == doctest::Approx(lc[i]).epsilon(1e-3));
        CHECK(la2[i] == la[i]);
    }
    CHECK_THROWS_AS(p.gpu->step({item(a, {Segment::from_tokens({int32_t(c.n_vocab)})}, false)}), EngineError);
    CHECK(p.gpu->sequence_length(a) == 24 + 6);
}

// prefixctl bench splits a decode step into host work and waiting for the device (step_time).
TEST_CASE("step_time: every step counted, thrown ones too; the device wait is part of the wall time") {
    Pair p = open_pair("tiny-v2-q8_0.gguf");
    const ModelConfig& c = p.model->config();
    const Backend::StepTime t0 = p.gpu->step_time();
    CHECK(t0.steps == 0);
    std::mt19937 rng(std::random_device{}());
    SeqId s = p.gpu->create_sequence();
    p.gpu->step({item(s, {Segment::from_tokens(random_tokens(16, c.n_vocab, rng))}, false)});
    const Backend::StepTime t1 = p.gpu->step_time();
    CHECK(t1.steps == 1);
    CHECK(t1.device_wait_s > 0);
    CHECK(t1.total_s >= t1.device_wait_s);
    CHECK_THROWS_AS(p.gpu->step({item(s, {Segment::from_tokens({int32_t(c.n_vocab)})}, false)}), EngineError);
    for (int i = 0; i < 3; ++i)
        p.gpu->step({item(s, {Segment::from_tokens(random_tokens(1, c.n_vocab, rng))}, false)});
    const Backend::StepTime t2 = p.gpu->step_time();
    CHECK(t2.steps == 5);
    CHECK(t2.device_wait_s > t1.device_wait_s);
    CHECK(t2.total_s - t1.total_s >= t2.device_wait_s - t1.device_wait_s);
    CHECK(t2.thread_cpu_s > t1.thread_cpu_s); // recording and reading outputs take the thread some time
    CHECK(p.cpu->step_time().steps == 0); // the reference does not time itself
}

// Context::submit_layers: a step hands its layers to the queue in parts, so a GPU starts on them
// while the host records the rest. Same kernels, same order: the same bits as one submit.
// The two cases on parts: the tiny V3 pair, its Vulkan context (its submit_layers restored after),
// a random 40-row prompt and a next token.
struct PartsCase {
    Pair p = open_pair("tiny-v3-q8_0.gguf");
    const ModelConfig& c = p.model->config();
    vk::Context& ctx = dynamic_cast<vk::VulkanBackend&>(*p.gpu).context();
    const uint32_t saved = ctx.submit_layers();
    std::mt19937 rng{std::random_device{}()};
    const std::vector<int32_t> prompt = random_tokens(40, c.n_vocab, rng);
    const int32_t next = random_tokens(1, c.n_vocab, rng)[0];
    PartsCase() { REQUIRE(c.n_layer >= 3); }
    ~PartsCase() { ctx.set_submit_layers(saved); }
};

TEST_CASE_FIXTURE(
    PartsCase,
    "a step submitted in parts (every layer, every 2) gives the logits of one submit, bit for bit") {
    auto run = [&](uint32_t every, uint64_t* submits) {
        ctx.set_submit_layers(every);
        SeqId s = p.gpu->create_sequence();
        auto a = p.gpu->step({item(s, {Segment::from_tokens(prompt)}, true)})[0].logits;
        const uint64_t n0 = ctx.submit_count();
        auto b = p.gpu->step({item(s, {Segment::from_tokens({next})}, false)})[0].logits;
        *submits = ctx.submit_count() - n0;
        p.gpu->free_sequence(s);
        a.insert(a.end(), b.begin(), b.end());
        return a;
    };
    uint64_t n_one = 0, n_each = 0, n_two = 0;
    const auto one = run(0, &n_one), each = run(1, &n_each), two = run(2, &n_two);
    ctx.set_submit_layers(saved);
    CHECK(n_one == 1);
    CHECK(n_each == c.n_layer); // after each layer but the last, then the step's own
    CHECK(n_two == (c.n_layer - 1) / 2 + 1);
    REQUIRE(one.size() == each.size());
    CHECK(std::memcmp(one.data(), each.data(), one.size() * 4) == 0);
    CHECK(std::memcmp(one.data(), two.data(), one.size() * 4) == 0);
}

TEST_CASE_FIXTURE(
    PartsCase,
    "a step reports progress as its parts finish; a failure inside leaves the sequences as they were") {
    const auto other = random_tokens(7, c.n_vocab, rng);
    int calls = 0;
    for (Backend* b : {p.cpu.get(), p.gpu.get()})
        b->set_progress([&] { ++calls; });
    // CPU reference: after every layer of every item.
    SeqId s = p.cpu->create_sequence(), t = p.cpu->create_sequence();
    p.cpu->step(
        {item(s, {Segment::from_tokens(prompt)}, true), item(t, {Segment::from_tokens(other)}, true)});
    CHECK(calls == int(2 * c.n_layer));
    p.cpu->free_sequence(s);
    p.cpu->free_sequence(t);
    // Vulkan: one call per submission the device has finished (parts of layers, the host's
    // routing of a prefill chunk's MoE layers on CPU drivers, the step's last one).
    const bool cpu_driver = ctx.cpu_device();
    for (uint32_t every : {0u, 1u, 2u}) {
        INFO("submit every " << every << " layers, CPU driver " << cpu_driver);
        ctx.set_submit_layers(every);
        s = p.gpu->create_sequence();
        calls = 0;
        uint64_t n0 = ctx.submit_count();
        p.gpu->step({item(s, {Segment::from_tokens(prompt)}, true)});
        CHECK(calls == int(ctx.submit_count() - n0));
        if (every || cpu_driver) // 40 rows: one layer per part on CPU drivers
            CHECK(calls >= int(c.n_layer / std::max(every, 1u)));
        calls = 0;
        n0 = ctx.submit_count();
        p.gpu->step({item(s, {Segment::from_tokens({next})}, true)}); // one row: parts only when asked
        CHECK(calls == int(ctx.submit_count() - n0));
        CHECK(calls == int(every ? (c.n_layer - 1) / every + 1 : 1));
        p.gpu->free_sequence(s);
    }
    ctx.set_submit_layers(saved);
    // A throw from the callback (or any failure mid-step) ends the step and leaves every sequence
    // where it was: the CPU reference had appended the first layers' rows and the first item's,
    // so a retry attended to stale rows. The retry equals a first run, bit for bit.
    for (Backend* b : {p.cpu.get(), p.gpu.get()}) {
        INFO(b->device_name());
        auto run = [&](bool fail) {
            SeqId a = b->create_sequence(), d = b->create_sequence();
            b->step({item(a, {Segment::from_tokens({next, next})}, false)});
            // CPU: after the second item's first layer; Vulkan: after the first part
            const int throw_at = b == p.cpu.get() ? int(c.n_layer) + 1 : 1;
            int n = 0;
            b->set_progress([&] {
                if (fail && ++n == throw_at)
                    throw std::runtime_error("progress refused");
            });
            if (fail) {
                CHECK_THROWS_WITH(b->step({item(d, {Segment::from_tokens(other)}, true),
                                           item(a, {Segment::from_tokens(prompt)}, true)}),
                                  "progress refused");
                CHECK(b->sequence_length(a) == 2);
                CHECK(b->sequence_length(d) == 0);
            }
            b->set_progress({});
            auto outs = b->step({item(d, {Segment::from_tokens(other)}, true),
                                 item(a, {Segment::from_tokens(prompt)}, true)});
            CHECK(b->sequence_length(a) == 42);
            CHECK(b->sequence_length(d) == 7);
            auto after = b->step({item(a, {Segment::from_tokens({next})}, true)})[0].logits;
            b->free_sequence(a);
            b->free_sequence(d);
            std::vector<float> all = outs[0].logits;
            all.insert(all.end(), outs[1].logits.begin(), outs[1].logits.end());
            all.insert(all.end(), after.begin(), after.end());
            return all;
        };
        if (b == p.gpu.get() && !cpu_driver)
            ctx.set_submit_layers(1); // parts, so the callback runs
        const auto clean = run(false), retried = run(true);
        ctx.set_submit_layers(saved);
        REQUIRE(clean.size() == retried.size());
        CHECK(std::memcmp(clean.data(), retried.data(), clean.size() * 4) == 0);
    }
    // StepInterrupted from the last report (the step's work all done) does not cut the step: it
    // would only throw the results away. The CPU reference's report before it does. (On Vulkan
    // the reports inside the step's final wait cannot cut either, everything being submitted;
    // which reports come before it depends on the kernel path: test_vk_cells covers the cut.)
    for (Backend* b : {p.cpu.get(), p.gpu.get()}) {
        INFO(b->device_name());
        if (b == p.gpu.get() && !cpu_driver)
            ctx.set_submit_layers(1);
        auto step_with = [&](int interrupt_at, int* n_calls) {
            SeqId s2 = b->create_sequence();
            int n = 0;
            b->set_progress([&] {
                if (++n == interrupt_at)
                    throw StepInterrupted();
            });
            std::vector<ItemOutput> out;
            try {
                out = b->step({item(s2, {Segment::from_tokens(prompt)}, true)});
            } catch (const StepInterrupted&) {
                CHECK(b->sequence_length(s2) == 0);
            }
            b->set_progress({});
            b->free_sequence(s2);
            *n_calls = n;
            return out;
        };
        int calls_all = 0, calls_last = 0, calls_before = 0;
        const auto all = step_with(0, &calls_all);
        REQUIRE(calls_all >= 2);
        const auto at_last = step_with(calls_all, &calls_last);
        REQUIRE(at_last.size() == 1);
        CHECK(calls_last == calls_all);
        CHECK(std::memcmp(at_last[0].logits.data(), all[0].logits.data(), all[0].logits.size() * 4) == 0);
        if (b == p.cpu.get())
            CHECK(step_with(calls_all - 1, &calls_before).empty()); // cut
        ctx.set_submit_layers(saved);
    }
}

TEST_CASE("bad step input gives EngineError and leaves the sequence usable") {
    Pair p = open_pair("tiny-v2-q4_0.gguf");
    const ModelConfig& c = p.model->config();
    // Both backends refuse alike: a sequence twice in one batch (the CPU backend ran the items one
    // after another and grew past max_ctx), a truncate past the length (Vulkan clamped it), and an
    // id kept after its free (Vulkan reused slot ids, so the stale id named the next sequence)
    for (Backend* b : {p.cpu.get(), p.gpu.get()}) {
        INFO(b->device_name());
        SeqId a = b->create_sequence();
        BatchItem half = item(a, {Segment::from_tokens(std::vector<int32_t>(200, 1))}, false);
        CHECK_THROWS_WITH_AS(b->step({half, half}), doctest::Contains("twice"), EngineError); // 400 > 256
        CHECK(b->sequence_length(a) == 0);
        b->step({item(a, {Segment::from_tokens({1, 2, 3})}, false)});
        CHECK_THROWS_WITH_AS(b->truncate(a, 5), doctest::Contains("fewer rows"), EngineError);
        CHECK(b->sequence_length(a) == 3);
        b->truncate(a, 1);
        CHECK(b->sequence_length(a) == 1);
        b->free_sequence(a);
        SeqId next = b->create_sequence();
        CHECK(next != a);
        CHECK_THROWS_WITH_AS(b->sequence_length(a), doctest::Contains("unknown sequence"), EngineError);
        CHECK_THROWS_AS(b->truncate(a, 0), EngineError);
        b->free_sequence(a); // a stale id frees nothing
        CHECK(b->sequence_length(next) == 0);
        b->free_sequence(next);
    }
    SeqId s = p.gpu->create_sequence();
    CHECK_THROWS_AS(p.gpu->step({item(s + 5, {Segment::from_tokens({1})}, false)}), EngineError); // unknown
    CHECK_THROWS_AS(p.gpu->step({item(s ^ (1u << 16), {Segment::from_tokens({1})}, false)}),
                    EngineError); // its slot, another generation
    CHECK_THROWS_AS(p.gpu->step({item(s, {Segment::from_tokens(std::vector<int32_t>(257, 1))}, false)}),
                    EngineError);                                                  // beyond max_ctx 256
    Segment bad = Segment::from_embeds(std::vector<float>(c.hidden + 1, 0.1f), 1); // wrong width
    CHECK_THROWS_AS(p.gpu->step({item(s, {bad}, false)}), EngineError);
    BatchItem twice = item(s, {Segment::from_tokens({1})}, false);
    CHECK_THROWS_AS(p.gpu->step({twice, twice}), EngineError); // same sequence twice in a batch
    CHECK(p.gpu->sequence_length(s) == 0);
    auto o = p.gpu->step({item(s, {Segment::from_tokens({1, 2, 3})}, false)});
    CHECK(o[0].logits.size() == c.n_vocab);
    CHECK(p.gpu->sequence_length(s) == 3);
    SeqId other = p.gpu->create_sequence();
    for (int i = 2; i < 8; ++i)
        p.gpu->create_sequence(); // max_seqs = 8
    CHECK_THROWS_AS(p.gpu->create_sequence(), EngineError);
    CHECK_THROWS_WITH_AS(p.gpu->copy_prefix(s, other, 4), doctest::Contains("source holds only 3 rows"),
                         EngineError);
}

// One workgroup per row in the per-row kernels: a step is limited to maxComputeWorkGroupCount[0]
// rows (65535 on lavapipe and most GPUs). Past it the step is refused before anything changes, with
// the limit named, and Engine::open caps the runner's max_batch_rows at it.
TEST_CASE("a step of more rows than the device's workgroup-count limit is refused up front") {
    const auto path = (test::models_dir() / "tiny-v2-q4_0.gguf").string();
    auto model = Model::load(path);
    EngineOptions o;
    o.max_seqs = 20;
    o.max_ctx = 4096;
    auto gpu = vk::make_vulkan_backend(*model, o);
    const uint32_t limit = gpu->max_step_rows();
    CHECK(limit >= 65535u); // Vulkan's required minimum
    CHECK(limit < UINT32_MAX);
    const uint32_t per = 4000, n = limit / per + 1; // each item within the context, all together not
    if (n > o.max_seqs) { // GPUs report up to 2^31-1: no step of sequences this test can hold exceeds it
        MESSAGE("workgroup-count limit " << limit << ": an over-limit step needs " << n << " sequences");
        return;
    }
    std::vector<BatchItem> batch;
    for (uint32_t k = 0; k < n; ++k)
        batch.push_back(
            item(gpu->create_sequence(), {Segment::from_tokens(std::vector<int32_t>(per, 7))}, false));
    const std::string want = "more than " + std::to_string(limit) + " rows in one step";
    CHECK_THROWS_WITH_AS(gpu->step(batch), doctest::Contains(want.c_str()), EngineError);
    for (auto& b : batch)
        CHECK(gpu->sequence_length(b.seq) == 0);
    auto out = gpu->step({item(batch[0].seq, {Segment::from_tokens({1, 2})}, false)}); // still usable
    CHECK(out[0].logits.size() == model->config().n_vocab);

    EngineOptions eo;
    eo.model_path = path;
    eo.max_batch_rows = UINT32_MAX;
    CHECK(Engine::open(eo)->options().max_batch_rows == limit);
}

// The latent cache starts small and grows by copying (vk_backend.cpp reserve()): rows written
// before a growth must survive it, prefix copies must grow the destination, and the context limit
// stays exact.
TEST_CASE("latent cache growth: uneven chunks, copy_prefix past the initial size, exact context limit") {
    Pair p = open_pair("tiny-v2-f32.gguf");
    const ModelConfig& c = p.model->config();
    std::mt19937 rng(std::random_device{}());
    const uint32_t n = 200;
    const uint32_t chunks[] = {1, 7, 60, 5, 100, 27}; // crosses 64 and 128 inside chunks
    // the prompt, then 56 more positions up to max_ctx; the reference's logits at the end of each
    // chunk, then after the 56
    std::vector<int32_t> toks, more;
    std::vector<ItemOutput> rc, rc2;
    away_from_ties(
        tie_margin(false),
        [&] {
            toks = random_tokens(n, c.n_vocab, rng);
            more = random_tokens(56, c.n_vocab, rng);
        },
        [&] {
            SeqId sc = p.cpu->create_sequence();
            BatchItem all = item(sc, {Segment::from_tokens(toks)}, false);
            all.logit_rows.clear();
            uint32_t end = 0;
            for (uint32_t k : chunks)
                all.logit_rows.push_back((end += k) - 1);
            REQUIRE(end == n);
            rc = p.cpu->step({all});
            rc2 = p.cpu->step({item(sc, {Segment::from_tokens(more)}, false)});
            p.cpu->free_sequence(sc);
        });
    SeqId sg = p.gpu->create_sequence();
    uint32_t at = 0;
    for (size_t i = 0; i < std::size(chunks); ++i) {
        std::vector<int32_t> part(toks.begin() + at, toks.begin() + at + chunks[i]);
        auto rg = p.gpu->step({item(sg, {Segment::from_tokens(part)}, false)});
        at += chunks[i];
        INFO("chunk " << i << " ends at " << at);
        CHECK(row_err(rg[0].logits.data(), rc[0].logits.data() + i * c.n_vocab, c.n_vocab) <= 1e-3);
    }
    // copy 150 rows into a fresh sequence (initial capacity 64), then finish the prompt there
    SeqId sb = p.gpu->create_sequence();
    p.gpu->copy_prefix(sg, sb, 150);
    CHECK(p.gpu->sequence_length(sb) == 150);
    auto rb = p.gpu->step({item(sb, {Segment::from_tokens({toks.begin() + 150, toks.end()})}, false)});
    CHECK(row_err(rb[0].logits.data(), rc[0].logits.data() + 5 * c.n_vocab, c.n_vocab) <= 1e-3);
    // fill to max_ctx (256) exactly; one more position is refused and the sequence stays usable
    auto rg = p.gpu->step({item(sg, {Segment::from_tokens(more)}, false)});
    CHECK(row_err(rg[0].logits.data(), rc2[0].logits.data(), c.n_vocab) <= 1e-3);
    CHECK(p.gpu->sequence_length(sg) == 256);
    CHECK_THROWS_AS(p.gpu->step({item(sg, {Segment::from_tokens({1})}, false)}), EngineError);
    CHECK(p.gpu->sequence_length(sg) == 256);
    p.gpu->truncate(sg, 255);
    auto last = p.gpu->step({item(sg, {Segment::from_tokens({more.back()})}, false)});
    CHECK(row_err(last[0].logits.data(), rc2[0].logits.data(), c.n_vocab) <= 1e-3);
}

TEST_CASE("warm-up self-check: passes on this device, refuses a wrong kernel result with a clear error") {
    // tiny V3: q_lora, sigmoid gating with bias, 4 groups keep 2, normalised and scaled weights
    const auto path = test::models_dir() / "tiny-v3-q8_0.gguf";
    REQUIRE_MESSAGE(std::filesystem::exists(path),
                    "missing test model " << path << " (ctest fixture test_models)");
    auto model = Model::load(path.string());
    EngineOptions o;
    o.max_seqs = 1;
    o.max_ctx = 64;
    auto b = vk::make_vulkan_backend(*model, o);
    CHECK_NOTHROW(b->warm_up()); // every kernel kind against its CPU twin
    // a 1% disagreement (that check's reference perturbed) must stop warm-up with an error naming
    // the kernel; "1" perturbs every check, so the first one (the matmuls) reports
    struct Fault {
        const char* env;
        std::vector<const char*> names; // one of them must appear in the message
        const char* how;
    };
    std::vector<Fault> faults = {
        {"1", {"matmul (", "swiglu ("}, "differs from the CPU reference by 0.01"},
        {"matmul", {"matmul (", "swiglu ("}, "differs from the CPU reference by 0.01"},
        {"kv_store", {"kv_store ("}, "differs from the CPU reference by 0.01"},
        {"attention", {"attention (attn_"}, "differs from the CPU reference by 0.01"},
        {"moe_route", {"moe_route weights ("}, "differs from the CPU reference by 0.01"},
        {"moe_combine", {"moe_combine ("}, "differs from the CPU reference by 0.01"},
    };
    // moe_group runs where multi-row steps group on the device (GPUs; test_vk_model_gpu_path)
    const char* grouping = std::getenv("PREFIXD_VK_DEVICE_GROUP");
    if (grouping && std::string(grouping) == "1")
        faults.push_back({"moe_group", {"moe_group ("}, "put other slots in expert"});
    for (const Fault& f : faults) {
        ::setenv("PREFIXD_VK_SELFCHECK_FAULT", f.env, 1);
        std::string msg;
        try {
            b->warm_up();
        } catch (const EngineError& e) {
            msg = e.what();
        }
        ::unsetenv("PREFIXD_VK_SELFCHECK_FAULT");
        INFO("fault " << f.env << ", error: " << msg);
        CHECK(msg.find("self-check failed") != std::string::npos);
        CHECK(msg.find(f.how) != std::string::npos);
        CHECK(std::any_of(f.names.begin(), f.names.end(),
                          [&](const char* n) { return msg.find(n) != std::string::npos; }));
    }
    CHECK_NOTHROW(b->warm_up()); // and passes again once the fault is gone
}

// The ctest variants that ask lavapipe for wider subgroups (tests/vk.cmake, PREFIXD_TEST_SUBGROUP)
// must get them, or they would test the 8-lane shaders again.
TEST_CASE("the device has the subgroup size the test variant asks for") {
    vk::Context ctx("");
    const uint32_t sg = ctx.limits().subgroup_size;
    CHECK(sg >= 4);
    CHECK((sg & (sg - 1)) == 0);
    if (const char* want = std::getenv("PREFIXD_TEST_SUBGROUP"))
        CHECK(sg == uint32_t(std::atoi(want)));
}
