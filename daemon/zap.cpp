// ZAP request handling: frames version, request id, domain, address, identity, mechanism,
// credentials...; reply version, request id, status code, status text, user id, metadata.
#include "daemon/zap.h"

#include "adapters_store/store.h"
#include "daemon/log.h"

#include <zmq.h>

#include <stdexcept>
#include <vector>

namespace prefixd::daemon {

ZapHandler::ZapHandler(void* ctx, std::string db_path, std::string domain)
    : ctx_(ctx), db_path_(std::move(db_path)), domain_(std::move(domain)) {
    sock_ = zmq_socket(ctx_, ZMQ_REP);
    int zero = 0;
    zmq_setsockopt(sock_, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(sock_, "inproc://zeromq.zap.01") != 0) {
        std::string err = zmq_strerror(zmq_errno());
        zmq_close(sock_);
        throw std::runtime_error("cannot bind the ZAP handler (inproc://zeromq.zap.01): " + err);
    }
    thread_ = std::thread([this] { run(); });
}

ZapHandler::~ZapHandler() {
    stop_ = true;
    if (thread_.joinable())
        thread_.join();
}

namespace {
std::vector<std::string> recv_all(void* s) {
    std::vector<std::string> parts;
    int more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, 0) < 0) {
            zmq_msg_close(&m);
            return {};
        }
        parts.emplace_back(static_cast<char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
        more = zmq_msg_more(&m);
        zmq_msg_close(&m);
    }
    return parts;
}
void send_reply(void* s, const std::string& req_id, const char* code, const std::string& text,
                const std::string& user) {
    zmq_send(s, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(s, req_id.data(), req_id.size(), ZMQ_SNDMORE);
    zmq_send(s, code, 3, ZMQ_SNDMORE);
    zmq_send(s, text.data(), text.size(), ZMQ_SNDMORE);
    zmq_send(s, user.data(), user.size(), ZMQ_SNDMORE);
    zmq_send(s, "", 0, 0);
}
} // namespace

void ZapHandler::run() noexcept {
    try {
        store::StoreOptions so;
        so.create = false;
        store::Store st = store::Store::open(db_path_, so);
        while (!stop_) {
            zmq_pollitem_t it{sock_, 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&it, 1, 200) < 0) {
                if (zmq_errno() == EINTR)
                    continue;
                break;
            }
            if (!(it.revents & ZMQ_POLLIN))
                continue;
            auto f = recv_all(sock_);
            if (f.size() < 6) { // REP must still answer something to stay in sync
                send_reply(sock_, f.size() > 1 ? f[1] : "", "500", "malformed ZAP request", "");
                continue;
            }
            const std::string& req_id = f[1];
            if (f[0] != "1.0") {
                send_reply(sock_, req_id, "500", "unsupported ZAP version", "");
                continue;
            }
            if (f[2] != domain_) {
                ++refused_;
                send_reply(sock_, req_id, "400", "wrong ZAP domain", "");
                continue;
            }
            if (f[5] != "CURVE" || f.size() < 7 || f[6].size() != 32) {
                ++refused_;
                send_reply(sock_, req_id, "400", "CURVE required", "");
                continue;
            }
            char z85[41];
            zmq_z85_encode(z85, reinterpret_cast<const uint8_t*>(f[6].data()), 32);
            std::optional<store::Tenant> t;
            try {
                t = st.find_tenant_by_key(z85);
            } catch (const std::exception& e) {
                PLOG_ERR("ZAP: store lookup failed: %s", e.what());
                send_reply(sock_, req_id, "500", "store unavailable", "");
                continue;
            }
            if (!t || !t->active()) {
                ++refused_;
                PLOG_WARN("ZAP: refused %s key %.8s... from %s", t ? "revoked" : "unknown", z85,
                          f[3].c_str());
                send_reply(sock_, req_id, "400", "unknown or revoked key", "");
                continue;
            }
            ++accepted_;
            send_reply(sock_, req_id, "200", "OK", t->name);
        }
    } catch (const std::exception& e) {
        PLOG_ERR("ZAP handler died: %s", e.what());
    }
    zmq_close(sock_);
    alive_ = false;
}

} // namespace prefixd::daemon
