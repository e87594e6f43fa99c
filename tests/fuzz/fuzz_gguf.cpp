// libFuzzer target: arbitrary bytes -> gguf::Parsed::parse. Must either parse or throw GgufError;
// on success every tensor's data range must lie inside the input and typed getters must not crash.
#include "engine/gguf.h"

#include <cstdint>
#include <cstdlib>

using namespace prefixd::gguf;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        Parsed p = Parsed::parse({data, size});
        for (const auto& t : p.tensors) {
            if (t.data < data || t.data + t.nbytes > data + size)
                std::abort();
            volatile uint64_t n = t.n_elements();
            (void)n;
            (void)p.find(t.name);
        }
        for (const auto& [k, v] : p.kv) {
            try {
                (void)p.get_u64(k, 0);
            } catch (const GgufError&) {
            }
            try {
                (void)p.get_str(k);
            } catch (const GgufError&) {
            }
        }
    } catch (const GgufError&) {
    }
    return 0;
}
