// CPU reference forward sanity on the tiny V2/V3 models: logits are finite and not saturated,
// KV-cache decode equals a full recompute, batched items equal single-sequence runs, embedding
// rows equal their tokens, and the quantised models stay close to their own dequantised math.
#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/forward.h"
#include "engine/cpu/ops.h"
#include "engine/engine.h"
#include "test_env.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

using namespace prefixd;

static std::unique_ptr<Model> load(const char* f) {
    return Model::load((test::models_dir() / f).string());
}

static std::vector<int32_t> prompt(uint32_t n, uint32_t seed) {
    std::vector<int32_t> t{0};
    for (uint32_t i = 1; i < n; ++i)
        t.push_back(int32_t((seed * 7919u + i * 104729u) % 120000u) + 100);
    return t;
}

static float max_abs(const std::vector<float>& v) {
    float m = 0;
    for (float x : v)
        m = std::max(m, std::fabs(x));
    return m;
}
static void check_close(const float* a, const float* b, size_t n, float tol_rel, float scale) {
    float worst = 0;
    for (size_t i = 0; i < n; ++i)
        worst = std::max(worst, std::fabs(a[i] - b[i]));
    CHECK_MESSAGE(worst <= tol_rel * scale, "max |diff| " << worst << " vs scale " << scale);
}

static std::vector<float> all_logits(const Model& m, const std::vector<int32_t>& toks) {
    cpu::LatentCache cache;
    const auto& c = m.config();
    std::vector<float> x(toks.size() * c.hidden), logits(toks.size() * uint64_t(c.n_vocab));
    cpu::embed(m, toks.data(), uint32_t(toks.size()), x.data());
    cpu::forward(m, cache, x.data(), uint32_t(toks.size()));
    cpu::output(m, x.data(), uint32_t(toks.size()), logits.data());
    return logits;
}

TEST_CASE("logits are finite, varied and not saturated") {
    for (auto f : {"tiny-v2-f32.gguf", "tiny-v3-f32.gguf", "tiny-v2-q4_0.gguf", "tiny-v3-q8_0.gguf"}) {
        auto m = load(f);
        auto toks = prompt(8, 1);
        auto l = all_logits(*m, toks);
        double sum = 0, sq = 0;
        size_t bad = 0;
        for (float v : l) {
            bad += !std::isfinite(v);
            sum += v;
            sq += double(v) * v;
        }
        double mean = sum / l.size(), sd = std::sqrt(sq / l.size() - mean * mean);
        REQUIRE(bad == 0);
        MESSAGE(f << " logit sd " << sd);
        CHECK(sd > 0.3);
        CHECK(sd < 10);
    }
}

TEST_CASE("KV-cache decode equals full recompute") {
    for (auto f : {"tiny-v2-f32.gguf", "tiny-v3-f32.gguf", "tiny-v2-f32-kvb.gguf"}) {
        INFO(f);
        auto m = load(f);
        const auto& c = m->config();
        auto toks = prompt(20, 2);
        auto full = all_logits(*m, toks);
        cpu::LatentCache cache;
        std::vector<float> x(7 * c.hidden), l(c.n_vocab);
        cpu::embed(*m, toks.data(), 7, x.data());
        cpu::forward(*m, cache, x.data(), 7);
        for (uint32_t i = 7; i < toks.size(); ++i) {
            cpu::embed(*m, &toks[i], 1, x.data());
            cpu::forward(*m, cache, x.data(), 1);
            cpu::output(*m, x.data(), 1, l.data());
            check_close(l.data(), &full[uint64_t(i) * c.n_vocab], c.n_vocab, 1e-4f, max_abs(full));
        }
        CHECK(cache.n_tok == 20);
    }
}

TEST_CASE("CpuBackend: batched items equal single-sequence runs; embeddings equal their tokens") {
    EngineOptions o;
    o.model_path = (test::models_dir() / "tiny-v3-f32.gguf").string();
    o.backend = "cpu";
    auto e = Engine::open(o);
    Backend& b = e->backend();
    const uint32_t V = e->config().n_vocab;
    std::vector<std::vector<int32_t>> ps = {prompt(5, 3), prompt(11, 4), prompt(2, 5), prompt(8, 6)};
    std::vector<std::vector<float>> single;
    for (auto& p : ps) {
        SeqId s = b.create_sequence();
        BatchItem it{s, {Segment::from_tokens(p)}, {uint32_t(p.size() - 1)}, {{0, 42}}};
        auto out = b.step({it});
        single.push_back(out[0].logits);
        single.back().push_back(out[0].logprobs[0]);
        b.free_sequence(s);
    }
    std::vector<BatchItem> batch;
    for (auto& p : ps)
        batch.push_back(
            {b.create_sequence(), {Segment::from_tokens(p)}, {uint32_t(p.size() - 1)}, {{0, 42}}});
    auto outs = b.step(batch);
    for (size_t i = 0; i < ps.size(); ++i) {
        REQUIRE(outs[i].logits.size() == V);
        check_close(outs[i].logits.data(), single[i].data(), V, 1e-5f, max_abs(single[i]));
        CHECK(outs[i].logprobs[0] == doctest::Approx(single[i][V]).epsilon(1e-4));
        CHECK(b.sequence_length(batch[i].seq) == ps[i].size());
    }
    // Embedding rows of the same tokens give the same logits as the tokens.
    SeqId s = b.create_sequence();
    auto emb = e->embed_tokens(ps[1]);
    auto out =
        b.step({{s, {Segment::from_embeds(emb, uint32_t(ps[1].size()))}, {uint32_t(ps[1].size() - 1)}, {}}});
    check_close(out[0].logits.data(), single[1].data(), V, 1e-5f, max_abs(single[1]));
    // copy_prefix + truncate: the prefix then one more token equals the full run.
    SeqId s2 = b.create_sequence();
    b.copy_prefix(s, s2, 10);
    out = b.step({{s2, {Segment::from_tokens({ps[1][10]})}, {0}, {}}});
    check_close(out[0].logits.data(), single[1].data(), V, 1e-4f, max_abs(single[1]));
    b.truncate(s, 10);
    CHECK(b.sequence_length(s) == 10);
    // Errors: bad token, wrong embedding width, unknown sequence, over capacity.
    CHECK_THROWS_AS(b.step({{s, {Segment::from_tokens({int32_t(V)})}, {0}, {}}}), EngineError);
    CHECK_THROWS_AS(b.step({{s, {Segment::from_embeds(std::vector<float>(100), 1)}, {0}, {}}}), EngineError);
    CHECK_THROWS_AS(b.step({{9999, {Segment::from_tokens({1})}, {0}, {}}}), EngineError);
    CHECK(b.sequence_length(s) == 10);
}

TEST_CASE("quantised models compute exactly what their dequantised F32 copies compute") {
    // The reference's contract for Q8_0/Q4_0: every weight row is dequantised, then fp32 math.
    // A copy of the file with every tensor dequantised to F32 must give the same logits.
    for (auto f : {"tiny-v2-q8_0.gguf", "tiny-v3-q4_0.gguf"}) {
        INFO(f);
        const auto src = (test::models_dir() / f).string();
        auto dir = test::temp_dir("deq");
        const auto dst = (dir / "f32.gguf").string();
        {
            gguf::File file = gguf::File::open(src);
            gguf::Writer w;
            for (auto& [k, v] : file.parsed().kv)
                w.set(k, v);
            for (auto& t : file.parsed().tensors) {
                std::vector<uint8_t> bytes(t.n_elements() * 4);
                const uint64_t rows = t.n_elements() / t.ne[0];
                const uint64_t rb = t.nbytes / rows;
                for (uint64_t r = 0; r < rows; ++r)
                    cpu::dequantize_row(t.type, t.data + r * rb,
                                        reinterpret_cast<float*>(bytes.data()) + r * t.ne[0], t.ne[0]);
                w.add_tensor(t.name, t.ne, gguf::GgmlType::F32, std::move(bytes));
            }
            w.write(dst);
        }
        auto q = load(f);
        auto d = Model::load(dst);
        auto toks = prompt(7, 9);
        auto a = all_logits(*q, toks), b = all_logits(*d, toks);
        check_close(a.data(), b.data(), a.size(), 1e-6f, max_abs(a));
        std::filesystem::remove_all(dir);
    }
}

TEST_CASE("fused attn_kv_b (older converters) gives the same logits as split k_b/v_b") {
    // Build a fused-kv_b copy of the split tiny-v2 model with the older metadata convention.
    const auto src = (test::models_dir() / "tiny-v2-f32.gguf").string();
    auto dir = test::temp_dir("fused");
    const auto dst = (dir / "fused.gguf").string();
    {
        gguf::File f = gguf::File::open(src);
        const auto& p = f.parsed();
        gguf::Writer w;
        for (auto& [k, v] : p.kv)
            w.set(k, v);
        const uint32_t H = 4, R = 64, nope = 32, vh = 32;
        w.set_u32("deepseek2.attention.head_count_kv", H);
        w.set_u32("deepseek2.attention.key_length", nope + 16);
        w.set_u32("deepseek2.attention.value_length", vh);
        w.set("deepseek2.attention.key_length_mla",
              gguf::Value{gguf::ValueType::U32, gguf::ValueType::U32, uint64_t(nope + 16)});
        for (auto& t : p.tensors) {
            const std::string& n = t.name;
            if (n.find("attn_v_b") != std::string::npos)
                continue;
            if (n.find("attn_k_b") != std::string::npos) {
                const std::string layer = n.substr(0, n.find("attn_k_b"));
                const float* kb = reinterpret_cast<const float*>(t.data);
                const float* vb = reinterpret_cast<const float*>(p.find(layer + "attn_v_b.weight")->data);
                std::vector<float> kv(uint64_t(H) * (nope + vh) * R);
                for (uint32_t h = 0; h < H; ++h)
                    for (uint32_t j = 0; j < nope + vh; ++j)
                        for (uint32_t i = 0; i < R; ++i)
                            kv[(uint64_t(h) * (nope + vh) + j) * R + i] =
                                j < nope ? kb[(uint64_t(h) * R + i) * nope + j]
                                         : vb[(uint64_t(h) * vh + j - nope) * R + i];
                std::vector<uint8_t> bytes(kv.size() * 4);
                std::memcpy(bytes.data(), kv.data(), bytes.size());
                w.add_tensor(layer + "attn_kv_b.weight", {R, uint64_t(H) * (nope + vh)}, gguf::GgmlType::F32,
                             bytes);
                continue;
            }
            std::vector<uint8_t> bytes(t.data, t.data + t.nbytes);
            w.add_tensor(n, t.ne, t.type, std::move(bytes));
        }
        w.write(dst);
    }
    auto split = load("tiny-v2-f32.gguf");
    auto fused = Model::load(dst);
    CHECK(fused->weights().layers[0].wkv_b);
    auto toks = prompt(9, 8);
    auto a = all_logits(*split, toks), b = all_logits(*fused, toks);
    check_close(a.data(), b.data(), a.size(), 1e-6f, max_abs(a));
    std::filesystem::remove_all(dir);
}
