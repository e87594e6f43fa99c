// Helpers shared by tests: where the source tree, build tree and generated test models are.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>

namespace prefixd::test {

inline std::string env_or(const char* name, const char* def) {
    const char* v = std::getenv(name);
    return v && *v ? v : def;
}
inline std::filesystem::path source_dir() { return env_or("PREFIXD_SOURCE_DIR", "."); }
inline std::filesystem::path build_dir() { return env_or("PREFIXD_BUILD_DIR", "build"); }
inline std::filesystem::path models_dir() { return env_or("PREFIXD_TEST_MODELS", "build/test-models"); }
// A fresh, empty temporary directory unique to this process and tag.
inline std::filesystem::path temp_dir(const std::string& tag) {
    auto p = std::filesystem::temp_directory_path() /
             ("prefixd-test-" + tag + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(p);
    std::filesystem::create_directories(p);
    return p;
}

}  // namespace prefixd::test
