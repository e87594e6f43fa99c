// prefixd configuration: a TOML file (default /etc/prefixd/prefixd.toml when it exists) with
// command-line overrides. `prefixd --model F --db F --endpoint E [--insecure-dev]` is enough.
// Sections: [engine] model backend device max_seqs max_ctx kv_cache max_device_memory_mib admission_window_us
// admission_quiet_us; [store] db busy_timeout_ms
// write_retries; [server] endpoints
// insecure_dev server_key_file zap_domain max_frame_bytes max_pending heartbeat_ms drain_timeout_s;
// [limits] max_concurrent_jobs tokens_per_minute (defaults for tenants whose own limit is 0).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace prefixd::daemon {

struct ConfigError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Config {
    std::string config_file; // "" = none
    // [engine]
    std::string model;
    std::string backend = "vulkan";
    std::string device;
    uint32_t max_seqs = 16;
    uint32_t max_ctx = 4096;
    std::string kv_cache = "f32"; // latent KV cache element type: "f32" or "f16" (half the memory)
    uint32_t max_device_memory_mib = 0; // Vulkan: cap on weights + scratch + KV caches (0 = none)
    // Admission coalescing on an idle engine (EngineWorker's AdmissionWindow): the first step waits
    // for the jobs that finished jobs' clients are expected to send (window_us), or for a quiet gap
    // (quiet_us) after unexpected ones. admission_window_us = 0 disables it.
    uint32_t admission_window_us = 20000;
    uint32_t admission_quiet_us = 400;
    // [store]
    std::string db = "/var/lib/prefixd/prefixd.db";
    uint32_t busy_timeout_ms = 5000; // ledger writer: sqlite busy timeout per attempt
    uint32_t write_retries = 8;      // ledger writer: attempts before "billing unavailable"
    // [server]
    std::vector<std::string>
        endpoints; // default: ipc://$RUNTIME_DIRECTORY/prefixd.sock, tcp://127.0.0.1:5555
    bool insecure_dev = false;
    std::string server_key_file = "/etc/prefixd/server.key";
    std::string zap_domain = "prefixd";
    uint64_t max_frame_bytes = 64ull << 20; // ZMQ_MAXMSGSIZE and our own cap
    uint32_t max_frames = 4;                // frames per message (incl. routing id)
    uint32_t max_pending = 256;             // jobs admitted and not finished (queue bound)
    uint32_t heartbeat_ms = 5000;
    uint32_t handshake_ms = 5000;
    uint32_t drain_timeout_s = 20;
    // [limits]
    uint32_t max_concurrent_jobs = 0; // 0 = unlimited
    uint64_t tokens_per_minute = 0;   // 0 = unlimited
};

// Parses argv (CLI11) and the config file. Returns false with `exit_code` set when the process
// should exit right away (--help, --version, parse error; the message is already printed).
bool parse_config(int argc, char** argv, Config& out, int& exit_code);
// Re-reads the file (SIGHUP): updates the reloadable fields (limits, max_pending, drain) of `cfg`.
void reload_config(Config& cfg);
// Applies a TOML file onto cfg (throws ConfigError naming the file and key).
void apply_toml_file(const std::string& path, Config& cfg);
// Checks consistency (model/db set, endpoints allowed in insecure mode). Throws ConfigError.
void validate_config(const Config& cfg);
// True for ipc:// and loopback tcp endpoints (127.0.0.0/8, [::1], localhost).
bool is_local_endpoint(const std::string& ep);

} // namespace prefixd::daemon
