// load_bench: jobs/s and p50/p99 latency of short Generate jobs sent by N concurrent closed-loop
// clients to a running prefixd (insecure dev mode), beside the same jobs run in-process through
// the engine alone: N in flight on one Runner refilled as they finish (the daemon's batching
// with zero reply/resubmit delay) and one at a time, against the daemon with N clients and with
// 1 client. Clients connect (a Health round trip) before the clock starts. Phases interleave
// over --rounds; overheads are the median of the per-round ratios.
// Usage: load_bench --endpoint E --model F [--backend cpu|vulkan] [--clients 16] [--jobs 8] [-n 4]
#include "daemon/client.h"
#include "daemon/engine_worker.h"
#include "engine/runner.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <latch>
#include <malloc.h>
#include <map>
#include <mutex>
#include <thread>

using namespace prefixd;
using namespace prefixd::daemon;
using Clock = std::chrono::steady_clock;

static double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}
static double pct(std::vector<double> v, double p) {
    if (v.empty())
        return 0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, size_t(p * double(v.size() - 1) + 0.5))];
}
// Per-phase results over rounds: median jobs/s, all latencies pooled.
struct Stats {
    std::vector<double> rate, lat;
    double wall_s = 0; // all rounds
    void add(double r, const std::vector<double>& l) {
        rate.push_back(r);
        wall_s += double(l.size()) / r;
        lat.insert(lat.end(), l.begin(), l.end());
    }
    double jobs_s() const { return pct(rate, 0.5); }
};
// Prompts differ per round and phase, so no phase gets prefix-cache hits from an earlier one.
static int g_phase = 0;
static std::string prompt_of(int c, int j) {
    return "Request " + std::to_string(g_phase) + "." + std::to_string(c) + "." + std::to_string(j) +
           ": say hello";
}

int main(int argc, char** argv) {
    CLI::App app{"prefixd load benchmark"};
    std::string endpoint, model, backend = "cpu", tenant = "bench";
    int clients = 16, jobs = 8, n = 4, rounds = 3, max_seqs = 16, max_ctx = 4096;
    bool single = true, malloc_tune = true;
    app.add_option("--endpoint", endpoint, "running prefixd (insecure dev mode)")->required();
    app.add_option("--model", model, "same GGUF the daemon serves (in-process baseline)")->required();
    app.add_option("--backend", backend, "engine backend for the in-process baseline");
    app.add_option("--clients", clients, "concurrent clients");
    app.add_option("--jobs", jobs, "jobs per client");
    app.add_option("-n", n, "tokens per job");
    app.add_option("--tenant", tenant, "tenant name");
    app.add_option("--rounds", rounds, "interleaved rounds (medians reported)")->check(CLI::Range(1, 100));
    app.add_option("--max-seqs", max_seqs, "engine sequences (same as the daemon's [engine] max_seqs)");
    app.add_option("--max-ctx", max_ctx, "engine context (same as the daemon's --max-ctx)");
    app.add_flag("!--no-single", single, "skip the 1-client / 1-by-1 phases");
    app.add_flag("!--no-malloc-tune", malloc_tune, "in-process phases without prefixd's mallopt settings");
    CLI11_PARSE(app, argc, argv);
    if (malloc_tune) { // as prefixd does at start (daemon/prefixd_main.cpp)
        mallopt(M_MMAP_THRESHOLD, 256 << 20);
        mallopt(M_TRIM_THRESHOLD, 1 << 30);
    }

    EngineOptions eo;
    eo.model_path = model;
    eo.backend = backend;
    eo.max_seqs = uint32_t(max_seqs);
    eo.max_ctx = uint32_t(max_ctx);
    auto eng = Engine::open(eo);
    std::string run_tag = std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
    int total = clients * jobs;
    std::atomic<int> errors{0};
    auto req = [&](int c, int j) {
        Request r;
        r.prompt = {
            Segment::from_tokens(eng->tokenizer().encode(prompt_of(c, j), eng->tokenizer().add_bos()))};
        r.max_tokens = uint32_t(n);
        return r;
    };
    // Daemon: `nc` clients, each sending its share of the `total` jobs one after another. Each
    // client connects and gets a Health reply first; the clock starts when all are connected.
    auto daemon_phase = [&](int nc, int round, Stats& out) {
        std::mutex mu;
        std::vector<double> lat;
        std::latch ready(nc + 1);
        std::vector<std::thread> th;
        for (int c = 0; c < nc; ++c)
            th.emplace_back([&, c] {
                ClientOptions o;
                o.endpoint = endpoint;
                Client cl(o);
                JobRequest h;
                h.kind = Kind::Health;
                h.job_id = "lb-health-" + std::to_string(c);
                if (cl.run(h, 60000).final.type != Reply::Health)
                    ++errors;
                ready.arrive_and_wait();
                for (int k = c; k < total; k += nc) {
                    JobRequest r;
                    r.job_id = "lb-" + run_tag + "-" + std::to_string(nc) + "-" + std::to_string(round) +
                               "-" + std::to_string(k);
                    r.text = prompt_of(k % clients, k / clients);
                    r.max_tokens = n;
                    r.tenant = tenant;
                    auto s = Clock::now();
                    auto o2 = cl.run(r, 600000);
                    double ms = ms_since(s);
                    if (o2.final.type != Reply::Result)
                        ++errors;
                    std::lock_guard lk(mu);
                    lat.push_back(ms);
                }
            });
        ready.arrive_and_wait();
        auto t0 = Clock::now();
        for (auto& t : th)
            t.join();
        out.add(total / (ms_since(t0) / 1000), lat);
    };
    // In-process, one at a time, on a fresh Runner (the daemon's Runner options).
    auto seq_phase = [&](Stats& out) {
        Runner runner(*eng);
        std::vector<double> lat;
        auto t1 = Clock::now();
        for (int k = 0; k < total; ++k) {
            auto s = Clock::now();
            runner.run(req(k % clients, k / clients));
            lat.push_back(ms_since(s));
        }
        out.add(total / (ms_since(t1) / 1000), lat);
    };
    uint64_t batched_steps = 0;
    double batched_step_ms = 0, batched_cpu_s = 0;
    // In-process batched: `clients` jobs in flight, refilled as they finish (the daemon's way).
    auto batch_phase = [&](Stats& out) {
        Runner runner(*eng);
        std::vector<double> lat;
        auto t2 = Clock::now();
        std::map<RequestId, Clock::time_point> started;
        int next = 0;
        auto submit_one = [&] {
            started[runner.submit(req(next % clients, next / clients))] = Clock::now();
            ++next;
        };
        while (next < clients && next < total)
            submit_one();
        while (!runner.idle()) {
            auto ts = Clock::now();
            const double c0 = thread_cpu_s();
            auto ev = runner.step();
            batched_step_ms += ms_since(ts);
            batched_cpu_s += thread_cpu_s() - c0;
            ++batched_steps;
            for (auto& [id, res] : ev.finished) {
                lat.push_back(ms_since(started[id]));
                if (next < total)
                    submit_one();
            }
        }
        out.add(total / (ms_since(t2) / 1000), lat);
    };
    // Rounds interleave the four phases so that load from other processes hits them alike.
    Stats dm, ib, d1, i1;
    for (int round = 0; round < rounds; ++round) {
        ++g_phase;
        daemon_phase(clients, round, dm);
        ++g_phase;
        batch_phase(ib);
        if (single) {
            ++g_phase;
            daemon_phase(1, round, d1);
            ++g_phase;
            seq_phase(i1);
        }
    }
    std::printf("load_bench: %d jobs (%d clients x %d), %d tokens each, model %s (%s), %d rounds, medians\n",
                total, clients, jobs, n, eng->config().name.c_str(), backend.c_str(), rounds);
    auto line = [](const char* what, Stats& s) {
        std::printf("  %-28s: %7.2f jobs/s  p50 %8.1f ms  p99 %8.1f ms  (%.2f s wall, all rounds)\n", what,
                    s.jobs_s(), pct(s.lat, 0.5), pct(s.lat, 0.99), s.wall_s);
    };
    line("daemon, N clients", dm);
    line("in-process batched (N)", ib);
    if (single) {
        line("daemon, 1 client", d1);
        line("in-process 1-by-1", i1);
    }
    std::printf(
        "  in-process batched: %llu engine steps, %.3f s in steps (%.3f s CPU) (all rounds; the daemon logs\n"
        "  its own 'engine thread: N steps, S s in steps (C s CPU ...)' at exit)\n",
        (unsigned long long)batched_steps, batched_step_ms / 1000, batched_cpu_s);
    // Overhead = wall time of the daemon phase / wall time of its in-process twin - 1, per round
    // (the two run back to back, so outside load hits both alike), median over rounds.
    auto overhead = [](const Stats& d, const Stats& i) {
        std::vector<double> r;
        for (size_t k = 0; k < d.rate.size() && k < i.rate.size(); ++k)
            r.push_back((i.rate[k] / d.rate[k] - 1) * 100);
        return pct(r, 0.5);
    };
    auto per_round = [](const Stats& d, const Stats& i) {
        std::string s;
        for (size_t k = 0; k < d.rate.size() && k < i.rate.size(); ++k)
            s += (k ? " " : "") + std::to_string(int(std::lround((i.rate[k] / d.rate[k] - 1) * 100))) + "%";
        return s;
    };
    std::printf("  daemon overhead, batched  : %+.1f%% wall time (median of rounds: %s; %+.1f%% p50)\n",
                overhead(dm, ib), per_round(dm, ib).c_str(), (pct(dm.lat, 0.5) / pct(ib.lat, 0.5) - 1) * 100);
    if (single)
        std::printf("  daemon overhead, 1-by-1   : %+.1f%% wall time (median of rounds: %s), %+.2f ms per "
                    "job (p50)\n",
                    overhead(d1, i1), per_round(d1, i1).c_str(), pct(d1.lat, 0.5) - pct(i1.lat, 0.5));
    std::printf(
        "{\"daemon_jobs_s\":%.3f,\"daemon_p50_ms\":%.2f,\"daemon_p99_ms\":%.2f,\"engine_batched_jobs_s\":%."
        "3f,"
        "\"engine_batched_p50_ms\":%.2f,\"daemon_1client_jobs_s\":%.3f,\"daemon_1client_p50_ms\":%.2f,"
        "\"engine_seq_jobs_s\":%.3f,\"engine_seq_p50_ms\":%.2f,\"errors\":%d}\n",
        dm.jobs_s(), pct(dm.lat, 0.5), pct(dm.lat, 0.99), ib.jobs_s(), pct(ib.lat, 0.5), d1.jobs_s(),
        pct(d1.lat, 0.5), i1.jobs_s(), pct(i1.lat, 0.5), errors.load());
    return errors ? 1 : 0;
}
