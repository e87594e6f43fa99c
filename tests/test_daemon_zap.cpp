// ZAP handler vs CURVE socket start order (RELIABILITY.md: libzmq fails open without a handler).
// The daemon binds its ZapHandler first; this test also binds the CURVE ROUTER first, with the
// daemon's options (ZAP domain + ZMQ_ZAP_ENFORCE_DOMAIN): clients are refused while no handler
// exists and authenticated once it does. The last case shows the hazard those options guard
// against: without ENFORCE_DOMAIN and without a handler, an unknown key is let in.
#include "adapters_store/curve_keys.h"
#include "daemon/zap.h"
#include "test_daemon_harness.h"

#include <zmq.h>

using namespace prefixd;
using namespace prefixd::daemon;
using namespace prefixd::test;

namespace {
struct CurveRouter {
    void* sock;
    CurveRouter(void* ctx, const store::CurveKeypair& server, const std::string& ep, bool enforce) {
        sock = zmq_socket(ctx, ZMQ_ROUTER);
        int one = 1, zero = 0;
        zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, "prefixd", 7);
        if (enforce)
            zmq_setsockopt(sock, 93 /* ZMQ_ZAP_ENFORCE_DOMAIN */, &one, sizeof one);
        zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one);
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, server.secret_key.c_str(), 40);
        REQUIRE(zmq_bind(sock, ep.c_str()) == 0);
    }
    ~CurveRouter() { zmq_close(sock); }
    // Waits for one message; returns its User-Id ("" when none; nullopt when nothing arrived).
    std::optional<std::string> recv_user(int timeout_ms) {
        zmq_pollitem_t it{sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, timeout_ms) <= 0)
            return std::nullopt;
        std::optional<std::string> user;
        for (int more = 1, i = 0; more; ++i) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            REQUIRE(zmq_msg_recv(&m, sock, 0) >= 0);
            more = zmq_msg_more(&m);
            if (i == 1) {
                const char* u = zmq_msg_gets(&m, "User-Id");
                user = u ? u : "";
            }
            zmq_msg_close(&m);
        }
        return user;
    }
};
ClientOptions curve_client(const std::string& ep, const store::CurveKeypair& server,
                           const store::CurveKeypair& kp) {
    ClientOptions o;
    o.endpoint = ep;
    o.server_key = server.public_key;
    o.public_key = kp.public_key;
    o.secret_key = kp.secret_key;
    return o;
}
std::optional<std::string> try_send(CurveRouter& r, const ClientOptions& o, int timeout_ms = 1500) {
    Client c(o);
    c.send(Bytes{'h', 'i'});
    return r.recv_user(timeout_ms);
}
} // namespace

TEST_CASE("ZAP handler and CURVE socket: both start orders fail closed") {
    auto dir = temp_dir("daemon-zap");
    std::string db = (dir / "prefixd.db").string();
    auto server = store::generate_curve_keypair(), alice = store::generate_curve_keypair(),
         stranger = store::generate_curve_keypair();
    {
        store::Store st = store::Store::open(db);
        st.add_tenant({"alice", alice.public_key, 0, 0});
    }
    std::string ep = "ipc://" + (dir / "zap.sock").string();
    void* ctx = zmq_ctx_new();
    SUBCASE("handler first (the daemon's order)") {
        ZapHandler zap(ctx, db, "prefixd");
        CurveRouter r(ctx, server, ep, true);
        CHECK(try_send(r, curve_client(ep, server, alice)) == std::optional<std::string>("alice"));
        CHECK_FALSE(try_send(r, curve_client(ep, server, stranger)));
        CHECK(zap.accepted() == 1);
        CHECK(zap.refused() == 1);
    }
    SUBCASE("CURVE socket first: refused until the handler exists, then authenticated") {
        CurveRouter r(ctx, server, ep, true);
        CHECK_FALSE(try_send(r, curve_client(ep, server, alice)));
        CHECK_FALSE(try_send(r, curve_client(ep, server, stranger)));
        ZapHandler zap(ctx, db, "prefixd");
        CHECK(try_send(r, curve_client(ep, server, alice), 5000) == std::optional<std::string>("alice"));
        CHECK_FALSE(try_send(r, curve_client(ep, server, stranger)));
        CHECK(zap.accepted() >= 1);
    }
    SUBCASE("the hazard: no handler and no ENFORCE_DOMAIN lets an unknown key in") {
        CurveRouter r(ctx, server, ep, false);
        CHECK(try_send(r, curve_client(ep, server, stranger)).has_value());
    }
    zmq_ctx_term(ctx);
}
