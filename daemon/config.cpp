// Configuration loading: TOML (toml++) then CLI11 overrides, from one table of the file's keys
// (kKeys: parsing, unknown keys, reload); validation of ranges and of endpoints for the insecure
// development mode (ipc and loopback only); SIGHUP reload.
#include "daemon/config.h"

#include "engine/version.h"

#include <CLI/CLI.hpp>
#include <toml++/toml.h>

#include <cstdlib>
#include <filesystem>
#include <limits>
#include <optional>
#include <string_view>
#include <type_traits>
#include <variant>

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

using Field = std::variant<std::string Config::*, bool Config::*, uint32_t Config::*, uint64_t Config::*,
                           std::vector<std::string> Config::*>;
struct Key {
    const char* section;
    const char* name;
    Field field;
    bool reloadable; // SIGHUP applies it; a change to any other key needs a restart
};
// The one list of the config file's keys: parsing, the unknown-key check and reload use it.
const Key kKeys[] = {
    {"engine", "model", &Config::model, false},
    {"engine", "backend", &Config::backend, false},
    {"engine", "device", &Config::device, false},
    {"engine", "max_seqs", &Config::max_seqs, false},
    {"engine", "max_ctx", &Config::max_ctx, false},
    {"engine", "kv_cache", &Config::kv_cache, false},
    {"engine", "max_device_memory_mib", &Config::max_device_memory_mib, false},
    {"engine", "admission_window_us", &Config::admission_window_us, false},
    {"engine", "admission_quiet_us", &Config::admission_quiet_us, false},
    {"engine", "max_step_ms", &Config::max_step_ms, false},
    {"store", "db", &Config::db, false},
    {"store", "busy_timeout_ms", &Config::busy_timeout_ms, false},
    {"store", "write_retries", &Config::write_retries, false},
    {"server", "endpoints", &Config::endpoints, false},
    {"server", "insecure_dev", &Config::insecure_dev, false},
    {"server", "server_key_file", &Config::server_key_file, false},
    {"server", "zap_domain", &Config::zap_domain, false},
    {"server", "max_frame_bytes", &Config::max_frame_bytes, false},
    {"server", "max_pending", &Config::max_pending, true},
    {"server", "heartbeat_ms", &Config::heartbeat_ms, false},
    {"server", "handshake_ms", &Config::handshake_ms, false},
    {"server", "drain_timeout_s", &Config::drain_timeout_s, true},
    {"limits", "max_concurrent_jobs", &Config::max_concurrent_jobs, true},
    {"limits", "tokens_per_minute", &Config::tokens_per_minute, true},
};

std::string where(const std::string& file, const Key& k) {
    return file + ": [" + k.section + "] " + k.name;
}

void get(const toml::node& n, const Key& k, std::string& out, const std::string& file) {
    auto v = n.value<std::string>();
    if (!n.is_string() || !v)
        throw ConfigError(where(file, k) + " must be a string");
    out = *v;
}
void get(const toml::node& n, const Key& k, bool& out, const std::string& file) {
    if (!n.is_boolean())
        throw ConfigError(where(file, k) + " must be true or false");
    out = *n.value<bool>();
}
void get(const toml::node& n, const Key& k, std::vector<std::string>& out, const std::string& file) {
    const toml::array* arr = n.as_array();
    if (!arr)
        throw ConfigError(where(file, k) + " must be an array of strings");
    std::vector<std::string> v;
    for (auto& e : *arr) {
        if (!e.is_string())
            throw ConfigError(where(file, k) + " must be an array of strings");
        v.push_back(*e.value<std::string>());
    }
    out = std::move(v);
}
// Integers: a TOML integer (not 16.0) from 0 to T's maximum, never narrowed.
template <class T> void get(const toml::node& n, const Key& k, T& out, const std::string& file) {
    static_assert(std::is_unsigned_v<T>);
    std::optional<int64_t> v = n.is_integer() ? n.value<int64_t>() : std::nullopt;
    if (!v || *v < 0 || uint64_t(*v) > std::numeric_limits<T>::max())
        throw ConfigError(where(file, k) + " must be an integer from 0 to " +
                          std::to_string(std::numeric_limits<T>::max()));
    out = T(*v);
}

std::string keys_of(std::string_view section) {
    std::string s;
    for (const Key& k : kKeys)
        if (section == k.section)
            s += (s.empty() ? "" : ", ") + std::string(k.name);
    return s;
}

// Every top-level entry must be a known section and every key in it a known key.
void check_known(const toml::table& t, const std::string& file) {
    for (auto&& [sec, node] : t) {
        const std::string name(sec.str());
        std::string keys = keys_of(name);
        if (keys.empty() && node.is_table())
            throw ConfigError(file + ": unknown section [" + name +
                              "] (known: engine, store, server, limits)");
        if (keys.empty())
            throw ConfigError(file + ": unknown key '" + name + "' outside any section");
        if (!node.is_table())
            throw ConfigError(file + ": '" + name + "' must be a [" + name + "] section");
        for (auto&& [key, value] : *node.as_table()) {
            bool known = false;
            for (const Key& k : kKeys)
                known = known || (name == k.section && key.str() == k.name);
            if (!known)
                throw ConfigError(file + ": unknown key '" + std::string(key.str()) + "' in [" + name +
                                  "] (known: " + keys + ")");
        }
    }
}

// The command line's overrides on top of defaults + file, then the default endpoints.
void apply_cli(Config& c) {
    const CliOverrides& o = c.cli;
    auto set = [](auto& field, const auto& opt) {
        if (opt)
            field = *opt;
    };
    set(c.model, o.model);
    set(c.db, o.db);
    set(c.backend, o.backend);
    set(c.device, o.device);
    set(c.server_key_file, o.server_key_file);
    set(c.kv_cache, o.kv_cache);
    set(c.max_seqs, o.max_seqs);
    set(c.max_ctx, o.max_ctx);
    set(c.max_device_memory_mib, o.max_device_memory_mib);
    set(c.admission_window_us, o.admission_window_us);
    set(c.admission_quiet_us, o.admission_quiet_us);
    set(c.max_step_ms, o.max_step_ms);
    set(c.max_pending, o.max_pending);
    if (!o.endpoints.empty())
        c.endpoints = o.endpoints;
    if (o.insecure_dev)
        c.insecure_dev = true;
    if (c.endpoints.empty()) {
        const char* rt = std::getenv("RUNTIME_DIRECTORY");
        std::string dir = rt && *rt ? rt : "/run/prefixd";
        c.endpoints = {"ipc://" + dir + "/prefixd.sock", "tcp://127.0.0.1:5555"};
    }
}

void check_range(const char* key, uint64_t v, uint64_t lo, uint64_t hi, const char* why = "") {
    if (v < lo || v > hi)
        throw ConfigError(std::string(key) + " must be from " + std::to_string(lo) + " to " +
                          std::to_string(hi) + why + ", not " + std::to_string(v));
}
} // namespace

void apply_toml_file(const std::string& path, Config& c) {
    toml::table t;
    try {
        t = toml::parse_file(path);
    } catch (const toml::parse_error& e) {
        throw ConfigError(path + ": " + std::string(e.description()));
    }
    check_known(t, path);
    for (const Key& k : kKeys)
        if (const toml::node* n = t[k.section][k.name].node())
            std::visit([&](auto m) { get(*n, k, c.*m, path); }, k.field);
}

bool parse_config(int argc, char** argv, Config& c, int& exit_code) {
    CLI::App app{"prefixd — DeepSeek-architecture inference daemon (ZeroMQ + FlatBuffers)"};
    std::string config_file;
    CliOverrides o;
    app.add_option("-c,--config", config_file,
                   "TOML configuration file (default /etc/prefixd/prefixd.toml if present)");
    app.add_option("--model", o.model, "GGUF model file");
    app.add_option("--db", o.db, "SQLite database (adapters, tenants, ledger)");
    app.add_option("--endpoint", o.endpoints, "ZeroMQ endpoint to bind (repeatable)");
    app.add_flag("--insecure-dev", o.insecure_dev,
                 "development mode: no CURVE, tenant from the job; ipc/loopback only");
    app.add_option("--backend", o.backend, "engine backend")->check(CLI::IsMember({"cpu", "vulkan"}));
    app.add_option("--device", o.device, "Vulkan device index or name substring");
    app.add_option("--server-key-file", o.server_key_file, "CURVE server key file (public + secret)");
    app.add_option("--max-seqs", o.max_seqs, "concurrent sequences in the engine");
    app.add_option("--max-ctx", o.max_ctx, "per-sequence context limit");
    app.add_option("--kv-cache", o.kv_cache, "latent KV cache element type: f32 or f16 (half the memory)")
        ->check(CLI::IsMember({"f32", "f16"}));
    app.add_option("--max-device-memory-mib", o.max_device_memory_mib,
                   "Vulkan: MiB the engine may allocate for weights, scratch and KV caches (0 = no cap)");
    app.add_option("--admission-window-us", o.admission_window_us,
                   "idle engine: longest wait for more jobs before the first step (0 = off)");
    app.add_option("--admission-quiet-us", o.admission_quiet_us,
                   "idle engine: start the step once no job arrived for this long");
    app.add_option("--max-step-ms", o.max_step_ms,
                   "while jobs generate, prefill rows per step are cut to keep a step within this (0 = off)");
    app.add_option("--max-pending", o.max_pending, "jobs admitted and not finished before Busy");
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
    c.cli = std::move(o);
    apply_cli(c);
    return true;
}

std::vector<std::string> reload_config(Config& c) {
    if (c.config_file.empty())
        return {};
    Config fresh;
    fresh.config_file = c.config_file;
    fresh.cli = c.cli;
    apply_toml_file(c.config_file, fresh);
    apply_cli(fresh);
    validate_config(fresh);
    // Valid: copy the reloadable keys, name the changed ones that need a restart.
    std::vector<std::string> restart;
    for (const Key& k : kKeys)
        std::visit(
            [&](auto m) {
                if (k.reloadable)
                    c.*m = fresh.*m;
                else if (c.*m != fresh.*m)
                    restart.push_back(k.name);
            },
            k.field);
    return restart;
}

void validate_config(const Config& c) {
    if (c.model.empty())
        throw ConfigError("no model: pass --model FILE or set [engine] model");
    if (c.db.empty())
        throw ConfigError("no database: pass --db FILE or set [store] db");
    if (c.backend != "cpu" && c.backend != "vulkan")
        throw ConfigError("backend must be \"cpu\" or \"vulkan\", not \"" + c.backend + "\"");
    check_range("max_seqs", c.max_seqs, 1, 65535);
    check_range("max_ctx", c.max_ctx, 8, 16777216);
    if (c.kv_cache != "f32" && c.kv_cache != "f16")
        throw ConfigError("kv_cache must be \"f32\" or \"f16\", not \"" + c.kv_cache + "\"");
    check_range("admission_window_us", c.admission_window_us, 0, 1'000'000, " (1 s)");
    check_range("admission_quiet_us", c.admission_quiet_us, 0, 1'000'000, " (1 s)");
    check_range("max_step_ms", c.max_step_ms, 0, 3'600'000, " (1 h; 0 = off)");
    check_range("busy_timeout_ms", c.busy_timeout_ms, 0, 600'000, " (10 min)");
    check_range("write_retries", c.write_retries, 0, 1000);
    if (c.max_frame_bytes < 1024)
        throw ConfigError("max_frame_bytes must be >= 1024");
    check_range("max_pending", c.max_pending, 1, std::numeric_limits<uint32_t>::max(),
                " (0 would answer every job Busy)");
    check_range("heartbeat_ms", c.heartbeat_ms, 0, 600'000, " (10 min; 0 = off)");
    check_range("handshake_ms", c.handshake_ms, 1, 600'000, " (10 min)");
    check_range("drain_timeout_s", c.drain_timeout_s, 0, 3600, " (1 h)");
    for (auto& ep : c.endpoints) {
        if (ep.find("tcp://*") == 0 || ep.find("tcp://0.0.0.0") == 0)
            if (c.insecure_dev)
                throw ConfigError("insecure dev mode refuses wildcard endpoint " + ep);
        if (c.insecure_dev && !is_local_endpoint(ep))
            throw ConfigError("insecure dev mode allows only ipc:// and loopback tcp endpoints, not " + ep);
    }
}

} // namespace prefixd::daemon
