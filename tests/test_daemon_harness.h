// Integration-test harness: starts the real prefixd binary (fork/exec) on a tiny test model with
// a temp database, optionally with a NOTIFY_SOCKET datagram socket, waits for READY, and stops it
// with SIGTERM or SIGKILL. Clients are daemon/client.h over real sockets.
#pragma once

#include "adapters_store/store.h"
#include "daemon/client.h"
#include "test_env.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <mutex>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace prefixd::test {

inline std::string tiny_model() {
    return (models_dir() / "tiny-v2-f32.gguf").string();
}

// AF_UNIX SOCK_DGRAM socket standing in for systemd's notify socket. A thread drains it all the
// time (like systemd: an unread queue would block the sender) and keeps every datagram.
struct NotifySocket {
    int fd = -1;
    std::string path;
    std::mutex mu;
    std::vector<std::string> got;
    std::atomic<bool> stop{false};
    std::thread reader;
    explicit NotifySocket(const std::filesystem::path& p) : path(p.string()) {
        fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
        ::unlink(path.c_str());
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        timeval tv{0, 50000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        reader = std::thread([this] {
            while (!stop) {
                char buf[4096];
                ssize_t n = ::recv(fd, buf, sizeof buf, 0);
                if (n > 0) {
                    std::lock_guard lk(mu);
                    got.emplace_back(buf, size_t(n));
                }
            }
        });
    }
    ~NotifySocket() {
        stop = true;
        reader.join();
        ::close(fd);
        ::unlink(path.c_str());
    }
    // Waits up to timeout_ms for a datagram containing `until`; returns all datagrams so far.
    std::vector<std::string> read(int timeout_ms, const std::string& until = "") {
        auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        for (;;) {
            {
                std::lock_guard lk(mu);
                if (!until.empty())
                    for (auto& m : got)
                        if (m.find(until) != std::string::npos)
                            return got;
                if (std::chrono::steady_clock::now() >= end)
                    return got;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }
};

struct DaemonProcess {
    pid_t pid = -1;
    int exit_status = -1; // set once the process was reaped
    std::filesystem::path dir;
    std::string endpoint, db, log;
    std::vector<std::string> args;

    // `extra` args are appended (--backend cpu unless extra names one); insecure dev mode unless
    // `insecure` is false.
    DaemonProcess(const std::filesystem::path& d, std::vector<std::string> extra = {}, bool insecure = true,
                  const std::string& notify = "")
        : dir(d) {
        endpoint = "ipc://" + (dir / "prefixd.sock").string();
        db = (dir / "prefixd.db").string();
        log = (dir / "prefixd.log").string();
        bool backend_given = false, model_given = false;
        for (auto& e : extra) {
            backend_given |= e == "--backend";
            model_given |= e == "--model";
        }
        args = {(build_dir() / "bin" / "prefixd").string(),
                "--db",
                db,
                "--endpoint",
                endpoint,
                "--max-ctx",
                "256"};
        if (!model_given) {
            args.push_back("--model");
            args.push_back(tiny_model());
        }
        if (!backend_given) {
            args.push_back("--backend");
            args.push_back("cpu");
        }
        if (insecure)
            args.push_back("--insecure-dev");
        for (auto& e : extra)
            args.push_back(e);
        start(notify);
    }
    void start(const std::string& notify = "") {
        exit_status = -1;
        pid = fork();
        if (pid == 0) {
            FILE* f = std::freopen(log.c_str(), "a", stderr);
            (void)f;
            if (!notify.empty())
                setenv("NOTIFY_SOCKET", notify.c_str(), 1);
            else
                unsetenv("NOTIFY_SOCKET");
            unsetenv("JOURNAL_STREAM");
            std::vector<char*> argv;
            for (auto& a : args)
                argv.push_back(const_cast<char*>(a.c_str()));
            argv.push_back(nullptr);
            execv(argv[0], argv.data());
            _exit(127);
        }
    }
    // Polls Health until the daemon answers (or exits).
    bool wait_ready(int timeout_ms = 60000, const daemon::ClientOptions* curve = nullptr) {
        daemon::ClientOptions o;
        if (curve)
            o = *curve;
        o.endpoint = endpoint;
        daemon::Client c(o);
        auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        int n = 0;
        while (std::chrono::steady_clock::now() < end) {
            if (!alive())
                return false;
            daemon::JobRequest r;
            r.kind = daemon::Kind::Health;
            r.job_id = "health-" + std::to_string(n++);
            c.send(daemon::build_request(r));
            if (auto b = c.recv(300))
                return daemon::parse_reply(*b).type == daemon::Reply::Health;
        }
        return false;
    }
    bool alive() {
        if (pid <= 0)
            return false;
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            pid = -1;
        }
        return pid > 0;
    }
    // Sends `sig` and waits for the exit status (-1 on timeout, then SIGKILL); once stopped, the
    // same status again.
    int stop(int sig = SIGTERM, int timeout_ms = 60000) {
        if (pid <= 0)
            return exit_status;
        ::kill(pid, sig);
        auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        int st = 0;
        while (std::chrono::steady_clock::now() < end) {
            pid_t r = waitpid(pid, &st, WNOHANG);
            if (r == pid) {
                pid = -1;
                return exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        ::kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        pid = -1;
        return -1;
    }
    ~DaemonProcess() {
        if (pid > 0)
            stop(SIGKILL, 5000);
    }
    daemon::ClientOptions client_options() const {
        daemon::ClientOptions o;
        o.endpoint = endpoint;
        return o;
    }
};

inline daemon::JobRequest gen_job(const std::string& id, const std::string& text, int n,
                                  const std::string& tenant = "t1") {
    daemon::JobRequest r;
    r.job_id = id;
    r.text = text;
    r.max_tokens = n;
    r.tenant = tenant;
    return r;
}

} // namespace prefixd::test
