// The TLSA records `tlsrelay tlsa` prints and the start-up check compares:
// every digest is checked against one the openssl command computes from the
// same certificate, for RSA and EC keys.
#include <cstdio>
#include <stdexcept>

#include "tls_test_support.hpp"
#include "tlsrelay/config/config.hpp"
#include "tlsrelay/smtpd/own_tlsa.hpp"
#include "tlsrelay/tls/context.hpp"
#include "tlsrelay/tls/inspect.hpp"

using namespace tlsrelay;
using tls_test::test_pki;

namespace {

// Runs a shell command and returns its standard output.
std::string output_of(const std::string& command) {
    std::string output;
    FILE* pipe = ::popen(command.c_str(), "r");
    REQUIRE(pipe != nullptr);
    char buffer[4096];
    std::size_t count = 0;
    while ((count = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) {
        output.append(buffer, count);
    }
    REQUIRE(::pclose(pipe) == 0);
    return output;
}

// SHA-256 of the certificate's SubjectPublicKeyInfo in lower-case hex, as
// openssl computes it: the "3 1 1" data.
std::string openssl_spki_sha256(const std::string& pem_file) {
    std::string line = output_of("openssl x509 -in " + pem_file +
                                 " -pubkey -noout | openssl pkey -pubin -outform DER | openssl dgst -sha256 -r");
    return line.substr(0, line.find(' '));
}

tls::Der der_of(const std::string& pem_file) {
    auto chain = tls::load_pem_certificates(pem_file);
    REQUIRE(chain.size() == 1);
    return chain.front();
}

tls::TlsaRecord record(int usage, int selector, int matching_type, std::vector<unsigned char> data) {
    return tls::TlsaRecord{static_cast<std::uint8_t>(usage), static_cast<std::uint8_t>(selector),
                           static_cast<std::uint8_t>(matching_type), std::move(data)};
}

std::vector<unsigned char> spki_sha256(const tls::Der& certificate) {
    return tls::tlsa_association_data(certificate, 1, 1);
}

}  // namespace

TEST_CASE("tlsa 3 1 1 of an RSA leaf matches openssl", "[tlsa]") {
    const std::string file = test_pki().file("server.crt");
    auto records = smtpd::tlsa_records_for_chain(tls::load_pem_certificates(file), file);

    REQUIRE(records.size() == 1);
    CHECK(smtpd::tlsa_zone_line("_25._tcp.mx.test.example.", records[0].record) ==
          "_25._tcp.mx.test.example. IN TLSA 3 1 1 " + openssl_spki_sha256(file));
    CHECK(records[0].comment == "3 1 1: key of the certificate CN=mx.test.example in " + file);
}

TEST_CASE("tlsa chain file adds 2 1 1 for its issuer", "[tlsa]") {
    const std::string file = test_pki().file("chained-chain.crt");
    auto chain = tls::load_pem_certificates(file);
    REQUIRE(chain.size() == 2);

    auto records = smtpd::tlsa_records_for_chain(chain, file);

    REQUIRE(records.size() == 2);
    CHECK(smtpd::tlsa_zone_line("_25._tcp.chained.test.example.", records[0].record) ==
          "_25._tcp.chained.test.example. IN TLSA 3 1 1 " + openssl_spki_sha256(test_pki().file("chained.crt")));
    CHECK(smtpd::tlsa_zone_line("_25._tcp.chained.test.example.", records[1].record) ==
          "_25._tcp.chained.test.example. IN TLSA 2 1 1 " +
              openssl_spki_sha256(test_pki().file("intermediate.crt")));
    CHECK(records[1].comment ==
          "2 1 1: key of the issuer CN=tlsrelay test intermediate CA, the last certificate in " + file);
}

TEST_CASE("tlsa describe_certificate reads names dates and key", "[tlsa]") {
    const std::string file = test_pki().file("server.crt");
    auto details = tls::describe_certificate(der_of(file));

    CHECK(details.subject == "CN=mx.test.example");
    CHECK(details.issuer == "CN=tlsrelay test CA");
    CHECK(details.dns_names == std::vector<std::string>{"mx.test.example", "*.mail.test.example"});
    CHECK(details.spki_sha256_hex == openssl_spki_sha256(file));
    // `openssl ca` in the test PKI issues for default_days = 365.
    CHECK(details.not_after - details.not_before == std::chrono::hours(24 * 365));
    auto now = std::chrono::system_clock::now();
    CHECK(details.not_before <= now);
    CHECK(details.not_after > now);

    auto expired = tls::describe_certificate(der_of(test_pki().file("expired.crt")));
    CHECK(expired.not_before == std::chrono::system_clock::from_time_t(1577836800));  // 2020-01-01T00:00:00Z
    CHECK(expired.not_after == std::chrono::system_clock::from_time_t(1609459200));   // 2021-01-01T00:00:00Z
    CHECK(expired.spki_sha256_hex == openssl_spki_sha256(test_pki().file("expired.crt")));

    auto cn_only = tls::describe_certificate(der_of(test_pki().file("cn-only.crt")));
    CHECK(cn_only.dns_names.empty());
}

TEST_CASE("tlsa describe_certificate rejects bad DER", "[tlsa]") {
    CHECK_THROWS_AS(tls::describe_certificate({}), tls::TlsSetupError);
    CHECK_THROWS_AS(tls::describe_certificate({0x30, 0x03, 0x02, 0x01, 0x01}), tls::TlsSetupError);
}

TEST_CASE("tlsa PEM reading skips keys and rejects broken blocks", "[tlsa]") {
    std::string leaf = tls_test::read_text(test_pki().file("chained.crt"));
    std::string key = tls_test::read_text(test_pki().file("chained.key"));

    auto chain = tls::parse_pem_certificates(key + leaf, "mixed.pem");
    REQUIRE(chain.size() == 1);
    CHECK(chain.front() == der_of(test_pki().file("chained.crt")));

    CHECK(tls::parse_pem_certificates(key, "key.pem").empty());
    CHECK(tls::parse_pem_certificates("", "empty.pem").empty());

    std::string truncated = leaf.substr(0, leaf.find("-----END"));
    CHECK_THROWS_WITH(tls::parse_pem_certificates(truncated, "cut.pem"),
                      Catch::Contains("cut.pem: certificate 1 has no \"-----END CERTIFICATE-----\" line"));

    std::string garbled = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
    CHECK_THROWS_WITH(tls::parse_pem_certificates(garbled, "bad.pem"), Catch::Contains("bad.pem: certificate 1"));

    CHECK_THROWS_WITH(tls::load_pem_certificates("/nonexistent/cert.pem"),
                      Catch::Contains("cannot open /nonexistent/cert.pem"));
}

TEST_CASE("tlsa owner name is absolute and in A-labels", "[tlsa]") {
    CHECK(smtpd::absolute_tlsa_owner("mail.example.org", 25) == "_25._tcp.mail.example.org.");
    CHECK(smtpd::absolute_tlsa_owner("Mail.Example.ORG.", 25) == "_25._tcp.mail.example.org.");
    CHECK(smtpd::absolute_tlsa_owner("mail.example.org", 587) == "_587._tcp.mail.example.org.");
    CHECK(smtpd::absolute_tlsa_owner("mx.bücher.example", 25) == "_25._tcp.mx.xn--bcher-kva.example.");

    CHECK_THROWS_AS(smtpd::absolute_tlsa_owner("", 25), std::invalid_argument);
    CHECK_THROWS_AS(smtpd::absolute_tlsa_owner("mail example.org", 25), std::invalid_argument);
    CHECK_THROWS_AS(smtpd::absolute_tlsa_owner("mail..example.org", 25), std::invalid_argument);
    CHECK_THROWS_AS(smtpd::absolute_tlsa_owner(std::string(64, 'a') + ".example", 25), std::invalid_argument);
}

TEST_CASE("own TLSA check matches current or next certificate", "[tlsa]") {
    tls::Der current = der_of(test_pki().file("server.crt"));
    tls::Der next = der_of(test_pki().file("self-signed.crt"));
    tls::Der unrelated = der_of(test_pki().file("other-leaf.crt"));
    const std::string host = "mx.test.example";

    SECTION("record of the current key") {
        auto verdict = smtpd::judge_own_tlsa({record(3, 1, 1, spki_sha256(current))}, {current}, {next}, host);
        CHECK(verdict.outcome == smtpd::OwnTlsaOutcome::matches_current);
        CHECK_FALSE(verdict.next_matches);
        CHECK(verdict.how == "DANE TLSA 3 1 1 matched the leaf certificate");
    }
    SECTION("records of both keys during a rollover") {
        auto verdict = smtpd::judge_own_tlsa(
            {record(3, 1, 1, spki_sha256(current)), record(3, 1, 1, spki_sha256(next))}, {current}, {next}, host);
        CHECK(verdict.outcome == smtpd::OwnTlsaOutcome::matches_current);
        CHECK(verdict.next_matches);
    }
    SECTION("record of the next key only") {
        auto verdict = smtpd::judge_own_tlsa({record(3, 1, 1, spki_sha256(next))}, {current}, {next}, host);
        CHECK(verdict.outcome == smtpd::OwnTlsaOutcome::matches_next_only);
        CHECK(verdict.reason == "no TLSA record matched the server's certificate chain");
    }
    SECTION("record of another key") {
        auto verdict = smtpd::judge_own_tlsa({record(3, 1, 1, spki_sha256(unrelated))}, {current}, {next}, host);
        CHECK(verdict.outcome == smtpd::OwnTlsaOutcome::matches_neither);
    }
    SECTION("record of the SNI entry's key") {
        auto verdict = smtpd::judge_own_tlsa({record(3, 1, 1, spki_sha256(unrelated))}, {current}, {next}, host,
                                             {unrelated});
        CHECK(verdict.outcome == smtpd::OwnTlsaOutcome::matches_sni);
        CHECK(verdict.how == "DANE TLSA 3 1 1 matched the leaf certificate");
        CHECK(verdict.reason == "no TLSA record matched the server's certificate chain");
    }
    SECTION("record of neither the current nor the SNI entry's key") {
        auto verdict = smtpd::judge_own_tlsa({record(3, 1, 1, spki_sha256(next))}, {current}, {}, host, {unrelated});
        CHECK(verdict.outcome == smtpd::OwnTlsaOutcome::matches_neither);
    }
    SECTION("full certificate digest 3 0 1 counts too") {
        auto verdict = smtpd::judge_own_tlsa({record(3, 0, 1, tls::tlsa_association_data(current, 0, 1))},
                                             {current}, {}, host);
        CHECK(verdict.outcome == smtpd::OwnTlsaOutcome::matches_current);
    }
    SECTION("PKIX usages are ignored") {
        auto verdict = smtpd::judge_own_tlsa({record(1, 1, 1, spki_sha256(current))}, {current}, {}, host);
        CHECK(verdict.outcome == smtpd::OwnTlsaOutcome::no_usable_records);
    }
}

TEST_CASE("sni entry names cover the host name", "[tlsa]") {
    CHECK(tls::sni_name_matches("mx.example.org", "mx.example.org"));
    CHECK(tls::sni_name_matches("*.example.org", "mx.example.org"));
    CHECK_FALSE(tls::sni_name_matches("*.example.org", "example.org"));
    CHECK_FALSE(tls::sni_name_matches("*.example.org", "a.mx.example.org"));
    CHECK_FALSE(tls::sni_name_matches("mail.example.org", "mx.example.org"));
}

TEST_CASE("own TLSA check of a DANE-TA record needs the host name", "[tlsa]") {
    auto chain = tls::load_pem_certificates(test_pki().file("chained-chain.crt"));
    auto records = smtpd::tlsa_records_for_chain(chain, "chained-chain.crt");
    REQUIRE(records.size() == 2);
    std::vector<tls::TlsaRecord> issuer_only = {records[1].record};

    CHECK(smtpd::judge_own_tlsa(issuer_only, chain, {}, "chained.test.example.").outcome ==
          smtpd::OwnTlsaOutcome::matches_current);
    auto wrong_name = smtpd::judge_own_tlsa(issuer_only, chain, {}, "mail.other.example");
    CHECK(wrong_name.outcome == smtpd::OwnTlsaOutcome::matches_neither);
    CHECK_THAT(wrong_name.reason, Catch::Contains("as DANE-TA requires"));
}

TEST_CASE("config tls_next_cert_file must hold a certificate", "[tlsa][config]") {
    tls_test::TempDir dir;
    const std::string file = (dir.path() / "tlsrelay.toml").string();

    auto config = config::parse("[smtpd]\ntls_next_cert_file = \"" + test_pki().file("chained-chain.crt") + "\"\n",
                                file);
    CHECK(config.smtpd.tls_next_cert_file == test_pki().file("chained-chain.crt"));
    CHECK(config::parse("", file).smtpd.tls_next_cert_file.empty());

    CHECK_THROWS_WITH(config::parse("[smtpd]\ntls_next_cert_file = \"missing.pem\"\n", file),
                      Catch::Contains(file + ":2: invalid smtpd.tls_next_cert_file: cannot open " +
                                      (dir.path() / "missing.pem").string()));
    CHECK_THROWS_WITH(
        config::parse("[smtpd]\ntls_next_cert_file = \"" + test_pki().file("chained.key") + "\"\n", file),
        Catch::Contains("invalid smtpd.tls_next_cert_file: " + test_pki().file("chained.key") +
                        ": no certificate found"));
}
