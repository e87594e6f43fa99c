// Strict adapter-file parsers (adapter_file.h): .npy, .safetensors and raw f32. Every length and
// offset is checked before use; any deviation from the formats' specs is an AdapterFileError.
#include "adapter_file.h"
#include "adapter_file_detail.h"
#include "engine/input_limits.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

static_assert(std::endian::native == std::endian::little, "prefixd assumes a little-endian host");

namespace prefixd::store {

const char* dtype_name(DType d) {
    return d == DType::F32 ? "f32" : "f16";
}
size_t dtype_size(DType d) {
    return d == DType::F32 ? 4 : 2;
}
DType parse_dtype(const std::string& s) {
    if (s == "f32" || s == "float32")
        return DType::F32;
    if (s == "f16" || s == "float16")
        return DType::F16;
    throw InvalidArgument("unknown dtype '" + s + "' (expected f32 or f16)");
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); // inf / nan
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else { // subnormal: normalise
        int e = -1;
        do {
            ++e;
            man <<= 1;
        } while (!(man & 0x400));
        bits = sign | uint32_t(112 - e) << 23 | ((man & 0x3ff) << 13);
    }
    return std::bit_cast<float>(bits);
}

uint16_t f32_to_f16(float f) {
    uint32_t x = std::bit_cast<uint32_t>(f);
    uint16_t sign = uint16_t((x >> 16) & 0x8000);
    uint32_t exp = (x >> 23) & 0xff, man = x & 0x7fffff;
    if (exp == 0xff)
        return uint16_t(sign | 0x7c00 | (man ? 0x200 : 0));
    int e = int(exp) - 127 + 15;
    if (e >= 0x1f)
        return uint16_t(sign | 0x7c00); // overflow -> inf
    if (e <= 0) {                       // subnormal or zero
        if (e < -10)
            return sign;
        man |= 0x800000;
        uint32_t shift = uint32_t(14 - e);
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            ++half;
        return uint16_t(sign | half);
    }
    uint32_t half = (uint32_t(e) << 10) | (man >> 13), rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1)))
        ++half; // may carry into exp: correct
    return uint16_t(sign | half);
}

float bf16_to_f32(uint16_t b) {
    return std::bit_cast<float>(uint32_t(b) << 16);
}

std::vector<float> Tensor2D::to_f32() const {
    size_t n = size_t(rows) * cols;
    if (data.size() != n * dtype_size(dtype))
        throw AdapterFileError("tensor byte size does not match its shape");
    std::vector<float> out(n);
    if (dtype == DType::F32) {
        std::memcpy(out.data(), data.data(), n * 4);
    } else {
        for (size_t i = 0; i < n; ++i) {
            uint16_t h;
            std::memcpy(&h, data.data() + 2 * i, 2);
            out[i] = f16_to_f32(h);
        }
    }
    return out;
}

AdapterFormat parse_format(const std::string& s) {
    if (s == "npy")
        return AdapterFormat::Npy;
    if (s == "safetensors")
        return AdapterFormat::Safetensors;
    if (s == "raw")
        return AdapterFormat::Raw;
    throw InvalidArgument("unknown adapter file format '" + s + "' (expected npy, safetensors or raw)");
}

std::optional<AdapterFormat> format_from_path(const std::string& path) {
    auto ends = [&](const char* ext) {
        size_t n = std::strlen(ext);
        return path.size() > n && path.compare(path.size() - n, n, ext) == 0;
    };
    if (ends(".npy"))
        return AdapterFormat::Npy;
    if (ends(".safetensors"))
        return AdapterFormat::Safetensors;
    if (ends(".raw") || ends(".bin") || ends(".f32"))
        return AdapterFormat::Raw;
    return std::nullopt;
}

void check_finite(const Tensor2D& t) {
    size_t n = size_t(t.rows) * t.cols;
    if (t.data.size() != n * dtype_size(t.dtype))
        throw AdapterFileError("tensor byte size does not match its shape");
    for (size_t i = 0; i < n; ++i) {
        bool finite;
        if (t.dtype == DType::F32) {
            uint32_t v;
            std::memcpy(&v, t.data.data() + 4 * i, 4);
            finite = ((v >> 23) & 0xff) != 0xff;
            float f;
            std::memcpy(&f, &v, 4);
            if (finite && std::fabs(f) > kMaxEmbedAbs) // float16 values are always within it
                throw AdapterFileError("value " + std::to_string(f) + " at row " +
                                       std::to_string(i / t.cols) + ", column " + std::to_string(i % t.cols) +
                                       " is outside +-1e6");
        } else {
            uint16_t v;
            std::memcpy(&v, t.data.data() + 2 * i, 2);
            finite = ((v >> 10) & 0x1f) != 0x1f;
        }
        if (!finite)
            throw AdapterFileError("non-finite value (NaN or Inf) at row " + std::to_string(i / t.cols) +
                                   ", column " + std::to_string(i % t.cols));
    }
}

size_t printable_utf8_len(std::string_view s, size_t i) {
    auto b = uint8_t(s[i]);
    if (b < 0x80)
        return b >= 0x20 && b != 0x7f ? 1 : 0;
    size_t n = b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    if (n == 0 || i + n > s.size())
        return 0;
    uint32_t cp = b & (0xffu >> (n + 1));
    for (size_t k = 1; k < n; ++k) {
        auto c = uint8_t(s[i + k]);
        if ((c & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (c & 0x3fu);
    }
    bool overlong = (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000);
    if (overlong || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || cp <= 0x9f)
        return 0;
    return n;
}

void detail::check_shape(uint64_t rows, uint64_t cols, size_t elem, uint64_t avail, const char* what,
                         size_t stored_elem) {
    if (rows == 0 || cols == 0)
        throw AdapterFileError(std::string(what) + ": empty tensor (shape " + std::to_string(rows) + "x" +
                               std::to_string(cols) + ")");
    if (rows > kMaxRows || cols > kMaxCols)
        throw AdapterFileError(std::string(what) + ": shape " + std::to_string(rows) + "x" +
                               std::to_string(cols) + " exceeds the limits (" + std::to_string(kMaxRows) +
                               " rows, " + std::to_string(kMaxCols) + " columns)");
    uint64_t need = rows * cols * elem; // cannot overflow: both bounded above
    uint64_t stored = rows * cols * std::max(elem, stored_elem);
    if (stored > kMaxTensorBytes)
        throw AdapterFileError(std::string(what) + ": shape " + std::to_string(rows) + "x" +
                               std::to_string(cols) + " needs " + std::to_string(stored) +
                               " bytes, over the adapter limit of " + kMaxTensorBytesText + " (" +
                               std::to_string(kMaxTensorBytes) + " bytes)");
    if (avail < need)
        throw AdapterFileError(std::string(what) + ": truncated data (" + std::to_string(avail) +
                               " bytes, shape needs " + std::to_string(need) + ")");
    if (avail > need)
        throw AdapterFileError(std::string(what) + ": " + std::to_string(avail - need) +
                               " unexpected trailing bytes after the tensor data");
}

std::pair<uint64_t, uint64_t> parse_shape(const std::string& s) {
    size_t sep = s.find_first_of(",x");
    auto num = [&](const std::string& p) -> uint64_t {
        if (p.empty() || p.size() > 9 ||
            !std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; }))
            throw InvalidArgument("bad shape '" + s + "' (expected N,H with positive integers)");
        return std::stoull(p);
    };
    if (sep == std::string::npos)
        throw InvalidArgument("bad shape '" + s + "' (expected N,H)");
    uint64_t r = num(s.substr(0, sep)), c = num(s.substr(sep + 1));
    if (r == 0 || c == 0)
        throw InvalidArgument("bad shape '" + s + "': dimensions must be positive");
    return {r, c};
}

Tensor2D parse_raw_f32(std::span<const uint8_t> bytes, uint64_t rows, uint64_t cols) {
    detail::check_shape(rows, cols, 4, bytes.size(), "raw f32 file");
    Tensor2D t{DType::F32, uint32_t(rows), uint32_t(cols), {bytes.begin(), bytes.end()}};
    check_finite(t);
    return t;
}

Tensor2D parse_adapter_file(std::span<const uint8_t> bytes, AdapterFormat fmt,
                            std::optional<std::pair<uint64_t, uint64_t>> shape,
                            const std::optional<std::string>& tensor) {
    switch (fmt) {
    case AdapterFormat::Npy:
        return parse_npy(bytes);
    case AdapterFormat::Safetensors:
        return parse_safetensors(bytes, tensor);
    case AdapterFormat::Raw:
        if (!shape)
            throw InvalidArgument("raw f32 files need an explicit shape (--shape N,H)");
        return parse_raw_f32(bytes, shape->first, shape->second);
    }
    throw InvalidArgument("unknown adapter format");
}

std::vector<uint8_t> read_file_bytes(const std::string& path) {
    // O_NONBLOCK: opening a FIFO would otherwise block until a writer comes (regular files ignore it)
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        throw AdapterFileError("cannot open '" + path + "': " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw AdapterFileError("'" + path + "' is not a regular file");
    }
    if (uint64_t(st.st_size) > kMaxTensorBytes + (1u << 20)) {
        ::close(fd);
        throw AdapterFileError("'" + path + "' is too large for an adapter (" + std::to_string(st.st_size) +
                               " bytes; the limit is " + kMaxTensorBytesText + ")");
    }
    std::vector<uint8_t> buf(size_t(st.st_size));
    size_t got = 0;
    while (got < buf.size()) {
        ssize_t n = ::read(fd, buf.data() + got, buf.size() - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int err = errno;
            ::close(fd);
            throw AdapterFileError("cannot read '" + path +
                                   "': " + (n == 0 ? "unexpected end" : std::strerror(err)));
        }
        got += size_t(n);
    }
    ::close(fd);
    return buf;
}

} // namespace prefixd::store
