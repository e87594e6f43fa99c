// CURVE key helpers (curve_keys.h): Z85 checks, zmq_curve_keypair, and the key file format.
#include "curve_keys.h"

#include "errors.h"

#include <zmq.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace prefixd::store {

bool is_valid_z85_key(const std::string& z85) {
    static const char* alphabet =
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    if (z85.size() != 40)
        return false;
    for (char c : z85)
        if (c == '\0' || !std::strchr(alphabet, c))
            return false;
    uint8_t out[32];
    // zmq_z85_decode also rejects 5-char groups whose value exceeds 2^32-1.
    return zmq_z85_decode(out, z85.c_str()) != nullptr;
}

void require_z85_key(const std::string& z85, const char* what) {
    if (!is_valid_z85_key(z85))
        throw InvalidArgument(std::string(what) +
                              " is not a valid CURVE key (40 Z85 characters expected, got " +
                              std::to_string(z85.size()) + " characters)");
}

CurveKeypair generate_curve_keypair() {
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) != 0)
        throw StoreError(std::string("cannot generate a CURVE keypair: ") + zmq_strerror(zmq_errno()) +
                         " (libzmq built without CURVE?)");
    return {pub, sec};
}

std::string curve_public_from_secret(const std::string& secret_z85) {
    require_z85_key(secret_z85, "secret key");
    char pub[41];
    if (zmq_curve_public(pub, secret_z85.c_str()) != 0)
        throw StoreError(std::string("cannot derive the CURVE public key: ") + zmq_strerror(zmq_errno()));
    return pub;
}

void write_key_file(const std::string& path, const CurveKeypair& kp, const std::string& comment) {
    require_z85_key(kp.public_key, "public key");
    if (!kp.secret_key.empty())
        require_z85_key(kp.secret_key, "secret key");
    std::string text;
    if (!comment.empty())
        text += "# " + comment + "\n";
    text += "public " + kp.public_key + "\n";
    if (!kp.secret_key.empty())
        text += "secret " + kp.secret_key + "\n";
    mode_t mode = kp.secret_key.empty() ? 0644 : 0600;
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        throw InvalidArgument("cannot create key file '" + path + "': " + std::strerror(errno) +
                              (errno == EEXIST ? " (refusing to overwrite)" : ""));
    ::fchmod(fd, mode);
    bool ok = ::write(fd, text.data(), text.size()) == ssize_t(text.size());
    ok = ::fsync(fd) == 0 && ok;
    ::close(fd);
    if (!ok) {
        ::unlink(path.c_str());
        throw StoreError("cannot write key file '" + path + "'");
    }
}

CurveKeypair read_key_file(const std::string& path) {
    std::ifstream in(path);
    if (!in)
        throw InvalidArgument("cannot open key file '" + path + "': " + std::strerror(errno));
    CurveKeypair kp;
    std::string line;
    int lineno = 0;
    while (std::getline(in, line)) {
        ++lineno;
        if (lineno > 64 || line.size() > 512)
            throw InvalidArgument("key file '" + path + "' is too large");
        if (!line.empty() && line.back() == '\r')
            line.pop_back();
        if (line.empty() || line[0] == '#')
            continue;
        std::istringstream ls(line);
        std::string key, value, extra;
        ls >> key >> value >> extra;
        if (key.ends_with(':') || key.ends_with('='))
            key.pop_back();
        if (!extra.empty() || value.empty() || (key != "public" && key != "secret"))
            throw InvalidArgument("key file '" + path + "' line " + std::to_string(lineno) +
                                  ": expected 'public <z85>' or 'secret <z85>'");
        std::string& slot = key == "public" ? kp.public_key : kp.secret_key;
        if (!slot.empty())
            throw InvalidArgument("key file '" + path + "': duplicate '" + key + "' line");
        require_z85_key(value, (key + " key in '" + path + "'").c_str());
        slot = value;
    }
    if (kp.public_key.empty() && !kp.secret_key.empty())
        kp.public_key = curve_public_from_secret(kp.secret_key);
    if (kp.public_key.empty())
        throw InvalidArgument("key file '" + path + "' holds no public key");
    if (!kp.secret_key.empty() && curve_public_from_secret(kp.secret_key) != kp.public_key)
        throw InvalidArgument("key file '" + path + "': the public key does not match the secret key");
    return kp;
}

} // namespace prefixd::store
