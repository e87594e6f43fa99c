// prefixctl subcommand registry: each cli_<area>.cpp registers its subcommands on the shared
// CLI11 app through a static CliModule, so areas stay in their own files.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace prefixd::cli {

// Options common to every subcommand (set before the subcommand on the command line).
struct Globals {
    std::string db = "/var/lib/prefixd/prefixd.db";  // --db
};

// A module adds subcommands to `app`; callbacks run after parsing with `g` filled in.
using Registrar = std::function<void(CLI::App& app, const Globals& g)>;
std::vector<Registrar>& registry();

struct CliModule {
    explicit CliModule(Registrar r) { registry().push_back(std::move(r)); }
};

// Thrown by subcommands for a user-facing failure: printed as "prefixctl: <message>", exit code.
struct CliFailure : std::runtime_error {
    int code;
    CliFailure(const std::string& m, int c = 1) : std::runtime_error(m), code(c) {}
};

}  // namespace prefixd::cli
