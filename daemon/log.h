// Daemon logging: journald (sd_journal_print) when started by systemd (JOURNAL_STREAM set),
// stderr otherwise. printf-style, thread-safe, with syslog priorities.
#pragma once

#include <syslog.h>

namespace prefixd::daemon {

void log_init(); // decides journald vs stderr once
void logf(int priority, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

#define PLOG_INFO(...) ::prefixd::daemon::logf(LOG_INFO, __VA_ARGS__)
#define PLOG_WARN(...) ::prefixd::daemon::logf(LOG_WARNING, __VA_ARGS__)
#define PLOG_ERR(...) ::prefixd::daemon::logf(LOG_ERR, __VA_ARGS__)

} // namespace prefixd::daemon
