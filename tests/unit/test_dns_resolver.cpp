// Resolver tests against scripted DNS servers on loopback.

#include <set>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "dns_test_support.hpp"
#include "tlsrelay/dns/resolver.hpp"

using namespace std::chrono_literals;
using dns_test::answer_with;
using dns_test::Lab;
using dns_test::reply_to;
using dns_test::Transport;
using tlsrelay::dns::Status;
namespace wire = tlsrelay::dns::wire;

namespace {

std::string address_of(const std::shared_ptr<dns_test::FakeServer>& server) {
    auto nameserver = server->nameserver();
    return nameserver.address.to_string() + ":" + std::to_string(nameserver.port);
}

std::vector<std::string> to_strings(const std::vector<asio::ip::address>& addresses) {
    std::vector<std::string> texts;
    for (const auto& address : addresses) {
        texts.push_back(address.to_string());
    }
    return texts;
}

// A handler that never replies, as a nameserver that is down or filtered.
std::vector<wire::Bytes> drop(const wire::Message&, Transport) {
    return {};
}

}  // namespace

TEST_CASE("MX records sorted by preference", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server(answer_with({
        "example.test. 300 IN MX 20 mx3.example.test.",
        "example.test. 300 IN MX 10 MX1.Example.TEST.",
        "example.test. 300 IN MX 30 mx4.example.test.",
        "example.test. 300 IN MX 10 mx2.example.test.",
    }));
    auto resolver = lab.resolver({server});

    auto answer = lab.run(resolver.query_mx("example.test"));

    REQUIRE(answer.status == Status::ok);
    REQUIRE(answer.records.size() == 4);
    CHECK(answer.records[0].preference == 10);
    CHECK(answer.records[1].preference == 10);
    CHECK(answer.records[2].preference == 20);
    CHECK(answer.records[2].exchange == "mx3.example.test");
    CHECK(answer.records[3].preference == 30);
    CHECK(answer.records[3].exchange == "mx4.example.test");
    std::set<std::string> first_two{answer.records[0].exchange, answer.records[1].exchange};
    CHECK(first_two == std::set<std::string>{"mx1.example.test", "mx2.example.test"});
    CHECK(answer.reason.empty());
}

TEST_CASE("MX records of equal preference shuffled", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server(answer_with({
        "example.test. 300 IN MX 10 a.example.test.",
        "example.test. 300 IN MX 10 b.example.test.",
    }));
    auto resolver = lab.resolver({server});

    // Each order has probability 1/2 per lookup, so 40 lookups all in one
    // order happen with probability 2^-39.
    std::set<std::string> first_exchanges;
    for (int i = 0; i < 40; ++i) {
        auto answer = lab.run(resolver.query_mx("example.test"));
        REQUIRE(answer.records.size() == 2);
        first_exchanges.insert(answer.records[0].exchange);
    }
    CHECK(first_exchanges.size() == 2);
}

TEST_CASE("null MX gives one empty exchange", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server(answer_with({"nomail.example.test. 300 IN MX 0 ."}));
    auto resolver = lab.resolver({server});

    auto answer = lab.run(resolver.query_mx("nomail.example.test."));

    REQUIRE(answer.status == Status::ok);
    REQUIRE(answer.records.size() == 1);
    CHECK(answer.records[0].preference == 0);
    CHECK(answer.records[0].exchange == "");
}

TEST_CASE("query sets RD, EDNS0 size and DO", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server(answer_with({"example.test. 300 IN MX 10 mx.example.test."}));
    auto resolver = lab.resolver({server});

    lab.run(resolver.query_mx("Example.TEST"));

    REQUIRE(server->udp_queries.size() == 1);
    const auto& query = server->udp_queries[0];
    CHECK_FALSE(query.response);
    CHECK(query.recursion_desired);
    CHECK(query.has_edns);
    CHECK(query.edns_udp_size == 1232);
    CHECK(query.dnssec_ok);
    REQUIRE(query.questions.size() == 1);
    CHECK(query.questions[0].name == "example.test");
    CHECK(query.questions[0].type == wire::type_mx);
    CHECK(query.questions[0].rr_class == wire::class_in);
}

TEST_CASE("query ids and source ports vary", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server(answer_with({"example.test. 300 IN A 192.0.2.1"}));
    auto resolver = lab.resolver({server}, 1000ms, 2, 0);

    for (int i = 0; i < 4; ++i) {
        lab.run(resolver.query_a("example.test"));
    }

    // Four equal 16-bit values in a row have probability 2^-48 at random.
    REQUIRE(server->udp_queries.size() == 4);
    std::set<std::uint16_t> ids;
    std::set<std::uint16_t> ports;
    for (std::size_t i = 0; i < 4; ++i) {
        ids.insert(server->udp_queries[i].id);
        ports.insert(server->udp_sources[i].port());
    }
    CHECK(ids.size() > 1);
    CHECK(ports.size() > 1);
}

TEST_CASE("A and AAAA lookups return addresses", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server([](const wire::Message& query, Transport) {
        auto reply = reply_to(query);
        if (query.questions[0].type == wire::type_a) {
            reply.answers = {"host.example.test. 300 IN A 192.0.2.10", "host.example.test. 300 IN A 192.0.2.11"};
        } else {
            reply.answers = {"host.example.test. 300 IN AAAA 2001:db8::10"};
        }
        return std::vector<wire::Bytes>{wire::encode_message(reply)};
    });
    auto resolver = lab.resolver({server});

    auto a = lab.run(resolver.query_a("host.example.test"));
    auto aaaa = lab.run(resolver.query_aaaa("host.example.test"));

    REQUIRE(a.status == Status::ok);
    CHECK(to_strings(a.records) == std::vector<std::string>{"192.0.2.10", "192.0.2.11"});
    REQUIRE(aaaa.status == Status::ok);
    CHECK(to_strings(aaaa.records) == std::vector<std::string>{"2001:db8::10"});
}

TEST_CASE("second server answers after a timeout", "[dns][resolver]") {
    Lab lab;
    auto silent = lab.add_server(drop);
    auto working = lab.add_server(answer_with({"example.test. 300 IN A 192.0.2.1"}));
    auto resolver = lab.resolver({silent, working}, 200ms, 2);

    auto answer = lab.run(resolver.query_a("example.test"));

    REQUIRE(answer.status == Status::ok);
    CHECK(to_strings(answer.records) == std::vector<std::string>{"192.0.2.1"});
    CHECK(silent->udp_queries.size() == 1);
    CHECK(working->udp_queries.size() == 1);
}

TEST_CASE("timeout on every attempt", "[dns][resolver]") {
    Lab lab;
    auto silent = lab.add_server(drop);
    auto resolver = lab.resolver({silent}, 100ms, 2);

    auto answer = lab.run(resolver.query_mx("example.test"));

    CHECK(answer.status == Status::temporary_failure);
    CHECK(answer.reason == "timed out after 2 attempts to " + address_of(silent));
    CHECK(answer.records.empty());
    CHECK(silent->udp_queries.size() == 2);
}

TEST_CASE("failures of all servers in the reason", "[dns][resolver]") {
    Lab lab;
    auto silent = lab.add_server(drop);
    auto refusing = lab.add_server(answer_with({}, wire::rcode_refused));
    auto resolver = lab.resolver({silent, refusing}, 100ms, 1);

    auto answer = lab.run(resolver.query_mx("example.test"));

    CHECK(answer.status == Status::temporary_failure);
    CHECK(answer.reason == "timed out after 1 attempt to " + address_of(silent) + "; REFUSED from " +
                               address_of(refusing));
}

TEST_CASE("SERVFAIL is a temporary failure", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server(answer_with({}, wire::rcode_servfail));
    auto resolver = lab.resolver({server}, 1000ms, 2);

    auto answer = lab.run(resolver.query_mx("example.test"));

    CHECK(answer.status == Status::temporary_failure);
    CHECK(answer.reason == "SERVFAIL from " + address_of(server));
    CHECK(server->udp_queries.size() == 2);
}

TEST_CASE("other rcodes are temporary failures", "[dns][resolver]") {
    auto rcode = GENERATE(wire::rcode_formerr, wire::rcode_notimp, wire::rcode_refused);
    Lab lab;
    auto server = lab.add_server(answer_with({}, rcode));
    auto resolver = lab.resolver({server}, 1000ms, 1);

    auto answer = lab.run(resolver.query_a("example.test"));

    CHECK(answer.status == Status::temporary_failure);
    CHECK(answer.reason == wire::rcode_name(rcode) + " from " + address_of(server));
}

TEST_CASE("NXDOMAIN", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server([](const wire::Message& query, Transport) {
        auto reply = reply_to(query);
        reply.rcode = wire::rcode_nxdomain;
        reply.authority = {"example.test. 300 IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 300"};
        return std::vector<wire::Bytes>{wire::encode_message(reply)};
    });
    auto resolver = lab.resolver({server});

    auto answer = lab.run(resolver.query_mx("missing.example.test"));

    CHECK(answer.status == Status::nxdomain);
    CHECK(answer.records.empty());
    CHECK(server->udp_queries.size() == 1);
}

TEST_CASE("NODATA", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server([](const wire::Message& query, Transport) {
        auto reply = reply_to(query);
        reply.authority = {"example.test. 300 IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 300"};
        return std::vector<wire::Bytes>{wire::encode_message(reply)};
    });
    auto resolver = lab.resolver({server});

    auto answer = lab.run(resolver.query_aaaa("example.test"));

    CHECK(answer.status == Status::nodata);
    CHECK(answer.records.empty());
}

TEST_CASE("records of another type are NODATA", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server(answer_with({"example.test. 300 IN A 192.0.2.1"}));
    auto resolver = lab.resolver({server});

    auto answer = lab.run(resolver.query_mx("example.test"));

    CHECK(answer.status == Status::nodata);
}

TEST_CASE("truncated reply retried over TCP", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server([](const wire::Message& query, Transport transport) {
        auto reply = reply_to(query);
        if (transport == Transport::udp) {
            reply.truncated = true;
        } else {
            reply.answers = {"example.test. 300 IN MX 10 mx1.example.test.",
                             "example.test. 300 IN MX 20 mx2.example.test."};
        }
        return std::vector<wire::Bytes>{wire::encode_message(reply)};
    });
    auto resolver = lab.resolver({server});

    auto answer = lab.run(resolver.query_mx("example.test"));

    REQUIRE(answer.status == Status::ok);
    REQUIRE(answer.records.size() == 2);
    CHECK(answer.records[0].exchange == "mx1.example.test");
    CHECK(server->udp_queries.size() == 1);
    REQUIRE(server->tcp_queries.size() == 1);
    CHECK(server->tcp_queries[0].questions[0].name == "example.test");
}

TEST_CASE("mismatched replies ignored", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server([](const wire::Message& query, Transport) {
        std::vector<wire::Bytes> datagrams;

        auto wrong_id = reply_to(query);
        wrong_id.id = static_cast<std::uint16_t>(query.id + 1);
        wrong_id.answers = {"example.test. 300 IN A 192.0.2.66"};
        datagrams.push_back(wire::encode_message(wrong_id));

        auto wrong_name = reply_to(query);
        wrong_name.questions[0].name = "other.test";
        wrong_name.answers = {"other.test. 300 IN A 192.0.2.67"};
        datagrams.push_back(wire::encode_message(wrong_name));

        auto wrong_type = reply_to(query);
        wrong_type.questions[0].type = wire::type_aaaa;
        datagrams.push_back(wire::encode_message(wrong_type));

        auto not_a_response = reply_to(query);
        not_a_response.response = false;
        not_a_response.answers = {"example.test. 300 IN A 192.0.2.68"};
        datagrams.push_back(wire::encode_message(not_a_response));

        datagrams.push_back({0x12});  // shorter than a header

        datagrams.push_back(wire::encode_message(reply_to(query)));  // the real reply, NODATA
        return datagrams;
    });
    auto resolver = lab.resolver({server});

    auto answer = lab.run(resolver.query_a("example.test"));

    CHECK(answer.status == Status::nodata);
    CHECK(answer.records.empty());
}

TEST_CASE("only mismatched replies time out", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server([](const wire::Message& query, Transport) {
        auto wrong_id = reply_to(query);
        wrong_id.id = static_cast<std::uint16_t>(query.id ^ 0x8000);
        wrong_id.answers = {"example.test. 300 IN A 192.0.2.66"};
        return std::vector<wire::Bytes>{wire::encode_message(wrong_id)};
    });
    auto resolver = lab.resolver({server}, 100ms, 1);

    auto answer = lab.run(resolver.query_a("example.test"));

    CHECK(answer.status == Status::temporary_failure);
    CHECK(answer.reason == "timed out after 1 attempt to " + address_of(server));
}

TEST_CASE("question matched case-insensitively", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server([](const wire::Message& query, Transport) {
        auto reply = reply_to(query);
        reply.questions[0].name = "EXAMPLE.Test";
        reply.answers = {"EXAMPLE.Test. 300 IN A 192.0.2.1"};
        return std::vector<wire::Bytes>{wire::encode_message(reply)};
    });
    auto resolver = lab.resolver({server});

    auto answer = lab.run(resolver.query_a("example.test"));

    REQUIRE(answer.status == Status::ok);
    CHECK(to_strings(answer.records) == std::vector<std::string>{"192.0.2.1"});
}

TEST_CASE("malformed reply is a temporary failure", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server([](const wire::Message& query, Transport) {
        // Our id, then a header that promises one question which never comes.
        wire::Bytes garbage{static_cast<std::uint8_t>(query.id >> 8), static_cast<std::uint8_t>(query.id & 0xff),
                            0x81, 0x80, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff};
        return std::vector<wire::Bytes>{garbage};
    });
    auto resolver = lab.resolver({server}, 1000ms, 1);

    auto answer = lab.run(resolver.query_a("example.test"));

    CHECK(answer.status == Status::temporary_failure);
    CHECK(answer.reason == "malformed reply from " + address_of(server));
}

TEST_CASE("AD bit from loopback is secure", "[dns][resolver]") {
    bool ad = GENERATE(true, false);
    Lab lab;
    auto server = lab.add_server([ad](const wire::Message& query, Transport) {
        auto reply = reply_to(query);
        reply.authentic_data = ad;
        reply.answers = {"example.test. 300 IN MX 10 mx.example.test."};
        return std::vector<wire::Bytes>{wire::encode_message(reply)};
    });
    auto resolver = lab.resolver({server});

    auto answer = lab.run(resolver.query_mx("example.test"));

    REQUIRE(answer.status == Status::ok);
    CHECK(answer.secure == ad);
}

TEST_CASE("CNAME chain within one reply", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server(answer_with({
        "alias.example.test. 300 IN CNAME middle.example.test.",
        "middle.example.test. 300 IN CNAME Real.Example.Test.",
        "real.example.test. 300 IN A 192.0.2.7",
        "unrelated.example.test. 300 IN A 192.0.2.99",
    }));
    auto resolver = lab.resolver({server});

    auto answer = lab.run(resolver.query_a("alias.example.test"));

    REQUIRE(answer.status == Status::ok);
    CHECK(to_strings(answer.records) == std::vector<std::string>{"192.0.2.7"});
    CHECK(server->udp_queries.size() == 1);
}

TEST_CASE("CNAME target queried when missing", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server([](const wire::Message& query, Transport) {
        auto reply = reply_to(query);
        if (query.questions[0].name == "alias.example.test") {
            reply.answers = {"alias.example.test. 300 IN CNAME target.example.test."};
        } else {
            reply.answers = {"target.example.test. 300 IN MX 5 mx.example.test."};
        }
        return std::vector<wire::Bytes>{wire::encode_message(reply)};
    });
    auto resolver = lab.resolver({server});

    auto answer = lab.run(resolver.query_mx("alias.example.test"));

    REQUIRE(answer.status == Status::ok);
    REQUIRE(answer.records.size() == 1);
    CHECK(answer.records[0].exchange == "mx.example.test");
    REQUIRE(server->udp_queries.size() == 2);
    CHECK(server->udp_queries[1].questions[0].name == "target.example.test");
}

TEST_CASE("CNAME to a missing name is NXDOMAIN", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server(
        answer_with({"alias.example.test. 300 IN CNAME gone.example.test."}, wire::rcode_nxdomain));
    auto resolver = lab.resolver({server});

    auto answer = lab.run(resolver.query_a("alias.example.test"));

    CHECK(answer.status == Status::nxdomain);
}

TEST_CASE("CNAME loop is bounded", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server([](const wire::Message& query, Transport) {
        auto reply = reply_to(query);
        const auto& name = query.questions[0].name;
        std::string next = name == "a.example.test" ? "b.example.test." : "a.example.test.";
        reply.answers = {name + ". 300 IN CNAME " + next};
        return std::vector<wire::Bytes>{wire::encode_message(reply)};
    });
    auto resolver = lab.resolver({server}, 1000ms, 2, 0);

    auto answer = lab.run(resolver.query_a("a.example.test"));

    CHECK(answer.status == Status::temporary_failure);
    CHECK(answer.reason == "CNAME chain from a.example.test has more than 8 links");
    CHECK(server->udp_queries.size() == 9);
}

TEST_CASE("CNAME loop in one reply is bounded", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server(answer_with({
        "a.example.test. 300 IN CNAME b.example.test.",
        "b.example.test. 300 IN CNAME a.example.test.",
    }));
    auto resolver = lab.resolver({server});

    auto answer = lab.run(resolver.query_a("a.example.test"));

    CHECK(answer.status == Status::temporary_failure);
    CHECK(answer.reason == "CNAME chain from a.example.test has more than 8 links");
    CHECK(server->udp_queries.size() == 1);
}

TEST_CASE("IPv6 nameserver with port", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server(answer_with({"example.test. 300 IN A 192.0.2.1"}), asio::ip::make_address("::1"));
    auto resolver = lab.resolver({server});

    auto answer = lab.run(resolver.query_a("example.test"));

    REQUIRE(answer.status == Status::ok);
    CHECK(server->udp_queries.size() == 1);
}

TEST_CASE("closed port reported as refused", "[dns][resolver]") {
    Lab lab;
    tlsrelay::dns::Nameserver closed;
    {
        // Take a free port, then release it so nothing listens there.
        asio::ip::udp::socket socket(lab.io, {asio::ip::make_address("127.0.0.1"), 0});
        closed = {socket.local_endpoint().address(), socket.local_endpoint().port()};
    }
    tlsrelay::dns::ResolverOptions options;
    options.nameservers = {closed};
    options.timeout = 1000ms;
    options.attempts = 1;
    tlsrelay::dns::Resolver resolver(lab.io.get_executor(), options);

    auto answer = lab.run(resolver.query_a("example.test"));

    CHECK(answer.status == Status::temporary_failure);
    CHECK(answer.reason == "UDP query to 127.0.0.1:" + std::to_string(closed.port) +
                               " failed: Connection refused");
}

TEST_CASE("no nameservers configured", "[dns][resolver]") {
    Lab lab;
    tlsrelay::dns::Resolver resolver(lab.io.get_executor(), {});

    auto answer = lab.run(resolver.query_mx("example.test"));

    CHECK(answer.status == Status::temporary_failure);
    CHECK(answer.reason == "no nameservers configured");
}

TEST_CASE("invalid name rejected before sending", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server(drop);
    auto resolver = lab.resolver({server});

    auto name = GENERATE(std::string(""), std::string("a..example.test"), std::string(64, 'x') + ".test");
    auto answer = lab.run(resolver.query_mx(name));

    CHECK(answer.status == Status::temporary_failure);
    CHECK(answer.reason == "invalid domain name \"" + name + "\"");
    CHECK(server->udp_queries.empty());
}

TEST_CASE("status names", "[dns][resolver]") {
    CHECK(std::string(tlsrelay::dns::to_string(Status::ok)) == "ok");
    CHECK(std::string(tlsrelay::dns::to_string(Status::nodata)) == "nodata");
    CHECK(std::string(tlsrelay::dns::to_string(Status::nxdomain)) == "nxdomain");
    CHECK(std::string(tlsrelay::dns::to_string(Status::temporary_failure)) == "temporary_failure");
}

TEST_CASE("reply from another address ignored", "[dns][resolver]") {
    Lab lab;
    // A second socket on another loopback address sends a well-formed reply
    // with the right id and question to the resolver's source port. The
    // resolver's connected socket never receives it, and the real server stays
    // silent, so the lookup times out instead of taking the forged records.
    asio::ip::udp::socket spoofer(lab.io, {asio::ip::make_address("127.0.0.2"), 0});
    auto server = lab.add_server(drop);
    server->udp_observer = [&spoofer](const wire::Message& query, const asio::ip::udp::endpoint& source) {
        auto forged = reply_to(query);
        forged.answers = {"example.test. 300 IN A 192.0.2.66"};
        spoofer.send_to(asio::buffer(wire::encode_message(forged)), source);
    };
    auto resolver = lab.resolver({server}, 200ms, 1);

    auto answer = lab.run(resolver.query_a("example.test"));

    CHECK(answer.status == Status::temporary_failure);
    CHECK(answer.reason == "timed out after 1 attempt to " + address_of(server));
    CHECK(answer.records.empty());
}

TEST_CASE("AD bit from untrusted nameserver is insecure", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server(
        [](const wire::Message& query, Transport) {
            auto reply = reply_to(query);
            reply.authentic_data = true;
            reply.answers = {"example.test. 300 IN MX 10 mx.example.test."};
            return std::vector<wire::Bytes>{wire::encode_message(reply)};
        },
        asio::ip::make_address("127.0.0.2"));
    tlsrelay::dns::ResolverOptions options;
    options.nameservers = {server->nameserver()};
    options.trusted_ad_networks = tlsrelay::dns::TrustedNetworks({asio::ip::make_network_v4("127.0.0.1/32")}, {});
    tlsrelay::dns::Resolver resolver(lab.io.get_executor(), options);

    auto answer = lab.run(resolver.query_mx("example.test"));

    REQUIRE(answer.status == Status::ok);
    CHECK_FALSE(answer.secure);
}

TEST_CASE("EDNS buffer size from the options", "[dns][resolver]") {
    auto [configured, sent] = GENERATE(table<std::uint16_t, std::uint16_t>({{4096, 4096}, {512, 512}, {100, 512}}));
    Lab lab;
    auto server = lab.add_server(answer_with({"example.test. 300 IN A 192.0.2.1"}));
    tlsrelay::dns::ResolverOptions options;
    options.nameservers = {server->nameserver()};
    options.edns_buffer_size = configured;
    tlsrelay::dns::Resolver resolver(lab.io.get_executor(), options);

    lab.run(resolver.query_a("example.test"));

    REQUIRE(server->udp_queries.size() == 1);
    CHECK(server->udp_queries[0].edns_udp_size == sent);
}

TEST_CASE("canonical name follows CNAMEs", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server([](const wire::Message& query, Transport) {
        auto reply = reply_to(query);
        if (query.questions[0].name == "_25._tcp.alias.example.test") {
            reply.answers = {"_25._tcp.alias.example.test. 300 IN CNAME _25._tcp.Target.Example.Test."};
        } else {
            reply.answers = {"_25._tcp.target.example.test. 300 IN TLSA 3 1 1 " + std::string(64, 'e')};
        }
        return std::vector<wire::Bytes>{wire::encode_message(reply)};
    });
    auto resolver = lab.resolver({server});

    auto tlsa = lab.run(resolver.query_tlsa("_25._tcp.Alias.example.test."));
    auto direct = lab.run(resolver.query_tlsa("_25._tcp.target.example.test"));

    REQUIRE(tlsa.status == Status::ok);
    CHECK(tlsa.canonical_name == "_25._tcp.target.example.test");
    REQUIRE(tlsa.records.size() == 1);
    CHECK(tlsa.records[0].usage == 3);
    CHECK(tlsa.records[0].data == std::vector<unsigned char>(32, 0xee));
    CHECK(direct.canonical_name == "_25._tcp.target.example.test");
}

TEST_CASE("tlsa_owner_name uses the port", "[dns][resolver]") {
    CHECK(tlsrelay::dns::tlsa_owner_name("mx.example.test", 25) == "_25._tcp.mx.example.test");
    CHECK(tlsrelay::dns::tlsa_owner_name("mx.example.test.", 2525) == "_2525._tcp.mx.example.test");
}

TEST_CASE("second lookup answered from cache", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server([](const wire::Message& query, Transport) {
        auto reply = reply_to(query);
        reply.authentic_data = true;
        reply.answers = {"example.test. 300 IN MX 10 mx.example.test."};
        return std::vector<wire::Bytes>{wire::encode_message(reply)};
    });
    auto resolver = lab.resolver({server});

    auto first = lab.run(resolver.query_mx("example.test"));
    auto second = lab.run(resolver.query_mx("EXAMPLE.test."));

    CHECK(server->udp_queries.size() == 1);
    REQUIRE(second.status == Status::ok);
    CHECK(second.secure);
    REQUIRE(second.records.size() == 1);
    CHECK(second.records[0].exchange == "mx.example.test");
}

TEST_CASE("cached reply expires after its TTL", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server(answer_with({"example.test. 1 IN A 192.0.2.1"}));
    auto resolver = lab.resolver({server});

    lab.run(resolver.query_a("example.test"));
    lab.run(resolver.query_a("example.test"));
    CHECK(server->udp_queries.size() == 1);

    std::this_thread::sleep_for(1100ms);
    lab.run(resolver.query_a("example.test"));
    CHECK(server->udp_queries.size() == 2);
}

TEST_CASE("NXDOMAIN and NODATA cached with SOA", "[dns][resolver]") {
    auto rcode = GENERATE(wire::rcode_nxdomain, wire::rcode_noerror);
    Lab lab;
    auto server = lab.add_server([rcode](const wire::Message& query, Transport) {
        auto reply = reply_to(query);
        reply.rcode = rcode;
        reply.authority = {"example.test. 300 IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 300"};
        return std::vector<wire::Bytes>{wire::encode_message(reply)};
    });
    auto resolver = lab.resolver({server});

    auto first = lab.run(resolver.query_mx("missing.example.test"));
    auto second = lab.run(resolver.query_mx("missing.example.test"));

    auto expected = rcode == wire::rcode_nxdomain ? Status::nxdomain : Status::nodata;
    CHECK(first.status == expected);
    CHECK(second.status == expected);
    CHECK(server->udp_queries.size() == 1);
}

TEST_CASE("negative reply without SOA asked again", "[dns][resolver]") {
    Lab lab;
    auto server = lab.add_server(answer_with({}, wire::rcode_nxdomain));
    auto resolver = lab.resolver({server});

    lab.run(resolver.query_mx("missing.example.test"));
    auto second = lab.run(resolver.query_mx("missing.example.test"));

    CHECK(second.status == Status::nxdomain);
    CHECK(server->udp_queries.size() == 2);
}

TEST_CASE("temporary failure not cached", "[dns][resolver]") {
    Lab lab;
    int replies = 0;
    auto server = lab.add_server([&replies](const wire::Message& query, Transport) {
        auto reply = reply_to(query);
        if (++replies == 1) {
            reply.rcode = wire::rcode_servfail;
        } else {
            reply.answers = {"example.test. 300 IN A 192.0.2.1"};
        }
        return std::vector<wire::Bytes>{wire::encode_message(reply)};
    });
    auto resolver = lab.resolver({server}, 1000ms, 1);

    auto first = lab.run(resolver.query_a("example.test"));
    auto second = lab.run(resolver.query_a("example.test"));

    CHECK(first.status == Status::temporary_failure);
    CHECK(second.status == Status::ok);
    CHECK(server->udp_queries.size() == 2);
}
