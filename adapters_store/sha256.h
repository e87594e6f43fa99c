// SHA-256 (OpenSSL EVP) as lowercase hex, for adapter blobs.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace prefixd::store {
std::string sha256_hex(std::span<const uint8_t> data);
}
