// NumPy .npy reader/writer for adapters: format versions 1.0, 2.0 and 3.0; the header dict must
// hold exactly 'descr' ('<f4' or '<f2'), 'fortran_order' (False) and a 2-D 'shape'. Strict:
// unknown keys, duplicate keys, big-endian data, truncation and trailing bytes are errors.
#include "adapter_file.h"
#include "adapter_file_detail.h"

#include <cstring>
#include <map>

namespace prefixd::store {
namespace {

[[noreturn]] void fail(const std::string& m) {
    throw AdapterFileError("npy: " + m);
}

// Cursor over the header text (a Python dict literal).
struct HeaderParser {
    std::string_view s;
    size_t i = 0;
    void ws() {
        while (i < s.size() && (s[i] == ' ' || s[i] == '\t'))
            ++i;
    }
    bool eat(char c) {
        ws();
        if (i < s.size() && s[i] == c) {
            ++i;
            return true;
        }
        return false;
    }
    void expect(char c) {
        if (!eat(c))
            fail(std::string("malformed header: expected '") + c + "' at offset " + std::to_string(i));
    }
    std::string str() {
        ws();
        if (i >= s.size() || (s[i] != '\'' && s[i] != '"'))
            fail("malformed header: expected a quoted string");
        char q = s[i++];
        size_t start = i;
        while (i < s.size() && s[i] != q) {
            if (s[i] == '\\')
                fail("malformed header: escapes are not supported");
            ++i;
        }
        if (i >= s.size())
            fail("malformed header: unterminated string");
        return std::string(s.substr(start, i++ - start));
    }
    bool boolean() {
        ws();
        if (s.substr(i, 4) == "True")
            return i += 4, true;
        if (s.substr(i, 5) == "False")
            return i += 5, false;
        fail("malformed header: expected True or False");
    }
    std::vector<uint64_t> tuple() {
        expect('(');
        std::vector<uint64_t> dims;
        while (!eat(')')) {
            ws();
            size_t start = i;
            while (i < s.size() && s[i] >= '0' && s[i] <= '9')
                ++i;
            if (i == start || i - start > 12)
                fail("malformed header: bad dimension in shape");
            dims.push_back(std::stoull(std::string(s.substr(start, i - start))));
            if (dims.size() > 8)
                fail("shape has too many dimensions");
            if (!eat(',')) {
                expect(')');
                break;
            }
        }
        return dims;
    }
};

struct Header {
    std::string descr;
    bool fortran = false;
    std::vector<uint64_t> shape;
};

Header parse_header(std::string_view text) {
    HeaderParser p{text};
    Header h;
    std::map<std::string, bool> seen;
    p.expect('{');
    while (!p.eat('}')) {
        std::string key = p.str();
        if (seen[key])
            fail("duplicate key '" + key + "' in header");
        seen[key] = true;
        p.expect(':');
        if (key == "descr")
            h.descr = p.str();
        else if (key == "fortran_order")
            h.fortran = p.boolean();
        else if (key == "shape")
            h.shape = p.tuple();
        else
            fail("unexpected key '" + key + "' in header");
        if (!p.eat(',')) {
            p.expect('}');
            break;
        }
    }
    p.ws();
    while (p.i < text.size() && (text[p.i] == ' ' || text[p.i] == '\n'))
        ++p.i; // padding
    if (p.i != text.size())
        fail("unexpected characters after the header dict");
    if (seen.size() != 3)
        fail("header must define descr, fortran_order and shape");
    return h;
}

} // namespace

Tensor2D parse_npy(std::span<const uint8_t> b) {
    static const uint8_t magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    if (b.size() < 10 || std::memcmp(b.data(), magic, 6) != 0)
        fail("not a .npy file (bad magic)");
    uint8_t major = b[6];
    size_t hlen, hstart;
    if (major == 1) {
        hlen = size_t(b[8]) | size_t(b[9]) << 8;
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (b.size() < 12)
            fail("truncated header");
        hlen = size_t(b[8]) | size_t(b[9]) << 8 | size_t(b[10]) << 16 | size_t(b[11]) << 24;
        hstart = 12;
    } else {
        fail("unsupported format version " + std::to_string(major));
    }
    if (hlen > (1u << 20))
        fail("header too large");
    if (b.size() - hstart < hlen)
        fail("truncated header");
    std::string_view text(reinterpret_cast<const char*>(b.data() + hstart), hlen);
    if (hlen == 0 || text.back() != '\n')
        fail("header does not end with a newline");
    for (char c : text)
        if (static_cast<unsigned char>(c) >= 0x80 || (c < 0x20 && c != '\n'))
            fail("header is not printable ASCII");
    Header h = parse_header(text.substr(0, hlen - 1));

    DType dt;
    if (h.descr == "<f4")
        dt = DType::F32;
    else if (h.descr == "<f2")
        dt = DType::F16;
    else if (h.descr == ">f4" || h.descr == ">f2")
        fail("big-endian data ('" + h.descr + "') is not supported");
    else
        fail("unsupported dtype '" + h.descr + "' (expected float32 '<f4' or float16 '<f2')");
    if (h.fortran)
        fail("Fortran-order arrays are not supported (save with C order)");
    if (h.shape.size() != 2)
        fail("expected a 2-D array [n_virtual, hidden], got " + std::to_string(h.shape.size()) +
             " dimension(s)");
    size_t data_off = hstart + hlen;
    detail::check_shape(h.shape[0], h.shape[1], dtype_size(dt), b.size() - data_off, "npy");
    Tensor2D t{dt, uint32_t(h.shape[0]), uint32_t(h.shape[1]), {b.begin() + long(data_off), b.end()}};
    check_finite(t);
    return t;
}

std::vector<uint8_t> write_npy(const Tensor2D& t) {
    if (t.data.size() != t.byte_size())
        throw AdapterFileError("npy: tensor byte size does not match its shape");
    std::string dict = std::string("{'descr': '") + (t.dtype == DType::F32 ? "<f4" : "<f2") +
                       "', 'fortran_order': False, 'shape': (" + std::to_string(t.rows) + ", " +
                       std::to_string(t.cols) + "), }";
    size_t total = 10 + dict.size() + 1;
    size_t pad = (64 - total % 64) % 64;
    dict.append(pad, ' ');
    dict.push_back('\n');
    static const uint8_t magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    std::vector<uint8_t> out(10 + dict.size() + t.data.size());
    std::memcpy(out.data(), magic, 8);
    out[8] = uint8_t(dict.size() & 0xff);
    out[9] = uint8_t(dict.size() >> 8);
    std::memcpy(out.data() + 10, dict.data(), dict.size());
    if (!t.data.empty())
        std::memcpy(out.data() + 10 + dict.size(), t.data.data(), t.data.size());
    return out;
}

} // namespace prefixd::store
