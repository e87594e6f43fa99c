// Logging backend: journald under systemd, stderr (with a priority tag and timestamp) elsewhere.
#include "daemon/log.h"

#include <systemd/sd-journal.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>

namespace prefixd::daemon {
namespace {
bool g_journal = false;
std::mutex g_mu;
} // namespace

void log_init() {
    g_journal = std::getenv("JOURNAL_STREAM") != nullptr;
}

void logf(int priority, const char* fmt, ...) {
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (g_journal) {
        sd_journal_print(priority, "%s", buf);
        return;
    }
    static const char* names[] = {"EMERG", "ALERT", "CRIT", "ERROR", "WARN", "NOTICE", "INFO", "DEBUG"};
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    tm t;
    gmtime_r(&ts.tv_sec, &t);
    std::lock_guard lk(g_mu);
    std::fprintf(stderr, "%02d:%02d:%02d.%03ld prefixd %s: %s\n", t.tm_hour, t.tm_min, t.tm_sec,
                 ts.tv_nsec / 1000000, names[priority & 7], buf);
}

} // namespace prefixd::daemon
