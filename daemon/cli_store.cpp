// prefixctl subcommands for the SQLite store: `adapter add|list|show|rm|export`,
// `tenant add|list|show|revoke|limits`, `ledger [summary]`, `server-key generate` and
// `store check|reconcile`. Every bad input ends in "prefixctl: <message>" and a non-zero exit.
#include "cli.h"

#include "adapters_store/curve_keys.h"
#include "adapters_store/store.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sys/stat.h>
#include <unistd.h>

namespace prefixd::cli {
namespace {

using namespace prefixd::store;
using nlohmann::json;

// Read-only commands never create a database; writers create it (mode 0660) and migrate.
Store open_store(const Globals& g, bool create) {
    struct stat st {};
    if (!create && ::stat(g.db.c_str(), &st) != 0)
        throw CliFailure("database '" + g.db + "' does not exist (set --db or PREFIXD_DB)");
    StoreOptions o;
    o.create = create;
    return Store::open(g.db, o);
}

std::optional<std::string> opt(const std::string& s, const CLI::Option* o) {
    return o->count() ? std::optional<std::string>(s) : std::nullopt;
}

// Invalid UTF-8 in an old row becomes U+FFFD instead of failing the whole listing.
std::string dump(const json& j) {
    return j.dump(2, ' ', false, json::error_handler_t::replace);
}

// Text for a terminal table: printable UTF-8 as is; control characters, invalid UTF-8 and '\\'
// as \xNN, so that a stored value cannot forge table rows or send escape sequences.
std::string printable(const std::string& s) {
    std::string o;
    for (size_t i = 0; i < s.size();) {
        size_t n = s[i] == '\\' ? 0 : printable_utf8_len(s, i);
        if (n == 0) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", unsigned(uint8_t(s[i])));
            o += buf;
            n = 1;
        } else {
            o.append(s, i, n);
        }
        i += n;
    }
    return o;
}

// A tenant named with --tenant must exist (as `adapter list --tenant` and `ledger` require).
void require_tenant(Store& st, const std::string& name) {
    if (!st.find_tenant(name))
        throw CliFailure("no tenant named '" + name + "'");
}

json adapter_json(const AdapterInfo& a) {
    return {{"name", a.name},
            {"tenant", a.tenant ? json(*a.tenant) : json(nullptr)},
            {"version", a.version},
            {"n_virtual", a.n_virtual},
            {"hidden", a.hidden},
            {"dtype", dtype_name(a.dtype)},
            {"model_fingerprint", a.model_fingerprint ? json(*a.model_fingerprint) : json(nullptr)},
            {"sha256", a.sha256},
            {"description", a.description},
            {"created", format_time(a.created_ms)}};
}

void print_adapter(const AdapterInfo& a) {
    std::printf("name:              %s\nscope:             %s\nversion:           %lld\n"
                "shape:             %u x %u (%s, %llu bytes)\nmodel fingerprint: %s\nsha256:            %s\n"
                "description:       %s\ncreated:           %s\n",
                a.name.c_str(), a.tenant ? ("tenant " + *a.tenant).c_str() : "global", (long long)a.version,
                a.n_virtual, a.hidden, dtype_name(a.dtype), (unsigned long long)a.byte_size(),
                a.model_fingerprint ? printable(*a.model_fingerprint).c_str() : "-", a.sha256.c_str(),
                printable(a.description).c_str(), format_time(a.created_ms).c_str());
}

AdapterFormat detect_format(const std::string& path, const std::vector<uint8_t>& bytes) {
    if (auto f = format_from_path(path))
        return *f;
    if (bytes.size() >= 6 && bytes[0] == 0x93 && std::equal(bytes.begin() + 1, bytes.begin() + 6, "NUMPY"))
        return AdapterFormat::Npy;
    throw CliFailure("cannot tell the format of '" + path + "'; pass --format npy|safetensors|raw");
}

void register_adapter(CLI::App& app, const Globals& g) {
    auto* ad = app.add_subcommand("adapter", "Manage adapters (virtual-token embeddings)");
    ad->require_subcommand(1);

    struct AddArgs {
        std::string name, tenant, file, format, shape, tensor, description, fingerprint;
        bool global = false, replace = false;
    };
    auto a = std::make_shared<AddArgs>();
    auto* add = ad->add_subcommand("add", "Import an adapter from .npy, .safetensors or raw f32");
    add->add_option("name", a->name, "Adapter name")->required();
    auto* t_opt = add->add_option("--tenant", a->tenant, "Owning tenant");
    auto* g_opt = add->add_flag("--global", a->global, "Visible to every tenant");
    t_opt->excludes(g_opt);
    add->add_option("--file", a->file, "Input file")->required();
    add->add_option("--format", a->format, "npy | safetensors | raw (default: from the extension)");
    auto* shape_opt = add->add_option("--shape", a->shape, "N,H for raw files");
    auto* tensor_opt = add->add_option("--tensor", a->tensor, "Tensor name in a safetensors file");
    add->add_option("--description", a->description, "Free text");
    auto* fp_opt =
        add->add_option("--model-fingerprint", a->fingerprint, "Model the adapter was trained for");
    add->add_flag("--replace", a->replace, "Replace an existing adapter of that name (new version)");
    add->callback([&g, a, t_opt, g_opt, shape_opt, tensor_opt, fp_opt] {
        if (!t_opt->count() && !g_opt->count())
            throw CliFailure("adapter add: give --tenant T or --global");
        auto bytes = read_file_bytes(a->file);
        AdapterFormat fmt = a->format.empty() ? detect_format(a->file, bytes) : parse_format(a->format);
        std::optional<std::pair<uint64_t, uint64_t>> shape;
        if (shape_opt->count())
            shape = parse_shape(a->shape);
        if (fmt != AdapterFormat::Raw && shape)
            throw CliFailure("--shape applies only to raw files");
        if (fmt != AdapterFormat::Safetensors && tensor_opt->count())
            throw CliFailure("--tensor applies only to safetensors files");
        Tensor2D t;
        try {
            t = parse_adapter_file(bytes, fmt, shape, opt(a->tensor, tensor_opt));
        } catch (const AdapterFileError& e) {
            throw CliFailure("'" + a->file + "': " + e.what());
        }
        Store st = open_store(g, true);
        NewAdapter na{a->name,        AdapterScope{opt(a->tenant, t_opt)},
                      std::move(t),   opt(a->fingerprint, fp_opt),
                      a->description, a->replace};
        AdapterInfo info = st.add_adapter(na);
        std::printf("adapter '%s' added (%s, version %lld, %u x %u %s, sha256 %s)\n", info.name.c_str(),
                    info.tenant ? ("tenant " + *info.tenant).c_str() : "global", (long long)info.version,
                    info.n_virtual, info.hidden, dtype_name(info.dtype), info.sha256.c_str());
    });

    struct Args {
        std::string name, tenant, out;
        bool json = false, global = false;
    };
    auto l = std::make_shared<Args>();
    auto* list = ad->add_subcommand("list", "List adapters (all, or what one tenant can use)");
    auto* lt = list->add_option("--tenant", l->tenant, "Only what this tenant can use (own + global)");
    list->add_flag("--json", l->json, "JSON output");
    list->callback([&g, l, lt] {
        Store st = open_store(g, false);
        auto v = lt->count() ? st.list_adapters(l->tenant, true) : st.list_adapters({}, true, true);
        if (l->json) {
            json arr = json::array();
            for (auto& x : v)
                arr.push_back(adapter_json(x));
            std::cout << dump(arr) << "\n";
            return;
        }
        std::printf("%-24s %-16s %8s %6s %7s %-4s %-19s %s\n", "NAME", "SCOPE", "VERSION", "ROWS", "HIDDEN",
                    "TYPE", "CREATED", "DESCRIPTION");
        for (auto& x : v)
            std::printf("%-24s %-16s %8lld %6u %7u %-4s %-19s %s\n", x.name.c_str(),
                        x.tenant ? x.tenant->c_str() : "(global)", (long long)x.version, x.n_virtual,
                        x.hidden, dtype_name(x.dtype), format_time(x.created_ms).substr(0, 19).c_str(),
                        printable(x.description).c_str());
    });

    // show / rm / export: --tenant T looks in T's namespace (show/export fall back to global as a
    // job of T would); without it, the global namespace.
    auto s = std::make_shared<Args>();
    auto* show = ad->add_subcommand("show", "Show one adapter's metadata");
    show->add_option("name", s->name)->required();
    auto* st_opt = show->add_option("--tenant", s->tenant, "Tenant whose view to use");
    show->add_flag("--json", s->json, "JSON output");
    show->callback([&g, s, st_opt] {
        Store st = open_store(g, false);
        if (st_opt->count())
            require_tenant(st, s->tenant);
        auto info = st.find_adapter(opt(s->tenant, st_opt), s->name);
        if (!info)
            throw CliFailure("no adapter named '" + s->name + "'" +
                             (st_opt->count() ? " for tenant '" + s->tenant + "'" : " in global scope"));
        if (s->json)
            std::cout << dump(adapter_json(*info)) << "\n";
        else
            print_adapter(*info);
    });

    auto r = std::make_shared<Args>();
    auto* rm = ad->add_subcommand("rm", "Remove an adapter (running jobs keep their copy)");
    rm->add_option("name", r->name)->required();
    auto* rt = rm->add_option("--tenant", r->tenant, "Owning tenant (default: global)");
    rm->callback([&g, r, rt] {
        Store st = open_store(g, false);
        st.remove_adapter(AdapterScope{opt(r->tenant, rt)}, r->name);
        std::printf("adapter '%s' removed\n", r->name.c_str());
    });

    auto e = std::make_shared<Args>();
    auto* ex = ad->add_subcommand("export", "Write an adapter's embeddings to a .npy file");
    ex->add_option("name", e->name)->required();
    auto* et = ex->add_option("--tenant", e->tenant, "Tenant whose view to use");
    ex->add_option("--out", e->out, "Output .npy file")->required();
    ex->callback([&g, e, et] {
        Store st = open_store(g, false);
        if (et->count())
            require_tenant(st, e->tenant);
        auto ad = st.load_adapter(opt(e->tenant, et), e->name);
        if (!ad)
            throw CliFailure("no adapter named '" + e->name + "'");
        auto bytes = write_npy(ad->tensor);
        std::ofstream f(e->out, std::ios::binary | std::ios::trunc);
        if (!f || !f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size())) ||
            !f.flush())
            throw CliFailure("cannot write '" + e->out + "'");
        std::printf("adapter '%s' (%u x %u %s) written to %s\n", e->name.c_str(), ad->info.n_virtual,
                    ad->info.hidden, dtype_name(ad->info.dtype), e->out.c_str());
    });
}

json tenant_json(const Tenant& t) {
    return {{"name", t.name},
            {"public_key", t.public_key ? json(*t.public_key) : json(nullptr)},
            {"status", tenant_status_name(t.status)},
            {"max_concurrent_jobs", t.max_concurrent_jobs},
            {"tokens_per_minute", t.tokens_per_minute},
            {"created", format_time(t.created_ms)}};
}

void register_tenant(CLI::App& app, const Globals& g) {
    auto* te = app.add_subcommand("tenant", "Manage tenants (CURVE keys, limits)");
    te->require_subcommand(1);
    struct Args {
        std::string name, key, key_file;
        uint32_t max_jobs = 0;
        uint64_t tpm = 0;
        bool json = false;
    };
    auto a = std::make_shared<Args>();
    auto* add = te->add_subcommand("add", "Add a tenant; generates a CURVE keypair unless --public-key");
    add->add_option("name", a->name)->required();
    auto* pk = add->add_option("--public-key", a->key, "Client CURVE public key (Z85, 40 chars)");
    auto* kf =
        add->add_option("--key-file", a->key_file, "Also write the generated client keys to this file");
    kf->excludes(pk);
    add->add_option("--max-jobs", a->max_jobs, "Max concurrent jobs (0 = unlimited)");
    add->add_option("--tokens-per-minute", a->tpm, "Token rate limit (0 = unlimited)");
    add->callback([&g, a, pk, kf] {
        std::optional<CurveKeypair> kp;
        if (!pk->count())
            kp = generate_curve_keypair();
        Store st = open_store(g, true);
        // The key file first (exclusive create, mode 0600), then the tenant: a tenant must never be
        // registered with a public key whose secret was lost because its file could not be written.
        bool wrote_key = false;
        if (kp && kf->count()) {
            try {
                write_key_file(a->key_file, *kp, "prefixd client key for tenant " + a->name);
            } catch (const StoreError& e) {
                throw CliFailure(std::string(e.what()) + "; tenant '" + a->name + "' not added");
            }
            wrote_key = true;
        }
        Tenant t;
        try {
            t = st.add_tenant({a->name, kp ? kp->public_key : a->key, a->max_jobs, a->tpm});
        } catch (...) {
            if (wrote_key)
                ::unlink(a->key_file.c_str()); // ours: created exclusively above
            throw;
        }
        std::printf("tenant '%s' added\n", t.name.c_str());
        if (kp) {
            std::printf("client public key: %s\nclient secret key: %s\n", kp->public_key.c_str(),
                        kp->secret_key.c_str());
            std::printf("(the secret key is shown only once%s)\n",
                        kf->count() ? ("; also written to " + a->key_file).c_str() : "");
        }
    });

    auto l = std::make_shared<Args>();
    auto* list = te->add_subcommand("list", "List tenants");
    list->add_flag("--json", l->json, "JSON output");
    list->callback([&g, l] {
        Store st = open_store(g, false);
        auto v = st.list_tenants();
        if (l->json) {
            json arr = json::array();
            for (auto& t : v)
                arr.push_back(tenant_json(t));
            std::cout << dump(arr) << "\n";
            return;
        }
        std::printf("%-20s %-8s %-40s %8s %12s %s\n", "NAME", "STATUS", "PUBLIC KEY", "MAX JOBS",
                    "TOKENS/MIN", "CREATED");
        for (auto& t : v)
            std::printf("%-20s %-8s %-40s %8u %12llu %s\n", t.name.c_str(), tenant_status_name(t.status),
                        t.public_key ? t.public_key->c_str() : "-", t.max_concurrent_jobs,
                        (unsigned long long)t.tokens_per_minute,
                        format_time(t.created_ms).substr(0, 19).c_str());
    });

    auto r = std::make_shared<Args>();
    auto* rev = te->add_subcommand("revoke", "Revoke a tenant (its key is refused at the next job)");
    rev->add_option("name", r->name)->required();
    rev->callback([&g, r] {
        Store st = open_store(g, false);
        st.revoke_tenant(r->name);
        std::printf("tenant '%s' revoked\n", r->name.c_str());
    });

    auto m = std::make_shared<Args>();
    auto* lim = te->add_subcommand("limits", "Set a tenant's limits");
    lim->add_option("name", m->name)->required();
    lim->add_option("--max-jobs", m->max_jobs, "Max concurrent jobs (0 = unlimited)")->required();
    lim->add_option("--tokens-per-minute", m->tpm, "Token rate limit (0 = unlimited)")->required();
    lim->callback([&g, m] {
        Store st = open_store(g, false);
        st.set_tenant_limits(m->name, m->max_jobs, m->tpm);
        std::printf("tenant '%s' limits set\n", m->name.c_str());
    });
}

// One CSV cell (RFC 4180 quoting). A cell that a spreadsheet would take for a formula (starting
// with = + - @ tab or CR) gets a leading single quote.
std::string csv(const std::string& text) {
    std::string s = text;
    if (!s.empty() && std::strchr("=+-@\t\r", s[0]))
        s.insert(0, 1, '\'');
    if (s.find_first_of(",\"\n\r") == std::string::npos)
        return s;
    std::string o = "\"";
    for (char c : s)
        o += c == '"' ? std::string("\"\"") : std::string(1, c);
    return o + "\"";
}

void register_ledger(CLI::App& app, const Globals& g) {
    struct Args {
        std::string tenant, since, until, status;
        bool json = false, csv = false;
        uint32_t limit = 0;
    };
    auto a = std::make_shared<Args>();
    auto* le = app.add_subcommand("ledger", "Show ledger rows (one per job), or a per-tenant summary");
    auto* sum = le->add_subcommand("summary", "Token totals per tenant");
    // Options given either before or after `summary` (`ledger --csv summary` = `ledger summary --csv`).
    for (auto* c : {le, sum}) {
        c->add_option("--tenant", a->tenant, "Only this tenant");
        c->add_option("--since", a->since,
                      "Accepted at/after: YYYY-MM-DD[THH:MM[:SS[.fff]]][Z] in UTC, unix seconds (9+ digits), "
                      "or an age like 90s/15m/2h/7d");
        c->add_option("--until", a->until, "Accepted before (same forms)");
        c->add_flag("--json", a->json, "JSON output");
        c->add_flag("--csv", a->csv, "CSV output");
    }
    le->add_option("--status", a->status, "accepted | done | cancelled | failed | interrupted");
    auto* limit = le->add_option("--limit", a->limit, "At most this many rows (not with summary)");
    auto given = [le, sum](const char* name) {
        return le->get_option(name)->count() + sum->get_option(name)->count() > 0;
    };
    le->callback([&g, a, sum, limit, given] {
        if (a->json && a->csv)
            throw CliFailure("ledger: --json and --csv exclude each other");
        if (sum->parsed() && limit->count())
            throw CliFailure("ledger summary: --limit applies to ledger rows, not to the summary");
        LedgerFilter f;
        if (given("--tenant")) {
            if (a->tenant.empty())
                throw CliFailure("ledger: --tenant needs a tenant name (leave it out for every tenant)");
            f.tenant = a->tenant;
        }
        if (given("--since"))
            f.since_ms = parse_time(a->since);
        if (given("--until"))
            f.until_ms = parse_time(a->until);
        if (!a->status.empty())
            f.status = parse_job_status(a->status);
        f.limit = a->limit;
        Store st = open_store(g, false);
        if (f.tenant && !st.find_tenant(*f.tenant))
            throw CliFailure("no tenant named '" + *f.tenant + "'");
        if (sum->parsed()) {
            auto v = st.summary(f);
            if (a->json) {
                json arr = json::array();
                for (auto& t : v)
                    arr.push_back({{"tenant", t.tenant},
                                   {"jobs", t.jobs},
                                   {"open_jobs", t.open_jobs},
                                   {"virtual_tokens", t.virtual_tokens},
                                   {"prompt_tokens", t.prompt_tokens},
                                   {"completion_tokens", t.completion_tokens},
                                   {"total_tokens", t.total_tokens},
                                   {"first", t.first_ms ? json(format_time(*t.first_ms)) : json(nullptr)},
                                   {"last", t.last_ms ? json(format_time(*t.last_ms)) : json(nullptr)}});
                std::cout << dump(arr) << "\n";
                return;
            }
            if (a->csv) {
                std::printf(
                    "tenant,jobs,open_jobs,virtual_tokens,prompt_tokens,completion_tokens,total_tokens,"
                    "first,last\n");
                for (auto& t : v)
                    std::printf("%s,%llu,%llu,%llu,%llu,%llu,%llu,%s,%s\n", csv(t.tenant).c_str(),
                                (unsigned long long)t.jobs, (unsigned long long)t.open_jobs,
                                (unsigned long long)t.virtual_tokens, (unsigned long long)t.prompt_tokens,
                                (unsigned long long)t.completion_tokens, (unsigned long long)t.total_tokens,
                                t.first_ms ? format_time(*t.first_ms).c_str() : "",
                                t.last_ms ? format_time(*t.last_ms).c_str() : "");
                return;
            }
            std::printf("%-20s %8s %6s %12s %12s %12s %12s\n", "TENANT", "JOBS", "OPEN", "VIRTUAL", "PROMPT",
                        "COMPLETION", "TOTAL");
            for (auto& t : v)
                std::printf("%-20s %8llu %6llu %12llu %12llu %12llu %12llu\n", t.tenant.c_str(),
                            (unsigned long long)t.jobs, (unsigned long long)t.open_jobs,
                            (unsigned long long)t.virtual_tokens, (unsigned long long)t.prompt_tokens,
                            (unsigned long long)t.completion_tokens, (unsigned long long)t.total_tokens);
            return;
        }
        auto rows = st.query_jobs(f);
        auto settled = [](const JobRecord& r) {
            return r.settled_ms ? format_time(*r.settled_ms) : std::string();
        };
        if (a->json) {
            json arr = json::array();
            for (auto& r : rows)
                arr.push_back({{"tenant", r.tenant},
                               {"job_id", r.job_id},
                               {"kind", r.kind},
                               {"adapter", r.adapter ? json(*r.adapter) : json(nullptr)},
                               {"adapter_version", r.adapter_version},
                               {"model", r.model},
                               {"status", job_status_name(r.status)},
                               {"virtual_tokens", r.virtual_tokens},
                               {"prompt_tokens", r.prompt_tokens},
                               {"completion_tokens", r.completion_tokens},
                               {"total_tokens", r.total_tokens()},
                               {"accepted", format_time(r.accepted_ms)},
                               {"settled", r.settled_ms ? json(settled(r)) : json(nullptr)},
                               {"finish_reason", r.finish_reason}});
            std::cout << dump(arr) << "\n";
        } else if (a->csv) {
            std::printf(
                "tenant,job_id,kind,adapter,adapter_version,model,status,virtual_tokens,prompt_tokens,"
                "completion_tokens,total_tokens,accepted,settled,finish_reason\n");
            for (auto& r : rows)
                std::printf("%s,%s,%s,%s,%lld,%s,%s,%u,%u,%u,%llu,%s,%s,%s\n", csv(r.tenant).c_str(),
                            csv(r.job_id).c_str(), csv(r.kind).c_str(), csv(r.adapter.value_or("")).c_str(),
                            (long long)r.adapter_version, csv(r.model).c_str(), job_status_name(r.status),
                            r.virtual_tokens, r.prompt_tokens, r.completion_tokens,
                            (unsigned long long)r.total_tokens(), format_time(r.accepted_ms).c_str(),
                            settled(r).c_str(), csv(r.finish_reason).c_str());
        } else {
            std::printf("%-24s %-16s %-24s %-11s %-16s %8s %8s %10s %8s %s\n", "ACCEPTED", "TENANT", "JOB ID",
                        "STATUS", "ADAPTER", "VIRTUAL", "PROMPT", "COMPLETION", "TOTAL", "FINISH");
            for (auto& r : rows)
                std::printf("%-24s %-16s %-24s %-11s %-16s %8u %8u %10u %8llu %s\n",
                            format_time(r.accepted_ms).c_str(), printable(r.tenant).c_str(),
                            printable(r.job_id).c_str(), job_status_name(r.status),
                            printable(r.adapter.value_or("-")).c_str(), r.virtual_tokens, r.prompt_tokens,
                            r.completion_tokens, (unsigned long long)r.total_tokens(),
                            printable(r.finish_reason).c_str());
        }
    });
}

void register_misc(CLI::App& app, const Globals& g) {
    auto* sk = app.add_subcommand("server-key", "Server CURVE keypair for the daemon configuration");
    sk->require_subcommand(1);
    auto out = std::make_shared<std::string>();
    auto pub_out = std::make_shared<std::string>();
    auto* gen = sk->add_subcommand("generate", "Write a new server keypair file (mode 0600)");
    gen->add_option("--out", *out, "Keypair file for the daemon (public + secret)")->required();
    auto* po = gen->add_option("--public-out", *pub_out, "Also write a public-only file for clients");
    gen->callback([out, pub_out, po] {
        CurveKeypair kp = generate_curve_keypair();
        write_key_file(*out, kp, "prefixd server key (keep the secret line private)");
        if (po->count())
            write_key_file(*pub_out, {kp.public_key, ""}, "prefixd server public key");
        std::printf("server keypair written to %s\nserver public key: %s\n", out->c_str(),
                    kp.public_key.c_str());
    });

    auto* sc = app.add_subcommand("store", "Database maintenance");
    sc->require_subcommand(1);
    auto* chk = sc->add_subcommand("check", "PRAGMA integrity_check + foreign_key_check");
    chk->callback([&g] {
        Store st = open_store(g, false);
        auto problems = st.integrity_check();
        for (auto& p : problems)
            std::printf("%s\n", p.c_str());
        if (!problems.empty())
            throw CliFailure("database '" + g.db + "' failed the integrity check");
        std::printf("ok (schema version %d)\n", st.schema_version());
    });
    auto* rec =
        sc->add_subcommand("reconcile", "Mark accepted-but-never-settled jobs interrupted (daemon stopped)");
    rec->callback([&g] {
        Store st = open_store(g, false);
        std::printf("%llu job(s) marked interrupted\n", (unsigned long long)st.reconcile());
    });
}

CliModule reg_store([](CLI::App& app, const Globals& g) {
    register_adapter(app, g);
    register_tenant(app, g);
    register_ledger(app, g);
    register_misc(app, g);
});

} // namespace
} // namespace prefixd::cli
