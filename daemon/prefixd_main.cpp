// prefixd: config → store check → engine (model load, EXTEND_TIMEOUT_USEC while loading) →
// server (ZAP handler, then ROUTER) → READY=1 → serve → STOPPING=1, drain, ledger flushed.
#include "daemon/config.h"
#include "daemon/log.h"
#include "daemon/notify.h"
#include "daemon/server.h"
#include "engine/engine.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <malloc.h>
#include <mutex>
#include <thread>

using namespace prefixd;
using namespace prefixd::daemon;

// Keeps systemd's start timeout extended while the model loads (big GGUFs take minutes).
class LoadTicker {
  public:
    LoadTicker() {
        notify_extend_timeout(60'000'000);
        t_ = std::thread([this] {
            std::unique_lock lk(mu_);
            while (!cv_.wait_for(lk, std::chrono::seconds(10), [this] { return done_; }))
                notify_extend_timeout(60'000'000);
        });
    }
    ~LoadTicker() {
        {
            std::lock_guard lk(mu_);
            done_ = true;
        }
        cv_.notify_all();
        t_.join();
    }

  private:
    std::mutex mu_;
    std::condition_variable cv_;
    bool done_ = false;
    std::thread t_;
};

int main(int argc, char** argv) {
    // The engine allocates large per-step buffers (logits: rows x vocab floats). glibc would mmap
    // and unmap them on every step (and trim its heaps), paying page faults each time; keeping
    // freed memory cut the engine time of short batched jobs by 15-35% (BENCHMARKS.md, Daemon).
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    log_init();
    block_signals(); // before any thread: SIGTERM/SIGHUP arrive through the server's signalfd
    Config cfg;
    int code = 0;
    try {
        if (!parse_config(argc, argv, cfg, code))
            return code;
        validate_config(cfg);
    } catch (const std::exception& e) {
        PLOG_ERR("configuration: %s", e.what());
        notify_status(std::string("configuration error: ") + e.what());
        return 2;
    }
    try {
        std::unique_ptr<Engine> engine;
        {
            notify_status("loading model " + cfg.model);
            PLOG_INFO("loading model %s on %s", cfg.model.c_str(), cfg.backend.c_str());
            LoadTicker ticker;
            EngineOptions eo;
            eo.model_path = cfg.model;
            eo.backend = cfg.backend;
            eo.device = cfg.device;
            eo.max_seqs = cfg.max_seqs;
            eo.max_ctx = cfg.max_ctx;
            eo.kv_f16 = cfg.kv_cache == "f16";
            eo.max_device_memory = uint64_t(cfg.max_device_memory_mib) << 20;
            eo.warm_up = true; // compile the device programs before READY, not during the first job
            engine = Engine::open(eo);
        }
        PLOG_INFO("model loaded on %s", engine->backend().device_name().c_str());
        notify_status("opening store " + cfg.db);
        Server server(cfg, *engine);
        return server.run();
    } catch (const std::exception& e) {
        PLOG_ERR("fatal: %s", e.what());
        notify_status(std::string("failed: ") + e.what());
        return 1;
    }
}
