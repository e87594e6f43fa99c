// sd_notify wrappers: one datagram per call on $NOTIFY_SOCKET (libsystemd handles abstract and
// path sockets). Errors are ignored by design: notifications are advisory.
#include "daemon/notify.h"

#include <systemd/sd-daemon.h>

namespace prefixd::daemon {

void notify_ready(const std::string& status) {
    sd_notifyf(0, "READY=1\nSTATUS=%s", status.c_str());
}
void notify_status(const std::string& status) {
    sd_notifyf(0, "STATUS=%s", status.c_str());
}
void notify_extend_timeout(uint64_t usec) {
    sd_notifyf(0, "EXTEND_TIMEOUT_USEC=%llu", (unsigned long long)usec);
}
void notify_watchdog() {
    sd_notify(0, "WATCHDOG=1");
}
void notify_stopping(const std::string& status) {
    sd_notifyf(0, "STOPPING=1\nSTATUS=%s", status.c_str());
}
uint64_t watchdog_usec() {
    uint64_t u = 0;
    return sd_watchdog_enabled(0, &u) > 0 ? u : 0;
}

} // namespace prefixd::daemon
