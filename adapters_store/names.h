// Name validation shared by the store's tenant, adapter and ledger code (internal).
#pragma once

#include "errors.h"

#include <string>

namespace prefixd::store {
// Throws InvalidArgument unless 1..max chars of [A-Za-z0-9._-] (plus `extra`), not starting with '-'.
inline void require_name(const std::string& s, const char* what, size_t max, const char* extra = "") {
    auto ok = [&](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
               c == '_' || c == '-' || (c != '\0' && std::string(extra).find(c) != std::string::npos);
    };
    bool valid = !s.empty() && s.size() <= max && s[0] != '-';
    for (char c : s)
        valid = valid && ok(c);
    if (!valid)
        throw InvalidArgument(std::string("invalid ") + what + " '" + s.substr(0, 80) + "' (1-" +
                              std::to_string(max) + " characters of A-Z a-z 0-9 . _ -" +
                              (*extra ? std::string(" ") + extra : std::string()) +
                              ", not starting with '-')");
}
} // namespace prefixd::store
