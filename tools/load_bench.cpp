// load_bench: jobs/s and p50/p99 latency of short Generate jobs sent by N concurrent clients to a
// running prefixd (insecure dev mode), beside the same jobs run in-process through the engine
// alone: back-to-back (one at a time) and all submitted to one Runner (batched, the daemon's way).
// Usage: load_bench --endpoint E --model F [--backend cpu|vulkan] [--clients 16] [--jobs 8] [-n 4]
#include "daemon/client.h"
#include "engine/runner.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
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
static std::string prompt_of(int c, int j) {
    return "Request " + std::to_string(c) + "." + std::to_string(j) + ": say hello";
}

int main(int argc, char** argv) {
    CLI::App app{"prefixd load benchmark"};
    std::string endpoint, model, backend = "cpu", tenant = "bench";
    int clients = 16, jobs = 8, n = 4;
    app.add_option("--endpoint", endpoint, "running prefixd (insecure dev mode)")->required();
    app.add_option("--model", model, "same GGUF the daemon serves (in-process baseline)")->required();
    app.add_option("--backend", backend, "engine backend for the in-process baseline");
    app.add_option("--clients", clients, "concurrent clients");
    app.add_option("--jobs", jobs, "jobs per client");
    app.add_option("-n", n, "tokens per job");
    app.add_option("--tenant", tenant, "tenant name");
    CLI11_PARSE(app, argc, argv);

    // ---- daemon
    std::mutex mu;
    std::vector<double> lat;
    std::atomic<int> errors{0};
    std::string run_tag = std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
    auto t0 = Clock::now();
    std::vector<std::thread> th;
    for (int c = 0; c < clients; ++c)
        th.emplace_back([&, c] {
            ClientOptions o;
            o.endpoint = endpoint;
            Client cl(o);
            for (int j = 0; j < jobs; ++j) {
                JobRequest r;
                r.job_id = "lb-" + run_tag + "-" + std::to_string(c) + "-" + std::to_string(j);
                r.text = prompt_of(c, j);
                r.max_tokens = n;
                r.tenant = tenant;
                auto s = Clock::now();
                auto out = cl.run(r, 600000);
                double ms = ms_since(s);
                if (out.final.type != Reply::Result)
                    ++errors;
                std::lock_guard lk(mu);
                lat.push_back(ms);
            }
        });
    for (auto& t : th)
        t.join();
    double daemon_s = ms_since(t0) / 1000;
    int total = clients * jobs;

    // ---- in-process
    EngineOptions eo;
    eo.model_path = model;
    eo.backend = backend;
    auto eng = Engine::open(eo);
    Runner runner(*eng);
    auto req = [&](int c, int j) {
        Request r;
        r.prompt = {
            Segment::from_tokens(eng->tokenizer().encode(prompt_of(c, j), eng->tokenizer().add_bos()))};
        r.max_tokens = uint32_t(n);
        return r;
    };
    std::vector<double> seq_lat;
    auto t1 = Clock::now();
    for (int c = 0; c < clients; ++c)
        for (int j = 0; j < jobs; ++j) {
            auto s = Clock::now();
            runner.run(req(c, j));
            seq_lat.push_back(ms_since(s));
        }
    double seq_s = ms_since(t1) / 1000;
    // Batched: the same concurrency as the daemon (clients jobs in flight, refilled as they finish).
    std::vector<double> bat_lat;
    auto t2 = Clock::now();
    std::map<RequestId, Clock::time_point> started;
    int next = 0;
    auto submit_one = [&] {
        int c = next % clients, j = next / clients;
        started[runner.submit(req(c, j))] = Clock::now();
        ++next;
    };
    while (next < clients && next < total)
        submit_one();
    while (!runner.idle()) {
        auto ev = runner.step();
        for (auto& [id, res] : ev.finished) {
            bat_lat.push_back(ms_since(started[id]));
            if (next < total)
                submit_one();
        }
    }
    double bat_s = ms_since(t2) / 1000;
    std::printf("load_bench: %d clients x %d jobs, %d tokens each, model %s (%s)\n", clients, jobs, n,
                eng->config().name.c_str(), backend.c_str());
    std::printf("  daemon              : %7.2f jobs/s  p50 %8.1f ms  p99 %8.1f ms  errors %d\n",
                total / daemon_s, pct(lat, 0.5), pct(lat, 0.99), errors.load());
    std::printf("  in-process batched  : %7.2f jobs/s  p50 %8.1f ms  p99 %8.1f ms\n", total / bat_s,
                pct(bat_lat, 0.5), pct(bat_lat, 0.99));
    std::printf("  in-process 1-by-1   : %7.2f jobs/s  p50 %8.1f ms  p99 %8.1f ms\n", total / seq_s,
                pct(seq_lat, 0.5), pct(seq_lat, 0.99));
    std::printf("  daemon overhead vs batched engine: %+.1f%% wall time\n", (daemon_s / bat_s - 1) * 100);
    std::printf("{\"daemon_jobs_s\":%.3f,\"daemon_p50_ms\":%.2f,\"daemon_p99_ms\":%.2f,\"engine_batched_jobs_"
                "s\":%.3f,"
                "\"engine_seq_jobs_s\":%.3f,\"errors\":%d}\n",
                total / daemon_s, pct(lat, 0.5), pct(lat, 0.99), total / bat_s, total / seq_s, errors.load());
    return errors ? 1 : 0;
}
