// SHA-256 through OpenSSL's EVP interface (sha256.h).
#include "sha256.h"

#include "errors.h"

#include <openssl/evp.h>

namespace prefixd::store {

std::string sha256_hex(std::span<const uint8_t> data) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1 || len != 32)
        throw StoreError("sha256 computation failed (OpenSSL)");
    static const char* hex = "0123456789abcdef";
    std::string out(64, '0');
    for (unsigned i = 0; i < 32; ++i) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    return out;
}

} // namespace prefixd::store
