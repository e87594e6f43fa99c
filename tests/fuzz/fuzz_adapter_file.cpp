// libFuzzer target for the adapter-file parsers (.npy, safetensors, raw f32): any input must be
// either accepted as a valid finite 2-D tensor or rejected with AdapterFileError/InvalidArgument.
// The first byte picks the parser; for raw, the next 4 bytes give the shape.
#include "adapters_store/adapter_file.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>

using namespace prefixd::store;

static void check_tensor(const Tensor2D& t) {
    // Invariants of an accepted tensor: shape within limits, exact size, finite, npy round trip.
    if (t.rows == 0 || t.cols == 0 || t.rows > kMaxRows || t.cols > kMaxCols ||
        t.data.size() != t.byte_size())
        std::abort();
    for (float v : t.to_f32())
        if (!std::isfinite(v))
            std::abort();
    Tensor2D back = parse_npy(write_npy(t));
    if (back.data != t.data || back.rows != t.rows || back.cols != t.cols || back.dtype != t.dtype)
        std::abort();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1)
        return 0;
    uint8_t mode = data[0] % 4;
    std::span<const uint8_t> body(data + 1, size - 1);
    try {
        switch (mode) {
        case 0:
            check_tensor(parse_npy(body));
            break;
        case 1:
            check_tensor(parse_safetensors(body));
            break;
        case 2:
            safetensors_tensor_names(body);
            break;
        case 3: {
            if (body.size() < 4)
                return 0;
            uint64_t rows = body[0] | body[1] << 8, cols = body[2] | body[3] << 8;
            check_tensor(parse_raw_f32(body.subspan(4), rows, cols));
            break;
        }
        }
    } catch (const AdapterFileError&) {
    } catch (const InvalidArgument&) {
    }
    return 0;
}
