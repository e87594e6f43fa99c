// CURVE key helpers shared by prefixctl (tenant add, server-key generate), the submit client and
// the daemon: Z85 validation, keypair generation (zmq_curve_keypair) and the small key file
// format ("public <z85>" / "secret <z85>" lines, '#' comments), written with mode 0600.
#pragma once

#include <optional>
#include <string>

namespace prefixd::store {

struct CurveKeypair {
    std::string public_key; // Z85, 40 chars
    std::string secret_key; // Z85, 40 chars (empty when only a public key is known)
};

// True when `z85` is 40 chars of the Z85 alphabet that decode to 32 bytes.
bool is_valid_z85_key(const std::string& z85);
// Throws InvalidArgument (what: "<what>: ...") unless valid.
void require_z85_key(const std::string& z85, const char* what = "public key");
CurveKeypair generate_curve_keypair(); // throws StoreError when libzmq lacks CURVE
// Derives the public key from a secret key (zmq_curve_public).
std::string curve_public_from_secret(const std::string& secret_z85);

// File format:
//   # prefixd CURVE key for tenant "acme"
//   public <40 chars>
//   secret <40 chars>
// `secret` may be absent (a public-only file, e.g. the server key given to clients). Reading
// checks both keys and that the public key matches the secret. Throws InvalidArgument.
void write_key_file(const std::string& path, const CurveKeypair& kp, const std::string& comment = {});
CurveKeypair read_key_file(const std::string& path);

} // namespace prefixd::store
