// `prefixctl bench`: prefill (pp), single-sequence decode (tg) and batched decode (tg_batch)
// tokens per second of the engine on a model, medians and spread over repeats, plus peak device
// memory. Drives Backend::step directly so only engine time is measured.
#include "cli.h"

#include "engine/engine.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iterator>
#include <random>

#include <time.h>

namespace prefixd::cli {
namespace {

struct BenchArgs {
    std::string model, backend = "vulkan", device, kv_cache = "f32";
    uint32_t p = 128, n = 32, r = 3, batch = 8, batch_prompt = 16;
    bool json = false;
};

struct Stats {
    std::vector<double> v;
    double median() const {
        auto s = v;
        std::sort(s.begin(), s.end());
        return s.empty() ? 0 : s.size() % 2 ? s[s.size() / 2] : 0.5 * (s[s.size() / 2 - 1] + s[s.size() / 2]);
    }
    double min() const { return v.empty() ? 0 : *std::min_element(v.begin(), v.end()); }
    double max() const { return v.empty() ? 0 : *std::max_element(v.begin(), v.end()); }
};

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU seconds of the whole process (all threads: lavapipe's workers too). On a CPU driver tokens
// per CPU-second are far steadier than tokens per wall second on a shared, noisy machine.
double cpu_now() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// A measured stretch: started at construction, add() records tokens per wall second and per CPU-second.
struct Span {
    double wall = now(), cpu = cpu_now();
    void add(double tokens, Stats& per_wall, Stats& per_cpu) const {
        per_wall.v.push_back(tokens / (now() - wall));
        per_cpu.v.push_back(tokens / (cpu_now() - cpu));
    }
};

int32_t argmax(const std::vector<float>& l, size_t off, size_t n) {
    return int32_t(std::max_element(l.begin() + off, l.begin() + off + n) - (l.begin() + off));
}

void do_bench(const BenchArgs& a) {
    EngineOptions o;
    o.model_path = a.model;
    o.backend = a.backend;
    o.device = a.device;
    o.kv_f16 = a.kv_cache == "f16";
    o.max_seqs = std::max(a.batch, 1u) + 1;
    const uint32_t ctx_needed = std::max(a.p, a.batch_prompt) + a.n;
    o.max_ctx = ctx_needed + 8;
    o.max_batch_rows = std::max({a.p, a.batch, a.batch_prompt * a.batch});
    o.warm_up = true; // measure steady state, as a server after READY: no shader compiles in the timings
    const double load_t0 = now();
    auto eng = Engine::open(o);
    const double load_s = now() - load_t0; // mmap, weight upload, warm-up (shader compiles, self-check)
    if (eng->options().max_ctx < ctx_needed) // Engine::open capped it at the model's context
        throw CliFailure("bench: -p/--batch-prompt (" + std::to_string(std::max(a.p, a.batch_prompt)) +
                         ") + -n (" + std::to_string(a.n) + ") exceeds the model's context of " +
                         std::to_string(eng->options().max_ctx));
    Backend& b = eng->backend();
    const uint32_t V = eng->config().n_vocab;
    const uint32_t step_rows = b.max_step_rows();
    std::mt19937 rng(42);
    auto tokens = [&](uint32_t k) {
        std::vector<int32_t> t{eng->config().bos_id >= 0 ? eng->config().bos_id : 0};
        while (t.size() < k)
            t.push_back(int32_t(rng() % std::min<uint32_t>(V, 100000)));
        return t;
    };
    Stats pp, tg, tgb, pp_cpu, tg_cpu, tgb_cpu;
    Stats tg_host_ms, tg_wait_ms, tg_thread_ms; // per decode step: host work, waiting for the device,
                                                // CPU time of the calling thread
    for (uint32_t rep = 0; rep < a.r; ++rep) {
        SeqId s = b.create_sequence();
        auto prompt = tokens(a.p);
        Span prefill;
        std::vector<ItemOutput> out;
        for (uint32_t at = 0; at < a.p; at += step_rows) { // one step unless past the device's limit
            const uint32_t n = std::min(step_rows, a.p - at);
            out = b.step({{s,
                           {Segment::from_tokens({prompt.begin() + at, prompt.begin() + at + n})},
                           at + n == a.p ? std::vector<uint32_t>{n - 1} : std::vector<uint32_t>{},
                           {}}});
        }
        prefill.add(a.p, pp, pp_cpu);
        int32_t next = argmax(out[0].logits, 0, V);
        Span decode;
        const Backend::StepTime st0 = b.step_time();
        for (uint32_t i = 0; i < a.n; ++i) {
            out = b.step({{s, {Segment::from_tokens({next})}, {0}, {}}});
            next = argmax(out[0].logits, 0, V);
        }
        decode.add(a.n, tg, tg_cpu);
        const Backend::StepTime st1 = b.step_time();
        if (st1.steps > st0.steps) {
            const double steps = double(st1.steps - st0.steps), wait = st1.device_wait_s - st0.device_wait_s;
            tg_wait_ms.v.push_back(1e3 * wait / steps);
            tg_host_ms.v.push_back(1e3 * (st1.total_s - st0.total_s - wait) / steps);
            tg_thread_ms.v.push_back(1e3 * (st1.thread_cpu_s - st0.thread_cpu_s) / steps);
        }
        b.free_sequence(s);
        if (a.batch > 1) {
            std::vector<BatchItem> items;
            for (uint32_t k = 0; k < a.batch; ++k)
                items.push_back({b.create_sequence(),
                                 {Segment::from_tokens(tokens(a.batch_prompt))},
                                 {a.batch_prompt - 1},
                                 {}});
            // prefill (not timed): as many sequences per step as the device's row limit allows
            std::vector<ItemOutput> outs;
            for (size_t k0 = 0; k0 < items.size();) {
                size_t k1 = k0 + 1;
                while (k1 < items.size() && uint64_t(k1 + 1 - k0) * a.batch_prompt <= step_rows)
                    ++k1;
                auto part = b.step({items.begin() + k0, items.begin() + k1});
                std::move(part.begin(), part.end(), std::back_inserter(outs));
                k0 = k1;
            }
            Span batched;
            for (uint32_t i = 0; i < a.n; ++i) {
                for (uint32_t k = 0; k < a.batch; ++k) {
                    items[k].inputs = {Segment::from_tokens({argmax(outs[k].logits, 0, V)})};
                    items[k].logit_rows = {0};
                }
                outs = b.step(items);
            }
            batched.add(double(a.batch) * a.n, tgb, tgb_cpu);
            for (auto& it : items)
                b.free_sequence(it.seq);
        }
    }
    const auto& c = eng->config();
    if (a.json) {
        nlohmann::json j = {{"model", a.model},
                            {"name", c.name},
                            {"device", b.device_name()},
                            {"backend", a.backend},
                            {"kv_cache", a.kv_cache},
                            {"p", a.p},
                            {"n", a.n},
                            {"r", a.r},
                            {"batch", a.batch},
                            {"pp_tps", pp.median()},
                            {"pp_tps_min", pp.min()},
                            {"pp_tps_max", pp.max()},
                            {"tg_tps", tg.median()},
                            {"tg_tps_min", tg.min()},
                            {"tg_tps_max", tg.max()},
                            {"tg_batch_tps", tgb.median()},
                            {"tg_batch_tps_min", tgb.min()},
                            {"tg_batch_tps_max", tgb.max()},
                            {"pp_tokens_per_cpu_s", pp_cpu.median()},
                            {"tg_tokens_per_cpu_s", tg_cpu.median()},
                            {"tg_batch_tokens_per_cpu_s", tgb_cpu.median()},
                            {"tg_host_ms_per_step", tg_host_ms.median()},
                            {"tg_device_wait_ms_per_step", tg_wait_ms.median()},
                            {"tg_thread_cpu_ms_per_step", tg_thread_ms.median()},
                            {"peak_device_memory_bytes", b.peak_device_memory()},
                            {"load_s", load_s}};
        if (a.batch <= 1) // not measured: null, not a rate of 0
            for (const char* k :
                 {"tg_batch_tps", "tg_batch_tps_min", "tg_batch_tps_max", "tg_batch_tokens_per_cpu_s"})
                j[k] = nullptr;
        std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
        return;
    }
    std::printf("model   %s (%s, %u layers)\ndevice  %s\n", a.model.c_str(), c.name.c_str(), c.n_layer,
                b.device_name().c_str());
    auto line = [](const char* what, const Stats& s, const Stats& cpu) {
        std::printf("%-30s %10.2f tok/s  (min %.2f, max %.2f, %zu runs)  %.2f tok per CPU-s\n", what,
                    s.median(), s.min(), s.max(), s.v.size(), cpu.median());
    };
    line(("prefill pp" + std::to_string(a.p)).c_str(), pp, pp_cpu);
    line(("decode tg" + std::to_string(a.n)).c_str(), tg, tg_cpu);
    if (a.batch > 1)
        line(("decode x" + std::to_string(a.batch) + " sequences (aggregate)").c_str(), tgb, tgb_cpu);
    if (!tg_host_ms.v.empty())
        std::printf("decode step: host %.2f ms (min %.2f; the calling thread's CPU %.2f ms), waiting for the "
                    "device %.2f ms\n",
                    tg_host_ms.median(), tg_host_ms.min(), tg_thread_ms.median(), tg_wait_ms.median());
    std::printf("peak device memory %.1f MiB\n", double(b.peak_device_memory()) / (1 << 20));
    std::printf("model load %.1f s (weights to the device, warm-up)\n", load_s);
}

void register_bench(CLI::App& app, const Globals&) {
    auto a = std::make_shared<BenchArgs>();
    auto* bench = app.add_subcommand("bench", "Measure prefill and decode speed of the engine on a model");
    bench->add_option("--model", a->model, "GGUF model file")->required();
    bench->add_option("-p", a->p, "prompt tokens for the prefill measurement")->check(CLI::Range(1u, 65536u));
    bench->add_option("-n", a->n, "tokens decoded per measurement")->check(CLI::Range(1u, 65536u));
    bench->add_option("-r", a->r, "repeats (median and spread)")->check(CLI::Range(1u, 100u));
    bench->add_option("--batch", a->batch, "concurrent sequences for the aggregate decode figure (1 = skip)")
        ->check(CLI::Range(1u, 256u));
    bench->add_option("--batch-prompt", a->batch_prompt, "prompt tokens of each batched sequence")
        ->check(CLI::Range(1u, 4096u));
    bench->add_option("--backend", a->backend, "vulkan | cpu")->check(CLI::IsMember({"vulkan", "cpu"}));
    bench->add_option("--device", a->device,
                      "Vulkan device: an index (prefixctl devices), else a part of its name");
    bench->add_option("--kv-cache", a->kv_cache, "latent KV cache element type: f32 or f16")
        ->check(CLI::IsMember({"f32", "f16"}));
    bench->add_flag("--json", a->json, "print one JSON object (pp_tps, tg_tps, tg_batch_tps, device, ...)");
    bench->callback([a] { do_bench(*a); });
}

CliModule reg_bench(register_bench);

} // namespace
} // namespace prefixd::cli
