// Schema migrations for the prefixd store (internal to prefixd_store).
#pragma once

#include <string>

namespace prefixd::store {
class Db;
constexpr int kApplicationId = 0x50464458; // "PFDX" in PRAGMA application_id
int latest_schema_version();
// Brings the schema up to date (when allow_changes) and returns the version. Throws
// DatabaseCorrupt for foreign or newer databases.
int migrate(Db& db, const std::string& path, bool allow_changes, int retries);
} // namespace prefixd::store
