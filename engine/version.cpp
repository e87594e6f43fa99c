// Build version of prefixd (from the CMake project version).
#include "version.h"
namespace prefixd {
const char* version() { return PREFIXD_VERSION; }
}  // namespace prefixd
