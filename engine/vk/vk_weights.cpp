// Weight upload: repacking GGUF blocks for 16-byte loads in the matmul shaders and arena
// placement under the device's allocation limit.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers" // Vk*Info{sType} idiom
#include "vk_weights.h"

#include "../cpu/ops.h"
#include "vk_kquant.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

#include <sys/mman.h>

namespace prefixd::vk {

using gguf::GgmlType;

static uint64_t round16(uint64_t x) {
    return (x + 15) & ~uint64_t(15);
}

uint64_t GpuWeights::packed_mat_bytes(GgmlType type, uint64_t rows, uint64_t cols) {
    switch (type) {
    case GgmlType::F32:
        return round16(rows * cols * 4);
    case GgmlType::F16:
    case GgmlType::BF16:
        return round16(rows * cols * 2);
    case GgmlType::Q8_0:
        return round16(rows * cols + rows * (cols / 32) * 4);
    case GgmlType::Q4_0:
        return round16(rows * cols / 2 + rows * (cols / 32) * 4);
    case GgmlType::Q4_K: // K-quants and Q5_0: per-row layouts of vk_kquant.cpp
    case GgmlType::Q6_K:
    case GgmlType::Q5_0:
        return rows * kquant_row_bytes(type, cols);
    default:
        throw EngineError(std::string("Vulkan: unsupported weight type ") + gguf::type_name(type));
    }
}

void GpuWeights::repack(GgmlType type, const uint8_t* src, uint64_t rows, uint64_t cols, uint8_t* dst) {
    const uint64_t n = rows * cols;
    if (type == GgmlType::F32 || type == GgmlType::F16 || type == GgmlType::BF16) {
        std::memcpy(dst, src, n * (type == GgmlType::F32 ? 4 : 2));
        return;
    }
    if (is_kquant(type))
        return kquant_repack(type, src, rows, cols, dst);
    const uint64_t nb = n / 32;
    const bool q8 = type == GgmlType::Q8_0;
    const uint64_t bsz = q8 ? 34 : 18, qbytes = q8 ? 32 : 16;
    uint8_t* qs = dst;
    float* d = reinterpret_cast<float*>(dst + n / 32 * qbytes);
    for (uint64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = src + b * bsz;
        uint16_t h;
        std::memcpy(&h, blk, 2);
        d[b] = cpu::f16_to_f32(h);
        std::memcpy(qs + b * qbytes, blk + 2, qbytes);
    }
}

bool GpuWeights::interleavable(GgmlType type) {
    return type == GgmlType::F32 || type == GgmlType::F16 || type == GgmlType::BF16 || type == GgmlType::Q8_0 ||
           type == GgmlType::Q4_0 || is_kquant(type);
}

// Bytes of one repacked row before any scales: the quants of Q8_0/Q4_0 (their scales follow all
// rows), the whole row otherwise (K-quants: whole 16-byte units).
static uint64_t quant_row_bytes(GgmlType type, uint64_t cols) {
    return is_kquant(type)           ? kquant_row_bytes(type, cols)
           : type == GgmlType::F32  ? cols * 4
           : type == GgmlType::Q8_0 ? cols
           : type == GgmlType::Q4_0 ? cols / 2
                                    : cols * 2;
}

void GpuWeights::interleave_rows(GgmlType type, const uint8_t* src, uint64_t rows, uint64_t cols, uint8_t* dst) {
    const bool scaled = type == GgmlType::Q8_0 || type == GgmlType::Q4_0;
    const uint64_t row_bytes = quant_row_bytes(type, cols);
    const uint64_t units = row_bytes / 16, groups = rows / 8;
    for (uint64_t g = 0; g < groups; ++g)
        for (uint64_t u = 0; u < units; ++u)
            for (uint64_t l = 0; l < 8; ++l)
                std::memcpy(dst + ((g * units + u) * 8 + l) * 16, src + ((g * 8 + l) * units + u) * 16, 16);
    if (!scaled)
        return;
    // Block scales back to their GGUF f16 (exact), 8 blocks of a row per 16-byte texel: texel
    // (g * nb8 + b / 8) * 8 + l holds blocks b & ~7 .. +7 of row 8g + l (zero past the last block).
    const uint64_t nb = cols / 32, nb8 = (nb + 7) / 8, q = rows * row_bytes;
    const float* d = reinterpret_cast<const float*>(src + q);
    uint16_t* o = reinterpret_cast<uint16_t*>(dst + q);
    std::memset(o, 0, groups * nb8 * 128);
    for (uint64_t g = 0; g < groups; ++g)
        for (uint64_t b = 0; b < nb; ++b)
            for (uint64_t l = 0; l < 8; ++l)
                o[((g * nb8 + b / 8) * 8 + l) * 8 + b % 8] = cpu::f32_to_f16(d[(g * 8 + l) * nb + b]);
}

uint64_t GpuWeights::interleaved_mat_bytes(GgmlType type, uint64_t rows, uint64_t cols) {
    const uint64_t prow = (rows + 7) / 8 * 8;
    if (type != GgmlType::Q8_0 && type != GgmlType::Q4_0)
        return packed_mat_bytes(type, prow, cols);
    const uint64_t q = prow * (type == GgmlType::Q8_0 ? cols : cols / 2);
    return round16(q + prow / 8 * ((cols / 32 + 7) / 8) * 128);
}

// One allocation per chunk, as large as the device allows: a stacked expert tensor lies in one
// (V2's Q8_0 expert stacks are 1.34 GB). Texel views (CPU drivers) reach a chunk through 32-bit
// byte offsets below 2^31, within maxTexelBufferElements.
uint64_t GpuWeights::chunk_cap() const {
    uint64_t cap = ctx_.limits().max_alloc;
    if (ctx_.texel())
        cap = std::min<uint64_t>({cap, (uint64_t(1) << 31) - 16, ctx_.limits().max_texels * 16});
    return cap & ~uint64_t(15);
}

// The most bytes of a stack in one part: chunk_cap(), or less with PREFIXD_VK_STACK_CAP=bytes (tests
// split the tiny models' expert stacks, which are far below any device's limit)
uint64_t GpuWeights::stack_cap() const {
    const char* e = std::getenv("PREFIXD_VK_STACK_CAP");
    const uint64_t want = e && *e ? std::max<uint64_t>(4096, std::strtoull(e, nullptr, 10)) : UINT64_MAX;
    return std::min(chunk_cap(), want) & ~uint64_t(15);
}

// Without a plan (tests adding tensors one by one): the next tensor goes at the end of the last
// chunk, or into a new chunk of at least min_chunk_ bytes (256 MiB unless the arena says less).
GpuWeights::Slot GpuWeights::alloc(uint64_t bytes) {
    bytes = round16(bytes);
    if (bytes > chunk_cap())
        throw EngineError("Vulkan: a tensor of " + std::to_string(bytes) +
                          " bytes exceeds the allocation limit");
    if (chunks_.empty() || chunk_used_.back() + bytes > chunks_.back().size()) {
        chunks_.push_back(ctx_.create_buffer(
            std::max<uint64_t>(bytes, std::min<uint64_t>(chunk_cap(), min_chunk_)), false));
        chunk_used_.push_back(0);
    }
    Slot s{chunks_.size() - 1, chunk_used_.back()};
    chunk_used_.back() += bytes;
    return s;
}

// A whole model: every tensor's size is known before anything is allocated, so the tensors are
// packed first-fit by decreasing size into chunks of at most chunk_cap() bytes, each allocated at
// exactly its content's size (stacked expert tensors of ~200 MB left a quarter of 256 MiB chunks
// empty before).
void GpuWeights::plan_chunks() {
    const uint64_t cap = chunk_cap();
    std::vector<size_t> order(plan_sizes_.size());
    for (size_t i = 0; i < order.size(); ++i)
        order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return plan_sizes_[a] > plan_sizes_[b]; });
    placement_.assign(plan_sizes_.size(), Slot{});
    std::vector<uint64_t> fill;
    for (size_t i : order) {
        const uint64_t bytes = round16(plan_sizes_[i]);
        if (bytes > cap)
            throw EngineError("Vulkan: a tensor of " + std::to_string(bytes) +
                              " bytes exceeds the allocation limit");
        size_t c = 0;
        while (c < fill.size() && fill[c] + bytes > cap)
            ++c;
        if (c == fill.size())
            fill.push_back(0);
        placement_[i] = Slot{c, fill[c]};
        fill[c] += bytes;
    }
    for (uint64_t bytes : fill) {
        chunks_.push_back(ctx_.create_buffer(bytes, false));
        chunk_used_.push_back(bytes);
    }
}

// Runs fn(task, scratch) for every task in [0, n) on up to hardware_concurrency() threads, the
// caller's included; each thread has its own scratch. The first exception is rethrown.
template <class F> static void parallel_tasks(uint64_t n, F&& fn) {
    const uint64_t threads = std::min<uint64_t>({n, std::max(1u, std::thread::hardware_concurrency()), 32});
    std::atomic<uint64_t> next{0};
    std::mutex m;
    std::exception_ptr err;
    auto work = [&] {
        std::vector<uint8_t> scratch;
        try {
            for (uint64_t t; (t = next++) < n;)
                fn(t, scratch);
        } catch (...) {
            std::lock_guard<std::mutex> lock(m);
            if (!err)
                err = std::current_exception();
            next = n;
        }
    };
    std::vector<std::thread> pool;
    for (uint64_t i = 1; i < threads; ++i)
        pool.emplace_back(work);
    work();
    for (auto& th : pool)
        th.join();
    if (err)
        std::rethrow_exception(err);
}

// Makes the pages under [p, p + n) present and writable (MADV_POPULATE_WRITE, Linux 5.14); where
// the kernel refuses, the writes fault them in as before.
static void populate(uint8_t* p, uint64_t n) {
#ifdef MADV_POPULATE_WRITE
    const uintptr_t page = 4096, a = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
    const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + n + page - 1) & ~(page - 1);
    madvise(reinterpret_cast<void*>(a), e - a, MADV_POPULATE_WRITE);
#else
    (void)p;
    (void)n;
#endif
}

GpuTensor GpuWeights::add(const Tensor& t, const char* what, bool as_f32, bool allow_il) {
    GpuTensor g;
    if (!t)
        return g;
    g.type = as_f32 ? GgmlType::F32 : t.type;
    g.rows = t.rows;
    g.cols = t.cols;
    g.n_mat = t.n_mat;
    const uint64_t vec = g.type == GgmlType::F32                                  ? 4
                         : (g.type == GgmlType::F16 || g.type == GgmlType::BF16)  ? 8
                         : (g.type == GgmlType::Q4_K || g.type == GgmlType::Q6_K) ? 256
                                                                                  : 32;
    if (!as_f32 && g.cols % vec != 0)
        throw EngineError(std::string("Vulkan: tensor ") + what + " has " + std::to_string(g.cols) +
                          " columns, not a multiple of " + std::to_string(vec));
    // Interleaved matrices hold their rows rounded up to 8 (zero rows after the last).
    g.il = !as_f32 && allow_il && ctx_.interleave() && interleavable(g.type) && g.cols % 32 == 0;
    const uint64_t prow = g.il ? (g.rows + 7) / 8 * 8 : g.rows;
    g.mat_stride = g.il ? interleaved_mat_bytes(g.type, g.rows, g.cols) : packed_mat_bytes(g.type, prow, g.cols);
    g.d_off = prow * g.cols * (g.type == GgmlType::Q8_0 ? 1 : 0) + (g.type == GgmlType::Q4_0 ? prow * g.cols / 2 : 0);
    const uint64_t total = g.mat_stride * g.n_mat;
    if (round16(total) > stack_cap() && g.n_mat > 1 && round16(g.mat_stride) <= stack_cap()) {
        // A stack over one allocation (DeepSeek-V3's expert stacks: 2.11 GB in Q4_0) goes in parts
        // of whole matrices, each placed like a tensor of its own (both passes see the same parts)
        const uint64_t per = stack_cap() / g.mat_stride;
        GpuTensor whole = g;
        for (uint64_t m0 = 0; m0 < g.n_mat; m0 += per) {
            Tensor sub = t;
            sub.n_mat = std::min(per, g.n_mat - m0);
            sub.data = t.data + m0 * t.mat_bytes();
            GpuTensor part = add(sub, what, as_f32, allow_il);
            part.mat_first = m0;
            whole.parts.push_back(part);
        }
        whole.addr = whole.parts[0].addr;
        return whole;
    }
    if (round16(total) > chunk_cap())
        throw EngineError(std::string("Vulkan: tensor ") + what + " needs " + std::to_string(total) +
                          " bytes in one allocation; this device allows " + std::to_string(chunk_cap()) +
                          " (maxMemoryAllocationSize" + (ctx_.texel() ? ", texel views" : "") + ")");
    if (planning_) {
        plan_sizes_.push_back(total);
        return g;
    }
    const Slot slot = placement_.empty() ? alloc(total) : placement_.at(next_slot_++);
    used_ += total;

    // Written straight into mapped device memory (CPU drivers, host-visible VRAM), else into a
    // host buffer kept for the next tensor and uploaded. Every write to the destination is a
    // sequential run: each task builds its rows in its own scratch first.
    const Buffer& chunk = chunks_.at(slot.chunk);
    uint8_t* base = nullptr;
    if (chunk.map()) {
        base = static_cast<uint8_t*>(chunk.map()) + slot.off;
    } else {
        if (host_cap_ < total) {
            host_.reset();
            host_.reset(new uint8_t[total]);
            host_cap_ = total;
        }
        base = host_.get();
    }
    // The destination's row layout: scaled types keep their quants (all rows) then their scales
    // (all rows, f32 per block plain, f16 texels per 8 blocks and 8 rows interleaved).
    const bool scaled = !as_f32 && (g.type == GgmlType::Q8_0 || g.type == GgmlType::Q4_0);
    const uint64_t nbr = g.cols / 32, nb8 = (nbr + 7) / 8;
    const uint64_t qrow = quant_row_bytes(g.type, g.cols);
    // scale bytes of `rows` rows (a multiple of 8 when interleaved)
    auto scale_bytes = [&](uint64_t rows) { return g.il ? rows / 8 * nb8 * 128 : rows * nbr * 4; };
    const uint64_t src_row = t.row_bytes();
    const uint64_t rows_per_task = g.il ? std::max<uint64_t>(8, ((1u << 20) / src_row) & ~uint64_t(7))
                                        : std::max<uint64_t>(1, (1u << 20) / src_row);
    const uint64_t tasks_per_mat = (prow + rows_per_task - 1) / rows_per_task;
    parallel_tasks(g.n_mat * tasks_per_mat, [&](uint64_t task, std::vector<uint8_t>& scratch) {
        const uint64_t m = task / tasks_per_mat;
        const uint64_t r0 = task % tasks_per_mat * rows_per_task, r1 = std::min(prow, r0 + rows_per_task);
        const uint64_t n = r1 - r0, real = r1 <= g.rows ? n : g.rows - r0; // rows past g.rows: zero
        const uint8_t* src = t.data + m * t.mat_bytes() + r0 * src_row;
        uint8_t* dst = base + m * g.mat_stride;
        const uint64_t out_bytes = n * qrow + (scaled ? scale_bytes(n) : 0);
        const uint64_t plain_bytes = g.il ? packed_mat_bytes(g.type, n, g.cols) : 0; // repacked, not interleaved
        const uint64_t pad_bytes = (n * src_row + 63) & ~uint64_t(63); // keeps plain and out aligned
        scratch.resize(pad_bytes + plain_bytes + out_bytes);
        uint8_t* padded = scratch.data();
        uint8_t* plain = padded + pad_bytes;
        uint8_t* out = plain + plain_bytes;
        if (real < n) { // zero-padded GGUF rows (all-zero blocks decode to 0)
            std::memcpy(padded, src, real * src_row);
            std::memset(padded + real * src_row, 0, (n - real) * src_row);
            src = padded;
        }
        if (as_f32) {
            for (uint64_t r = 0; r < n; ++r)
                cpu::dequantize_row(t.type, src + r * src_row, reinterpret_cast<float*>(out) + r * g.cols, g.cols);
        } else if (g.il) {
            repack(g.type, src, n, g.cols, plain);
            interleave_rows(g.type, plain, n, g.cols, out);
        } else {
            repack(g.type, src, n, g.cols, out);
        }
        if (chunk.map()) // fresh mapped pages in one call, not a page fault per 4 KiB (half of loading)
            populate(dst + r0 * qrow, n * qrow);
        std::memcpy(dst + r0 * qrow, out, n * qrow);
        if (scaled)
            std::memcpy(dst + prow * qrow + scale_bytes(r0), out + n * qrow, scale_bytes(n));
        if (r1 == prow) { // the matrix's rounding to 16 bytes
            const uint64_t end = prow * qrow + (scaled ? scale_bytes(prow) : 0);
            std::memset(dst + end, 0, g.mat_stride - end);
        }
    });
    if (!chunk.map())
        ctx_.upload(chunk, slot.off, host_.get(), total);
    g.addr = chunk.addr() + slot.off;
    return g;
}

GpuWeights::GpuWeights(Context& ctx, const Model& model, bool verbose) : ctx_(ctx) {
    planning_ = true; // pass 1: sizes only
    add_model(model, false);
    planning_ = false;
    layers_.clear();
    plan_chunks();
    add_model(model, verbose);
    host_.reset();
    host_cap_ = 0;
}

void GpuWeights::add_model(const Model& model, bool verbose) {
    const Weights& w = model.weights();
    output_norm_ = add(w.output_norm, "output_norm", true);
    output_ = add(w.output, "output");
    for (size_t il = 0; il < w.layers.size(); ++il) {
        const LayerWeights& s = w.layers[il];
        GpuLayer l;
        l.attn_norm = add(s.attn_norm, "attn_norm", true);
        l.wq = add(s.wq, "attn_q");
        l.wq_a = add(s.wq_a, "attn_q_a");
        l.q_a_norm = add(s.q_a_norm, "attn_q_a_norm", true);
        l.wq_b = add(s.wq_b, "attn_q_b");
        l.wkv_a = add(s.wkv_a, "attn_kv_a_mqa");
        l.kv_a_norm = add(s.kv_a_norm, "attn_kv_a_norm", true);
        // attn_k_b reads each head's q_nope at a stride of qk_head floats: interleaved (16-byte x
        // fetches) only when that keeps every head's row aligned
        l.wk_b = add(s.wk_b, "attn_k_b", false, model.config().qk_head() % 4 == 0);
        l.wv_b = add(s.wv_b, "attn_v_b");
        l.wo = add(s.wo, "attn_output");
        l.ffn_norm = add(s.ffn_norm, "ffn_norm", true);
        l.ffn_gate = add(s.ffn_gate, "ffn_gate");
        l.ffn_up = add(s.ffn_up, "ffn_up");
        l.ffn_down = add(s.ffn_down, "ffn_down");
        l.gate_inp = add(s.gate_inp, "ffn_gate_inp");
        l.exp_probs_b = add(s.exp_probs_b, "exp_probs_b", true);
        l.gate_exps = add(s.gate_exps, "ffn_gate_exps");
        l.up_exps = add(s.up_exps, "ffn_up_exps");
        l.down_exps = add(s.down_exps, "ffn_down_exps");
        l.gate_shexp = add(s.gate_shexp, "ffn_gate_shexp");
        l.up_shexp = add(s.up_shexp, "ffn_up_shexp");
        l.down_shexp = add(s.down_shexp, "ffn_down_shexp");
        layers_.push_back(l);
        if (verbose)
            std::fprintf(stderr, "vulkan: uploaded layer %zu/%zu\n", il + 1, w.layers.size());
    }
}

} // namespace prefixd::vk
