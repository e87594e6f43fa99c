// Device-memory limits on the Vulkan backend (EngineOptions::max_device_memory): a sequence that
// cannot get cache memory fails with "out of device memory" while the others keep running, in the
// backend and through the Runner (RELIABILITY.md: out of device memory -> that job fails, others
// continue). The cap stands in for a full GPU: both end in the same EngineError.
#include "engine/cpu/cpu_backend.h"
#include "engine/runner.h"
#include "engine/vk/vk_backend.h"
#include "engine/vk/vk_weights.h"
#include "test_core_util.h"
#include "test_env.h"
#include "test_model_util.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

using namespace prefixd;
using test::random_tokens;

namespace {

BatchItem last_logits(SeqId s, const std::vector<int32_t>& toks) {
    BatchItem it;
    it.seq = s;
    it.inputs = {Segment::from_tokens(toks)};
    it.logit_rows = {uint32_t(toks.size()) - 1};
    return it;
}

double row_err(const std::vector<float>& got, const std::vector<float>& ref) {
    return test::row_err(got.data(), ref.data(), ref.size());
}

uint64_t cache_row_bytes(const ModelConfig& c) {
    return uint64_t(c.n_layer) * c.kv_cache_width() * 4;
}

} // namespace

TEST_CASE("backend: sequences beyond max_device_memory fail to start or grow; freeing memory heals") {
    const auto path = (test::models_dir() / "tiny-v2-f32.gguf").string();
    auto model = Model::load(path);
    const ModelConfig& c = model->config();
    const uint64_t row = cache_row_bytes(c);
    std::mt19937 rng(std::random_device{}());
    EngineOptions o;
    o.max_seqs = 4;
    o.max_ctx = 256;
    // Probe: weights + scratch for an 8-row step + one fresh sequence (64 cache positions).
    uint64_t base = 0;
    {
        auto probe = vk::make_vulkan_backend(*model, o);
        SeqId s = probe->create_sequence();
        probe->step({last_logits(s, random_tokens(8, c.n_vocab, rng))});
        base = probe->device_memory_in_use();
    }
    REQUIRE(base > 64 * row);
    o.max_device_memory = base + 2 * 64 * row + row / 2; // room for two more fresh sequences
    auto gpu = vk::make_vulkan_backend(*model, o);
    auto cpu = cpu::make_cpu_backend(*model, o);
    // Steps of at most 8 rows keep the scratch at the probe's size. a takes 60 positions in 8-row
    // chunks (fits the initial 64), then t4 (4, still fits), then t3 (8: a grows to 128). The
    // reference runs the same steps first, its inputs away from routing ties.
    std::vector<std::vector<int32_t>> chunks;
    std::vector<int32_t> t3, t4;
    std::vector<std::vector<float>> ref; // the reference's last logits row after each step
    test::away_from_ties(
        1e-5,
        [&] {
            chunks.clear();
            for (uint32_t n = 0; n < 60; n += 8)
                chunks.push_back(random_tokens(std::min(8u, 60 - n), c.n_vocab, rng));
            t3 = random_tokens(8, c.n_vocab, rng);
            t4 = random_tokens(4, c.n_vocab, rng);
        },
        [&] {
            ref.clear();
            SeqId r = cpu->create_sequence();
            for (const auto& t : chunks)
                ref.push_back(cpu->step({last_logits(r, t)})[0].logits);
            for (const auto* t : {&t4, &t3})
                ref.push_back(cpu->step({last_logits(r, *t)})[0].logits);
            cpu->free_sequence(r);
        });
    SeqId a = gpu->create_sequence();
    size_t next_ref = 0;
    auto feed = [&](const std::vector<int32_t>& t) {
        auto g = gpu->step({last_logits(a, t)});
        return row_err(g[0].logits, ref.at(next_ref++));
    };
    for (const auto& t : chunks)
        CHECK(feed(t) <= 1e-3);
    SeqId b = gpu->create_sequence(), cc = gpu->create_sequence();
    try {
        gpu->create_sequence();
        FAIL("a fourth sequence fit into the cap");
    } catch (const EngineError& e) {
        CHECK(std::string(e.what()).find("out of device memory") != std::string::npos);
    }
    CHECK(gpu->device_memory_in_use() <= o.max_device_memory);
    gpu->free_sequence(
        cc); // 64 positions of room: too little to grow a to 128 (a new 128 before the old goes)
    try {
        gpu->step({last_logits(a, t3)});
        FAIL("a grew past the cap");
    } catch (const EngineError& e) {
        CHECK(std::string(e.what()).find("out of device memory") != std::string::npos);
    }
    CHECK(gpu->sequence_length(a) == 60);
    CHECK(feed(t4) <= 1e-3); // still fits the 64 positions a holds
    gpu->free_sequence(b); // now a can grow
    CHECK(feed(t3) <= 1e-3);
    CHECK(gpu->sequence_length(a) == 72);
    CHECK(gpu->device_memory_in_use() <= o.max_device_memory);
}

TEST_CASE(
    "runner: the job that runs out of device memory fails alone; its batch-mate's tokens are unchanged") {
    std::mt19937 rng(std::random_device{}());
    EngineOptions o;
    o.model_path = (test::models_dir() / "tiny-v2-f32.gguf").string();
    o.backend = "vulkan";
    o.max_seqs = 2;
    o.max_ctx = 256;
    o.max_batch_rows = 64;
    auto probe = Engine::open(o);
    const ModelConfig c = probe->config(); // a copy: probe is released below
    // a: short prompt and few tokens (stays within the initial 64 positions); b: a 70-token prompt
    // whose second prefill chunk needs the cache grown to 128 positions.
    auto pa = random_tokens(10, c.n_vocab, rng), pb = random_tokens(70, c.n_vocab, rng);
    auto request = [](const std::vector<int32_t>& p, uint32_t n) {
        Request r;
        r.prompt = {Segment::from_tokens(p)};
        r.max_tokens = n;
        r.stop_at_eos = false;
        return r;
    };
    auto run_both = [&](Engine& e, uint64_t* in_use_after_first_step) {
        Runner r(e);
        RequestId ia = r.submit(request(pa, 8)), ib = r.submit(request(pb, 4));
        std::map<RequestId, RequestResult> done;
        for (int i = 0; i < 100 && !r.idle(); ++i) {
            for (auto& [id, res] : r.step().finished)
                done[id] = res;
            if (i == 0 && in_use_after_first_step)
                *in_use_after_first_step = e.backend().device_memory_in_use();
        }
        REQUIRE(done.size() == 2);
        return std::make_pair(done[ia], done[ib]);
    };
    uint64_t in_use = 0;
    auto [ua, ub] = run_both(*probe, &in_use);
    REQUIRE(ua.finish == FinishReason::Length);
    REQUIRE(ub.finish == FinishReason::Length);
    REQUIRE(in_use > 0);
    probe.reset();
    // The first step holds weights, scratch and both sequences' 64 positions; growing b needs 128 more.
    o.max_device_memory = in_use + 32 * cache_row_bytes(c);
    auto capped = Engine::open(o);
    auto [ca, cb] = run_both(*capped, nullptr);
    CHECK(ca.finish == FinishReason::Length);
    CHECK(ca.token_ids == ua.token_ids);
    CHECK(cb.finish == FinishReason::Error);
    CHECK(cb.error.find("out of device memory") != std::string::npos);
    CHECK_FALSE(cb.error_from_model); // memory may free up: the daemon marks it retriable
    CHECK(cb.completion_tokens == 0);
}

// A sequence's latent cache is one allocation, so a context longer than one allocation can hold
// is refused when the engine opens (before the weights load), naming the limit. Before, the engine
// opened and a long request failed only when its cache grew past the limit, after producing tokens.
TEST_CASE("a context longer than one allocation can cache is refused at open, with the limit") {
    auto dir = test::temp_dir("vk-long-ctx");
    const std::string model = (dir / "long-ctx.gguf").string();
    test::GgufEdit e;
    e.kv = [](gguf::Writer& w) { w.set_u32("deepseek2.context_length", 1u << 30); };
    test::rewrite_gguf((test::models_dir() / "tiny-v2-q8_0.gguf").string(), model, e);
    EngineOptions o;
    o.model_path = model;
    o.backend = "vulkan";
    o.max_seqs = 1;
    o.max_ctx = 1u << 30; // a billion positions: far past lavapipe's 2 GiB allocations
    CHECK_THROWS_WITH_AS(Engine::open(o),
                         doctest::Contains("bytes per sequence; this device allows one allocation"),
                         EngineError);
    o.max_ctx = 4096;
    auto eng = Engine::open(o); // a context that fits opens as before
    CHECK_NOTHROW(eng->backend().create_sequence());
    std::filesystem::remove_all(dir);
}

// An expert stack larger than one allocation (DeepSeek-V3's 2.11 GB Q4_0 stacks on lavapipe's
// 2 GiB) is placed in parts of whole experts, each map-driven matmul running once per part.
// PREFIXD_VK_STACK_CAP lowers the limit so the tiny models' stacks split; the whole-model checks
// run on split stacks in the ctest variants test_vk_model_split_stacks(_gpu_path).
TEST_CASE("an expert stack over the allocation limit is placed in parts of whole experts") {
    auto model = Model::load((test::models_dir() / "tiny-v3-q8_0.gguf").string());
    vk::Context ctx("");
    ::setenv("PREFIXD_VK_STACK_CAP", "65536", 1);
    vk::GpuWeights w(ctx, *model, false);
    ::unsetenv("PREFIXD_VK_STACK_CAP");
    size_t split = 0;
    for (const vk::GpuLayer& l : w.layers()) {
        if (!l.gate_exps)
            continue; // a dense layer
        REQUIRE(l.gate_exps.parts.size() >= 2);
        ++split;
        for (const vk::GpuTensor* t : {&l.gate_exps, &l.up_exps, &l.down_exps}) {
            uint64_t next = 0;
            for (const vk::GpuTensor& part : t->parts) {
                CHECK(part.mat_first == next); // consecutive, whole experts
                CHECK(part.n_mat * part.mat_stride <= 65536);
                CHECK(part.parts.empty());
                next += part.n_mat;
            }
            CHECK(next == t->n_mat);
        }
        CHECK(l.up_exps.parts.size() == l.gate_exps.parts.size());
    }
    CHECK(split > 0);
    // Without the lower limit every stack is whole
    vk::GpuWeights whole(ctx, *model, false);
    for (const vk::GpuLayer& l : whole.layers())
        CHECK(l.gate_exps.parts.empty());
}
