// Resolver tests against a validating Unbound in front of NSD, both on
// 127.0.0.1 and started by the test (see dns_test_lab.hpp). They check the
// secure bit end to end: signed, unsigned and bogus data, proofs of
// non-existence, CNAMEs, TLSA records and a truncated reply.

#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "dns_test_lab.hpp"
#include "dns_test_support.hpp"
#include "tlsrelay/dns/resolver.hpp"

using namespace std::chrono_literals;
using dns_test::DnssecLab;
using dns_test::Lab;
using tlsrelay::dns::Status;

namespace {

tlsrelay::dns::Resolver lab_resolver(Lab& lab, const tlsrelay::dns::Nameserver& server,
                                     std::uint16_t edns_buffer_size = 1232) {
    tlsrelay::dns::ResolverOptions options;
    options.nameservers = {server};
    options.timeout = 2000ms;
    options.attempts = 1;
    options.edns_buffer_size = edns_buffer_size;
    return tlsrelay::dns::Resolver(lab.io.get_executor(), std::move(options));
}

std::vector<std::string> to_strings(const std::vector<asio::ip::address>& addresses) {
    std::vector<std::string> texts;
    for (const auto& address : addresses) {
        texts.push_back(address.to_string());
    }
    return texts;
}

}  // namespace

TEST_CASE("DNSSEC lab: signed MX and addresses are secure", "[dns][dnssec]") {
    DnssecLab dnssec;
    Lab lab;
    auto resolver = lab_resolver(lab, dnssec.unbound());

    auto mx = lab.run(resolver.query_mx("secure.test"));
    INFO("reason: " << mx.reason << "\n" << dnssec.logs());
    REQUIRE(mx.status == Status::ok);
    CHECK(mx.secure);
    CHECK(mx.canonical_name == "secure.test");
    REQUIRE(mx.records.size() == 2);
    CHECK(mx.records[0].exchange == "mx1.secure.test");
    CHECK(mx.records[1].exchange == "mx2.secure.test");

    auto a = lab.run(resolver.query_a("mx1.secure.test"));
    REQUIRE(a.status == Status::ok);
    CHECK(a.secure);
    CHECK(to_strings(a.records) == std::vector<std::string>{"192.0.2.1"});

    auto aaaa = lab.run(resolver.query_aaaa("mx1.secure.test"));
    REQUIRE(aaaa.status == Status::ok);
    CHECK(aaaa.secure);
    CHECK(to_strings(aaaa.records) == std::vector<std::string>{"2001:db8::1"});
}

TEST_CASE("DNSSEC lab: unsigned zone is insecure", "[dns][dnssec]") {
    DnssecLab dnssec;
    Lab lab;
    auto resolver = lab_resolver(lab, dnssec.unbound());

    auto mx = lab.run(resolver.query_mx("insecure.test"));
    INFO("reason: " << mx.reason << "\n" << dnssec.logs());
    REQUIRE(mx.status == Status::ok);
    CHECK_FALSE(mx.secure);
    REQUIRE(mx.records.size() == 1);
    CHECK(mx.records[0].exchange == "mx.insecure.test");

    auto a = lab.run(resolver.query_a("mx.insecure.test"));
    REQUIRE(a.status == Status::ok);
    CHECK_FALSE(a.secure);
}

TEST_CASE("DNSSEC lab: AD bit ignored from untrusted server", "[dns][dnssec]") {
    DnssecLab dnssec;
    Lab lab;
    tlsrelay::dns::ResolverOptions options;
    options.nameservers = {dnssec.unbound()};
    options.trusted_ad_networks = tlsrelay::dns::TrustedNetworks({asio::ip::make_network_v4("192.0.2.0/24")}, {});
    tlsrelay::dns::Resolver resolver(lab.io.get_executor(), options);

    auto mx = lab.run(resolver.query_mx("secure.test"));

    INFO("reason: " << mx.reason);
    REQUIRE(mx.status == Status::ok);
    CHECK_FALSE(mx.secure);
}

TEST_CASE("DNSSEC lab: authoritative server gives no AD bit", "[dns][dnssec]") {
    DnssecLab dnssec;
    Lab lab;
    auto resolver = lab_resolver(lab, dnssec.nsd());

    auto mx = lab.run(resolver.query_mx("secure.test"));

    INFO("reason: " << mx.reason);
    REQUIRE(mx.status == Status::ok);
    CHECK_FALSE(mx.secure);
}

TEST_CASE("DNSSEC lab: bogus signature is a temporary failure", "[dns][dnssec]") {
    DnssecLab dnssec;
    Lab lab;
    auto resolver = lab_resolver(lab, dnssec.unbound());

    auto a = lab.run(resolver.query_a("broken.secure.test"));
    auto mx = lab.run(resolver.query_mx("broken.secure.test"));

    INFO(dnssec.logs());
    CHECK(a.status == Status::temporary_failure);
    CHECK(a.reason == "SERVFAIL from 127.0.0.1:" + std::to_string(dnssec.unbound().port));
    CHECK(a.records.empty());
    CHECK(mx.status == Status::temporary_failure);

    // The same data without validation shows that only the signature is wrong.
    auto unvalidated = lab.run(lab_resolver(lab, dnssec.nsd()).query_a("broken.secure.test"));
    CHECK(unvalidated.status == Status::ok);
}

TEST_CASE("DNSSEC lab: proven NXDOMAIN and NODATA", "[dns][dnssec]") {
    DnssecLab dnssec;
    Lab lab;
    auto resolver = lab_resolver(lab, dnssec.unbound());

    auto missing = lab.run(resolver.query_mx("missing.secure.test"));
    INFO("reason: " << missing.reason << "\n" << dnssec.logs());
    CHECK(missing.status == Status::nxdomain);
    CHECK(missing.secure);

    auto no_mx = lab.run(resolver.query_mx("implicit.secure.test"));
    CHECK(no_mx.status == Status::nodata);
    CHECK(no_mx.secure);

    auto insecure_missing = lab.run(resolver.query_mx("missing.insecure.test"));
    CHECK(insecure_missing.status == Status::nxdomain);
    CHECK_FALSE(insecure_missing.secure);
}

TEST_CASE("DNSSEC lab: null MX", "[dns][dnssec]") {
    DnssecLab dnssec;
    Lab lab;
    auto resolver = lab_resolver(lab, dnssec.unbound());

    auto mx = lab.run(resolver.query_mx("nomail.secure.test"));

    INFO("reason: " << mx.reason);
    REQUIRE(mx.status == Status::ok);
    CHECK(mx.secure);
    REQUIRE(mx.records.size() == 1);
    CHECK(mx.records[0].preference == 0);
    CHECK(mx.records[0].exchange == "");
}

TEST_CASE("DNSSEC lab: CNAME chains and their secure bit", "[dns][dnssec]") {
    DnssecLab dnssec;
    Lab lab;
    auto resolver = lab_resolver(lab, dnssec.unbound());

    // The MX target is an alias; its address lookup follows the CNAME.
    auto mx = lab.run(resolver.query_mx("cname-mx.secure.test"));
    INFO("reason: " << mx.reason << "\n" << dnssec.logs());
    REQUIRE(mx.status == Status::ok);
    REQUIRE(mx.records.size() == 1);
    CHECK(mx.records[0].exchange == "alias.secure.test");

    auto alias = lab.run(resolver.query_a("alias.secure.test"));
    REQUIRE(alias.status == Status::ok);
    CHECK(alias.secure);
    CHECK(alias.canonical_name == "mx1.secure.test");
    CHECK(to_strings(alias.records) == std::vector<std::string>{"192.0.2.1"});

    // A signed CNAME to an unsigned zone is only as secure as its weakest link.
    auto mixed = lab.run(resolver.query_a("mixed.secure.test"));
    REQUIRE(mixed.status == Status::ok);
    CHECK_FALSE(mixed.secure);
    CHECK(mixed.canonical_name == "mx.insecure.test");
    CHECK(to_strings(mixed.records) == std::vector<std::string>{"192.0.2.50"});
}

TEST_CASE("DNSSEC lab: large MX set retried over TCP", "[dns][dnssec]") {
    DnssecLab dnssec;
    Lab lab;

    // Over UDP with a 512-byte EDNS0 size Unbound returns TC and no records,
    // so all records arrive only if the resolver retried over TCP.
    auto resolver = lab_resolver(lab, dnssec.unbound(), 512);
    auto mx = lab.run(resolver.query_mx("big.secure.test"));

    INFO("reason: " << mx.reason << "\n" << dnssec.logs());
    REQUIRE(mx.status == Status::ok);
    CHECK(mx.secure);
    REQUIRE(mx.records.size() == dns_test::big_mx_count);
    for (int i = 0; i < dns_test::big_mx_count; ++i) {
        CHECK(mx.records[i].preference == i);
    }
}

TEST_CASE("DNSSEC lab: TLSA lookups", "[dns][dnssec]") {
    DnssecLab dnssec;
    Lab lab;
    auto resolver = lab_resolver(lab, dnssec.unbound());

    SECTION("secure records") {
        auto tlsa = lab.run(resolver.query_tlsa(tlsrelay::dns::tlsa_owner_name("mx1.secure.test", 25)));
        INFO("reason: " << tlsa.reason << "\n" << dnssec.logs());
        REQUIRE(tlsa.status == Status::ok);
        CHECK(tlsa.secure);
        CHECK(tlsa.canonical_name == "_25._tcp.mx1.secure.test");
        REQUIRE(tlsa.records.size() == 1);
        CHECK(tlsa.records[0].usage == 3);
        CHECK(tlsa.records[0].selector == 1);
        CHECK(tlsa.records[0].matching_type == 1);
        CHECK(tlsa.records[0].data == std::vector<unsigned char>(32, 0xaa));
    }
    SECTION("port other than 25") {
        auto tlsa = lab.run(resolver.query_tlsa(tlsrelay::dns::tlsa_owner_name("mx1.secure.test", 2525)));
        INFO("reason: " << tlsa.reason);
        REQUIRE(tlsa.status == Status::ok);
        REQUIRE(tlsa.records.size() == 1);
        CHECK(tlsa.records[0].usage == 2);
        CHECK(tlsa.records[0].selector == 0);
    }
    SECTION("CNAME-expanded owner name") {
        auto tlsa = lab.run(resolver.query_tlsa("_25._tcp.alias.secure.test"));
        INFO("reason: " << tlsa.reason);
        REQUIRE(tlsa.status == Status::ok);
        CHECK(tlsa.secure);
        CHECK(tlsa.canonical_name == "_25._tcp.mx1.secure.test");
        CHECK(tlsa.records.size() == 1);
    }
    SECTION("secure NODATA proves absence") {
        auto tlsa = lab.run(resolver.query_tlsa("_25._tcp.mx2.secure.test"));
        INFO("reason: " << tlsa.reason);
        CHECK(tlsa.status == Status::nodata);
        CHECK(tlsa.secure);
        CHECK(tlsa.records.empty());
    }
    SECTION("secure NXDOMAIN proves absence") {
        auto tlsa = lab.run(resolver.query_tlsa("_25._tcp.implicit.secure.test"));
        INFO("reason: " << tlsa.reason);
        CHECK(tlsa.status == Status::nxdomain);
        CHECK(tlsa.secure);
    }
    SECTION("bogus signature is SERVFAIL") {
        auto tlsa = lab.run(resolver.query_tlsa("_25._tcp.broken.secure.test"));
        CHECK(tlsa.status == Status::temporary_failure);
        CHECK(tlsa.reason == "SERVFAIL from 127.0.0.1:" + std::to_string(dnssec.unbound().port));
    }
    SECTION("insecure NXDOMAIN") {
        auto tlsa = lab.run(resolver.query_tlsa("_25._tcp.mx.insecure.test"));
        CHECK(tlsa.status == Status::nxdomain);
        CHECK_FALSE(tlsa.secure);
    }
}

TEST_CASE("DNSSEC lab: TXT strings concatenated", "[dns][dnssec]") {
    DnssecLab dnssec;
    Lab lab;
    auto resolver = lab_resolver(lab, dnssec.unbound());

    auto txt = lab.run(resolver.query_txt("txt.secure.test"));

    INFO("reason: " << txt.reason);
    REQUIRE(txt.status == Status::ok);
    CHECK(txt.secure);
    CHECK(txt.records == std::vector<std::string>{"v=STSv1; id=20240101"});
}
