// Tenants (store.h): names, CURVE public keys, status and per-tenant limits. Tenants are revoked,
// never deleted, so ledger rows always keep their tenant.
#include "curve_keys.h"
#include "db.h"
#include "names.h"
#include "store.h"

#include <sqlite3.h>

namespace prefixd::store {

static const char* kTenantCols =
    "SELECT id, name, public_key, status, max_concurrent_jobs, tokens_per_minute, created_ms FROM tenants ";

static Tenant read_tenant(Stmt& s) {
    Tenant t;
    t.id = s.col_int(0);
    t.name = s.col_text(1);
    t.public_key = s.col_opt_text(2);
    t.status = s.col_text(3) == "revoked" ? TenantStatus::Revoked : TenantStatus::Active;
    t.max_concurrent_jobs = uint32_t(s.col_int(4));
    t.tokens_per_minute = uint64_t(s.col_int(5));
    t.created_ms = s.col_int(6);
    return t;
}

static std::optional<Tenant> one_tenant(Db& db, const std::string& where, const std::string& arg) {
    Stmt s(db, std::string(kTenantCols) + where);
    s.bind(1, arg);
    if (!s.step())
        return std::nullopt;
    return read_tenant(s);
}

static void check_limits(uint64_t max_jobs, uint64_t tpm) {
    if (max_jobs > 1000000)
        throw InvalidArgument("max concurrent jobs must be at most 1000000");
    if (tpm > (uint64_t(1) << 40))
        throw InvalidArgument("tokens per minute is too large");
}

Tenant Store::add_tenant(const NewTenant& nt) {
    require_name(nt.name, "tenant name", 64);
    if (nt.public_key)
        require_z85_key(*nt.public_key, "public key");
    check_limits(nt.max_concurrent_jobs, nt.tokens_per_minute);
    return with_write_tx(*db_, opts_.write_retries, [&] {
        if (find_tenant(nt.name))
            throw AlreadyExists("tenant '" + nt.name + "' already exists");
        if (nt.public_key) {
            if (auto other = find_tenant_by_key(*nt.public_key))
                throw AlreadyExists("public key is already registered to tenant '" + other->name + "'");
        }
        Stmt s(*db_,
               "INSERT INTO tenants(name, public_key, max_concurrent_jobs, tokens_per_minute, created_ms) "
               "VALUES (?, ?, ?, ?, ?)");
        s.bind(1, nt.name).bind(2, nt.public_key).bind(3, int64_t(nt.max_concurrent_jobs));
        s.bind(4, int64_t(nt.tokens_per_minute)).bind(5, now_ms());
        s.run();
        return *find_tenant(nt.name);
    });
}

Tenant Store::ensure_tenant(const std::string& name) {
    require_name(name, "tenant name", 64);
    if (auto t = find_tenant(name))
        return *t;
    return with_write_tx(*db_, opts_.write_retries, [&] {
        Stmt s(*db_, "INSERT OR IGNORE INTO tenants(name, created_ms) VALUES (?, ?)");
        s.bind(1, name).bind(2, now_ms());
        s.run();
        return *find_tenant(name);
    });
}

std::optional<Tenant> Store::find_tenant(const std::string& name) {
    return one_tenant(*db_, "WHERE name = ?", name);
}

std::optional<Tenant> Store::find_tenant_by_key(const std::string& key) {
    if (!is_valid_z85_key(key))
        return std::nullopt;
    return one_tenant(*db_, "WHERE public_key = ?", key);
}

std::vector<Tenant> Store::list_tenants() {
    Stmt s(*db_, std::string(kTenantCols) + "ORDER BY name");
    std::vector<Tenant> out;
    while (s.step())
        out.push_back(read_tenant(s));
    return out;
}

void Store::revoke_tenant(const std::string& name) {
    with_write_tx(*db_, opts_.write_retries, [&] {
        Stmt s(*db_,
               "UPDATE tenants SET status = 'revoked', revoked_ms = ? WHERE name = ? AND status = 'active'");
        s.bind(1, now_ms()).bind(2, name);
        s.run();
        if (db_->changes() == 0 && !find_tenant(name))
            throw NotFound("no tenant named '" + name + "'");
    });
}

void Store::set_tenant_limits(const std::string& name, uint32_t max_jobs, uint64_t tpm) {
    check_limits(max_jobs, tpm);
    with_write_tx(*db_, opts_.write_retries, [&] {
        Stmt s(*db_, "UPDATE tenants SET max_concurrent_jobs = ?, tokens_per_minute = ? WHERE name = ?");
        s.bind(1, int64_t(max_jobs)).bind(2, int64_t(tpm)).bind(3, name);
        s.run();
        if (db_->changes() == 0)
            throw NotFound("no tenant named '" + name + "'");
    });
}

} // namespace prefixd::store
