// ZAP handler (RFC 27) for CURVE: a thread with a REP socket on inproc://zeromq.zap.01, bound
// before any CURVE socket exists (libzmq fails open without one). Maps the client's public key to
// an active tenant in the store; answers 200 with User-Id = tenant name, else 400. The domain
// must match the configured one. If the thread dies, `alive()` turns false: the daemon exits.
#pragma once

#include <atomic>
#include <string>
#include <thread>

namespace prefixd::daemon {

class ZapHandler {
  public:
    // Binds the REP socket now (throws std::runtime_error on failure), then serves on a thread.
    ZapHandler(void* zmq_ctx, std::string db_path, std::string domain);
    ~ZapHandler(); // stops and joins
    bool alive() const { return alive_.load(); }
    uint64_t accepted() const { return accepted_.load(); }
    uint64_t refused() const { return refused_.load(); }

  private:
    void run() noexcept;
    void* sock_ = nullptr;
    void* ctx_;
    std::string db_path_, domain_;
    std::atomic<bool> stop_{false}, alive_{true};
    std::atomic<uint64_t> accepted_{0}, refused_{0};
    std::thread thread_;
};

} // namespace prefixd::daemon
