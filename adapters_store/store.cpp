// Store: opening (create, migrate, quick_check), integrity checks, change counters and the time
// helpers. Tenants, adapters and the ledger are implemented in their own files.
#include "store.h"

#include "db.h"
#include "migrations.h"

#include <chrono>
#include <cstring>
#include <ctime>
#include <optional>

namespace prefixd::store {

int64_t now_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// What parse_time accepts (also in prefixctl's --since/--until help).
static constexpr const char* kTimeForms =
    "YYYY-MM-DD[THH:MM[:SS[.fff]]][Z] in UTC, unix seconds (9+ digits), or an age like 90s/15m/2h/7d";

static bool all_digits(const std::string& s) {
    return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

// Reads exactly `n` ASCII digits at `p` (no signs, no spaces) into `out`; advances `p`.
static bool take_digits(const char*& p, int n, int& out) {
    out = 0;
    for (int i = 0; i < n; ++i, ++p) {
        if (*p < '0' || *p > '9')
            return false;
        out = out * 10 + (*p - '0');
    }
    return true;
}

// YYYY-MM-DD[(T| )HH:MM[:SS[.fff]]][Z] in UTC; nullopt unless every field is strict digits and
// the date exists (2026-02-31 does not: timegm would roll it into March).
static std::optional<int64_t> parse_utc_date(const std::string& s) {
    const char* p = s.c_str();
    int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0, ms = 0;
    if (!take_digits(p, 4, y) || *p++ != '-' || !take_digits(p, 2, mo) || *p++ != '-' ||
        !take_digits(p, 2, d))
        return std::nullopt;
    if (*p == 'T' || *p == ' ') {
        ++p;
        if (!take_digits(p, 2, h) || *p++ != ':' || !take_digits(p, 2, mi))
            return std::nullopt;
        if (*p == ':') {
            ++p;
            if (!take_digits(p, 2, sec))
                return std::nullopt;
            if (*p == '.') { // 1-9 fraction digits, kept to milliseconds
                ++p;
                int n = 0, digit = 0;
                for (; n < 9 && take_digits(p, 1, digit); ++n)
                    if (n < 3)
                        ms = ms * 10 + digit;
                if (n == 0 || (*p >= '0' && *p <= '9'))
                    return std::nullopt;
                for (int i = n; i < 3; ++i)
                    ms *= 10;
            }
        }
    }
    if (*p == 'Z')
        ++p;
    if (*p != '\0' || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 59)
        return std::nullopt;
    std::tm tm{};
    tm.tm_year = y - 1900, tm.tm_mon = mo - 1, tm.tm_mday = d, tm.tm_hour = h, tm.tm_min = mi,
    tm.tm_sec = sec;
    std::time_t t = timegm(&tm);
    std::tm back{};
    if (t == std::time_t(-1) || !gmtime_r(&t, &back) || back.tm_year != y - 1900 || back.tm_mon != mo - 1 ||
        back.tm_mday != d)
        return std::nullopt;
    return int64_t(t) * 1000 + ms;
}

int64_t parse_time(const std::string& s) {
    auto bad = [&]() -> InvalidArgument {
        return InvalidArgument("bad time '" + s + "' (expected " + std::string(kTimeForms) + ")");
    };
    if (s.empty() || s.size() > 40)
        throw bad();
    if (all_digits(s)) { // unix seconds: 9+ digits, so that "2026" is not taken for 1970-01-01T00:33:46
        if (s.size() < 9 || s.size() > 12)
            throw bad();
        return std::stoll(s) * 1000;
    }
    char unit = s.back();
    std::string num = s.substr(0, s.size() - 1);
    if (all_digits(num) && num.size() <= 9 && std::strchr("smhd", unit)) {
        int64_t mult = unit == 's' ? 1000 : unit == 'm' ? 60000 : unit == 'h' ? 3600000 : 86400000;
        return now_ms() - std::stoll(num) * mult;
    }
    if (auto t = parse_utc_date(s))
        return *t;
    throw bad();
}

std::string format_time(int64_t ms) {
    std::time_t t = std::time_t(ms / 1000);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[80];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, int(ms % 1000));
    return buf;
}

const char* tenant_status_name(TenantStatus s) {
    return s == TenantStatus::Active ? "active" : "revoked";
}

Store Store::open(const std::string& path, const StoreOptions& opts) {
    auto db = std::make_unique<Db>(path, opts.create, opts.busy_timeout_ms);
    if (opts.quick_check) {
        Stmt s(*db, "PRAGMA quick_check");
        std::string problems;
        while (s.step()) {
            std::string line = s.col_text(0);
            if (line != "ok")
                problems += (problems.empty() ? "" : "; ") + line;
            if (problems.size() > 500)
                break;
        }
        if (!problems.empty())
            throw DatabaseCorrupt("database '" + path + "' failed quick_check: " + problems);
    }
    migrate(*db, path, opts.create, opts.write_retries);
    return Store(std::move(db), path, opts);
}

Store::Store(std::unique_ptr<Db> db, std::string path, const StoreOptions& opts)
    : db_(std::move(db)), path_(std::move(path)), opts_(opts) {}
Store::Store(Store&&) noexcept = default;
Store& Store::operator=(Store&&) noexcept = default;
Store::~Store() = default;

const std::string& Store::path() const {
    return path_;
}
int Store::schema_version() const {
    return int(db_->query_int("PRAGMA user_version"));
}
Db& Store::db() {
    return *db_;
}

static std::vector<std::string> run_check(Db& db, const char* pragma) {
    Stmt s(db, pragma);
    std::vector<std::string> out;
    while (s.step()) {
        std::string line = s.col_text(0);
        if (line != "ok")
            out.push_back(line);
    }
    Stmt fk(db, "PRAGMA foreign_key_check");
    while (fk.step())
        out.push_back("foreign key violation in " + fk.col_text(0) + " rowid " +
                      std::to_string(fk.col_int(1)));
    return out;
}

std::vector<std::string> Store::integrity_check() {
    return run_check(*db_, "PRAGMA integrity_check");
}
std::vector<std::string> Store::quick_check() {
    return run_check(*db_, "PRAGMA quick_check");
}

int64_t Store::adapters_generation() {
    return db_->query_int("SELECT value FROM generations WHERE name = 'adapters'");
}
int64_t Store::tenants_generation() {
    return db_->query_int("SELECT value FROM generations WHERE name = 'tenants'");
}

} // namespace prefixd::store
