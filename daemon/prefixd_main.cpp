// prefixd: config → store and key check → engine (model load, EXTEND_TIMEOUT_USEC while loading) →
// server (ZAP handler, then ROUTER) → READY=1 → serve → STOPPING=1, drain, ledger flushed.
#include "adapters_store/curve_keys.h"
#include "adapters_store/store.h"
#include "daemon/config.h"
#include "daemon/log.h"
#include "daemon/notify.h"
#include "daemon/server.h"
#include "engine/engine.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <malloc.h>
#include <thread>

using namespace prefixd;
using namespace prefixd::daemon;

// Keeps systemd's start timeout extended while the model loads (big GGUFs take minutes), and
// answers a stop meanwhile: SIGTERM/SIGINT (blocked in every thread, see block_signals) are taken
// here, and the process exits at once. The load cannot be interrupted, and nothing needs saving
// before READY (the ledger is opened after it); without this a stop waited for the whole load, and
// the timeout extensions kept a hung load "activating" past both start and stop timeouts.
class LoadTicker {
  public:
    LoadTicker() {
        notify_extend_timeout(60'000'000);
        t_ = std::thread([this] {
            sigset_t stop;
            sigemptyset(&stop);
            sigaddset(&stop, SIGTERM);
            sigaddset(&stop, SIGINT);
            const timespec tick{1, 0};
            for (int s = 1; !done_.load(); ++s) {
                siginfo_t info;
                if (sigtimedwait(&stop, &info, &tick) > 0) {
                    PLOG_INFO("signal %d while loading the model: exiting without serving", info.si_signo);
                    notify_stopping("stopped while loading the model");
                    std::_Exit(0);
                }
                if (s % 10 == 0)
                    notify_extend_timeout(60'000'000);
            }
        });
    }
    ~LoadTicker() {
        done_ = true;
        t_.join();
    }

  private:
    std::atomic<bool> done_{false};
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
    // What can be checked without the model is checked before loading it, as a configuration error
    // (exit 2, which the unit does not restart): an unreadable or foreign database, a missing or
    // unreadable server key. Found after a load of minutes, each was an exit 1 and a restart loop.
    try {
        store::Store::open(cfg.db);
        if (!cfg.insecure_dev && store::read_key_file(cfg.server_key_file).secret_key.empty())
            throw ConfigError(cfg.server_key_file + ": no secret key (server key file needs both)");
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
            // PREFIXD_FAULT_LOAD_MS=N (tests of a stop during the load): the load takes N ms longer
            if (const char* f = std::getenv("PREFIXD_FAULT_LOAD_MS"))
                std::this_thread::sleep_for(std::chrono::milliseconds(std::strtoull(f, nullptr, 10)));
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
