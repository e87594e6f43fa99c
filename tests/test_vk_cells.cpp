// Context plumbing for the CPU-driver matmuls and the barrier check. Interleaved matmuls with
// grid cells handed out by a counter (push.h MatmulPush ctr, Context::cell_counter): the same bits
// as fixed workgroups, every cell taken exactly once, and counters that stay correct past the
// per-command-buffer supply. Context::set_reorder: a reader recorded after its writer without a
// barrier runs first (so tests on lavapipe catch a barrier a GPU needs), with one it runs after.
// PREFIXD_VK_VALIDATION=1: an invalid command makes the next submit throw. Cached descriptor sets
// follow freed and remade buffers. Memory types per MemUse on the device kinds we target,
// uploads to unmapped device memory, and recordings submitted in parts (Context::submit).
#include "engine/cpu/ops.h"
#include "engine/vk/vk_forward.h"
#include "engine/vk/vk_weights.h"
#include "test_vk_util.h"

#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>

using namespace prefixd;
using namespace prefixd::vk;
using gguf::GgmlType;
using prefixd::test::ctx;
using prefixd::test::fresh_seed;
using prefixd::test::DevBuf;
using prefixd::test::make_tensor;
using prefixd::test::norm_err;
using prefixd::test::randv;

namespace {

// y = W x for n_tok tokens of each of n_mat matrices (the reference)
std::vector<float> reference(const Tensor& w, const std::vector<float>& xs, uint32_t n_mat, uint32_t n_tok) {
    std::vector<float> ref(size_t(n_mat) * n_tok * w.rows);
    for (uint32_t g = 0; g < n_mat; ++g)
        for (uint32_t t = 0; t < n_tok; ++t)
            cpu::matmul(w, g, xs.data() + (size_t(g) * n_tok + t) * w.cols,
                        ref.data() + (size_t(g) * n_tok + t) * w.rows, 1);
    return ref;
}

// A random n x n Q8_0 matrix on the device
struct SquareQ8 {
    GpuWeights gw{ctx()};
    prefixd::test::HostTensor a;
    GpuTensor ga;
    SquareQ8(uint32_t n, std::mt19937& rng) : a(make_tensor(GgmlType::Q8_0, n, n, 1, rng)), ga(gw.add(a.t, "A")) {}
};

MatmulPush push_for(const DevBuf& x, const DevBuf& y, uint32_t rows, uint32_t cols, uint32_t n_tok) {
    MatmulPush p{};
    p.x = x.addr();
    p.y = y.addr();
    p.n_tok = n_tok;
    p.x_stride = cols;
    p.y_stride = rows;
    p.x_mat_off = n_tok * cols;
    p.y_mat_off = n_tok * rows;
    return p;
}

} // namespace

TEST_CASE("interleaved matmuls with counted cells equal fixed workgroups bit for bit and take each cell once") {
    REQUIRE(ctx().interleave()); // lavapipe (CI): the row-interleaved path is the CPU-device default
    const char* env = std::getenv("PREFIXD_VK_DYNAMIC");
    if (!(env && *env))
        CHECK(ctx().dynamic_cells() == ctx().cpu_device()); // on by default where lavapipe splits grids
    const uint32_t seed = fresh_seed();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    const bool dyn_default = ctx().dynamic_cells();
    const uint32_t rows = 1000, cols = 256, n_mat = 3; // 1000 rows: 32 row blocks, the last one short
    for (GgmlType type : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::F16}) {
        for (uint32_t n_tok : {1u, 11u}) {
            INFO("type " << std::string(gguf::type_name(type)) << " tokens " << n_tok);
            GpuWeights gw(ctx());
            auto A = make_tensor(type, rows, cols, n_mat, rng);
            GpuTensor ga = gw.add(A.t, "A");
            REQUIRE(ga.il);
            const auto xs = randv(size_t(n_mat) * n_tok * cols, rng);
            DevBuf x(xs.size() * 4), y_fixed(size_t(n_mat) * n_tok * rows * 4), y_cells(y_fixed.b.size()),
                counter(64);
            std::memcpy(x.as<float>(), xs.data(), xs.size() * 4);
            std::memset(counter.as<uint32_t>(), 0, 64);
            const auto ref = reference(A.t, xs, n_mat, n_tok);

            ctx().set_dynamic_cells(false); // p.ctr = 0: cell = workgroup id
            dispatch_matmul(ctx(), ga, nullptr, push_for(x, y_fixed, rows, cols, n_tok), n_mat, n_tok == 1);
            ctx().submit_wait();
            MatmulPush p = push_for(x, y_cells, rows, cols, n_tok);
            p.ctr = counter.addr();
            dispatch_matmul(ctx(), ga, nullptr, p, n_mat, n_tok == 1);
            ctx().submit_wait();
            ctx().set_dynamic_cells(dyn_default);

            CHECK(norm_err(y_fixed.as<float>(), ref.data(), ref.size()) < 1e-5);
            CHECK(std::memcmp(y_cells.as<float>(), y_fixed.as<float>(), ref.size() * 4) == 0);
            // each workgroup takes cells until one past the last: cells + workgroups increments,
            // as many workgroups as cells (32 row blocks x 3 matrices)
            CHECK(counter.as<uint32_t>()[0] == 2u * 32u * n_mat);
            CHECK(counter.as<uint32_t>()[1] == 0u);
        }
    }
}

TEST_CASE("cell counters of the engine stay zeroed per dispatch past the supply of one command buffer") {
    REQUIRE(ctx().interleave());
    const uint32_t seed = fresh_seed();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    const bool dyn_default = ctx().dynamic_cells();
    ctx().set_dynamic_cells(true);
    const uint32_t rows = 64, cols = 64, n = 4500; // more dispatches than kCellCounters (4096)
    GpuWeights gw(ctx());
    auto A = make_tensor(GgmlType::Q8_0, rows, cols, 1, rng);
    GpuTensor ga = gw.add(A.t, "A");
    REQUIRE(ga.il);
    const auto xs = randv(cols, rng);
    DevBuf x(cols * 4), y(rows * 4);
    std::memcpy(x.as<float>(), xs.data(), cols * 4);
    std::memset(y.as<float>(), 0, rows * 4);
    // y += W x, n times in one recording: a reused counter that was not zeroed would leave its
    // cells undone (y short of n W x)
    for (uint32_t i = 0; i < n; ++i) {
        MatmulPush p = push_for(x, y, rows, cols, 1);
        p.flags = MM_ACCUM;
        dispatch_matmul(ctx(), ga, nullptr, p, 1, true);
        ctx().barrier();
    }
    ctx().submit_wait();
    ctx().set_dynamic_cells(dyn_default);
    std::vector<float> ref(rows);
    cpu::matmul(A.t, 0, xs.data(), ref.data(), 1);
    for (float& v : ref)
        v *= float(n);
    CHECK(norm_err(y.as<float>(), ref.data(), rows) < 1e-4);
}

// Context::submit: parts of a recording go to the queue without a wait; a barrier orders later
// parts after earlier ones, and submit_wait waits for all of them, even with nothing recorded
// since the last part.
TEST_CASE("submit(): a chain of matmuls in separate parts, then a submit_wait with nothing new") {
    const uint32_t seed = fresh_seed();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    const uint32_t n = 256, chain = 6;
    SquareQ8 w(n, rng);
    std::vector<DevBuf> v;
    for (uint32_t i = 0; i <= chain; ++i)
        v.emplace_back(n * 4);
    const auto x0 = randv(n, rng);
    std::memcpy(v[0].as<float>(), x0.data(), n * 4);
    for (uint32_t i = 1; i <= chain; ++i)
        std::memset(v[i].as<float>(), 0, n * 4);
    const uint64_t before = ctx().submit_count();
    for (uint32_t i = 0; i < chain; ++i) { // v[i+1] = W v[i], each in its own part
        MatmulPush p = push_for(v[i], v[i + 1], n, n, 1);
        dispatch_matmul(ctx(), w.ga, nullptr, p, 1, true);
        ctx().barrier();
        ctx().submit();
    }
    ctx().submit_wait();
    CHECK(ctx().submit_count() - before == chain + 1);
    std::vector<float> ref(x0), next(n);
    for (uint32_t i = 0; i < chain; ++i) {
        cpu::matmul(w.a.t, 0, ref.data(), next.data(), 1);
        ref.swap(next);
        INFO("link " << i + 1);
        CHECK(norm_err(v[i + 1].as<float>(), ref.data(), n) < 1e-4);
    }
}

// While a progress callback is set (a step), submit() keeps at most kPartsAhead parts queued: it
// waits for the oldest and reports it first. A callback that throws there stops the recording,
// so the parts never recorded never run (the daemon cuts a cancelled job's step short this way).
TEST_CASE(
    "submit() with progress: at most kPartsAhead parts queued; a callback's throw stops the chain there") {
    const uint32_t seed = fresh_seed();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    const uint32_t n = 256, chain = 7;
    const size_t ahead = Context::kPartsAhead;
    REQUIRE(chain > ahead + 2);
    SquareQ8 w(n, rng);
    std::vector<DevBuf> v;
    for (uint32_t i = 0; i <= chain; ++i)
        v.emplace_back(n * 4);
    const auto x0 = randv(n, rng), stale = randv(n, rng);
    std::vector<std::vector<float>> ref{x0};
    for (uint32_t i = 0; i < chain; ++i) {
        ref.emplace_back(n);
        cpu::matmul(w.a.t, 0, ref[i].data(), ref[i + 1].data(), 1);
    }
    int calls = 0, throw_at = 0;
    std::function<void()> fn = [&] {
        if (++calls == throw_at)
            throw StepInterrupted();
    };
    struct Unset {
        ~Unset() { ctx().set_progress(nullptr); }
    } unset;
    for (const int at : {0, 1}) {
        INFO("throw at report " << at);
        throw_at = at;
        calls = 0;
        std::memcpy(v[0].as<float>(), x0.data(), n * 4);
        for (uint32_t i = 1; i <= chain; ++i)
            std::memcpy(v[i].as<float>(), stale.data(), n * 4);
        ctx().set_progress(&fn);
        uint32_t stopped = chain; // the part whose submit() threw
        for (uint32_t i = 0; i < chain; ++i) {
            dispatch_matmul(ctx(), w.ga, nullptr, push_for(v[i], v[i + 1], n, n, 1), 1, true);
            ctx().barrier();
            try {
                ctx().submit();
            } catch (const StepInterrupted&) {
                stopped = i;
                ctx().discard(); // waits for the parts queued
                break;
            }
            CHECK(calls == int(std::max<size_t>(i + 1, ahead) - ahead)); // reported as they leave the window
        }
        if (stopped == chain)
            ctx().submit_wait();
        ctx().set_progress(nullptr);
        const uint32_t ran = at ? uint32_t(ahead + 1) : chain; // parts submitted
        CHECK(stopped == (at ? ahead : chain));
        CHECK(calls == (at ? 1 : int(chain) + 1)); // every part, then the wait's own submission
        for (uint32_t i = 1; i <= chain; ++i) {
            INFO("link " << i);
            if (i <= ran)
                CHECK(norm_err(v[i].as<float>(), ref[i].data(), n) < 1e-4);
            else // never recorded: untouched
                CHECK(std::memcmp(v[i].as<float>(), stale.data(), n * 4) == 0);
        }
    }
}

TEST_CASE("barrier check: reversed phases make a missing barrier give wrong results, a barrier right ones") {
    const uint32_t seed = fresh_seed();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    const uint32_t n = 256;
    SquareQ8 m(n, rng);
    const Tensor& W = m.a.t;
    const auto xs = randv(n, rng), stale = randv(n, rng);
    DevBuf x(n * 4), y1(n * 4), y2(n * 4);
    std::memcpy(x.as<float>(), xs.data(), n * 4);
    // references: y2 = W (W x) with the barrier, W stale when the second matmul runs first
    std::vector<float> wx(n), wwx(n), wstale(n);
    cpu::matmul(W, 0, xs.data(), wx.data(), 1);
    cpu::matmul(W, 0, wx.data(), wwx.data(), 1);
    cpu::matmul(W, 0, stale.data(), wstale.data(), 1);
    const bool reorder_default = ctx().reorder();
    ctx().set_reorder(true);
    for (bool with_barrier : {false, true}) {
        INFO("barrier " << with_barrier);
        std::memcpy(y1.as<float>(), stale.data(), n * 4);
        std::memset(y2.as<float>(), 0, n * 4);
        dispatch_matmul(ctx(), m.ga, nullptr, push_for(x, y1, n, n, 1), 1, true);  // y1 = W x
        if (with_barrier)
            ctx().barrier();
        dispatch_matmul(ctx(), m.ga, nullptr, push_for(y1, y2, n, n, 1), 1, true); // y2 = W y1
        ctx().submit_wait();
        CHECK(norm_err(y1.as<float>(), wx.data(), n) < 1e-5);
        if (with_barrier)
            CHECK(norm_err(y2.as<float>(), wwx.data(), n) < 1e-4);
        else if (ctx().cpu_device()) // one dispatch after another: the reader ran on stale y1
            CHECK(norm_err(y2.as<float>(), wstale.data(), n) < 1e-4);
        // (a GPU may overlap the two unordered dispatches: no single answer to hold it to)
    }
    ctx().set_reorder(reorder_default);
}

TEST_CASE("validation mode: the layer's error about an invalid command makes the next submit throw") {
    const char* old = std::getenv("PREFIXD_VK_VALIDATION");
    const std::string saved = old ? old : "";
    setenv("PREFIXD_VK_VALIDATION", "1", 1);
    std::unique_ptr<Context> c;
    try {
        c = std::make_unique<Context>("");
    } catch (...) {
        old ? setenv("PREFIXD_VK_VALIDATION", saved.c_str(), 1) : unsetenv("PREFIXD_VK_VALIDATION");
        throw; // tools/setup.sh installs the layer (vulkan-validationlayers)
    }
    old ? setenv("PREFIXD_VK_VALIDATION", saved.c_str(), 1) : unsetenv("PREFIXD_VK_VALIDATION");
    REQUIRE(c->validating());
    Buffer b = c->create_buffer(256, true);
    c->copy(b, 0, b, 128, 64); // valid: disjoint regions of one buffer
    CHECK_NOTHROW(c->submit_wait());
    c->copy(b, 0, b, 16, 64); // overlapping regions of one buffer (VUID-VkBufferCopy-pRegions-00117)
    CHECK_THROWS_WITH_AS(c->submit_wait(), doctest::Contains("Vulkan validation"), EngineError);
}

TEST_CASE("descriptor sets of texel views: a buffer made after another one was freed is read, not the old one") {
    REQUIRE(ctx().texel());
    const uint32_t seed = fresh_seed();
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    const uint32_t n = 128;
    SquareQ8 m(n, rng);
    DevBuf y(n * 4);
    for (int round = 0; round < 4; ++round) {
        INFO("round " << round);
        // a fresh x buffer each round (its view may get the handle of the one freed before it)
        const auto xs = randv(n, rng);
        DevBuf x(n * 4);
        std::memcpy(x.as<float>(), xs.data(), n * 4);
        dispatch_matmul(ctx(), m.ga, nullptr, push_for(x, y, n, n, 1), 1, true);
        ctx().submit_wait();
        std::vector<float> ref(n);
        cpu::matmul(m.a.t, 0, xs.data(), ref.data(), 1);
        CHECK(norm_err(y.as<float>(), ref.data(), n) < 1e-5);
    }
}

namespace {

// A memory-properties table: heaps (size, device-local) and types (flags, heap).
VkPhysicalDeviceMemoryProperties memory_table(std::vector<std::pair<VkDeviceSize, bool>> heaps,
                                              std::vector<std::pair<VkMemoryPropertyFlags, uint32_t>> types) {
    VkPhysicalDeviceMemoryProperties mp{};
    mp.memoryHeapCount = uint32_t(heaps.size());
    for (size_t h = 0; h < heaps.size(); ++h) {
        mp.memoryHeaps[h].size = heaps[h].first;
        mp.memoryHeaps[h].flags = heaps[h].second ? VK_MEMORY_HEAP_DEVICE_LOCAL_BIT : 0;
    }
    mp.memoryTypeCount = uint32_t(types.size());
    for (size_t t = 0; t < types.size(); ++t)
        mp.memoryTypes[t] = {types[t].first, types[t].second};
    return mp;
}

using V = std::vector<uint32_t>;
constexpr VkMemoryPropertyFlags DL = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, HV = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT,
                                HC = VK_MEMORY_PROPERTY_HOST_COHERENT_BIT, CA = VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
constexpr VkDeviceSize GiB = 1ull << 30;

} // namespace

TEST_CASE("memory types: weights stay out of a small BAR window, readbacks go to host-cached memory") {
    SUBCASE("CPU driver (lavapipe): one heap, one type for everything") {
        const auto mp = memory_table({{16 * GiB, true}}, {{DL | HV | HC | CA, 0}});
        for (MemUse u : {MemUse::Device, MemUse::Host, MemUse::Readback})
            CHECK(memory_type_order(mp, ~0u, u) == V{0});
    }
    SUBCASE("discrete GPU without resizable BAR: VRAM, system memory, a 256 MiB BAR window") {
        const auto mp = memory_table({{80 * GiB, true}, {64 * GiB, false}, {GiB / 4, true}},
                                     {{0, 1}, {DL, 0}, {HV | HC, 1}, {HV | HC | CA, 1}, {DL | HV | HC, 2}});
        CHECK(memory_type_order(mp, ~0u, MemUse::Device) == V{1, 4}); // the window only when VRAM is full
        CHECK(memory_type_order(mp, ~0u, MemUse::Host) == V{4, 2, 3});
        CHECK(memory_type_order(mp, ~0u, MemUse::Readback) == V{3, 2, 4});
        CHECK(memory_type_order(mp, ~0u & ~(1u << 1), MemUse::Device) == V{4}); // as the buffer allows
    }
    SUBCASE("discrete GPU with resizable BAR: all of VRAM host-visible") {
        const auto mp = memory_table({{24 * GiB, true}, {64 * GiB, false}},
                                     {{DL, 0}, {HV | HC, 1}, {HV | HC | CA, 1}, {DL | HV | HC, 0}});
        CHECK(memory_type_order(mp, ~0u, MemUse::Device) == V{3, 0});
        CHECK(memory_type_order(mp, ~0u, MemUse::Host) == V{3, 1, 2});
        CHECK(memory_type_order(mp, ~0u, MemUse::Readback) == V{2, 1, 3});
    }
    SUBCASE("integrated GPU: one shared heap") {
        const auto mp = memory_table({{8 * GiB, true}}, {{DL, 0}, {DL | HV | HC, 0}, {DL | HV | HC | CA, 0}});
        CHECK(memory_type_order(mp, ~0u, MemUse::Device) == V{1, 2, 0});
        CHECK(memory_type_order(mp, ~0u, MemUse::Host) == V{1, 2});
        CHECK(memory_type_order(mp, ~0u, MemUse::Readback) == V{2, 1});
    }
    SUBCASE("no allowed type") {
        const auto mp = memory_table({{8 * GiB, true}}, {{DL, 0}});
        CHECK(memory_type_order(mp, ~0u, MemUse::Host).empty());
        CHECK(memory_type_order(mp, 0u, MemUse::Device).empty());
    }
}

TEST_CASE("unmapped device buffers (a discrete GPU's VRAM) take uploads through staging copies") {
    std::mt19937 rng(fresh_seed());
    const auto data = randv(17u << 20, rng, 1.0f); // 68 MiB: two chunks of the 64 MiB staging buffer
    ctx().set_map_device(false);
    Buffer dev = ctx().create_buffer(data.size() * 4 + 64, MemUse::Device);
    ctx().set_map_device(true);
    CHECK(dev.map() == nullptr);
    ctx().upload(dev, 64, data.data(), data.size() * 4);
    Buffer back = ctx().create_buffer(data.size() * 4, MemUse::Readback);
    REQUIRE(back.map() != nullptr);
    ctx().copy(dev, 64, back, 0, data.size() * 4);
    ctx().submit_wait();
    CHECK(std::memcmp(back.map(), data.data(), data.size() * 4) == 0);
}
