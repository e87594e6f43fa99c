// The ZeroMQ I/O loop: one ROUTER (ROUTER_MANDATORY, DONTWAIT sends, heartbeats, MAXMSGSIZE,
// CURVE behind the ZAP handler or insecure dev mode), admission (verify, tenant, limits, adapter,
// duplicates, queue bound), dispatch to the engine thread, replies, and billing through the
// group-commit ledger writer (the row commits before the final Result is sent).
#pragma once

#include "daemon/config.h"
#include "daemon/message.h"

#include <memory>

namespace prefixd {
class Engine;
}

namespace prefixd::daemon {

class Server {
  public:
    // Opens the store, binds the ZAP handler (CURVE mode) and then the ROUTER endpoints.
    // Throws std::runtime_error / ConfigError / store errors with context.
    Server(Config cfg, Engine& engine);
    ~Server();
    // Serves until SIGTERM/SIGINT (then drains) or a fatal error. Returns the exit code.
    // Signals must already be blocked in every thread (see block_signals()).
    int run();

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (call before starting any thread);
// the server reads them from a signalfd.
void block_signals();

std::string base64_encode(const std::vector<uint8_t>& in);
std::vector<uint8_t> base64_decode(const std::string& in); // empty on invalid input

} // namespace prefixd::daemon
