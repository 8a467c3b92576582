// Routing tests: MX facts turned into a route or a failure with its status
// code, against the DNSSEC lab (NSD and a validating Unbound on loopback)
// and against scripted servers for failures a real server will not produce
// on request.

#include <algorithm>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "dns_test_lab.hpp"
#include "dns_test_support.hpp"
#include "tlsrelay/delivery/routing.hpp"

using namespace std::chrono_literals;
using dns_test::DnssecLab;
using dns_test::Lab;
using dns_test::reply_to;
using dns_test::Transport;
using tlsrelay::delivery::find_route;
using tlsrelay::delivery::Route;
namespace wire = tlsrelay::dns::wire;

namespace {

tlsrelay::dns::Resolver lab_resolver(Lab& lab, const DnssecLab& dnssec) {
    tlsrelay::dns::ResolverOptions options;
    options.nameservers = {dnssec.unbound()};
    options.timeout = 2000ms;
    options.attempts = 1;
    return tlsrelay::dns::Resolver(lab.io.get_executor(), std::move(options));
}

Route route_to(Lab& lab, tlsrelay::dns::Resolver& resolver, const std::string& domain) {
    return lab.run(find_route(resolver, domain, std::nullopt, 25));
}

std::vector<std::string> host_names(const Route& route) {
    std::vector<std::string> names;
    for (const auto& host : route.hosts) {
        names.push_back(host.name);
    }
    return names;
}

std::vector<std::string> to_strings(const std::vector<asio::ip::address>& addresses) {
    std::vector<std::string> texts;
    for (const auto& address : addresses) {
        texts.push_back(address.to_string());
    }
    return texts;
}

// A scripted server for a small zone. `records` are in presentation format
// with the owner first; a name in `servfail` gets SERVFAIL for every type.
// Other names get their records of the queried type, NODATA when they own
// records of other types only, and NXDOMAIN when they own none.
dns_test::Handler zone_handler(std::vector<std::string> records, std::vector<std::string> servfail = {}) {
    return [records = std::move(records), servfail = std::move(servfail)](const wire::Message& query, Transport) {
        auto reply = reply_to(query);
        const auto& question = query.questions.at(0);
        if (std::find(servfail.begin(), servfail.end(), question.name) != servfail.end()) {
            reply.rcode = wire::rcode_servfail;
            return std::vector<wire::Bytes>{wire::encode_message(reply)};
        }
        static const std::map<std::uint16_t, std::string> type_names{
            {wire::type_a, "A"}, {wire::type_aaaa, "AAAA"}, {wire::type_mx, "MX"}};
        bool name_exists = false;
        for (const auto& record : records) {
            std::istringstream fields(record);
            std::string owner, ttl, rr_class, type;
            fields >> owner >> ttl >> rr_class >> type;
            if (owner != question.name + ".") {
                continue;
            }
            name_exists = true;
            if (type_names.at(question.type) == type) {
                reply.answers.push_back(record);
            }
        }
        if (reply.answers.empty()) {
            reply.rcode = name_exists ? wire::rcode_noerror : wire::rcode_nxdomain;
            reply.authority = {"example.test. 300 IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 60"};
        }
        return std::vector<wire::Bytes>{wire::encode_message(reply)};
    };
}

}  // namespace

TEST_CASE("route to signed MX hosts is secure", "[dns][routing]") {
    DnssecLab dnssec;
    Lab lab;
    auto resolver = lab_resolver(lab, dnssec);

    auto route = route_to(lab, resolver, "secure.test");

    INFO("reason: " << route.reason << "\n" << dnssec.logs());
    REQUIRE(route.status == Route::Status::ok);
    CHECK(route.mx_secure);
    CHECK(route.port == 25);
    REQUIRE(host_names(route) == std::vector<std::string>{"mx1.secure.test", "mx2.secure.test"});
    CHECK(route.hosts[0].secure);
    CHECK(route.hosts[0].canonical_name == "mx1.secure.test");
    CHECK(to_strings(route.hosts[0].addresses) == std::vector<std::string>{"192.0.2.1", "2001:db8::1"});
    CHECK(route.hosts[1].secure);
    CHECK(to_strings(route.hosts[1].addresses) == std::vector<std::string>{"192.0.2.2"});
}

TEST_CASE("route to unsigned zone is insecure", "[dns][routing]") {
    DnssecLab dnssec;
    Lab lab;
    auto resolver = lab_resolver(lab, dnssec);

    auto route = route_to(lab, resolver, "insecure.test");

    INFO("reason: " << route.reason);
    REQUIRE(route.status == Route::Status::ok);
    CHECK_FALSE(route.mx_secure);
    REQUIRE(route.hosts.size() == 1);
    CHECK_FALSE(route.hosts[0].secure);
    CHECK(to_strings(route.hosts[0].addresses) == std::vector<std::string>{"192.0.2.50", "2001:db8::50"});
}

TEST_CASE("route from signed MX to unsigned host", "[dns][routing]") {
    DnssecLab dnssec;
    Lab lab;
    auto resolver = lab_resolver(lab, dnssec);

    auto route = route_to(lab, resolver, "mixed-mx.secure.test");

    INFO("reason: " << route.reason);
    REQUIRE(route.status == Route::Status::ok);
    CHECK(route.mx_secure);
    REQUIRE(route.hosts.size() == 1);
    CHECK(route.hosts[0].name == "mx.insecure.test");
    CHECK_FALSE(route.hosts[0].secure);
}

TEST_CASE("route through MX that is a CNAME", "[dns][routing]") {
    DnssecLab dnssec;
    Lab lab;
    auto resolver = lab_resolver(lab, dnssec);

    auto route = route_to(lab, resolver, "cname-mx.secure.test");

    INFO("reason: " << route.reason);
    REQUIRE(route.status == Route::Status::ok);
    REQUIRE(route.hosts.size() == 1);
    CHECK(route.hosts[0].name == "alias.secure.test");
    CHECK(route.hosts[0].canonical_name == "mx1.secure.test");
    CHECK(route.hosts[0].secure);
    CHECK(to_strings(route.hosts[0].addresses) == std::vector<std::string>{"192.0.2.1", "2001:db8::1"});
}

TEST_CASE("null MX bounces with 5.1.10", "[dns][routing]") {
    DnssecLab dnssec;
    Lab lab;
    auto resolver = lab_resolver(lab, dnssec);

    auto route = route_to(lab, resolver, "nomail.secure.test");

    CHECK(route.status == Route::Status::permanent_failure);
    CHECK(route.dsn == "5.1.10");
    CHECK(route.reason == "Domain nomail.secure.test does not accept mail (null MX)");
    CHECK(route.hosts.empty());
}

TEST_CASE("NXDOMAIN bounces with 5.1.2", "[dns][routing]") {
    DnssecLab dnssec;
    Lab lab;
    auto resolver = lab_resolver(lab, dnssec);

    auto route = route_to(lab, resolver, "missing.secure.test");

    CHECK(route.status == Route::Status::permanent_failure);
    CHECK(route.dsn == "5.1.2");
    CHECK(route.reason ==
          "Host or domain name not found. Name service error for name=missing.secure.test type=MX: Host not found");
}

TEST_CASE("MX NODATA routes to the domain itself", "[dns][routing]") {
    DnssecLab dnssec;
    Lab lab;
    auto resolver = lab_resolver(lab, dnssec);

    auto route = route_to(lab, resolver, "implicit.secure.test");

    INFO("reason: " << route.reason);
    REQUIRE(route.status == Route::Status::ok);
    CHECK(route.mx_secure);
    REQUIRE(host_names(route) == std::vector<std::string>{"implicit.secure.test"});
    CHECK(route.hosts[0].secure);
    CHECK(to_strings(route.hosts[0].addresses) == std::vector<std::string>{"192.0.2.3"});
}

TEST_CASE("bogus MX defers with 4.4.3", "[dns][routing]") {
    DnssecLab dnssec;
    Lab lab;
    auto resolver = lab_resolver(lab, dnssec);

    auto route = route_to(lab, resolver, "broken.secure.test");

    CHECK(route.status == Route::Status::temporary_failure);
    CHECK(route.dsn == "4.4.3");
    CHECK(route.reason == "Host or domain name lookup failed for broken.secure.test type=MX: SERVFAIL from 127.0.0.1:" +
                              std::to_string(dnssec.unbound().port));
}

TEST_CASE("IP literal MX target ignored", "[dns][routing]") {
    DnssecLab dnssec;
    Lab lab;
    auto resolver = lab_resolver(lab, dnssec);

    auto route = route_to(lab, resolver, "literal.secure.test");

    INFO("reason: " << route.reason);
    REQUIRE(route.status == Route::Status::ok);
    CHECK(host_names(route) == std::vector<std::string>{"mx2.secure.test"});
}

TEST_CASE("only IP literal MX targets bounce", "[dns][routing]") {
    Lab lab;
    auto server = lab.add_server(zone_handler({"literal.example.test. 300 IN MX 10 192.0.2.7."}));
    auto resolver = lab.resolver({server});

    auto route = route_to(lab, resolver, "literal.example.test");

    CHECK(route.status == Route::Status::permanent_failure);
    CHECK(route.dsn == "5.4.4");
    CHECK(route.reason == "No usable MX host for literal.example.test: every MX target is an IP address or \".\"");
}

TEST_CASE("MX hosts without addresses bounce", "[dns][routing]") {
    Lab lab;
    auto server = lab.add_server(zone_handler({"example.test. 300 IN MX 10 gone.example.test."}));
    auto resolver = lab.resolver({server});

    auto route = route_to(lab, resolver, "example.test");

    CHECK(route.status == Route::Status::permanent_failure);
    CHECK(route.dsn == "5.4.4");
}

TEST_CASE("MX lookup failure defers", "[dns][routing]") {
    Lab lab;
    auto server = lab.add_server(zone_handler({}, {"example.test"}));
    auto resolver = lab.resolver({server}, 1000ms, 1);

    auto route = route_to(lab, resolver, "example.test");

    CHECK(route.status == Route::Status::temporary_failure);
    CHECK(route.dsn == "4.4.3");
    CHECK(route.reason == "Host or domain name lookup failed for example.test type=MX: SERVFAIL from 127.0.0.1:" +
                              std::to_string(server->nameserver().port));
}

TEST_CASE("host lookup failure skips that host", "[dns][routing]") {
    Lab lab;
    auto server = lab.add_server(zone_handler(
        {
            "example.test. 300 IN MX 10 failing.example.test.",
            "example.test. 300 IN MX 20 working.example.test.",
            "working.example.test. 300 IN A 192.0.2.20",
        },
        {"failing.example.test"}));
    auto resolver = lab.resolver({server}, 1000ms, 1);

    auto route = route_to(lab, resolver, "example.test");

    INFO("reason: " << route.reason);
    REQUIRE(route.status == Route::Status::ok);
    CHECK(host_names(route) == std::vector<std::string>{"working.example.test"});
}

TEST_CASE("host lookup failure with no other host defers", "[dns][routing]") {
    Lab lab;
    auto server = lab.add_server(zone_handler(
        {
            "example.test. 300 IN MX 10 failing.example.test.",
            "example.test. 300 IN MX 20 gone.example.test.",
        },
        {"failing.example.test"}));
    auto resolver = lab.resolver({server}, 1000ms, 1);

    auto route = route_to(lab, resolver, "example.test");

    CHECK(route.status == Route::Status::temporary_failure);
    CHECK(route.dsn == "4.4.3");
    CHECK(route.reason == "Host or domain name lookup failed for failing.example.test: SERVFAIL from 127.0.0.1:" +
                              std::to_string(server->nameserver().port));
}

TEST_CASE("relayhost in brackets skips the MX lookup", "[dns][routing]") {
    Lab lab;
    auto server = lab.add_server(zone_handler({
        "example.test. 300 IN MX 10 mx.example.test.",
        "smarthost.example.test. 300 IN A 192.0.2.30",
    }));
    auto resolver = lab.resolver({server});
    tlsrelay::NextHop relayhost{"smarthost.example.test", 587, true, false};

    auto route = lab.run(find_route(resolver, "example.test", relayhost, 25));

    INFO("reason: " << route.reason);
    REQUIRE(route.status == Route::Status::ok);
    CHECK(route.port == 587);
    CHECK(route.mx_secure);
    REQUIRE(host_names(route) == std::vector<std::string>{"smarthost.example.test"});
    CHECK_FALSE(route.hosts[0].secure);
    for (const auto& query : server->udp_queries) {
        CHECK(query.questions[0].type != wire::type_mx);
    }
}

TEST_CASE("address literal domain needs no lookup", "[dns][routing]") {
    Lab lab;
    auto server = lab.add_server(zone_handler({}));
    auto resolver = lab.resolver({server});

    auto route = route_to(lab, resolver, "[192.0.2.40]");

    REQUIRE(route.status == Route::Status::ok);
    REQUIRE(route.hosts.size() == 1);
    CHECK(to_strings(route.hosts[0].addresses) == std::vector<std::string>{"192.0.2.40"});
    CHECK_FALSE(route.hosts[0].secure);
    CHECK(server->udp_queries.empty());
}
