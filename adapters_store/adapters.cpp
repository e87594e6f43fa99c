// Adapters (store.h): virtual-token embeddings per tenant or global, stored as a blob with its
// sha256. Lookups for a tenant see its own adapters first, then global ones; another tenant's
// adapter is indistinguishable from a missing one. Loads re-verify length, hash and finiteness.
#include "db.h"
#include "names.h"
#include "sha256.h"
#include "store.h"

#include <sqlite3.h>

namespace prefixd::store {
namespace {

const char* kAdapterCols =
    "SELECT a.id, a.name, t.name, a.n_virtual, a.hidden, a.dtype, a.model_fingerprint, "
    "a.sha256, a.description, a.created_ms";
const char* kFrom = " FROM adapters a LEFT JOIN tenants t ON t.id = a.tenant_id ";

AdapterInfo read_info(Stmt& s) {
    AdapterInfo a;
    a.version = s.col_int(0);
    a.name = s.col_text(1);
    a.tenant = s.col_opt_text(2);
    a.n_virtual = uint32_t(s.col_int(3));
    a.hidden = uint32_t(s.col_int(4));
    a.dtype = s.col_text(5) == "f16" ? DType::F16 : DType::F32;
    a.model_fingerprint = s.col_opt_text(6);
    a.sha256 = s.col_text(7);
    a.description = s.col_text(8);
    a.created_ms = s.col_int(9);
    return a;
}

std::string scope_text(const std::optional<std::string>& tenant) {
    return tenant ? "tenant '" + *tenant + "'" : std::string("global scope");
}

// Verifies a stored blob against its metadata; throws CorruptData naming the adapter.
Adapter verify(AdapterInfo info, std::span<const uint8_t> blob) {
    std::string who = "adapter '" + info.name + "' (" + scope_text(info.tenant) + ", version " +
                      std::to_string(info.version) + ")";
    if (blob.size() != info.byte_size())
        throw CorruptData(who + " is corrupt: data holds " + std::to_string(blob.size()) +
                          " bytes, shape needs " + std::to_string(info.byte_size()));
    if (sha256_hex(blob) != info.sha256)
        throw CorruptData(who + " is corrupt: sha256 mismatch");
    Adapter a{std::move(info), {}};
    a.tensor = Tensor2D{a.info.dtype, a.info.n_virtual, a.info.hidden, {blob.begin(), blob.end()}};
    try {
        check_finite(a.tensor);
    } catch (const AdapterFileError& e) {
        throw CorruptData(who + " is corrupt: " + e.what());
    }
    return a;
}

// Throws InvalidArgument unless `s` is valid UTF-8 without control characters (C0, DEL, C1):
// stored text must print safely and dump as JSON.
void require_text(const std::string& s, const char* what) {
    for (size_t i = 0, n; i < s.size(); i += n)
        if ((n = printable_utf8_len(s, i)) == 0)
            throw InvalidArgument(std::string(what) + " holds a control character or invalid UTF-8 at byte " +
                                  std::to_string(i) + " (only printable UTF-8 text is stored)");
}

// Own-then-global lookup (tenant set) or global only; `exact` restricts to the given scope.
std::string lookup_sql(bool with_data, bool exact, bool has_tenant) {
    std::string sql =
        std::string(kAdapterCols) + (with_data ? ", a.data" : "") + kFrom + "WHERE a.name = ?1 AND ";
    if (!has_tenant)
        return sql + "a.tenant_id IS NULL";
    if (exact)
        return sql + "a.tenant_id = (SELECT id FROM tenants WHERE name = ?2)";
    return sql + "(a.tenant_id IS NULL OR a.tenant_id = (SELECT id FROM tenants WHERE name = ?2)) "
                 "ORDER BY a.tenant_id IS NULL LIMIT 1";
}

} // namespace

AdapterInfo Store::add_adapter(const NewAdapter& na) {
    require_name(na.name, "adapter name", 128, ":/");
    if (na.scope.tenant)
        require_name(*na.scope.tenant, "tenant name", 64);
    const Tensor2D& t = na.tensor;
    if (t.rows == 0 || t.cols == 0 || t.rows > kMaxRows || t.cols > kMaxCols)
        throw InvalidArgument("adapter shape " + std::to_string(t.rows) + "x" + std::to_string(t.cols) +
                              " is empty or too large");
    // Before binding: SQLite refuses a blob over SQLITE_LIMIT_LENGTH (1e9 by default) only after
    // the whole copy; leave room for the rest of the row.
    uint64_t sqlite_max = uint64_t(sqlite3_limit(db_->handle(), SQLITE_LIMIT_LENGTH, -1));
    if (t.byte_size() > kMaxTensorBytes || t.byte_size() + (1u << 16) > sqlite_max)
        throw InvalidArgument("adapter of " + std::to_string(t.byte_size()) + " bytes exceeds the limit of " +
                              std::to_string(std::min<uint64_t>(kMaxTensorBytes, sqlite_max - (1u << 16))) +
                              " bytes (" + kMaxTensorBytesText + ")");
    if (t.data.size() != t.byte_size())
        throw InvalidArgument("adapter data size does not match its shape");
    if (na.description.size() > 4096)
        throw InvalidArgument("description longer than 4096 bytes");
    require_text(na.description, "description");
    if (na.model_fingerprint && (na.model_fingerprint->empty() || na.model_fingerprint->size() > 256))
        throw InvalidArgument("model fingerprint must be 1-256 characters");
    if (na.model_fingerprint)
        require_text(*na.model_fingerprint, "model fingerprint");
    check_finite(t);
    std::string digest = sha256_hex(t.data);

    return with_write_tx(*db_, opts_.write_retries, [&] {
        std::optional<int64_t> tenant_id;
        if (na.scope.tenant) {
            auto ten = find_tenant(*na.scope.tenant);
            if (!ten)
                throw NotFound("no tenant named '" + *na.scope.tenant + "'");
            if (!ten->active())
                throw InvalidArgument("tenant '" + ten->name + "' is revoked");
            tenant_id = ten->id;
        }
        if (find_adapter_in(na.scope, na.name)) {
            if (!na.replace)
                throw AlreadyExists("adapter '" + na.name + "' already exists in " +
                                    scope_text(na.scope.tenant) + " (remove it first or replace it)");
            Stmt del(*db_, "DELETE FROM adapters WHERE name = ? AND ifnull(tenant_id, 0) = ?");
            del.bind(1, na.name).bind(2, tenant_id.value_or(0));
            del.run();
        }
        Stmt s(*db_,
               "INSERT INTO adapters(tenant_id, name, n_virtual, hidden, dtype, model_fingerprint, sha256, "
               "description, created_ms, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        if (tenant_id)
            s.bind(1, *tenant_id);
        else
            s.bind_null(1);
        s.bind(2, na.name).bind(3, int64_t(t.rows)).bind(4, int64_t(t.cols)).bind(5, dtype_name(t.dtype));
        s.bind(6, na.model_fingerprint).bind(7, digest).bind(8, na.description).bind(9, now_ms());
        s.bind_blob(10, t.data);
        s.run();
        return *find_adapter_in(na.scope, na.name);
    });
}

std::optional<AdapterInfo> Store::find_adapter(const std::optional<std::string>& tenant,
                                               const std::string& name) {
    Stmt s(*db_, lookup_sql(false, false, tenant.has_value()));
    s.bind(1, name);
    if (tenant)
        s.bind(2, *tenant);
    if (!s.step())
        return std::nullopt;
    return read_info(s);
}

std::optional<Adapter> Store::load_adapter(const std::optional<std::string>& tenant,
                                           const std::string& name) {
    Stmt s(*db_, lookup_sql(true, false, tenant.has_value()));
    s.bind(1, name);
    if (tenant)
        s.bind(2, *tenant);
    if (!s.step())
        return std::nullopt;
    return verify(read_info(s), s.col_blob(10));
}

std::optional<AdapterInfo> Store::find_adapter_in(const AdapterScope& scope, const std::string& name) {
    Stmt s(*db_, lookup_sql(false, true, scope.tenant.has_value()));
    s.bind(1, name);
    if (scope.tenant)
        s.bind(2, *scope.tenant);
    if (!s.step())
        return std::nullopt;
    return read_info(s);
}

std::optional<Adapter> Store::load_adapter_in(const AdapterScope& scope, const std::string& name) {
    Stmt s(*db_, lookup_sql(true, true, scope.tenant.has_value()));
    s.bind(1, name);
    if (scope.tenant)
        s.bind(2, *scope.tenant);
    if (!s.step())
        return std::nullopt;
    return verify(read_info(s), s.col_blob(10));
}

std::vector<AdapterInfo> Store::list_adapters(const std::optional<std::string>& tenant, bool include_global,
                                              bool all_tenants) {
    std::string sql = std::string(kAdapterCols) + kFrom;
    if (all_tenants) {
        sql += "WHERE 1 ";
    } else if (tenant) {
        if (!find_tenant(*tenant))
            throw NotFound("no tenant named '" + *tenant + "'");
        sql += "WHERE (t.name = ?1";
        sql += include_global ? " OR a.tenant_id IS NULL) " : ") ";
    } else {
        sql += "WHERE a.tenant_id IS NULL ";
    }
    sql += "ORDER BY t.name IS NOT NULL, t.name, a.name";
    Stmt s(*db_, sql);
    if (!all_tenants && tenant)
        s.bind(1, *tenant);
    std::vector<AdapterInfo> out;
    while (s.step())
        out.push_back(read_info(s));
    return out;
}

void Store::remove_adapter(const AdapterScope& scope, const std::string& name) {
    with_write_tx(*db_, opts_.write_retries, [&] {
        int64_t tenant_id = 0;
        if (scope.tenant) {
            auto t = find_tenant(*scope.tenant);
            if (!t)
                throw NotFound("no tenant named '" + *scope.tenant + "'");
            tenant_id = t->id;
        }
        Stmt s(*db_, "DELETE FROM adapters WHERE name = ? AND ifnull(tenant_id, 0) = ?");
        s.bind(1, name).bind(2, tenant_id);
        s.run();
        if (db_->changes() == 0)
            throw NotFound("no adapter named '" + name + "' in " + scope_text(scope.tenant));
    });
}

} // namespace prefixd::store
