// Model loading for llama.cpp's `deepseek2` GGUF layout (DeepSeek-V2, V2-Lite, V2.5, V3, R1):
// reads hyper-parameters, checks every tensor's presence, shape and type, and builds weight
// views into the mmap. Derives split k_b/v_b from a fused attn_kv_b, and F32 copies of norms or
// routers stored in other float types. Every problem throws ModelError naming file and tensor.
#include "model.h"

#include "cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

namespace prefixd {

using gguf::GgmlType;

uint64_t Tensor::row_bytes() const {
    return cols / gguf::type_block_elems(type) * gguf::type_block_bytes(type);
}

float ModelConfig::attn_scale() const {
    float mscale = 1.0f;
    if (rope_factor > 1.0f)
        mscale = 1.0f + yarn_log_mul * std::log(rope_factor);
    return mscale * mscale / std::sqrt(float(qk_head()));
}

std::string ModelConfig::fingerprint() const {
    std::ostringstream s;
    s << "deepseek2-h" << hidden << "-l" << n_layer << "-v" << n_vocab << "-hd" << n_head << "-kv"
      << kv_lora_rank << "-q" << q_lora_rank << "-r" << qk_rope << "-n" << qk_nope << "-vh" << v_head << "-e"
      << n_expert << "x" << n_expert_used;
    return s.str();
}

namespace {

std::string dims_str(const std::vector<uint64_t>& ne) {
    std::string s = "[";
    for (size_t i = 0; i < ne.size(); ++i)
        s += (i ? ", " : "") + std::to_string(ne[i]);
    return s + "]";
}

struct Loader {
    const gguf::Parsed& g;
    std::vector<std::vector<uint8_t>>& derived;
    const std::string arch = "deepseek2";

    uint32_t u32(const std::string& key) const {
        uint64_t v = g.get_u64(arch + "." + key);
        if (v > 0x7fffffffu)
            throw ModelError("key " + arch + "." + key + " out of range");
        return uint32_t(v);
    }
    uint32_t u32(const std::string& key, uint32_t def) const {
        return g.get(arch + "." + key) ? u32(key) : def;
    }
    float f32(const std::string& key, float def) const { return float(g.get_f64(arch + "." + key, def)); }

    // Looks up `name`, checks ggml dims `ne` (trailing 1s ignored) and a supported type.
    Tensor get(const std::string& name, std::vector<uint64_t> ne, bool required = true) const {
        const gguf::TensorInfo* ti = g.find(name);
        if (!ti) {
            if (required)
                throw ModelError("missing tensor " + name);
            return {};
        }
        auto have = ti->ne;
        while (have.size() > ne.size() && have.back() == 1)
            have.pop_back();
        while (ne.size() > have.size() && ne.back() == 1)
            ne.pop_back();
        if (have != ne)
            throw ModelError("tensor " + name + " has shape " + dims_str(ti->ne) + ", expected " +
                             dims_str(ne));
        if (!gguf::engine_supports(ti->type))
            throw ModelError(std::string("tensor ") + name + " has unsupported type " +
                             gguf::type_name(ti->type) + " (supported: " + gguf::engine_supported_types() +
                             ")");
        if (ne[0] % gguf::type_block_elems(ti->type) != 0) // the GGUF parser checks this too
            throw ModelError(std::string("tensor ") + name + ": row of " + std::to_string(ne[0]) +
                             " elements is not a multiple of the " + gguf::type_name(ti->type) + " block (" +
                             std::to_string(gguf::type_block_elems(ti->type)) + " elements)");
        Tensor t;
        t.info = ti;
        t.type = ti->type;
        t.cols = ne[0];
        t.rows = ne.size() > 1 ? ne[1] : 1;
        t.n_mat = ne.size() > 2 ? ne[2] : 1;
        t.data = ti->data;
        return t;
    }

    // Keeps an F32 tensor as is; converts other float types into an owned F32 copy. These are the
    // small tensors (norms, routers, routing biases), so their values are checked here: a NaN or
    // Inf in one makes every logit NaN.
    Tensor as_f32(Tensor t) {
        if (!t)
            return t;
        const uint64_t n = t.rows * t.cols * t.n_mat;
        if (t.type != GgmlType::F32) {
            std::vector<uint8_t> buf(n * 4);
            for (uint64_t r = 0; r < t.rows * t.n_mat; ++r)
                cpu::dequantize_row(t.type, t.data + r * t.row_bytes(),
                                    reinterpret_cast<float*>(buf.data()) + r * t.cols, t.cols);
            derived.push_back(std::move(buf));
            t.type = GgmlType::F32;
            t.data = derived.back().data();
        }
        const float* v = reinterpret_cast<const float*>(t.data);
        for (uint64_t i = 0; i < n; ++i)
            if (!std::isfinite(v[i]))
                throw ModelError("tensor " + t.info->name + " holds NaN or Inf (element " +
                                 std::to_string(i) + ")");
        return t;
    }
};

void read_config(const gguf::Parsed& g, const Loader& L, ModelConfig& c) {
    std::string arch = g.get_str("general.architecture");
    if (arch.empty())
        throw ModelError("missing key general.architecture");
    if (arch != "deepseek2")
        throw ModelError("unsupported architecture '" + arch + "' (prefixd runs deepseek2 models only)");
    // shards (model-00001-of-00005.gguf) hold part of the tensors each: named, not "missing tensor"
    if (const gguf::Value* v = g.get("split.count")) {
        int64_t shards = 0;
        try {
            shards = v->as_i64();
        } catch (const gguf::GgufError&) { // not an integer: not a shard count this refusal is about
        }
        if (shards > 1)
            throw ModelError(
                "split GGUF (" + std::to_string(shards) +
                " shards): prefixd loads one file; merge the shards first (llama-gguf-split --merge)");
    }
    c.name = g.get_str("general.name", "");
    c.n_ctx_train = L.u32("context_length");
    c.hidden = L.u32("embedding_length");
    c.n_layer = L.u32("block_count");
    c.n_head = L.u32("attention.head_count");
    c.n_ff = L.u32("feed_forward_length");
    c.n_expert = L.u32("expert_count", 0);
    c.n_expert_used = L.u32("expert_used_count", 0);
    c.n_expert_shared = L.u32("expert_shared_count", 0);
    c.n_ff_exp = L.u32("expert_feed_forward_length", 0);
    c.n_dense_lead = L.u32("leading_dense_block_count", 0);
    c.n_group = L.u32("expert_group_count", 1);
    c.n_group_used = L.u32("expert_group_used_count", c.n_group);
    c.routed_scale = L.f32("expert_weights_scale", 1.0f);
    c.expert_weights_norm = g.get_bool("deepseek2.expert_weights_norm", false);
    uint32_t gating = L.u32("expert_gating_func", 1);
    if (gating != 1 && gating != 2)
        throw ModelError("unsupported expert_gating_func " + std::to_string(gating));
    c.gating = GatingFunc(gating);
    c.q_lora_rank = L.u32("attention.q_lora_rank", 0);
    c.kv_lora_rank = L.u32("attention.kv_lora_rank");
    c.qk_rope = L.u32("rope.dimension_count");
    // Current converters: key_length_mla / value_length_mla hold the per-head dims (key_length is
    // then kv_lora+rope and head_count_kv 1); older files have them in key_length / value_length.
    uint32_t k_len = g.get("deepseek2.attention.key_length_mla") ? L.u32("attention.key_length_mla")
                                                                 : L.u32("attention.key_length");
    c.v_head = g.get("deepseek2.attention.value_length_mla") ? L.u32("attention.value_length_mla")
                                                             : L.u32("attention.value_length");
    if (k_len <= c.qk_rope)
        throw ModelError("key_length " + std::to_string(k_len) + " not larger than rope dims");
    c.qk_nope = k_len - c.qk_rope;
    c.rms_eps = L.f32("attention.layer_norm_rms_epsilon", 1e-6f);
    c.rope_base = L.f32("rope.freq_base", 10000.0f);
    std::string stype = g.get_str("deepseek2.rope.scaling.type", "none");
    c.rope_factor = 1.0f;
    if (stype == "yarn") {
        c.rope_factor = L.f32("rope.scaling.factor", 1.0f);
        c.rope_orig_ctx = L.u32("rope.scaling.original_context_length", c.n_ctx_train);
        c.yarn_log_mul = L.f32("rope.scaling.yarn_log_multiplier", 0.0f);
    } else if (stype != "none") {
        throw ModelError("unsupported rope.scaling.type '" + stype + "'");
    }
    c.yarn_beta_fast = L.f32("rope.scaling.yarn_beta_fast", 32.0f);
    c.yarn_beta_slow = L.f32("rope.scaling.yarn_beta_slow", 1.0f);
    auto special = [&](const char* key) {
        return g.get(key) ? int32_t(std::min<uint64_t>(g.get_u64(key), 0x7fffffff)) : -1;
    };
    c.bos_id = special("tokenizer.ggml.bos_token_id");
    c.eos_id = special("tokenizer.ggml.eos_token_id");
    c.pad_id = special("tokenizer.ggml.padding_token_id");
    c.add_bos = g.get_bool("tokenizer.ggml.add_bos_token", true);

    auto bad = [](const std::string& m) { throw ModelError("invalid hyper-parameters: " + m); };
    if (!c.hidden || !c.n_layer || !c.n_head || !c.kv_lora_rank || !c.v_head)
        bad("zero dimension");
    if (c.qk_rope % 2)
        bad("odd rope dimension count");
    // Ranges wide enough for any real model (DeepSeek: eps 1e-6, base 1e4, YaRN factor 40, mscale
    // multiplier 0.1 / 0.0707, routed scaling 1 / 2.5 / 16) and narrow enough that the forward
    // pass stays finite. NaN fails every test here.
    auto in = [&](const char* key, float v, float lo, float hi) {
        if (!(v >= lo && v <= hi))
            bad(std::string(key) + " = " + std::to_string(v) + " is outside [" + std::to_string(lo) + ", " +
                std::to_string(hi) + "]");
    };
    if (!c.n_ctx_train)
        bad("context_length is 0");
    in("attention.layer_norm_rms_epsilon", c.rms_eps, 1e-12f, 1.0f);
    in("rope.freq_base", c.rope_base, 1.0f, 1e12f);
    in("rope.scaling.factor", c.rope_factor, 1.0f, 1e4f);
    in("rope.scaling.yarn_log_multiplier", c.yarn_log_mul, -10.0f, 10.0f);
    in("rope.scaling.yarn_beta_fast", c.yarn_beta_fast, 1e-6f, 1e6f);
    in("rope.scaling.yarn_beta_slow", c.yarn_beta_slow, 1e-6f, 1e6f);
    in("expert_weights_scale", c.routed_scale, 1e-6f, 1e4f);
    if (c.n_dense_lead > c.n_layer)
        bad("leading_dense_block_count > block_count");
    if (c.n_dense_lead < c.n_layer) {
        if (!c.n_expert || !c.n_expert_used || c.n_expert_used > c.n_expert || !c.n_ff_exp)
            bad("MoE layers need expert_count, expert_used_count <= expert_count, "
                "expert_feed_forward_length");
        if (!c.n_group || c.n_expert % c.n_group || !c.n_group_used || c.n_group_used > c.n_group)
            bad("expert groups do not divide the experts");
        if (c.n_group_used * (c.n_expert / c.n_group) < c.n_expert_used)
            bad("used groups hold fewer than top-k experts");
    }
    if (c.n_dense_lead > 0 && !c.n_ff)
        bad("dense layers need feed_forward_length");
    if (c.hidden > (1u << 16) || c.n_head > 1024 || c.n_layer > 1024 || c.kv_lora_rank > (1u << 14))
        bad("implausibly large");
}

// Splits a fused kv_b (n_head*(nope+v), kv_lora) into F32 k_b (per head (kv_lora, nope)) and
// v_b (per head (v, kv_lora)).
void split_kv_b(Loader& L, const ModelConfig& c, LayerWeights& lw) {
    const uint64_t R = c.kv_lora_rank, nope = c.qk_nope, vh = c.v_head, H = c.n_head;
    std::vector<uint8_t> kb(H * R * nope * 4), vb(H * vh * R * 4);
    float* k = reinterpret_cast<float*>(kb.data());
    float* v = reinterpret_cast<float*>(vb.data());
    std::vector<float> row(R);
    for (uint64_t h = 0; h < H; ++h)
        for (uint64_t j = 0; j < nope + vh; ++j) {
            uint64_t r = h * (nope + vh) + j;
            cpu::dequantize_row(lw.wkv_b.type, lw.wkv_b.data + r * lw.wkv_b.row_bytes(), row.data(), R);
            if (j < nope) {
                for (uint64_t i = 0; i < R; ++i)
                    k[(h * R + i) * nope + j] = row[i];
            } else {
                std::memcpy(v + (h * vh + (j - nope)) * R, row.data(), R * 4);
            }
        }
    L.derived.push_back(std::move(kb));
    lw.wk_b = Tensor{nullptr, GgmlType::F32, R, nope, H, L.derived.back().data()};
    L.derived.push_back(std::move(vb));
    lw.wv_b = Tensor{nullptr, GgmlType::F32, vh, R, H, L.derived.back().data()};
}

void load_layer(Loader& L, const ModelConfig& c, uint32_t il, LayerWeights& lw) {
    const std::string p = "blk." + std::to_string(il) + ".";
    const uint64_t E = c.hidden, H = c.n_head, qk = c.qk_head(), R = c.kv_lora_rank;
    lw.attn_norm = L.as_f32(L.get(p + "attn_norm.weight", {E}));
    if (c.q_lora_rank) {
        lw.wq_a = L.get(p + "attn_q_a.weight", {E, c.q_lora_rank});
        lw.q_a_norm = L.as_f32(L.get(p + "attn_q_a_norm.weight", {c.q_lora_rank}));
        lw.wq_b = L.get(p + "attn_q_b.weight", {c.q_lora_rank, H * qk});
    } else {
        lw.wq = L.get(p + "attn_q.weight", {E, H * qk});
    }
    lw.wkv_a = L.get(p + "attn_kv_a_mqa.weight", {E, R + c.qk_rope});
    lw.kv_a_norm = L.as_f32(L.get(p + "attn_kv_a_norm.weight", {R}));
    lw.wk_b = L.get(p + "attn_k_b.weight", {c.qk_nope, R, H}, false);
    lw.wv_b = L.get(p + "attn_v_b.weight", {R, c.v_head, H}, false);
    if (!lw.wk_b || !lw.wv_b) {
        if (!L.g.find(p + "attn_kv_b.weight"))
            throw ModelError("missing tensor " + p + (lw.wk_b ? "attn_v_b.weight" : "attn_k_b.weight") +
                             " (and no fused " + p + "attn_kv_b.weight)");
        lw.wkv_b = L.get(p + "attn_kv_b.weight", {R, H * (c.qk_nope + c.v_head)});
        split_kv_b(L, c, lw);
    }
    lw.wo = L.get(p + "attn_output.weight", {H * c.v_head, E});
    lw.ffn_norm = L.as_f32(L.get(p + "ffn_norm.weight", {E}));
    if (!c.is_moe_layer(il)) {
        lw.ffn_gate = L.get(p + "ffn_gate.weight", {E, c.n_ff});
        lw.ffn_up = L.get(p + "ffn_up.weight", {E, c.n_ff});
        lw.ffn_down = L.get(p + "ffn_down.weight", {c.n_ff, E});
        return;
    }
    const uint64_t X = c.n_expert, F = c.n_ff_exp;
    lw.gate_inp = L.as_f32(L.get(p + "ffn_gate_inp.weight", {E, X}));
    lw.exp_probs_b = L.as_f32(L.get(p + "exp_probs_b.bias", {X}, false));
    lw.gate_exps = L.get(p + "ffn_gate_exps.weight", {E, F, X});
    lw.up_exps = L.get(p + "ffn_up_exps.weight", {E, F, X});
    lw.down_exps = L.get(p + "ffn_down_exps.weight", {F, E, X});
    if (c.n_expert_shared) {
        const uint64_t S = F * c.n_expert_shared;
        lw.gate_shexp = L.get(p + "ffn_gate_shexp.weight", {E, S});
        lw.up_shexp = L.get(p + "ffn_up_shexp.weight", {E, S});
        lw.down_shexp = L.get(p + "ffn_down_shexp.weight", {S, E});
    }
}

} // namespace

std::unique_ptr<Model> Model::load(const std::string& path) {
    std::unique_ptr<Model> m;
    try {
        m.reset(new Model(gguf::File::open(path)));
    } catch (const gguf::GgufError& e) {
        throw ModelError(std::string("cannot load model: ") + e.what());
    }
    try {
        const gguf::Parsed& g = m->file_.parsed();
        Loader L{g, m->derived_};
        ModelConfig& c = m->config_;
        read_config(g, L, c);
        const gguf::TensorInfo* te = g.find("token_embd.weight");
        if (!te)
            throw ModelError("missing tensor token_embd.weight");
        if (te->ne.size() < 2 || te->ne[0] != c.hidden)
            throw ModelError("tensor token_embd.weight has shape " + dims_str(te->ne) + ", expected [" +
                             std::to_string(c.hidden) + ", n_vocab]");
        c.n_vocab = uint32_t(te->ne[1]);
        Weights& w = m->weights_;
        w.token_embd = L.get("token_embd.weight", {c.hidden, c.n_vocab});
        w.output_norm = L.as_f32(L.get("output_norm.weight", {c.hidden}));
        w.output = L.get("output.weight", {c.hidden, c.n_vocab}, false);
        if (!w.output)
            w.output = w.token_embd; // tied embeddings
        w.layers.resize(c.n_layer);
        for (uint32_t il = 0; il < c.n_layer; ++il)
            load_layer(L, c, il, w.layers[il]);
        for (auto id : {c.bos_id, c.eos_id})
            if (id >= int32_t(c.n_vocab))
                throw ModelError("special token id " + std::to_string(id) + " >= n_vocab");
    } catch (const gguf::GgufError& e) {
        throw ModelError(path + ": " + e.what());
    } catch (const ModelError& e) {
        throw ModelError(path + ": " + e.what());
    }
    return m;
}

} // namespace prefixd
