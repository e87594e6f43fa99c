// prefixctl: admin and client CLI for prefixd (adapters, tenants, ledger, submit, local run,
// tokenize, bench). Subcommands live in cli_<area>.cpp files and register themselves.
#include "cli.h"

#include <cstdio>
#include <exception>

namespace prefixd::cli {
std::vector<Registrar>& registry() {
    static std::vector<Registrar> r;
    return r;
}
}  // namespace prefixd::cli

int main(int argc, char** argv) {
    using namespace prefixd::cli;
    CLI::App app{"prefixctl — admin and client tool for the prefixd inference daemon"};
    app.require_subcommand(1);
    Globals g;
    if (const char* env = std::getenv("PREFIXD_DB")) g.db = env;
    app.add_option("--db", g.db, "SQLite database shared with prefixd (env PREFIXD_DB)");
    for (auto& r : registry()) r(app, g);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    } catch (const CliFailure& e) {
        std::fprintf(stderr, "prefixctl: %s\n", e.what());
        return e.code;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "prefixctl: %s\n", e.what());
        return 1;
    }
    return 0;
}
