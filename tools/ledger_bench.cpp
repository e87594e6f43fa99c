// ledger_bench: committed ledger rows per second with synchronous=FULL on a temporary file, for
// one row per transaction, group commits of fixed size, and the LedgerWriter fed by concurrent
// producers (accept + settle per job, as the daemon does). Usage: ledger_bench [--rows N] [--dir D]
#include "adapters_store/ledger_writer.h"
#include "adapters_store/store.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <unistd.h>

using namespace prefixd::store;
namespace fs = std::filesystem;

namespace {

double secs_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string nm(const char* prefix, int i) { // avoids GCC 12's -Wrestrict false positive
    std::string s(prefix);
    s += std::to_string(i);
    return s;
}

JobSettle row(int tenant, const std::string& id) {
    JobSettle s;
    s.tenant = nm("tenant", tenant);
    s.job_id = id;
    s.status = JobStatus::Done;
    s.virtual_tokens = 8, s.prompt_tokens = 40, s.completion_tokens = 16;
    s.finish_reason = "stop";
    s.kind = "generate", s.model = "bench";
    return s;
}

std::string fresh(const fs::path& dir, const char* name) {
    fs::path p = dir / name;
    for (const char* suf : {"", "-wal", "-shm"})
        fs::remove(p.string() + suf);
    Store s = Store::open(p.string());
    for (int t = 0; t < 16; ++t)
        s.add_tenant({nm("tenant", t), {}, 0, 0});
    return p.string();
}

} // namespace

int main(int argc, char** argv) {
    int rows = 20000;
    fs::path dir = fs::temp_directory_path() / ("ledger-bench-" + std::to_string(::getpid()));
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--rows") && i + 1 < argc)
            rows = std::max(100, std::atoi(argv[++i]));
        else if (!std::strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else {
            std::fprintf(stderr, "usage: ledger_bench [--rows N] [--dir DIR]\n");
            return 2;
        }
    }
    fs::create_directories(dir);
    std::printf("ledger_bench: synchronous=FULL, WAL, dir %s\n", dir.c_str());
    try {
        { // one row per transaction (no group commit), a small sample
            Store s = Store::open(fresh(dir, "single.db"));
            int n = std::min(rows, 500);
            auto t0 = std::chrono::steady_clock::now();
            for (int i = 0; i < n; ++i)
                s.settle_job(row(i % 16, nm("s", i)));
            double dt = secs_since(t0);
            std::printf("  1 row/transaction:          %8.0f rows/s  (%d rows, %.2f s)\n", n / dt, n, dt);
        }
        for (int batch : {100, 1000}) {
            Store s = Store::open(fresh(dir, "batch.db"));
            auto t0 = std::chrono::steady_clock::now();
            for (int i = 0; i < rows; i += batch) {
                std::vector<JobSettle> v;
                for (int k = i; k < std::min(rows, i + batch); ++k)
                    v.push_back(row(k % 16, nm("b", k)));
                s.settle_jobs(v);
            }
            double dt = secs_since(t0);
            std::printf("  group commit, %4d rows/tx: %8.0f rows/s  (%d rows, %.2f s)\n", batch, rows / dt,
                        rows, dt);
        }
        { // the daemon's path: producers submit accept then settle per job through the writer
            std::string path = fresh(dir, "writer.db");
            LedgerWriter w(path);
            const int producers = 8;
            auto t0 = std::chrono::steady_clock::now();
            std::vector<std::thread> th;
            for (int p = 0; p < producers; ++p)
                th.emplace_back([&, p] {
                    std::vector<std::future<SettleOutcome>> pending;
                    for (int i = p; i < rows; i += producers) {
                        JobSettle s = row(i % 16, nm("w", i));
                        JobAccept a;
                        a.tenant = s.tenant, a.job_id = s.job_id, a.kind = "generate", a.model = "bench";
                        w.accept(a);
                        pending.push_back(w.settle(s));
                        if (pending.size() >= 256) { // bounded in-flight, like a real engine
                            for (auto& f : pending)
                                f.get();
                            pending.clear();
                        }
                    }
                    for (auto& f : pending)
                        f.get();
                });
            for (auto& t : th)
                t.join();
            w.flush();
            double dt = secs_since(t0);
            std::printf(
                "  LedgerWriter, %d producers:  %8.0f jobs/s = %.0f committed rows/s  (%llu writes in %llu "
                "transactions, %.2f s)\n",
                producers, rows / dt, 2 * rows / dt, (unsigned long long)w.committed_rows(),
                (unsigned long long)w.transactions(), dt);
            Store check = Store::open(path);
            auto sum = check.summary();
            uint64_t jobs = 0;
            for (auto& t : sum)
                jobs += t.jobs;
            if (jobs != uint64_t(rows) || !check.integrity_check().empty()) {
                std::fprintf(stderr, "ledger_bench: verification failed (%llu rows)\n",
                             (unsigned long long)jobs);
                return 1;
            }
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ledger_bench: %s\n", e.what());
        return 1;
    }
    fs::remove_all(dir);
    return 0;
}
