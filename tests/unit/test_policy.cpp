#include <catch2/catch.hpp>

#include <map>
#include <string>

#include "tlsrelay/policy/policy.hpp"

using namespace tlsrelay::policy;
using tlsrelay::tls::DaneMatch;
using tlsrelay::tls::TlsaRecord;

namespace {

const Destination destination{"example.com", "mx.example.com"};
const std::string fingerprint = "aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99";

TlsaRecord record(int usage, int selector, int matching_type) {
    return TlsaRecord{static_cast<std::uint8_t>(usage), static_cast<std::uint8_t>(selector),
                      static_cast<std::uint8_t>(matching_type), std::vector<unsigned char>(32, 0x42)};
}

// The DNS outcomes DANE distinguishes, by name.
std::map<std::string, DnsFacts> dns_scenarios() {
    DnsFacts usable{true, true, TlsaLookup::found, "_25._tcp.mx.example.com", "mx.example.com", {record(3, 1, 1)}, ""};
    DnsFacts none = usable;
    none.tlsa = TlsaLookup::none;
    none.tlsa_records.clear();
    DnsFacts unusable = usable;
    unusable.tlsa_records = {record(1, 1, 1), record(0, 0, 1), record(3, 2, 1)};
    DnsFacts failed = usable;
    failed.tlsa = TlsaLookup::failed;
    failed.tlsa_records.clear();
    failed.tlsa_failure = "SERVFAIL";
    DnsFacts insecure_tlsa = usable;
    insecure_tlsa.tlsa = TlsaLookup::insecure;
    DnsFacts insecure_host{true, false, TlsaLookup::not_done, "", "", {}, ""};
    DnsFacts insecure_mx = usable;
    insecure_mx.mx_secure = false;
    return {
        {"usable TLSA", usable},          {"no TLSA", none},
        {"unusable TLSA", unusable},      {"TLSA lookup failed", failed},
        {"insecure TLSA", insecure_tlsa}, {"insecure host", insecure_host},
        {"insecure MX", insecure_mx},
    };
}

Policy policy_of(Level level) {
    Policy policy;
    policy.level = level;
    if (level == Level::fingerprint) {
        policy.fingerprints = {fingerprint};
    }
    return policy;
}

}  // namespace

// Levels without DANE ignore the DNS facts entirely.
TEST_CASE("policy plan ignores DNS below dane") {
    for (auto level : {Level::none, Level::may, Level::encrypt, Level::fingerprint, Level::verify, Level::secure}) {
        for (const auto& [name, dns] : dns_scenarios()) {
            INFO("level " << to_string(level) << ", DNS " << name);
            auto plan = plan_host(policy_of(level), destination, dns, Settings{});
            CHECK(plan.action == Action::deliver);
            CHECK(plan.effective == level);
            CHECK(plan.tls_required == (level != Level::none && level != Level::may));
            CHECK(plan.try_tls == (level != Level::none));
            CHECK(plan.tlsa_records.empty());
            CHECK_FALSE(needs_tlsa(policy_of(level), dns, Settings{}));
        }
    }
}

// RFC 7672 section 2.2 for dane and dane-only: every DNS outcome.
TEST_CASE("policy plan table for dane and dane-only") {
    struct Case {
        Level level;
        std::string dns;
        Action action;
        Level effective;
        bool tls_required;
        std::size_t records;
    };
    const Case cases[] = {
        {Level::dane, "usable TLSA", Action::deliver, Level::dane, true, 1},
        {Level::dane, "no TLSA", Action::deliver, Level::may, false, 0},
        {Level::dane, "unusable TLSA", Action::deliver, Level::encrypt, true, 0},
        {Level::dane, "TLSA lookup failed", Action::next_host, Level::dane, false, 0},
        {Level::dane, "insecure TLSA", Action::deliver, Level::may, false, 0},
        {Level::dane, "insecure host", Action::deliver, Level::may, false, 0},
        {Level::dane, "insecure MX", Action::deliver, Level::dane, true, 1},
        {Level::dane_only, "usable TLSA", Action::deliver, Level::dane, true, 1},
        {Level::dane_only, "no TLSA", Action::next_host, Level::dane_only, false, 0},
        {Level::dane_only, "unusable TLSA", Action::next_host, Level::dane_only, true, 0},
        {Level::dane_only, "TLSA lookup failed", Action::next_host, Level::dane_only, false, 0},
        {Level::dane_only, "insecure TLSA", Action::next_host, Level::dane_only, false, 0},
        {Level::dane_only, "insecure host", Action::next_host, Level::dane_only, false, 0},
        {Level::dane_only, "insecure MX", Action::deliver, Level::dane, true, 1},
    };
    auto scenarios = dns_scenarios();
    for (const auto& c : cases) {
        INFO("level " << to_string(c.level) << ", DNS " << c.dns);
        const auto& dns = scenarios.at(c.dns);
        auto plan = plan_host(policy_of(c.level), destination, dns, Settings{});
        CHECK(plan.action == c.action);
        if (plan.action == Action::deliver) {
            CHECK(plan.effective == c.effective);
            CHECK(plan.tls_required == c.tls_required);
            CHECK(plan.tlsa_records.size() == c.records);
        } else {
            CHECK_FALSE(plan.reason.empty());
        }
    }
}

TEST_CASE("policy plan insecure MX setting") {
    auto dns = dns_scenarios().at("insecure MX");
    Settings strict;
    strict.dane_insecure_mx = false;
    CHECK_FALSE(needs_tlsa(policy_of(Level::dane), dns, strict));
    auto plan = plan_host(policy_of(Level::dane), destination, dns, strict);
    CHECK(plan.effective == Level::may);
    CHECK(plan.note == "the MX records of example.com are not DNSSEC-signed: using level may");
    plan = plan_host(policy_of(Level::dane_only), destination, dns, strict);
    CHECK(plan.action == Action::next_host);
    CHECK(plan.reason == "the MX records of example.com are not DNSSEC-signed, and the policy is dane-only");
}

TEST_CASE("policy plan reasons in admin words") {
    auto scenarios = dns_scenarios();
    CHECK(plan_host(policy_of(Level::dane), destination, scenarios.at("TLSA lookup failed"), Settings{}).reason ==
          "TLSA lookup failed for _25._tcp.mx.example.com: SERVFAIL");
    CHECK(plan_host(policy_of(Level::dane), destination, scenarios.at("no TLSA"), Settings{}).note ==
          "no TLSA records for _25._tcp.mx.example.com: using level may");
    CHECK(plan_host(policy_of(Level::dane), destination, scenarios.at("unusable TLSA"), Settings{}).note ==
          "every TLSA record for _25._tcp.mx.example.com is unusable: using level encrypt");
    CHECK(plan_host(policy_of(Level::dane_only), destination, scenarios.at("insecure host"), Settings{}).reason ==
          "the address records of mx.example.com are not DNSSEC-signed, and the policy is dane-only");
}

TEST_CASE("policy plan names and SNI") {
    auto usable = dns_scenarios().at("usable TLSA");
    auto plan = plan_host(policy_of(Level::dane), destination, usable, Settings{});
    CHECK(plan.sni == "mx.example.com");
    CHECK(plan.reference_names == std::vector<std::string>{"mx.example.com", "example.com"});

    // A CNAME'd host: the TLSA base name is the expanded name.
    usable.tlsa_base_name = "real.example.net";
    plan = plan_host(policy_of(Level::dane), destination, usable, Settings{});
    CHECK(plan.sni == "real.example.net");
    CHECK(plan.reference_names == std::vector<std::string>{"real.example.net", "mx.example.com", "example.com"});

    plan = plan_host(policy_of(Level::verify), destination, usable, Settings{});
    CHECK(plan.reference_names == std::vector<std::string>{"mx.example.com"});
    plan = plan_host(policy_of(Level::secure), destination, usable, Settings{});
    CHECK(plan.reference_names == std::vector<std::string>{"example.com", ".example.com"});

    Policy matched = policy_of(Level::secure);
    matched.match = {"hostname", ".example.org", "mail.example.net"};
    plan = plan_host(matched, destination, usable, Settings{});
    CHECK(plan.reference_names == std::vector<std::string>{"mx.example.com", ".example.org", "mail.example.net"});
}

namespace {

// The TLS outcomes of one connection, by name.
std::map<std::string, TlsFacts> tls_scenarios() {
    auto established = [](bool certificate, bool trusted, std::vector<std::string> names) {
        TlsFacts facts;
        facts.stage = TlsStage::established;
        facts.protocol = "TLSv1.3";
        facts.certificate_present = certificate;
        facts.chain_trusted = trusted;
        facts.verify_error = trusted ? "" : "unable to get local issuer certificate (X509_V_ERR 20)";
        facts.peer_names = std::move(names);
        facts.digests = {"11:22", "33:44"};
        facts.dane = DaneMatch{false, "", "no TLSA record matched the server's certificate chain"};
        return facts;
    };
    TlsFacts not_offered;
    not_offered.stage = TlsStage::not_offered;
    TlsFacts rejected;
    rejected.stage = TlsStage::rejected;
    rejected.failure = "454 4.7.0 TLS not available";
    TlsFacts failed;
    failed.stage = TlsStage::handshake_failed;
    failed.failure = "TLS handshake (client side) failed";
    TlsFacts dane_match = established(true, false, {"anything.example"});
    dane_match.dane = DaneMatch{true, "DANE TLSA 3 1 1 matched the leaf certificate", ""};
    TlsFacts fingerprint_match = established(true, false, {"anything.example"});
    fingerprint_match.digests.certificate_sha256 = fingerprint;
    return {
        {"not offered", not_offered},
        {"rejected", rejected},
        {"handshake failed", failed},
        {"anonymous", established(false, false, {})},
        {"untrusted", established(true, false, {"mx.example.com"})},
        {"trusted, other name", established(true, true, {"mx.other.example"})},
        {"verified host name", established(true, true, {"mx.example.com"})},
        {"verified next-hop name", established(true, true, {"example.com"})},
        {"DANE match", dane_match},
        {"fingerprint match", fingerprint_match},
    };
}

// "D:trust" deliver, "C" deliver in clear, "N:trust" next host.
std::string outcome(const Verdict& verdict) {
    switch (verdict.action) {
    case Action::deliver: return std::string("D:") + to_string(verdict.trust);
    case Action::deliver_in_clear: return "C";
    case Action::next_host: return std::string("N:") + to_string(verdict.trust);
    }
    return "?";
}

}  // namespace

// Every effective level against every TLS outcome: deliver or not, and the
// trust the log reports.
TEST_CASE("policy verdict table") {
    const Level levels[] = {Level::none, Level::may, Level::encrypt, Level::fingerprint,
                            Level::verify, Level::secure, Level::dane};
    struct Row {
        std::string tls;
        std::string expected[7];
    };
    const Row rows[] = {
        // none          may            encrypt        fingerprint    verify         secure         dane
        {"not offered", {"D:none", "D:none", "N:none", "N:none", "N:none", "N:none", "N:none"}},
        {"rejected", {"D:none", "D:none", "N:none", "N:none", "N:none", "N:none", "N:none"}},
        {"handshake failed", {"C", "C", "N:none", "N:none", "N:none", "N:none", "N:none"}},
        {"anonymous", {"D:anonymous", "D:anonymous", "D:anonymous", "N:anonymous", "N:anonymous", "N:anonymous", "N:anonymous"}},
        {"untrusted", {"D:untrusted", "D:untrusted", "D:untrusted", "N:untrusted", "N:untrusted", "N:untrusted", "N:untrusted"}},
        {"trusted, other name", {"D:trusted", "D:trusted", "D:trusted", "N:trusted", "N:trusted", "N:trusted", "N:untrusted"}},
        {"verified host name", {"D:verified", "D:verified", "D:verified", "N:verified", "D:verified", "D:verified", "N:untrusted"}},
        {"verified next-hop name", {"D:trusted", "D:trusted", "D:trusted", "N:trusted", "N:trusted", "D:verified", "N:untrusted"}},
        {"DANE match", {"D:untrusted", "D:untrusted", "D:untrusted", "N:untrusted", "N:untrusted", "N:untrusted", "D:verified"}},
        {"fingerprint match", {"D:untrusted", "D:untrusted", "D:untrusted", "D:verified", "N:untrusted", "N:untrusted", "N:untrusted"}},
    };
    auto scenarios = tls_scenarios();
    auto usable = dns_scenarios().at("usable TLSA");
    REQUIRE(std::size(rows) == scenarios.size());
    for (const auto& row : rows) {
        for (std::size_t i = 0; i < std::size(levels); ++i) {
            INFO("level " << to_string(levels[i]) << ", TLS " << row.tls);
            auto plan = plan_host(policy_of(levels[i]), destination, usable, Settings{});
            auto verdict = judge(plan, scenarios.at(row.tls), destination.host);
            CHECK(outcome(verdict) == row.expected[i]);
            CHECK(verdict.reason.empty() == (verdict.action == Action::deliver));
        }
    }
}

TEST_CASE("policy verdict reasons in admin words") {
    auto scenarios = tls_scenarios();
    auto usable = dns_scenarios().at("usable TLSA");
    auto plan_for = [&](Level level) { return plan_host(policy_of(level), destination, usable, Settings{}); };
    auto reason = [&](Level level, const std::string& tls) {
        return judge(plan_for(level), scenarios.at(tls), destination.host).reason;
    };
    CHECK(reason(Level::verify, "trusted, other name") == "certificate name mx.other.example does not match mx.example.com");
    CHECK(reason(Level::secure, "trusted, other name") ==
          "certificate name mx.other.example does not match example.com, .example.com");
    CHECK(reason(Level::verify, "untrusted") ==
          "server certificate not trusted: unable to get local issuer certificate (X509_V_ERR 20)");
    CHECK(reason(Level::encrypt, "not offered") == "TLS is required, but was not offered by host mx.example.com");
    CHECK(reason(Level::encrypt, "rejected") ==
          "TLS is required, but host mx.example.com refused to start TLS: 454 4.7.0 TLS not available");
    CHECK(reason(Level::dane, "untrusted") ==
          "DANE authentication failed for mx.example.com: no TLSA record matched the server's certificate chain");
    CHECK(reason(Level::fingerprint, "untrusted") ==
          "server certificate not verified: certificate fingerprint 11:22 and public key fingerprint 33:44 match "
          "none of the configured fingerprints");

    auto verified = judge(plan_for(Level::verify), scenarios.at("verified host name"), destination.host);
    CHECK(verified.how == "CA verified, name matched mx.example.com");
    auto dane = judge(plan_for(Level::dane), scenarios.at("DANE match"), destination.host);
    CHECK(dane.how == "DANE TLSA 3 1 1 matched the leaf certificate");
    CHECK(judge(plan_for(Level::encrypt), scenarios.at("not offered"), destination.host).dsn == "4.7.4");
}

TEST_CASE("policy protocols exclude a session") {
    std::string error;
    Policy policy = policy_of(Level::encrypt);
    policy.protocols = *parse_protocols("!TLSv1.2", error);
    policy.protocols_text = "!TLSv1.2";
    auto plan = plan_host(policy, destination, DnsFacts{}, Settings{});
    TlsFacts facts = tls_scenarios().at("untrusted");
    facts.protocol = "TLSv1.2";
    auto verdict = judge(plan, facts, destination.host);
    CHECK(verdict.action == Action::next_host);
    CHECK(verdict.reason == "TLS protocol TLSv1.2 is excluded by protocols=!TLSv1.2");
    facts.protocol = "TLSv1.3";
    CHECK(judge(plan, facts, destination.host).action == Action::deliver);

    policy.level = Level::may;
    plan = plan_host(policy, destination, DnsFacts{}, Settings{});
    facts.protocol = "TLSv1.2";
    CHECK(judge(plan, facts, destination.host).action == Action::deliver_in_clear);
}

TEST_CASE("policy protocol syntax") {
    std::string error;
    CHECK(parse_protocols("", error) == all_protocols);
    CHECK(parse_protocols("!SSLv2, !SSLv3", error) == all_protocols);
    CHECK(parse_protocols(">=TLSv1.2", error) == (tls_v1_2 | tls_v1_3));
    CHECK(parse_protocols("TLSv1.3", error) == tls_v1_3);
    CHECK(parse_protocols("!SSLv2:!SSLv3:!TLSv1:!TLSv1.1", error) == (tls_v1_2 | tls_v1_3));
    CHECK(parse_protocols("<=TLSv1.2", error) == (tls_v1 | tls_v1_1 | tls_v1_2));
    CHECK_FALSE(parse_protocols("TLSv1.4", error));
    CHECK(error == "unknown TLS protocol \"TLSv1.4\": expected SSLv2, SSLv3, TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3, "
                   "optionally after !, >= or <=");
    CHECK_FALSE(parse_protocols("<=TLSv1.1", error));
    CHECK(error == "protocols \"<=TLSv1.1\" leave neither TLSv1.2 nor TLSv1.3, the only versions tlsrelay uses");
}

TEST_CASE("policy level names round-trip") {
    for (auto level : {Level::none, Level::may, Level::encrypt, Level::fingerprint, Level::verify, Level::secure,
                       Level::dane, Level::dane_only}) {
        CHECK(parse_level(to_string(level)) == level);
    }
    CHECK(std::string(to_string(Level::dane_only)) == "dane-only");
    CHECK_FALSE(parse_level("VERIFY"));
    CHECK_FALSE(parse_level("dane_only"));
}

TEST_CASE("policy fingerprint normalisation") {
    auto upper = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99";
    CHECK(normalize_fingerprint(upper) == fingerprint);
    CHECK(normalize_fingerprint("aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899") == fingerprint);
    CHECK_FALSE(normalize_fingerprint("aa:bb"));
    CHECK_FALSE(normalize_fingerprint("a:ab"));
    CHECK_FALSE(normalize_fingerprint(std::string(64, 'g')));
}
