// TLSA matching against certificates from the test PKI. Every digest the
// code computes is compared with one computed by the openssl command from
// the same certificate.
#include <cstdio>

#include "tls_test_support.hpp"
#include "tlsrelay/tls/dane.hpp"

using namespace tlsrelay::tls;
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

std::vector<unsigned char> bytes_of(const std::string& text) { return {text.begin(), text.end()}; }

// The certificate `name` of the test PKI as DER, converted by openssl.
Der certificate(const std::string& name) {
    return bytes_of(output_of("openssl x509 -in " + test_pki().file(name + ".crt") + " -outform DER"));
}

// The SubjectPublicKeyInfo as openssl extracts it.
Der openssl_spki(const std::string& name) {
    return bytes_of(output_of("openssl x509 -in " + test_pki().file(name + ".crt") +
                              " -pubkey -noout | openssl pkey -pubin -outform DER"));
}

std::vector<unsigned char> openssl_digest(const std::string& pipeline, const std::string& algorithm) {
    return bytes_of(output_of(pipeline + " | openssl dgst -" + algorithm + " -binary"));
}

std::vector<unsigned char> openssl_certificate_digest(const std::string& name, const std::string& algorithm) {
    return openssl_digest("openssl x509 -in " + test_pki().file(name + ".crt") + " -outform DER", algorithm);
}

std::vector<unsigned char> openssl_key_digest(const std::string& name, const std::string& algorithm) {
    return openssl_digest("openssl x509 -in " + test_pki().file(name + ".crt") +
                              " -pubkey -noout | openssl pkey -pubin -outform DER",
                          algorithm);
}

TlsaRecord record(int usage, int selector, int matching_type, std::vector<unsigned char> data) {
    return TlsaRecord{static_cast<std::uint8_t>(usage), static_cast<std::uint8_t>(selector),
                      static_cast<std::uint8_t>(matching_type), std::move(data)};
}

}  // namespace

TEST_CASE("TLSA data matches openssl for RSA and EC keys", "[tls][dane]") {
    // "server" has an RSA key, whose SPKI differs from the PKCS#1 key that
    // i2d_PUBKEY returns; the others are EC.
    for (const std::string name : {"server", "chained", "intermediate", "ca", "expired"}) {
        INFO("certificate " << name);
        Der der = certificate(name);
        REQUIRE_FALSE(der.empty());
        CHECK(subject_public_key_info(der) == openssl_spki(name));
        CHECK(tlsa_association_data(der, 0, 0) == der);
        CHECK(tlsa_association_data(der, 1, 0) == openssl_spki(name));
        CHECK(tlsa_association_data(der, 0, 1) == openssl_certificate_digest(name, "sha256"));
        CHECK(tlsa_association_data(der, 1, 1) == openssl_key_digest(name, "sha256"));
        CHECK(tlsa_association_data(der, 0, 2) == openssl_certificate_digest(name, "sha512"));
        CHECK(tlsa_association_data(der, 1, 2) == openssl_key_digest(name, "sha512"));
        CHECK(tlsa_association_data(der, 2, 1).empty());
        CHECK(tlsa_association_data(der, 1, 3).empty());

        auto digests = certificate_digests(der);
        CHECK(digests.certificate_sha256 == hex_fingerprint(openssl_certificate_digest(name, "sha256")));
        CHECK(digests.public_key_sha256 == hex_fingerprint(openssl_key_digest(name, "sha256")));
    }
    CHECK(subject_public_key_info(Der{0x30, 0x03, 0x01}).empty());
}

TEST_CASE("TLSA record usability", "[tls][dane]") {
    std::vector<unsigned char> data(32, 1);
    CHECK(is_usable(record(3, 1, 1, data)));
    CHECK(is_usable(record(2, 0, 2, data)));
    CHECK(is_usable(record(3, 0, 0, data)));
    CHECK_FALSE(is_usable(record(0, 0, 1, data)));
    CHECK_FALSE(is_usable(record(1, 1, 1, data)));
    CHECK_FALSE(is_usable(record(4, 1, 1, data)));
    CHECK_FALSE(is_usable(record(3, 2, 1, data)));
    CHECK_FALSE(is_usable(record(3, 1, 3, data)));
    CHECK_FALSE(is_usable(record(3, 1, 1, {})));
    CHECK(describe_parameters(record(2, 0, 1, data)) == "2 0 1");
}

TEST_CASE("DANE-EE matches the leaf by certificate or key", "[tls][dane]") {
    std::vector<Der> chain = {certificate("server")};
    const std::vector<std::string> names = {"mx.test.example"};
    for (int selector : {0, 1}) {
        for (int matching : {0, 1, 2}) {
            INFO("3 " << selector << " " << matching);
            auto data = tlsa_association_data(chain[0], static_cast<std::uint8_t>(selector),
                                              static_cast<std::uint8_t>(matching));
            auto result = match_tlsa({record(3, selector, matching, data)}, chain, names);
            CHECK(result.matched);
            CHECK(result.how == "DANE TLSA 3 " + std::to_string(selector) + " " + std::to_string(matching) +
                                    " matched the leaf certificate");
        }
    }

    auto wrong = openssl_key_digest("server", "sha256");
    wrong[0] ^= 0xff;
    auto result = match_tlsa({record(3, 1, 1, wrong)}, chain, names);
    CHECK_FALSE(result.matched);
    CHECK(result.reason == "no TLSA record matched the server's certificate chain");
}

// RFC 7672 section 3.1.1: names and dates do not matter under DANE-EE.
TEST_CASE("DANE-EE ignores names and expiry", "[tls][dane]") {
    std::vector<Der> expired = {certificate("expired")};
    auto result = match_tlsa({record(3, 1, 1, openssl_key_digest("expired", "sha256"))}, expired,
                             {"unrelated.example"});
    CHECK(result.matched);
    std::vector<Der> self_signed = {bytes_of(output_of("openssl x509 -in " + test_pki().file("self-signed.crt") +
                                                       " -outform DER"))};
    CHECK(match_tlsa({record(3, 0, 1, tlsa_association_data(self_signed[0], 0, 1))}, self_signed, {"x.example"})
              .matched);
}

TEST_CASE("DANE-EE record does not match an issuer", "[tls][dane]") {
    std::vector<Der> chain = {certificate("chained"), certificate("intermediate")};
    auto result = match_tlsa({record(3, 1, 1, openssl_key_digest("intermediate", "sha256"))}, chain,
                             {"chained.test.example"});
    CHECK_FALSE(result.matched);
}

TEST_CASE("DANE-TA matches an issuer in the chain", "[tls][dane]") {
    std::vector<Der> chain = {certificate("chained"), certificate("intermediate")};
    auto result = match_tlsa({record(2, 0, 1, openssl_certificate_digest("intermediate", "sha256"))}, chain,
                             {"chained.test.example", "test.example"});
    CHECK(result.matched);
    CHECK(result.how == "DANE TLSA 2 0 1 matched the trust anchor, name matched chained.test.example, test.example");

    // The root above the intermediate, sent by the server too.
    chain.push_back(certificate("ca"));
    CHECK(match_tlsa({record(2, 1, 1, openssl_key_digest("ca", "sha256"))}, chain, {"chained.test.example"}).matched);
    // Chain order does not matter beyond the leaf.
    std::vector<Der> shuffled = {chain[0], chain[2], chain[1]};
    CHECK(match_tlsa({record(2, 1, 1, openssl_key_digest("ca", "sha256"))}, shuffled, {"chained.test.example"})
              .matched);
}

TEST_CASE("DANE-TA requires a reference name", "[tls][dane]") {
    std::vector<Der> chain = {certificate("chained"), certificate("intermediate")};
    auto result = match_tlsa({record(2, 0, 1, openssl_certificate_digest("intermediate", "sha256"))}, chain,
                             {"mx.example.com", "example.com"});
    CHECK_FALSE(result.matched);
    CHECK(result.reason ==
          "the certificate names (chained.test.example) match none of mx.example.com, example.com as DANE-TA requires");
}

// RFC 7671 section 5.2.2: a full trust-anchor certificate in the record
// works when the server leaves the anchor out of its chain.
TEST_CASE("DANE-TA full record stands in for an omitted anchor", "[tls][dane]") {
    std::vector<Der> chain = {certificate("server")};
    Der ca = certificate("ca");
    CHECK(match_tlsa({record(2, 0, 0, ca)}, chain, {"mx.test.example"}).matched);
    auto digest_only = match_tlsa({record(2, 0, 1, openssl_certificate_digest("ca", "sha256"))}, chain,
                                  {"mx.test.example"});
    CHECK_FALSE(digest_only.matched);
    CHECK(digest_only.reason == "no TLSA record matched the server's certificate chain");
}

TEST_CASE("DANE-TA checks the leaf's dates", "[tls][dane]") {
    std::vector<Der> chain = {certificate("expired"), certificate("ca")};
    auto result = match_tlsa({record(2, 0, 1, openssl_certificate_digest("ca", "sha256"))}, chain,
                             {"mx.test.example"});
    CHECK_FALSE(result.matched);
    CHECK(result.reason ==
          "the leaf certificate does not chain to the DANE-TA trust anchor, or is outside its validity dates");
}

// A server cannot borrow a published trust anchor: sending it along with a
// chain from another CA must not authenticate that chain.
TEST_CASE("DANE-TA rejects a leaf from another CA", "[tls][dane]") {
    std::vector<Der> chain = {certificate("other-leaf"), certificate("other-ca"), certificate("ca")};
    auto result = match_tlsa({record(2, 0, 1, openssl_certificate_digest("ca", "sha256"))}, chain,
                             {"mx.test.example"});
    CHECK_FALSE(result.matched);
    CHECK(result.reason ==
          "the leaf certificate does not chain to the DANE-TA trust anchor, or is outside its validity dates");
}

TEST_CASE("DANE ignores unusable records", "[tls][dane]") {
    std::vector<Der> chain = {certificate("server"), certificate("ca")};
    auto leaf_digest = openssl_key_digest("server", "sha256");
    auto ca_digest = openssl_certificate_digest("ca", "sha256");
    CHECK_FALSE(match_tlsa({record(1, 1, 1, leaf_digest), record(0, 0, 1, ca_digest)}, chain, {"mx.test.example"})
                    .matched);
    CHECK(match_tlsa({record(1, 1, 1, leaf_digest), record(3, 1, 1, leaf_digest)}, chain, {"mx.test.example"})
              .matched);
    auto none = match_tlsa({record(3, 1, 1, leaf_digest)}, {}, {"mx.test.example"});
    CHECK_FALSE(none.matched);
    CHECK(none.reason == "the server sent no certificate");
}
