// prefixctl subcommand registry: each cli_<area>.cpp registers its subcommands on the shared
// CLI11 app through a static CliModule, so areas stay in their own files.
#pragma once

#include <CLI/CLI.hpp>

#include <algorithm>
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

// A decimal integer in [0, 2^64): CLI11 itself reads "-1" into an unsigned option as 2^64-1 and
// saturates values past the top, so seeds and the like are checked as text first.
inline CLI::Validator uint64_text() {
    return CLI::Validator(
        [](std::string& s) -> std::string {
            const std::string max = "18446744073709551615";
            if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos)
                return "'" + s + "' is not a non-negative integer";
            const std::string d = s.substr(std::min(s.find_first_not_of('0'), s.size() - 1));
            if (d.size() > max.size() || (d.size() == max.size() && d > max))
                return "'" + s + "' is larger than " + max;
            return {};
        },
        "UINT64");
}

// Thrown by subcommands for a user-facing failure: printed as "prefixctl: <message>", exit code.
struct CliFailure : std::runtime_error {
    int code;
    CliFailure(const std::string& m, int c = 1) : std::runtime_error(m), code(c) {}
};

}  // namespace prefixd::cli
