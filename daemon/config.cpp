// Configuration loading: TOML (toml++) then CLI11 overrides; validation of endpoints for the
// insecure development mode (ipc and loopback only).
#include "daemon/config.h"

#include "engine/version.h"

#include <CLI/CLI.hpp>
#include <toml++/toml.h>

#include <cstdlib>
#include <filesystem>
#include <optional>

namespace prefixd::daemon {

bool is_local_endpoint(const std::string& ep) {
    if (ep.rfind("ipc://", 0) == 0)
        return true;
    if (ep.rfind("tcp://", 0) != 0)
        return false;
    std::string host = ep.substr(6);
    if (host.rfind("127.", 0) == 0 || host.rfind("localhost:", 0) == 0 || host.rfind("[::1]:", 0) == 0)
        return true;
    return false;
}

namespace {
template <class T>
void get(const toml::table& t, const char* section, const char* key, T& out, const std::string& file) {
    const toml::node* n = t.at_path(std::string(section) + "." + key).node();
    if (!n)
        return;
    if constexpr (std::is_same_v<T, std::string>) {
        if (auto v = n->value<std::string>()) {
            out = *v;
            return;
        }
    } else if constexpr (std::is_same_v<T, bool>) {
        if (auto v = n->value<bool>()) {
            out = *v;
            return;
        }
    } else {
        if (auto v = n->value<int64_t>(); v && *v >= 0) {
            out = T(*v);
            return;
        }
    }
    throw ConfigError(file + ": [" + section + "] " + key + " has the wrong type or range");
}
} // namespace

void apply_toml_file(const std::string& path, Config& c) {
    toml::table t;
    try {
        t = toml::parse_file(path);
    } catch (const toml::parse_error& e) {
        throw ConfigError(path + ": " + std::string(e.description()));
    }
    get(t, "engine", "model", c.model, path);
    get(t, "engine", "backend", c.backend, path);
    get(t, "engine", "device", c.device, path);
    get(t, "engine", "max_seqs", c.max_seqs, path);
    get(t, "engine", "max_ctx", c.max_ctx, path);
    get(t, "engine", "kv_cache", c.kv_cache, path);
    get(t, "engine", "max_device_memory_mib", c.max_device_memory_mib, path);
    get(t, "engine", "admission_window_us", c.admission_window_us, path);
    get(t, "engine", "admission_quiet_us", c.admission_quiet_us, path);
    get(t, "store", "db", c.db, path);
    get(t, "store", "busy_timeout_ms", c.busy_timeout_ms, path);
    get(t, "store", "write_retries", c.write_retries, path);
    if (auto* arr = t.at_path("server.endpoints").as_array()) {
        c.endpoints.clear();
        for (auto& e : *arr) {
            auto v = e.value<std::string>();
            if (!v)
                throw ConfigError(path + ": [server] endpoints must be strings");
            c.endpoints.push_back(*v);
        }
    }
    get(t, "server", "insecure_dev", c.insecure_dev, path);
    get(t, "server", "server_key_file", c.server_key_file, path);
    get(t, "server", "zap_domain", c.zap_domain, path);
    get(t, "server", "max_frame_bytes", c.max_frame_bytes, path);
    get(t, "server", "max_pending", c.max_pending, path);
    get(t, "server", "heartbeat_ms", c.heartbeat_ms, path);
    get(t, "server", "handshake_ms", c.handshake_ms, path);
    get(t, "server", "drain_timeout_s", c.drain_timeout_s, path);
    get(t, "limits", "max_concurrent_jobs", c.max_concurrent_jobs, path);
    get(t, "limits", "tokens_per_minute", c.tokens_per_minute, path);
}

bool parse_config(int argc, char** argv, Config& c, int& exit_code) {
    CLI::App app{"prefixd — DeepSeek-architecture inference daemon (ZeroMQ + FlatBuffers)"};
    std::string config_file, model, db, backend, device, key_file;
    std::vector<std::string> endpoints;
    bool insecure = false;
    uint32_t max_seqs = 0, max_ctx = 0, max_pending = 0;
    std::string kv_cache;
    std::optional<uint32_t> window_us, quiet_us, device_mib;
    app.add_option("-c,--config", config_file,
                   "TOML configuration file (default /etc/prefixd/prefixd.toml if present)");
    app.add_option("--model", model, "GGUF model file");
    app.add_option("--db", db, "SQLite database (adapters, tenants, ledger)");
    app.add_option("--endpoint", endpoints, "ZeroMQ endpoint to bind (repeatable)");
    app.add_flag("--insecure-dev", insecure,
                 "development mode: no CURVE, tenant from the job; ipc/loopback only");
    app.add_option("--backend", backend, "engine backend")->check(CLI::IsMember({"cpu", "vulkan"}));
    app.add_option("--device", device, "Vulkan device index or name substring");
    app.add_option("--server-key-file", key_file, "CURVE server key file (public + secret)");
    app.add_option("--max-seqs", max_seqs, "concurrent sequences in the engine");
    app.add_option("--max-ctx", max_ctx, "per-sequence context limit");
    app.add_option("--kv-cache", kv_cache, "latent KV cache element type: f32 or f16 (half the memory)")
        ->check(CLI::IsMember({"f32", "f16"}));
    app.add_option("--max-device-memory-mib", device_mib,
                   "Vulkan: MiB the engine may allocate for weights, scratch and KV caches (0 = no cap)");
    app.add_option("--admission-window-us", window_us,
                   "idle engine: longest wait for more jobs before the first step (0 = off)");
    app.add_option("--admission-quiet-us", quiet_us,
                   "idle engine: start the step once no job arrived for this long");
    app.add_option("--max-pending", max_pending, "jobs admitted and not finished before Busy");
    app.set_version_flag("--version", std::string("prefixd ") + prefixd::version());
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        exit_code = app.exit(e);
        return false;
    }
    if (config_file.empty() && std::filesystem::exists("/etc/prefixd/prefixd.toml"))
        config_file = "/etc/prefixd/prefixd.toml";
    if (!config_file.empty()) {
        apply_toml_file(config_file, c);
        c.config_file = config_file;
    }
    if (!model.empty())
        c.model = model;
    if (!db.empty())
        c.db = db;
    if (!endpoints.empty())
        c.endpoints = endpoints;
    if (insecure)
        c.insecure_dev = true;
    if (!backend.empty())
        c.backend = backend;
    if (!device.empty())
        c.device = device;
    if (!key_file.empty())
        c.server_key_file = key_file;
    if (max_seqs)
        c.max_seqs = max_seqs;
    if (max_ctx)
        c.max_ctx = max_ctx;
    if (!kv_cache.empty())
        c.kv_cache = kv_cache;
    if (device_mib)
        c.max_device_memory_mib = *device_mib;
    if (max_pending)
        c.max_pending = max_pending;
    if (window_us)
        c.admission_window_us = *window_us;
    if (quiet_us)
        c.admission_quiet_us = *quiet_us;
    if (c.endpoints.empty()) {
        const char* rt = std::getenv("RUNTIME_DIRECTORY");
        std::string dir = rt && *rt ? rt : "/run/prefixd";
        c.endpoints = {"ipc://" + dir + "/prefixd.sock", "tcp://127.0.0.1:5555"};
    }
    return true;
}

void reload_config(Config& c) {
    if (c.config_file.empty())
        return;
    Config fresh = c;
    apply_toml_file(c.config_file, fresh);
    c.max_concurrent_jobs = fresh.max_concurrent_jobs;
    c.tokens_per_minute = fresh.tokens_per_minute;
    c.max_pending = fresh.max_pending;
    c.drain_timeout_s = fresh.drain_timeout_s;
}

void validate_config(const Config& c) {
    if (c.model.empty())
        throw ConfigError("no model: pass --model FILE or set [engine] model");
    if (c.db.empty())
        throw ConfigError("no database: pass --db FILE or set [store] db");
    if (c.max_seqs == 0 || c.max_ctx < 8)
        throw ConfigError("max_seqs must be > 0 and max_ctx >= 8");
    if (c.kv_cache != "f32" && c.kv_cache != "f16")
        throw ConfigError("kv_cache must be \"f32\" or \"f16\", not \"" + c.kv_cache + "\"");
    if (c.admission_window_us > 1'000'000 || c.admission_quiet_us > 1'000'000)
        throw ConfigError("admission_window_us and admission_quiet_us must be at most 1000000 (1 s)");
    if (c.max_frame_bytes < 1024)
        throw ConfigError("max_frame_bytes must be >= 1024");
    for (auto& ep : c.endpoints) {
        if (ep.find("tcp://*") == 0 || ep.find("tcp://0.0.0.0") == 0)
            if (c.insecure_dev)
                throw ConfigError("insecure dev mode refuses wildcard endpoint " + ep);
        if (c.insecure_dev && !is_local_endpoint(ep))
            throw ConfigError("insecure dev mode allows only ipc:// and loopback tcp endpoints, not " + ep);
    }
}

} // namespace prefixd::daemon
