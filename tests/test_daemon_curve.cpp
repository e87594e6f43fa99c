// CURVE integration tests against the real prefixd: the ZAP handler maps keys to tenants; unknown
// and revoked keys get no service, a key revoked while connected is refused at its next job, and
// tenant A can neither use nor detect tenant B's adapter, nor claim B's identity.
#include "adapters_store/curve_keys.h"
#include "test_daemon_harness.h"

#include <cstring>

using namespace prefixd;
using namespace prefixd::daemon;
using namespace prefixd::test;

namespace {
ClientOptions curve(const DaemonProcess& d, const std::string& server_pub, const store::CurveKeypair& kp) {
    ClientOptions o;
    o.endpoint = d.endpoint;
    o.server_key = server_pub;
    o.public_key = kp.public_key;
    o.secret_key = kp.secret_key;
    return o;
}
JobRequest job(const std::string& id, const std::string& adapter = "") {
    JobRequest r;
    r.job_id = id;
    r.text = "hi";
    r.max_tokens = 2;
    r.adapter = adapter;
    return r;
}
} // namespace

TEST_CASE("CURVE tenants: unknown/revoked keys refused, tenant isolation") {
    auto dir = temp_dir("daemon-curve");
    auto server = store::generate_curve_keypair();
    store::write_key_file((dir / "server.key").string(), server);
    auto ka = store::generate_curve_keypair(), kb = store::generate_curve_keypair(),
         kx = store::generate_curve_keypair();
    std::string db = (dir / "prefixd.db").string();
    {
        store::Store st = store::Store::open(db);
        st.add_tenant({"alice", ka.public_key, 0, 0});
        st.add_tenant({"bob", kb.public_key, 0, 0});
        store::NewAdapter a;
        a.name = "bob-secret";
        a.scope = store::AdapterScope::of("bob");
        a.tensor.rows = 2;
        a.tensor.cols = 128;
        std::vector<float> v(256, 0.01f);
        a.tensor.data.resize(1024);
        std::memcpy(a.tensor.data.data(), v.data(), 1024);
        st.add_adapter(a);
    }
    DaemonProcess d(dir, {"--server-key-file", (dir / "server.key").string()}, false);
    auto oa = curve(d, server.public_key, ka), ob = curve(d, server.public_key, kb);
    REQUIRE(d.wait_ready(60000, &oa));

    Client alice(oa), bob(ob);
    Reply r = alice.run(job("a1"), 30000).final;
    REQUIRE(r.type == Reply::Result);
    {
        store::Store st = store::Store::open(db, {.create = false});
        auto row = st.find_job("alice", "a1");
        REQUIRE(row);
        CHECK_FALSE(st.find_job("bob", "a1"));
    }
    SUBCASE("an unknown key and a plain (non-CURVE) client get no service") {
        Client x(curve(d, server.public_key, kx));
        x.send(build_request(job("x1")));
        CHECK_FALSE(x.recv(2000));
        ClientOptions plain;
        plain.endpoint = d.endpoint;
        Client p(plain);
        p.send(build_request(job("p1")));
        CHECK_FALSE(p.recv(2000));
    }
    SUBCASE("alice cannot use or detect bob's adapter") {
        Reply own = bob.run(job("b1", "bob-secret"), 30000).final;
        REQUIRE(own.type == Reply::Result);
        CHECK(own.result.usage.virtual_tokens == 2);
        Reply theirs = alice.run(job("a2", "bob-secret"), 30000).final;
        Reply none = alice.run(job("a3", "no-such-adapter"), 30000).final;
        CHECK(theirs.code == Code::NotFound);
        CHECK(none.code == Code::NotFound);
        // Same answer except the name the client itself sent.
        std::string m1 = theirs.message, m2 = none.message;
        m1.replace(m1.find("bob-secret"), 10, "X");
        m2.replace(m2.find("no-such-adapter"), 15, "X");
        CHECK(m1 == m2);
    }
    SUBCASE("alice cannot claim bob's identity nor see his job outcomes") {
        JobRequest j = job("a4");
        j.tenant = "bob";
        CHECK(alice.run(j, 30000).final.code == Code::Unauthenticated);
        Reply b = bob.run(job("same-id"), 30000).final;
        REQUIRE(b.type == Reply::Result);
        Reply a = alice.run(job("same-id"), 30000).final;
        REQUIRE(a.type == Reply::Result);
        CHECK_FALSE(a.result.replayed); // a fresh job of alice's, not bob's stored outcome
    }
    SUBCASE("a key revoked while connected is refused at its next job and cannot reconnect") {
        {
            store::Store st = store::Store::open(db, {.create = false});
            st.revoke_tenant("bob");
        }
        Reply r2 = bob.run(job("b2"), 30000).final;
        CHECK(r2.type == Reply::Error);
        CHECK(r2.code == Code::Unauthenticated);
        Client again(ob);
        again.send(build_request(job("b3")));
        CHECK_FALSE(again.recv(2000));
        CHECK(alice.run(job("a5"), 30000).final.type == Reply::Result); // others keep being served
    }
    CHECK(d.stop() == 0);
}

TEST_CASE("CURVE mode refuses to start without a usable server key; insecure mode refuses public endpoints") {
    auto dir = temp_dir("daemon-curve-bad");
    {
        DaemonProcess d(dir, {"--server-key-file", (dir / "missing.key").string()}, false);
        CHECK_FALSE(d.wait_ready(20000));
        CHECK(d.stop() != 0);
    }
    {
        DaemonProcess d(dir, {"--endpoint", "tcp://0.0.0.0:5599"}, true);
        CHECK_FALSE(d.wait_ready(5000));
        CHECK(d.stop() == 2); // configuration error
    }
}
