// systemd notifications (sd_notify): READY, STATUS, EXTEND_TIMEOUT_USEC, WATCHDOG, STOPPING.
// Without NOTIFY_SOCKET (tests, development) every call is a silent no-op.
#pragma once

#include <cstdint>
#include <string>

namespace prefixd::daemon {

void notify_ready(const std::string& status);
void notify_status(const std::string& status);
void notify_extend_timeout(uint64_t usec);
void notify_watchdog();
void notify_stopping(const std::string& status);
// Watchdog interval requested by systemd (WATCHDOG_USEC for this pid), 0 when none.
uint64_t watchdog_usec();

} // namespace prefixd::daemon
