// Build version of prefixd, shared by the daemon, the CLI and the engine.
#pragma once
namespace prefixd {
const char* version();
}
