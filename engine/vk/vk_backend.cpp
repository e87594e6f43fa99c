// Vulkan backend entry points (device listing, factory) and VulkanBackend's sequence
// management and step driver; the per-layer recipe is in vk_forward.cpp, device plumbing in
// vk_context.cpp, weight upload in vk_weights.cpp.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers" // Vk*Info{sType} idiom
#include "vk_backend.h"

#include "../cpu/ops.h"
#include "vk_forward.h"

#include <vulkan/vulkan.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <set>
#include <utility>

#include <time.h>

namespace prefixd::vk {

// Latent-cache positions a new sequence starts with; reserve() doubles from there on demand.
constexpr uint32_t kKvInitialPositions = 64;
// Steps of at least this many rows are submitted one layer per part on CPU drivers (progress).
constexpr uint32_t kProgressPartRows = 32;

static const char* type_str(VkPhysicalDeviceType t) {
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
        return "discrete";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
        return "integrated";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
        return "virtual";
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
        return "cpu";
    default:
        return "other";
    }
}

std::vector<DeviceInfo> list_devices() {
    VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
    app.pApplicationName = "prefixd";
    app.apiVersion = VK_API_VERSION_1_2;
    VkInstanceCreateInfo ici{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
    ici.pApplicationInfo = &app;
    VkInstance inst = VK_NULL_HANDLE;
    VkResult r = vkCreateInstance(&ici, nullptr, &inst);
    if (r != VK_SUCCESS)
        throw EngineError("Vulkan: vkCreateInstance failed (" + std::to_string(r) + ")");
    uint32_t n = 0;
    vkEnumeratePhysicalDevices(inst, &n, nullptr);
    std::vector<VkPhysicalDevice> pds(n);
    vkEnumeratePhysicalDevices(inst, &n, pds.data());
    std::vector<DeviceInfo> out;
    for (uint32_t i = 0; i < n; ++i) {
        VkPhysicalDeviceProperties p;
        vkGetPhysicalDeviceProperties(pds[i], &p);
        VkPhysicalDeviceMemoryProperties mp;
        vkGetPhysicalDeviceMemoryProperties(pds[i], &mp);
        DeviceInfo d;
        d.index = i;
        d.name = p.deviceName;
        d.type = type_str(p.deviceType);
        for (uint32_t h = 0; h < mp.memoryHeapCount; ++h)
            if (mp.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
                d.device_local_bytes += mp.memoryHeaps[h].size;
        out.push_back(d);
    }
    vkDestroyInstance(inst, nullptr);
    return out;
}

std::unique_ptr<Backend> make_vulkan_backend(const Model& model, const EngineOptions& opts) {
    return std::make_unique<VulkanBackend>(model, opts);
}

VulkanBackend::VulkanBackend(const Model& model, const EngineOptions& opts)
    : model_(model), cfg_(model.config()), opts_(opts) {
    if (cfg_.kv_lora_rank > 1024 || cfg_.kv_lora_rank % 4 != 0 || cfg_.qk_rope > 256 || cfg_.qk_rope % 2 != 0)
        throw EngineError(
            "Vulkan backend: kv_lora_rank must be a multiple of 4 and <= 1024, qk_rope even and <= 256");
    if (cfg_.n_expert > 0 && cfg_.n_expert_used == 0)
        throw EngineError("Vulkan backend: expert_used_count is 0");
    max_ctx_ = opts.max_ctx;
    if (cfg_.n_ctx_train > 0)
        max_ctx_ = std::min(max_ctx_, cfg_.n_ctx_train);
    if (max_ctx_ == 0)
        throw EngineError("Vulkan backend: max_ctx is 0");
    ctx_ = std::make_unique<Context>(opts.device);
    ctx_->set_budget(opts.max_device_memory);
    if (opts.max_seqs >= (1u << 16))
        throw EngineError("max_seqs must be below 65536");
    // A sequence's latent cache is one allocation: a context it could never hold is refused here,
    // not when a long request reaches it after producing tokens
    const uint64_t max_positions = ctx_->limits().max_alloc / kv_row_bytes();
    if (max_ctx_ > max_positions)
        throw EngineError("a context of " + std::to_string(max_ctx_) +
                          " positions needs a latent KV cache of " +
                          std::to_string(uint64_t(max_ctx_) * kv_row_bytes()) +
                          " bytes per sequence; this device allows one allocation of " +
                          std::to_string(ctx_->limits().max_alloc) + " bytes: at most " +
                          std::to_string(max_positions) + " positions (a float16 cache holds twice as many)");
    {
        const char* a = std::getenv("PREFIXD_VK_ATTN");
        attn_tiled_ = a && *a ? std::string(a) == "tiled" : ctx_->lane_rows();
        // vec4 loads of cache rows, 8-channel value slices per lane, broadcasts within 8 lanes
        attn_tiled_ = attn_tiled_ && cfg_.qk_rope % 4 == 0 && cfg_.kv_lora_rank % 8 == 0 &&
                      ctx_->limits().subgroup_size >= 8;
    }
    {
        // Steps of several rows route and group their MoE slots on the device on GPUs, where a
        // host round trip per MoE layer costs more than the step's expert matmuls; CPU drivers keep
        // the host's grouping (experts hit once run the one-token kernels there).
        const char* g = std::getenv("PREFIXD_VK_DEVICE_GROUP");
        device_group_ = g && *g ? *g == '1' : !ctx_->lane_rows();
    }
    if (opts.verbose)
        std::fprintf(stderr, "vulkan: device %s\n", ctx_->device_name().c_str());
    w_ = std::make_unique<GpuWeights>(*ctx_, model, opts.verbose);
    seqs_.resize(std::max<uint32_t>(opts.max_seqs, 1));
}

VulkanBackend::~VulkanBackend() {
    ctx_->discard();
    seqs_.clear();
    scratch_ = Buffer();
    w_.reset();
}

// A sequence id is its slot in the low 16 bits and the slot's generation above: an id kept after
// its free_sequence names no sequence, even once the slot is reused (as on the CPU backend).
static constexpr uint32_t kSlotBits = 16;

// The live sequence an id names, or nullptr (unknown slot, free slot, or an older generation)
const VulkanBackend::Seq* VulkanBackend::find_seq(SeqId id) const {
    const uint32_t slot = id & ((1u << kSlotBits) - 1);
    if (slot >= seqs_.size() || !seqs_[slot].used || seqs_[slot].gen != id >> kSlotBits)
        return nullptr;
    return &seqs_[slot];
}
VulkanBackend::Seq& VulkanBackend::seq(SeqId id) {
    return const_cast<Seq&>(std::as_const(*this).seq(id));
}
const VulkanBackend::Seq& VulkanBackend::seq(SeqId id) const {
    const Seq* s = find_seq(id);
    if (!s)
        throw EngineError("unknown sequence " + std::to_string(id));
    return *s;
}

SeqId VulkanBackend::create_sequence() {
    for (SeqId i = 0; i < seqs_.size(); ++i) {
        Seq& s = seqs_[i];
        if (s.used)
            continue;
        s.cap = std::min(max_ctx_, kKvInitialPositions);
        s.cache = ctx_->create_buffer(s.cap * kv_row_bytes(), false);
        s.used = true;
        s.len = 0;
        s.gen = (s.gen + 1) & ((1u << (32 - kSlotBits)) - 1);
        return i | (s.gen << kSlotBits);
    }
    throw EngineError("all " + std::to_string(seqs_.size()) + " sequence slots are in use");
}

uint64_t VulkanBackend::kv_row_bytes() const {
    return uint64_t(cfg_.n_layer) * cfg_.kv_cache_width() * kv_elem();
}

// Grows a sequence's latent cache to hold `positions` rows: capacity doubles (rounded to 64, capped
// at max_ctx) and the rows written so far move with one copy, so memory follows the tokens a
// sequence really holds instead of max_ctx.
void VulkanBackend::reserve(Seq& s, uint32_t positions) {
    if (positions <= s.cap)
        return;
    if (positions > max_ctx_)
        throw EngineError("sequence would exceed the context limit of " + std::to_string(max_ctx_));
    uint32_t cap = std::max(positions, std::min(max_ctx_, s.cap * 2));
    cap = std::min(max_ctx_, (cap + 63) & ~63u);
    Buffer grown = ctx_->create_buffer(uint64_t(cap) * kv_row_bytes(), false);
    if (s.len > 0) {
        ctx_->copy(s.cache, 0, grown, 0, uint64_t(s.len) * kv_row_bytes());
        ctx_->submit_wait();
    }
    s.cache = std::move(grown);
    s.cap = cap;
}

void VulkanBackend::free_sequence(SeqId id) noexcept {
    const Seq* found = find_seq(id);
    if (!found)
        return;
    Seq& s = const_cast<Seq&>(*found);
    s.cache = Buffer();
    s.cap = 0;
    s.used = false;
    s.len = 0;
}

uint32_t VulkanBackend::sequence_length(SeqId id) const {
    return seq(id).len;
}

void VulkanBackend::copy_prefix(SeqId src, SeqId dst, uint32_t n) {
    Seq& s = seq(src);
    Seq& d = seq(dst);
    if (d.len != 0)
        throw EngineError("copy_prefix: destination sequence is not empty");
    if (n > s.len)
        throw EngineError("copy_prefix: source holds only " + std::to_string(s.len) + " rows");
    reserve(d, n);
    if (n > 0) {
        ctx_->copy(s.cache, 0, d.cache, 0, uint64_t(n) * kv_row_bytes());
        ctx_->submit_wait();
    }
    d.len = n;
}

void VulkanBackend::truncate(SeqId id, uint32_t n) {
    Seq& s = seq(id);
    if (n > s.len)
        throw EngineError("truncate: sequence holds fewer rows than asked");
    s.len = n;
}

// Words of the expert maps at the start of the map region: the host's two maps (3 header words per
// expert group, 2 per routed slot, at most n_expert groups), or the device's per-slot maps of
// moe_route (5 words per slot, twice) followed by moe_group's two expert-ordered maps.
uint64_t VulkanBackend::expert_map_words(uint32_t R) const {
    const uint64_t E = cfg_.n_expert, G = E > 0 ? uint64_t(R) * cfg_.n_expert_used : 0;
    return 2 * (3 * E + 2 * G) + 10 * G;
}

VulkanBackend::Scratch VulkanBackend::layout(uint32_t R, uint32_t L) const {
    const uint64_t K = cfg_.n_expert > 0 ? cfg_.n_expert_used : 0, nh = cfg_.n_head;
    Scratch s{};
    uint64_t off = 0;
    auto take = [&](uint64_t& field, uint64_t floats) {
        field = off;
        off += (floats * 4 + 255) & ~uint64_t(255);
    };
    take(s.x, uint64_t(R) * cfg_.hidden);
    take(s.qa, uint64_t(R) * cfg_.q_lora_rank);
    take(s.q, uint64_t(R) * nh * cfg_.qk_head());
    take(s.kva, uint64_t(R) * cfg_.kv_cache_width());
    take(s.qlat, uint64_t(R) * nh * cfg_.kv_lora_rank);
    take(s.lat, uint64_t(R) * nh * cfg_.kv_lora_rank);
    take(s.v, uint64_t(R) * nh * cfg_.v_head);
    take(s.rlog, uint64_t(R) * cfg_.n_expert);
    take(s.hs, uint64_t(R) * std::max<uint64_t>(cfg_.n_ff, uint64_t(cfg_.n_ff_exp) * cfg_.n_expert_shared));
    take(s.h, uint64_t(R) * K * cfg_.n_ff_exp);
    take(s.slots, uint64_t(R) * K * cfg_.hidden);
    take(s.wts, uint64_t(R) * K);
    take(s.map, expert_map_words(R) + 3 + 2 * uint64_t(L));
    take(s.rows, uint64_t(R) * 4);
    take(s.freqs, cfg_.qk_rope / 2);
    take(s.logits, uint64_t(L) * cfg_.n_vocab);
    if (attn_tiled_) {
        take(s.qr, uint64_t(R) * nh * cfg_.kv_cache_width());
        take(s.scores, uint64_t(R) * nh * attn_kc_);
        take(s.state, attn_passes_ > 1 ? uint64_t(R) * nh * ((cfg_.kv_lora_rank + 63) / 64) * 68 : 0);
    }
    s.total = off;
    return s;
}

// RoPE frequencies per pair exactly as cpu::rope forms them: theta_i = pos * f_i.
std::vector<float> rope_freqs(const ModelConfig& cfg) {
    const uint32_t n_dims = cfg.qk_rope;
    const float freq_scale = 1.0f / cfg.rope_factor;
    const bool yarn = cfg.rope_factor != 1.0f;
    float corr0 = 0, corr1 = 0;
    if (yarn) {
        const uint32_t orig = cfg.rope_orig_ctx ? cfg.rope_orig_ctx : cfg.n_ctx_train;
        auto corr = [&](float n_rot) {
            return float(n_dims) * std::log(float(orig) / (n_rot * 2.0f * float(M_PI))) /
                   (2.0f * std::log(cfg.rope_base));
        };
        corr0 = std::max(0.0f, std::floor(corr(cfg.yarn_beta_fast)));
        corr1 = std::min(float(n_dims - 1), std::ceil(corr(cfg.yarn_beta_slow)));
    }
    const float theta_scale = std::pow(cfg.rope_base, -2.0f / float(n_dims));
    std::vector<float> f(n_dims / 2);
    float te = 1.0f;
    for (uint32_t i = 0; i < n_dims / 2; ++i) {
        float th = freq_scale * te;
        if (yarn) {
            float y = (float(i) - corr0) / std::max(0.001f, corr1 - corr0);
            float ramp_mix = 1.0f - std::min(1.0f, std::max(0.0f, y));
            th = th * (1.0f - ramp_mix) + te * ramp_mix;
        }
        f[i] = th;
        te *= theta_scale;
    }
    return f;
}

static uint32_t item_rows(const BatchItem& it) {
    uint64_t n = 0;
    for (const Segment& s : it.inputs)
        n += s.size();
    if (n > UINT32_MAX)
        throw EngineError("step: too many rows in one item");
    return uint32_t(n);
}

std::vector<ItemOutput> VulkanBackend::step(const std::vector<BatchItem>& batch) {
    // timed whether it returns or throws
    struct Timer {
        StepTime& t;
        const Context& ctx;
        const double wait0 = ctx.wait_seconds(), cpu0 = thread_cpu_seconds();
        const std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
        ~Timer() {
            t.total_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            t.device_wait_s += ctx.wait_seconds() - wait0;
            t.thread_cpu_s += thread_cpu_seconds() - cpu0;
            ++t.steps;
        }
        static double thread_cpu_seconds() {
            timespec ts{};
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
            return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
        }
    } timer{step_time_, *ctx_};
    struct Progress { // the step's waits report progress (set_progress), no other waits do
        Context& ctx;
        ~Progress() { ctx.set_progress(nullptr); }
    } progress{*ctx_};
    ctx_->set_progress(&progress_);
    return run_step(batch);
}

std::vector<ItemOutput> VulkanBackend::run_step(const std::vector<BatchItem>& batch) {
    const uint32_t H = cfg_.hidden;
    // Validate and count rows; the output rows of each item (logits or targets) are gathered.
    uint32_t R = 0, L = 0;
    std::vector<std::vector<uint32_t>> out_rows(batch.size());
    std::set<SeqId> seen;
    for (size_t i = 0; i < batch.size(); ++i) {
        const BatchItem& it = batch[i];
        const Seq& s = seq(it.seq);
        if (!seen.insert(it.seq).second)
            throw EngineError("step: sequence appears twice in one batch");
        const uint32_t n = item_rows(it);
        if (n == 0)
            throw EngineError("step: empty batch item");
        if (uint64_t(s.len) + n > max_ctx_)
            throw EngineError("step: sequence would exceed the context limit of " + std::to_string(max_ctx_));
        std::set<uint32_t> rows(it.logit_rows.begin(), it.logit_rows.end());
        for (auto& [r, tok] : it.targets) {
            rows.insert(r);
            if (tok < 0 || uint32_t(tok) >= cfg_.n_vocab)
                throw EngineError("step: target token out of range");
        }
        for (uint32_t r : rows)
            if (r >= n)
                throw EngineError("step: output row beyond the item's rows");
        out_rows[i].assign(rows.begin(), rows.end());
        if (n > max_step_rows() - R)
            throw EngineError("step: more than " + std::to_string(max_step_rows()) +
                              " rows in one step (this device's maxComputeWorkGroupCount); feed them in "
                              "smaller steps");
        R += n;
        L += uint32_t(rows.size());
    }
    if (R == 0)
        return {};
    for (const BatchItem& it : batch) {
        Seq& sq = seq(it.seq);
        reserve(sq, sq.len + item_rows(it));
    }
    static const bool tb1 = [] {
        const char* e = std::getenv("PREFIXD_VK_TB1");
        return !(e && *e == '0');
    }();
    one_token_ = tb1 && R == 1;
    uint32_t max_keys = 0;
    for (const BatchItem& it : batch)
        max_keys = std::max(max_keys, seq(it.seq).len + item_rows(it));
    plan_attention(R, max_keys);
    const Scratch s = layout(R, L);
    if (!scratch_ || scratch_.size() < s.total) {
        scratch_ = Buffer();
        scratch_ = ctx_->create_buffer(s.total + s.total / 4, true);
        base_ = scratch_.addr();
    }
    auto* host = static_cast<uint8_t*>(scratch_.map());
    if (!host)
        throw EngineError("Vulkan: scratch buffer is not host-visible");
    static const bool force_readback = [] {
        const char* e = std::getenv("PREFIXD_VK_READBACK");
        return e && *e == '1';
    }();
    const uint64_t logit_bytes = uint64_t(L) * cfg_.n_vocab * 4;
    const bool readback = L > 0 && (force_readback || !scratch_.host_cached());
    if (readback && readback_.size() < logit_bytes) {
        readback_ = Buffer();
        readback_ = ctx_->create_buffer(logit_bytes + logit_bytes / 4, MemUse::Readback);
    }
    // Inputs: embeddings (token_embd rows dequantised on the host, or given rows), row infos.
    float* x = reinterpret_cast<float*>(host + s.x);
    uint32_t* rows = reinterpret_cast<uint32_t*>(host + s.rows);
    uint32_t* gmap = reinterpret_cast<uint32_t*>(host + s.map) + expert_map_words(R);
    const Tensor& emb = model_.weights().token_embd;
    gmap[0] = 0;
    gmap[1] = L;
    gmap[2] = 3;
    uint32_t row = 0, lrow = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
        const BatchItem& it = batch[i];
        const Seq& sq = seq(it.seq);
        const uint32_t first = row;
        for (const Segment& seg : it.inputs) {
            if (seg.is_embeds() && seg.embeds.size() != uint64_t(seg.n_embed_rows) * H)
                throw EngineError("step: embeddings segment size is not rows x hidden");
            for (uint32_t r = 0; r < seg.size(); ++r, ++row) {
                float* dst = x + uint64_t(row) * H;
                if (seg.is_embeds()) {
                    std::memcpy(dst, seg.embeds.data() + uint64_t(r) * H, H * 4);
                } else {
                    const int32_t id = seg.tokens[r];
                    if (id < 0 || uint32_t(id) >= cfg_.n_vocab)
                        throw EngineError("step: token id out of range");
                    cpu::dequantize_row(emb.type, emb.data + uint64_t(id) * emb.row_bytes(), dst, H);
                }
                const uint64_t a = sq.cache.addr();
                rows[4 * row] = uint32_t(a);
                rows[4 * row + 1] = uint32_t(a >> 32);
                rows[4 * row + 2] = sq.len + (row - first);
                rows[4 * row + 3] = 0;
            }
        }
        for (uint32_t r : out_rows[i]) {
            gmap[3 + 2 * lrow] = first + r;
            gmap[3 + 2 * lrow + 1] = lrow;
            ++lrow;
        }
    }
    const auto freqs = rope_freqs(cfg_);
    std::memcpy(host + s.freqs, freqs.data(), freqs.size() * 4);
    try {
        uint32_t every = ctx_->submit_layers();
        // A CPU driver runs a prefill chunk for seconds to minutes: one layer per part there, so
        // the step reports progress (set_progress) as it goes. Decode steps stay one submit.
        if (every == 0 && ctx_->cpu_device() && R >= kProgressPartRows)
            every = 1;
        for (uint32_t il = 0; il < cfg_.n_layer; ++il) {
            attention(il, R, s);
            ffn(il, R, s);
            if (every && (il + 1) % every == 0 && il + 1 < cfg_.n_layer) // the device starts on these
                ctx_->submit();
        }
        if (L > 0) {
            const uint64_t gmap_addr = base_ + (reinterpret_cast<uint8_t*>(gmap) - host);
            matmul(w_->output(), nullptr, base_ + s.x, base_ + s.logits, 0, H, cfg_.n_vocab,
                   MM_NORM_X | MM_MAP, w_->output_norm().addr, gmap_addr, 1);
            if (readback) {
                ctx_->barrier();
                ctx_->copy(scratch_, s.logits, readback_, 0, logit_bytes);
            }
        }
        try {
            ctx_->submit_wait();
        } catch (const StepInterrupted&) {
            // reported as the step's last work finished: cutting it now would save nothing and
            // throw the results away (submit_wait reports and cleans up before it throws)
        }
    } catch (...) {
        ctx_->discard();
        throw;
    }
    // Outputs: logits rows and log-probabilities of the targets (log-softmax on the host).
    const float* logits = readback ? static_cast<const float*>(readback_.map())
                                   : reinterpret_cast<const float*>(host + s.logits);
    std::vector<ItemOutput> out(batch.size());
    lrow = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
        const BatchItem& it = batch[i];
        auto lrow_of = [&](uint32_t r) {
            return lrow + uint32_t(std::lower_bound(out_rows[i].begin(), out_rows[i].end(), r) -
                                   out_rows[i].begin());
        };
        out[i].logits.reserve(it.logit_rows.size() * uint64_t(cfg_.n_vocab)); // copied, not zeroed first
        for (uint32_t r : it.logit_rows) {
            const float* row = logits + uint64_t(lrow_of(r)) * cfg_.n_vocab;
            out[i].logits.insert(out[i].logits.end(), row, row + cfg_.n_vocab);
        }
        for (auto& [r, tok] : it.targets) {
            const float* lg = logits + uint64_t(lrow_of(r)) * cfg_.n_vocab;
            const float m = *std::max_element(lg, lg + cfg_.n_vocab);
            double sum = 0;
            for (uint32_t v = 0; v < cfg_.n_vocab; ++v)
                sum += std::exp(double(lg[v] - m));
            out[i].logprobs.push_back(float(double(lg[tok] - m) - std::log(sum)));
        }
        lrow += uint32_t(out_rows[i].size());
        seq(it.seq).len += item_rows(it);
    }
    return out;
}

} // namespace prefixd::vk
