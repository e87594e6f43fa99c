// prefixd configuration: a TOML file (default /etc/prefixd/prefixd.toml when it exists) with
// command-line overrides. `prefixd --model F --db F --endpoint E [--insecure-dev]` is enough.
// The sections and keys are one table in config.cpp (kKeys); an unknown section or key, a value of
// the wrong type or out of its range is a ConfigError. SIGHUP re-reads the file (reload_config):
// [limits] max_concurrent_jobs tokens_per_minute, [server] max_pending drain_timeout_s take effect.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace prefixd::daemon {

struct ConfigError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// What the command line set (parse_config keeps it in Config so that a reload applies it again
// over the re-read file). An empty optional or vector: not given.
struct CliOverrides {
    std::optional<std::string> model, db, backend, device, server_key_file, kv_cache;
    std::vector<std::string> endpoints;
    bool insecure_dev = false; // --insecure-dev given
    std::optional<uint32_t> max_seqs, max_ctx, max_device_memory_mib, admission_window_us, admission_quiet_us,
        max_pending, max_step_ms;
};

struct Config {
    std::string config_file; // "" = none
    CliOverrides cli;
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
    // While jobs are generating, a step takes only the prefill rows that keep it within this many
    // ms (RunnerOptions::max_step_seconds), so their streams do not stall behind a long prompt's
    // chunk; 0 = chunks of the engine's full row budget.
    uint32_t max_step_ms = 2000;
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
// Re-reads the file (SIGHUP) as defaults + file + the command line's overrides (cfg.cli) and
// validates the result; only then updates the reloadable fields of `cfg` (max_concurrent_jobs,
// tokens_per_minute, max_pending, drain_timeout_s). Returns the keys whose value changed but that
// need a restart (e.g. {"model", "max_seqs"}), in table order. Throws ConfigError (cfg untouched)
// when the file does not parse or validate. Does nothing without a config file.
std::vector<std::string> reload_config(Config& cfg);
// Applies a TOML file onto cfg (throws ConfigError naming the file, section and key; unknown
// sections and keys are refused).
void apply_toml_file(const std::string& path, Config& cfg);
// Checks consistency and ranges (model/db set, each numeric key in its range, backend and kv_cache
// names, endpoints allowed in insecure mode). Throws ConfigError naming the key and its range.
void validate_config(const Config& cfg);
// True for ipc:// and loopback tcp endpoints (127.0.0.0/8, [::1], localhost).
bool is_local_endpoint(const std::string& ep);

} // namespace prefixd::daemon
