// The Vulkan forward pass for a mixed batch (prefill chunks and decode rows of many sequences).
// Per layer, under the same names as the CPU reference:
//   attention: q (or q_a -> q_b), kv_a (norm fused) -> kv_store (c_kv norm, k_pe rope into the
//              cache) -> q_lat = W_kb q_nope per head -> attn_mla over the latent cache ->
//              v = W_vb latent per head -> x += W_o v
//   ffn:       dense SwiGLU, or router logits (one-row steps: routed on the device by
//              moe_route; else read back and routed on the CPU exactly as the reference), shared
//              experts + routed experts (each expert's weights read once for all its rows) ->
//              weighted combine into x
// Output: output_norm + output projection on the gathered rows that want logits/log-probs.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers" // Vk*Info{sType} idiom
#include "vk_forward.h"

#include "../cpu/ops.h"
#include "vk_kquant.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

namespace prefixd::vk {

using gguf::GgmlType;

static const char* type_suffix(GgmlType t) {
    switch (t) {
    case GgmlType::F32:
        return "f32";
    case GgmlType::F16:
        return "f16";
    case GgmlType::BF16:
        return "bf16";
    case GgmlType::Q8_0:
        return "q8_0";
    case GgmlType::Q4_0:
        return "q4_0";
    case GgmlType::Q5_0:
        return "q5_0";
    case GgmlType::Q4_K:
        return "q4_k";
    case GgmlType::Q6_K:
        return "q6_k";
    default:
        throw EngineError(std::string("Vulkan: no matmul for type ") + gguf::type_name(t));
    }
}

// Weight rows per workgroup: at least 4, and few enough workgroups (<= ~256 per matrix) that a
// CPU driver's per-workgroup cost stays small while GPUs still get plenty of groups.
static uint32_t rows_per_group(uint64_t rows) {
    uint64_t r = std::max<uint64_t>(4, (rows + 255) / 256);
    return uint32_t((r + 3) & ~uint64_t(3));
}

// Rows at least this long (bytes) use the split-row texel matmul; PREFIXD_VK_SPLIT_BYTES overrides.
static uint64_t split_row_bytes() {
    const char* e = std::getenv("PREFIXD_VK_SPLIT_BYTES");
    return e && *e ? std::strtoull(e, nullptr, 10) : uint64_t(1024);
}

// Workgroups per interleaved matmul (PREFIXD_VK_IL_GROUPS overrides; for tuning).
static uint64_t il_groups() {
    const char* e = std::getenv("PREFIXD_VK_IL_GROUPS");
    return e && *e ? std::max<uint64_t>(1, std::strtoull(e, nullptr, 10)) : uint64_t(32);
}

void dispatch_matmul(Context& ctx, const GpuTensor& w, const GpuTensor* w2, MatmulPush p, uint32_t groups,
                     bool one_token, const char* il_variant) {
    if (w2 && (w2->type != w.type || w2->rows != w.rows || w2->cols != w.cols))
        throw EngineError("Vulkan: SwiGLU gate/up tensors differ in type or shape");
    if (!w.parts.empty()) { // a stack split over allocations: one dispatch per part (push.h)
        if (!(p.flags & MM_MAP))
            throw EngineError(
                "Vulkan: a weight stack split over allocations is read through an expert map only");
        if (w2 && w2->parts.size() != w.parts.size())
            throw EngineError("Vulkan: SwiGLU gate/up stacks are split differently");
        for (size_t i = 0; i < w.parts.size(); ++i) {
            const GpuTensor* w2i = w2 ? &w2->parts[i] : nullptr;
            if (w2i && w2i->mat_first != w.parts[i].mat_first)
                throw EngineError("Vulkan: SwiGLU gate/up stacks are split differently");
            MatmulPush q = p;
            q.mat_first = uint32_t(w.parts[i].mat_first);
            q.mat_count = uint32_t(w.parts[i].n_mat);
            dispatch_matmul(ctx, w.parts[i], w2i, q, groups, one_token, il_variant);
        }
        return;
    }
    p.w = w.addr;
    p.w2 = w2 ? w2->addr : 0;
    p.mat_stride = w.mat_stride;
    p.d_off = w.d_off;
    p.rows = uint32_t(w.rows);
    p.cols = uint32_t(w.cols);
    p.rows_per_group = ctx.lane_rows() ? std::max<uint32_t>(32, (rows_per_group(w.rows) + 31) & ~31u)
                                       : rows_per_group(w.rows);
    const uint32_t gx = uint32_t((w.rows + p.rows_per_group - 1) / p.rows_per_group);
    if (ctx.texel() && ctx.lane_rows()) {
        // Texel path (shaders/matmul_tx.comp): pointers become byte offsets into the buffers'
        // texel views; x rows and norm must be 16-byte aligned, else the device-address path runs.
        VkBufferView v[4];
        uint64_t o[4] = {0, 0, 0, 0};
        const bool norm = (p.flags & MM_NORM_X) != 0;
        bool ok = ctx.find_view(p.w, &v[0], &o[0]) && (!w2 || ctx.find_view(p.w2, &v[1], &o[1])) &&
                  ctx.find_view(p.x, &v[2], &o[2]) && (!norm || ctx.find_view(p.norm, &v[3], &o[3]));
        ok = ok && o[2] % 16 == 0 && o[3] % 16 == 0 && p.x_stride % 4 == 0 && p.x_mat_off % 4 == 0;
        for (uint64_t off : o)
            ok = ok && off < (1ull << 31);
        ok = ok && o[0] + w.n_mat * w.mat_stride < (1ull << 31);
        if (w.il && (!ok || (w2 && !w2->il)))
            throw EngineError("Vulkan: interleaved weights need 16-byte aligned activations");
        if (ok) {
            if (!w2)
                v[1] = v[0];
            if (!norm)
                v[3] = v[0];
            p.w = o[0];
            p.w2 = o[1];
            p.x = o[2];
            p.norm = o[3];
            std::string name;
            if (w.il) {
                // Row-interleaved weights (shaders/matmul_il.comp): 16 rows per subgroup pass; about
                // 32 workgroups keep both threads of a CPU device busy without per-workgroup overhead.
                p.rows_per_group = uint32_t(std::max<uint64_t>(32, (w.rows / il_groups() + 31) & ~uint64_t(31)));
                name = il_variant ? std::string(w2 ? "swiglu_" : "matmul_") + il_variant + "_" + type_suffix(w.type)
                                  : std::string(w2 ? "swiglu_il" : "matmul_il") + (one_token ? "1_" : "_") +
                                        type_suffix(w.type);
            } else {
                // Long rows: lanes split a row (contiguous reads), ~16 workgroups; short rows: a row
                // per invocation (tools/vk_matvec_bench figures in BENCHMARKS.md).
                const uint64_t row_bytes = GpuWeights::packed_mat_bytes(w.type, 1, w.cols);
                const bool split = row_bytes >= split_row_bytes();
                if (split)
                    p.rows_per_group = uint32_t(std::max<uint64_t>(32, ((w.rows + 15) / 16 + 7) & ~uint64_t(7)));
                name = std::string(w2 ? "swiglu_tx" : "matmul_tx") + (split ? "s" : "") + (one_token ? "1_" : "_") +
                       type_suffix(w.type);
            }
            const uint32_t gxs = uint32_t((w.rows + p.rows_per_group - 1) / p.rows_per_group);
            if (w.il && !p.ctr) // a caller's own counter stays (tests)
                p.ctr = ctx.cell_counter();
            if (ctx.profile_shapes())
                ctx.set_profile_tag(std::to_string(w.rows) + "x" + std::to_string(w.cols) + "x" + std::to_string(groups));
            ctx.dispatch_views(name, &p, sizeof p, v, gxs, groups);
            return;
        }
    }
    if (w.il)
        throw EngineError("Vulkan: interleaved weights need the texel matmul path");
    const std::string name =
        std::string(w2 ? "swiglu_" : "matmul_") + (ctx.lane_rows() ? "lr_" : "") + type_suffix(w.type);
    ctx.dispatch(name, &p, sizeof p, gx, groups);
}

std::vector<std::string> matmul_pipelines(const Context& ctx, GgmlType type) {
    std::vector<std::string> names;
    const std::string t = type_suffix(type);
    for (const char* k : {"matmul_", "swiglu_"}) {
        names.push_back(k + std::string(ctx.lane_rows() ? "lr_" : "") + t);
        if (ctx.texel() && ctx.lane_rows())
            for (const char* v : {"tx_", "txs_", "tx1_", "txs1_"})
                names.push_back(std::string(k).substr(0, 6) + "_" + v + t);
        if (ctx.interleave() && GpuWeights::interleavable(type))
            for (const char* v : {"il_", "il1_"})
                names.push_back(std::string(k).substr(0, 6) + "_" + v + t);
    }
    return names;
}

std::set<GgmlType> VulkanBackend::weight_types() const {
    std::set<GgmlType> types{w_->output().type};
    for (const GpuLayer& l : w_->layers())
        for (const GpuTensor* t : {&l.wq, &l.wq_a, &l.wq_b, &l.wkv_a, &l.wk_b, &l.wv_b, &l.wo, &l.ffn_gate,
                                   &l.ffn_up, &l.ffn_down, &l.gate_inp, &l.gate_exps, &l.up_exps, &l.down_exps,
                                   &l.gate_shexp, &l.up_shexp, &l.down_shexp})
            if (*t)
                types.insert(t->type);
    types.insert(GgmlType::F32); // norms and other f32 operands
    return types;
}

void VulkanBackend::warm_up() {
    for (GgmlType t : weight_types())
        for (const std::string& n : matmul_pipelines(*ctx_, t))
            ctx_->precompile(n);
    for (const std::string& s : {kv_pipeline("kv_store"), std::string("moe_combine"), std::string("moe_route"),
                                 std::string("moe_group")})
        ctx_->precompile(s);
    const std::vector<std::string> attn =
        attn_tiled_ ? std::vector<std::string>{"attn_qprep", kv_pipeline("attn_score"), kv_pipeline("attn_pv")}
                    : std::vector<std::string>{kv_pipeline("attn_mla")};
    for (const std::string& s : attn)
        ctx_->precompile(s);
    self_check();
}

void VulkanBackend::plan_attention(uint32_t R, uint32_t max_keys) {
    attn_keys_ = max_keys;
    attn_kc_ = max_keys;
    attn_passes_ = 1;
    if (!attn_tiled_)
        return;
    const uint64_t per_key = uint64_t(R) * cfg_.n_head * 4, budget = uint64_t(64) << 20;
    if (per_key * max_keys > budget)
        attn_kc_ = uint32_t(std::max<uint64_t>(64, budget / per_key)) & ~7u;
    // SCORE runs one workgroup per 16 keys of a pass along z
    attn_kc_ = uint32_t(std::min<uint64_t>(attn_kc_, uint64_t(ctx_->limits().max_groups_z) * 16));
    attn_passes_ = (max_keys + attn_kc_ - 1) / attn_kc_;
}

// QPREP once, then per pass of kc keys SCORE (16 heads x 16 keys per workgroup) and PV (8 heads x
// 64 channels); keys = the step's largest row position + 1.
void dispatch_attention_tiled(Context& ctx, const AttnPush& ap, uint64_t qr, uint64_t scores, uint64_t state,
                              uint32_t kc, uint32_t keys, bool kv_f16) {
    AttnTiledPush tp{};
    tp.qlat = ap.qlat;
    tp.q = ap.q;
    tp.rows = ap.rows;
    tp.freqs = ap.freqs;
    tp.dst = ap.dst;
    tp.qr = qr;
    tp.s = scores;
    tp.state = state;
    tp.layer_off = ap.layer_off;
    tp.n_rows = ap.n_rows;
    tp.n_head = ap.n_head;
    tp.rank = ap.rank;
    tp.rope = ap.rope;
    tp.q_stride = ap.q_stride;
    tp.q_head = ap.q_head;
    tp.q_nope = ap.q_nope;
    tp.pos_stride = ap.pos_stride;
    tp.kc = kc;
    tp.scale = ap.scale;
    tp.mscale = ap.mscale;
    const uint32_t R = ap.n_rows, nh = ap.n_head, passes = (keys + kc - 1) / kc;
    ctx.dispatch("attn_qprep", &tp, sizeof tp, R, nh);
    ctx.barrier();
    for (uint32_t pass = 0; pass < passes; ++pass) {
        tp.j0 = pass * kc;
        tp.flags = (pass == 0 ? ATTN_FIRST : 0u) | (pass + 1 == passes ? ATTN_LAST : 0u);
        ctx.dispatch(kv_f16 ? "attn_score_f16" : "attn_score", &tp, sizeof tp, R, (nh + 15) / 16, (std::min(kc, keys - tp.j0) + 15) / 16);
        ctx.barrier();
        ctx.dispatch(kv_f16 ? "attn_pv_f16" : "attn_pv", &tp, sizeof tp, R, (nh + 7) / 8, (ap.rank + 63) / 64);
        ctx.barrier();
    }
}

void VulkanBackend::matmul(const GpuTensor& w, const GpuTensor* w2, uint64_t x, uint64_t y, uint32_t n_tok,
                           uint32_t x_stride, uint32_t y_stride, uint32_t flags, uint64_t norm, uint64_t map,
                           uint32_t groups, uint32_t x_mat_off, uint32_t y_mat_off) {
    MatmulPush p{};
    p.x = x;
    p.y = y;
    p.map = map;
    p.norm = norm;
    p.n_tok = n_tok;
    p.x_stride = x_stride;
    p.y_stride = y_stride;
    p.x_mat_off = x_mat_off;
    p.y_mat_off = y_mat_off;
    p.flags = flags;
    p.eps = cfg_.rms_eps;
    dispatch_matmul(*ctx_, w, w2, p, groups, one_token_);
}

KvStorePush VulkanBackend::kv_push(uint32_t il, uint32_t n_layers, uint32_t R) const {
    const uint32_t W = cfg_.kv_cache_width();
    KvStorePush kp{};
    kp.layer_off = uint64_t(il) * W * kv_elem(); // cache rows are position-major: [pos][layer][W]
    kp.pos_stride = n_layers * W;
    kp.n_rows = R;
    kp.rank = cfg_.kv_lora_rank;
    kp.rope = cfg_.qk_rope;
    kp.kva_stride = W;
    kp.eps = cfg_.rms_eps;
    kp.mscale = 1.0f;
    return kp;
}

AttnPush VulkanBackend::attn_push(const KvStorePush& kp) const {
    AttnPush ap{};
    ap.layer_off = kp.layer_off;
    ap.pos_stride = kp.pos_stride;
    ap.n_rows = kp.n_rows;
    ap.n_head = cfg_.n_head;
    ap.rank = kp.rank;
    ap.rope = kp.rope;
    ap.q_stride = cfg_.n_head * cfg_.qk_head();
    ap.q_head = cfg_.qk_head();
    ap.q_nope = cfg_.qk_nope;
    ap.scale = cfg_.attn_scale();
    ap.mscale = 1.0f;
    return ap;
}

void VulkanBackend::attention(uint32_t il, uint32_t R, const Scratch& s) {
    const GpuLayer& L = w_->layers()[il];
    const uint32_t H = cfg_.hidden, rank = cfg_.kv_lora_rank, rope = cfg_.qk_rope, nh = cfg_.n_head;
    const uint32_t qh = cfg_.qk_head(), W = rank + rope;
    const uint64_t b = base_;
    // q (or q_a) and kv_a from the attn_norm'ed x
    if (L.wq_a) {
        matmul(L.wq_a, nullptr, b + s.x, b + s.qa, R, H, cfg_.q_lora_rank, MM_NORM_X, L.attn_norm.addr);
    } else {
        matmul(L.wq, nullptr, b + s.x, b + s.q, R, H, nh * qh, MM_NORM_X, L.attn_norm.addr);
    }
    matmul(L.wkv_a, nullptr, b + s.x, b + s.kva, R, H, W, MM_NORM_X, L.attn_norm.addr);
    ctx_->barrier();
    if (L.wq_a) {
        matmul(L.wq_b, nullptr, b + s.qa, b + s.q, R, cfg_.q_lora_rank, nh * qh, MM_NORM_X, L.q_a_norm.addr);
    }
    KvStorePush kp = kv_push(il, cfg_.n_layer, R);
    kp.kva = b + s.kva;
    kp.norm = L.kv_a_norm.addr;
    kp.rows = b + s.rows;
    kp.freqs = b + s.freqs;
    ctx_->dispatch(kv_pipeline("kv_store"), &kp, sizeof kp, R);
    if (L.wq_a)
        ctx_->barrier();
    // q_lat_h = W_kb_h q_nope_h for every head (matrix h of the stack)
    matmul(L.wk_b, nullptr, b + s.q, b + s.qlat, R, nh * qh, nh * rank, 0, 0, 0, nh, qh, rank);
    ctx_->barrier();
    AttnPush ap = attn_push(kp);
    ap.qlat = b + s.qlat;
    ap.q = b + s.q;
    ap.rows = b + s.rows;
    ap.freqs = b + s.freqs;
    ap.dst = b + s.lat;
    if (attn_tiled_) {
        dispatch_attention_tiled(*ctx_, ap, b + s.qr, b + s.scores, b + s.state, attn_kc_, attn_keys_, opts_.kv_f16);
    } else {
        ctx_->dispatch(kv_pipeline("attn_mla"), &ap, sizeof ap, R, nh);
        ctx_->barrier();
    }
    // v_h = W_vb_h latent_h, then x += W_o v
    matmul(L.wv_b, nullptr, b + s.lat, b + s.v, R, nh * rank, nh * cfg_.v_head, 0, 0, 0, nh, rank,
           cfg_.v_head);
    ctx_->barrier();
    matmul(L.wo, nullptr, b + s.v, b + s.x, R, nh * cfg_.v_head, H, MM_ACCUM);
    ctx_->barrier();
}

bool VulkanBackend::route_on_device(uint32_t R) const {
    static const bool enabled = [] {
        const char* e = std::getenv("PREFIXD_VK_DEVICE_ROUTE");
        return !(e && *e == '0');
    }();
    return enabled && (R == 1 || device_group_) && cfg_.n_expert > 0 && cfg_.n_expert <= 512 &&
           cfg_.n_expert_used <= cfg_.n_expert;
}

void VulkanBackend::ffn(uint32_t il, uint32_t R, const Scratch& s) {
    const GpuLayer& L = w_->layers()[il];
    const uint32_t H = cfg_.hidden;
    const uint64_t b = base_;
    if (!cfg_.is_moe_layer(il)) {
        matmul(L.ffn_gate, &L.ffn_up, b + s.x, b + s.hs, R, H, cfg_.n_ff, MM_NORM_X, L.ffn_norm.addr);
        ctx_->barrier();
        matmul(L.ffn_down, nullptr, b + s.hs, b + s.x, R, cfg_.n_ff, H, MM_ACCUM);
        ctx_->barrier();
        return;
    }
    const uint32_t E = cfg_.n_expert, K = cfg_.n_expert_used, F = cfg_.n_ff_exp;
    matmul(L.gate_inp, nullptr, b + s.x, b + s.rlog, R, H, E, MM_NORM_X, L.ffn_norm.addr);
    // Maps per expert group: A (x row t -> slot row) for gate/up, B (slot row -> slot row) for
    // down (push.h MM_MAP). Experts with a single routed row get their own pair of maps and the
    // one-token shaders (a batch of decode steps spreads its rows over many experts, most of
    // them hit once).
    struct Maps {
        uint32_t groups = 0;
        uint64_t a = 0, b = 0; // device addresses of map A and map B
    };
    Maps single, multi;
    const uint32_t FS = F * cfg_.n_expert_shared;
    bool shexp_up = false;
    if (route_on_device(R)) {
        // The router runs on the device (shaders/moe_route.comp, each chosen expert of each row its
        // own group), so the layer needs no host round trip. One row (a decode step): those groups
        // feed the one-token kernels. Several rows (device_group_): moe_group.comp regroups the
        // slots by expert, so each expert's weights are read once for all its rows, as the host's
        // maps do; experts no row chose are empty groups.
        ctx_->barrier(); // moe_route reads the router logits
        const uint32_t G = R * K;
        RoutePush rp{};
        rp.logits = b + s.rlog;
        rp.bias = L.exp_probs_b ? L.exp_probs_b.addr : 0;
        rp.wts = b + s.wts;
        rp.map_a = b + s.map;
        rp.map_b = rp.map_a + uint64_t(5 * G) * 4;
        rp.n_expert = E;
        rp.k = K;
        rp.n_group = cfg_.n_group;
        rp.n_group_used = cfg_.n_group_used;
        rp.n_groups = G;
        rp.flags = (cfg_.gating == GatingFunc::Sigmoid ? ROUTE_SIGMOID : 0u) |
                   (cfg_.expert_weights_norm ? ROUTE_NORM : 0u);
        rp.scale = cfg_.routed_scale;
        ctx_->dispatch("moe_route", &rp, sizeof rp, R);
        if (L.gate_shexp) // independent of the routing: runs beside it
            matmul(L.gate_shexp, &L.up_shexp, b + s.x, b + s.hs, R, H, FS, MM_NORM_X, L.ffn_norm.addr);
        shexp_up = true;
        ctx_->barrier();
        if (R == 1) {
            single = {G, rp.map_a, rp.map_b};
        } else {
            GroupPush gp{};
            gp.src = rp.map_a;
            gp.map_a = rp.map_a + uint64_t(10 * G) * 4;
            gp.map_b = gp.map_a + uint64_t(3 * E + 2 * G) * 4;
            gp.n_expert = E;
            gp.k = K;
            gp.n_slots = G;
            ctx_->dispatch("moe_group", &gp, sizeof gp, 1);
            ctx_->barrier();
            multi = {E, gp.map_a, gp.map_b};
        }
    } else {
        ctx_->submit_wait();
        // Route on the host, exactly as the reference does.
        auto* host = static_cast<uint8_t*>(scratch_.map());
        const float* rlog = reinterpret_cast<const float*>(host + s.rlog);
        const Tensor& bias_t = model_.weights().layers[il].exp_probs_b;
        const float* bias = bias_t ? reinterpret_cast<const float*>(bias_t.data) : nullptr;
        std::vector<std::vector<uint32_t>> per_expert(E); // slots t*K+k routed to e
        float* wts = reinterpret_cast<float*>(host + s.wts);
        for (uint32_t t = 0; t < R; ++t) {
            cpu::Route r = cpu::route(rlog + uint64_t(t) * E, bias, cfg_);
            for (uint32_t k = 0; k < K; ++k) {
                per_expert[uint32_t(r.ids[k])].push_back(t * K + k);
                wts[t * K + k] = r.weights[k];
            }
        }
        uint32_t* words = reinterpret_cast<uint32_t*>(host + s.map);
        uint32_t used = 0; // words of the map region taken so far
        auto build = [&](bool singles) {
            Maps m;
            uint32_t rows = 0;
            for (uint32_t e = 0; e < E; ++e)
                if (!per_expert[e].empty() && (per_expert[e].size() == 1) == singles) {
                    ++m.groups;
                    rows += uint32_t(per_expert[e].size());
                }
            if (m.groups == 0)
                return m;
            uint32_t* mapA = words + used;
            uint32_t* mapB = mapA + 3 * m.groups + 2 * rows;
            m.a = b + s.map + uint64_t(used) * 4;
            m.b = m.a + uint64_t(3 * m.groups + 2 * rows) * 4;
            used += 2 * (3 * m.groups + 2 * rows);
            uint32_t g = 0, off = 3 * m.groups;
            for (uint32_t e = 0; e < E; ++e) {
                if (per_expert[e].empty() || (per_expert[e].size() == 1) != singles)
                    continue;
                const uint32_t n = uint32_t(per_expert[e].size());
                mapA[3 * g] = mapB[3 * g] = e;
                mapA[3 * g + 1] = mapB[3 * g + 1] = n;
                mapA[3 * g + 2] = mapB[3 * g + 2] = off;
                for (uint32_t i = 0; i < n; ++i) {
                    const uint32_t slot = per_expert[e][i];
                    mapA[off + 2 * i] = slot / K;
                    mapA[off + 2 * i + 1] = slot;
                    mapB[off + 2 * i] = slot;
                    mapB[off + 2 * i + 1] = slot;
                }
                off += 2 * n;
                ++g;
            }
            return m;
        };
        single = build(true);
        multi = build(false);
    }
    const bool one_token = one_token_;
    auto experts = [&](const Maps& m, bool up) {
        if (m.groups == 0)
            return;
        one_token_ = one_token || &m == &single;
        if (up)
            matmul(L.gate_exps, &L.up_exps, b + s.x, b + s.h, 0, H, F, MM_NORM_X | MM_MAP, L.ffn_norm.addr, m.a,
                   m.groups);
        else
            matmul(L.down_exps, nullptr, b + s.h, b + s.slots, 0, F, H, MM_MAP, 0, m.b, m.groups);
        one_token_ = one_token;
    };
    if (L.gate_shexp && !shexp_up)
        matmul(L.gate_shexp, &L.up_shexp, b + s.x, b + s.hs, R, H, FS, MM_NORM_X, L.ffn_norm.addr);
    experts(single, true);
    experts(multi, true);
    ctx_->barrier();
    if (L.down_shexp)
        matmul(L.down_shexp, nullptr, b + s.hs, b + s.x, R, FS, H, MM_ACCUM);
    experts(single, false);
    experts(multi, false);
    ctx_->barrier();
    CombinePush cp{};
    cp.x = b + s.x;
    cp.slots = b + s.slots;
    cp.wts = b + s.wts;
    cp.n_rows = R;
    cp.hidden = H;
    cp.k = K;
    ctx_->dispatch("moe_combine", &cp, sizeof cp, R);
    ctx_->barrier();
}

} // namespace prefixd::vk
