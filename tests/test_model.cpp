// Model loading: every generated config loads with the expected hyper-parameters and views, the
// fused attn_kv_b file derives the same k_b/v_b as the split file, and broken files (another
// architecture, truncated, missing tensor, wrong shape, unsupported type) give clear ModelErrors.
#include "engine/cpu/ops.h"
#include "engine/model.h"
#include "test_core_util.h"
#include "test_env.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

using namespace prefixd;
namespace fs = std::filesystem;

static std::string model_path(const char* f) {
    return (test::models_dir() / f).string();
}

TEST_CASE("tiny-v2 loads with its hyper-parameters") {
    auto m = Model::load(model_path("tiny-v2-f32.gguf"));
    const auto& c = m->config();
    CHECK(c.hidden == 128);
    CHECK(c.n_layer == 3);
    CHECK(c.n_dense_lead == 1);
    CHECK(c.n_head == 4);
    CHECK(c.qk_nope == 32);
    CHECK(c.qk_rope == 16);
    CHECK(c.v_head == 32);
    CHECK(c.kv_lora_rank == 64);
    CHECK(c.q_lora_rank == 0);
    CHECK(c.n_expert == 8);
    CHECK(c.n_expert_used == 2);
    CHECK(c.n_expert_shared == 1);
    CHECK(c.gating == GatingFunc::Softmax);
    CHECK(c.n_vocab == 129280);
    CHECK(c.bos_id == 0);
    CHECK(c.eos_id == 1);
    CHECK(c.add_bos);
    CHECK(c.rope_factor == 1.0f);
    CHECK(c.attn_scale() == doctest::Approx(1 / std::sqrt(48.0)));
    const auto& w = m->weights();
    REQUIRE(w.layers.size() == 3);
    CHECK(w.layers[0].ffn_gate.rows == 256);
    CHECK_FALSE(w.layers[0].gate_exps);
    CHECK(w.layers[1].gate_exps.n_mat == 8);
    CHECK(w.layers[1].gate_exps.rows == 64);
    CHECK(w.layers[1].down_exps.cols == 64);
    CHECK(w.layers[1].wk_b.n_mat == 4);
    CHECK(w.layers[1].wk_b.rows == 64);
    CHECK(w.layers[1].wk_b.cols == 32);
    CHECK(w.layers[1].wv_b.rows == 32);
    CHECK(w.layers[1].wv_b.cols == 64);
    CHECK_FALSE(w.layers[1].exp_probs_b);
    CHECK(w.layers[0].wq.rows == 4 * 48);
    CHECK(w.output.rows == 129280);
}

TEST_CASE("tiny-v3 loads: q_lora, sigmoid + bias, groups, YaRN") {
    for (auto f : {"tiny-v3-f32.gguf", "tiny-v3-q8_0.gguf", "tiny-v3-q4_0.gguf"}) {
        auto m = Model::load(model_path(f));
        const auto& c = m->config();
        CHECK(c.q_lora_rank == 96);
        CHECK(c.gating == GatingFunc::Sigmoid);
        CHECK(c.n_group == 4);
        CHECK(c.n_group_used == 2);
        CHECK(c.expert_weights_norm);
        CHECK(c.routed_scale == 2.5f);
        CHECK(c.rope_factor == 4.0f);
        CHECK(c.rope_orig_ctx == 1024);
        CHECK(c.yarn_log_mul == doctest::Approx(0.1));
        const auto& l = m->weights().layers[2];
        CHECK(l.exp_probs_b);
        CHECK(l.wq_a.rows == 96);
        CHECK(l.gate_inp.type == gguf::GgmlType::F32);
        CHECK(l.attn_norm.type == gguf::GgmlType::F32);
    }
    auto q8 = Model::load(model_path("tiny-v2-q8_0.gguf"));
    CHECK(q8->weights().layers[1].up_exps.type == gguf::GgmlType::Q8_0);
    auto q4 = Model::load(model_path("tiny-v2-q4_0.gguf"));
    CHECK(q4->weights().token_embd.type == gguf::GgmlType::Q4_0);
}

TEST_CASE("fused attn_kv_b derives the split k_b/v_b") {
    auto a = Model::load(model_path("tiny-v2-f32-kvb.gguf"));
    const auto& c = a->config();
    CHECK(c.qk_nope == 32);
    CHECK(c.v_head == 32);
    const auto& l = a->weights().layers[1];
    REQUIRE(l.wkv_b);
    REQUIRE(l.wk_b);
    REQUIRE(l.wv_b);
    CHECK(l.wk_b.type == gguf::GgmlType::F32);
    // kv_b row (h*(nope+v) + j), col i  ==  k_b[h] row i col j  (j < nope)  /  v_b[h] row j-nope col i
    auto kvb = reinterpret_cast<const float*>(l.wkv_b.data);
    auto kb = reinterpret_cast<const float*>(l.wk_b.data);
    auto vb = reinterpret_cast<const float*>(l.wv_b.data);
    const uint64_t R = 64, nope = 32, vh = 32;
    for (uint64_t h : {0u, 3u})
        for (uint64_t j : {0u, 5u, 31u}) {
            for (uint64_t i : {0u, 17u, 63u}) {
                CHECK(kvb[(h * (nope + vh) + j) * R + i] == kb[(h * R + i) * nope + j]);
                CHECK(kvb[(h * (nope + vh) + nope + j) * R + i] == vb[(h * vh + j) * R + i]);
            }
        }
}

static void expect_load_error(const std::string& path, const std::string& needle) {
    try {
        Model::load(path);
        FAIL("loaded a broken model: " << path);
    } catch (const ModelError& e) {
        CHECK_MESSAGE(std::string(e.what()).find(needle) != std::string::npos, std::string(e.what()));
    }
}

TEST_CASE("broken model files give clear errors") {
    auto dir = test::temp_dir("model-bad");
    const std::string src = model_path("tiny-v2-q8_0.gguf");
    auto p = [&](const char* n) { return (dir / n).string(); };

    test::GgufEdit arch;
    arch.kv = [](gguf::Writer& w) { w.set_str("general.architecture", "llama"); };
    test::rewrite_gguf(src, p("arch.gguf"), arch);
    expect_load_error(p("arch.gguf"), "unsupported architecture 'llama'");

    test::GgufEdit missing;
    missing.drop_tensor = "blk.1.ffn_up_exps.weight";
    test::rewrite_gguf(src, p("missing.gguf"), missing);
    expect_load_error(p("missing.gguf"), "missing tensor blk.1.ffn_up_exps.weight");

    test::GgufEdit shape;
    shape.reshape_tensor = "blk.2.attn_output.weight";
    shape.new_ne = {128, 96};
    test::rewrite_gguf(src, p("shape.gguf"), shape);
    expect_load_error(p("shape.gguf"),
                      "tensor blk.2.attn_output.weight has shape [128, 96], expected [128, 128]");

    test::GgufEdit type;
    type.retype_tensor = "blk.0.ffn_down.weight";
    type.new_type = gguf::GgmlType::Q5_K; // still unsupported (Q4_K/Q6_K load since the K-quant work)
    test::rewrite_gguf(src, p("type.gguf"), type);
    expect_load_error(p("type.gguf"), "tensor blk.0.ffn_down.weight has unsupported type Q5_K");

    test::GgufEdit key;
    key.kv = [](gguf::Writer& w) { w.set_str("deepseek2.attention.kv_lora_rank", "x"); };
    test::rewrite_gguf(src, p("key.gguf"), key);
    expect_load_error(p("key.gguf"), "kv_lora_rank");

    test::GgufEdit groups;
    groups.kv = [](gguf::Writer& w) { w.set_u32("deepseek2.expert_group_count", 3); };
    test::rewrite_gguf(src, p("groups.gguf"), groups);
    expect_load_error(p("groups.gguf"), "groups");

    // Hyper-parameters out of range (each made the logits NaN or zero, or the Vulkan self-check
    // blame the driver): named in the error
    struct Bad {
        const char* key;
        float value;
    };
    const Bad bad_values[] = {
        {"rope.scaling.yarn_log_multiplier", NAN},
        {"rope.scaling.yarn_log_multiplier", INFINITY},
        {"rope.scaling.factor", INFINITY},
        {"attention.layer_norm_rms_epsilon", INFINITY},
        {"attention.layer_norm_rms_epsilon", 0.0f},
        {"rope.freq_base", 1e-30f},
        {"rope.freq_base", NAN},
        {"expert_weights_scale", 1e38f},
        {"expert_weights_scale", -1e30f},
        {"rope.scaling.yarn_beta_fast", -1.0f},
    };
    const std::string v3 = model_path("tiny-v3-q8_0.gguf"); // YaRN keys present
    for (const Bad& b : bad_values) {
        INFO(b.key << " = " << b.value);
        test::GgufEdit hp;
        hp.kv = [&b](gguf::Writer& w) { w.set_f32(std::string("deepseek2.") + b.key, b.value); };
        test::rewrite_gguf(v3, p("hp.gguf"), hp);
        expect_load_error(p("hp.gguf"), b.key);
    }
    test::GgufEdit ctx0;
    ctx0.kv = [](gguf::Writer& w) { w.set_u32("deepseek2.context_length", 0); };
    test::rewrite_gguf(src, p("ctx0.gguf"), ctx0);
    expect_load_error(p("ctx0.gguf"), "context_length is 0");

    // NaN or Inf in a norm or router weight (every logit would be NaN)
    for (const char* t : {"output_norm.weight", "blk.1.ffn_gate_inp.weight", "blk.2.attn_kv_a_norm.weight"}) {
        for (const float bad : {NAN, -INFINITY}) {
            INFO(t << " " << bad);
            test::GgufEdit poison;
            poison.data = [t, bad](const std::string& name, std::vector<uint8_t>& d) {
                if (name == t)
                    std::memcpy(d.data() + 4 * 5, &bad, 4); // F32: element 5
            };
            test::rewrite_gguf(src, p("poison.gguf"), poison);
            expect_load_error(p("poison.gguf"), std::string("tensor ") + t + " holds NaN or Inf (element 5)");
        }
    }

    // Truncated: cut in the middle of the tensor data and inside the metadata.
    for (double frac : {0.5, 0.999, 0.001}) {
        fs::copy_file(src, p("trunc.gguf"), fs::copy_options::overwrite_existing);
        fs::resize_file(p("trunc.gguf"), uint64_t(fs::file_size(src) * frac));
        expect_load_error(p("trunc.gguf"), "truncated");
    }
    expect_load_error(p("nonexistent.gguf"), "cannot open");
    fs::remove_all(dir);
}
