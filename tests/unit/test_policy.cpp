#include <catch2/catch.hpp>

#include "tlsrelay/policy/policy.hpp"

using namespace tlsrelay::policy;

namespace {

TlsFacts plaintext() { return {}; }
TlsFacts anonymous() { return {true, false, false, "", {}}; }
TlsFacts untrusted() { return {true, true, false, "certificate signed by an unknown CA", {"mx.example.com"}}; }
TlsFacts trusted_other_name() { return {true, true, true, "", {"other.example.net"}}; }
TlsFacts verified() { return {true, true, true, "", {"mx.example.com"}}; }

}  // namespace

// Every level against every kind of session: is delivery allowed, and
// which trust does the log report.
TEST_CASE("policy verdict table") {
    struct Case {
        Level level;
        TlsFacts facts;
        bool acceptable;
        Trust trust;
    };
    const Case cases[] = {
        {Level::none, plaintext(), true, Trust::none},
        {Level::may, plaintext(), true, Trust::none},
        {Level::may, anonymous(), true, Trust::anonymous},
        {Level::may, untrusted(), true, Trust::untrusted},
        {Level::may, trusted_other_name(), true, Trust::trusted},
        {Level::may, verified(), true, Trust::verified},
        {Level::encrypt, plaintext(), false, Trust::none},
        {Level::encrypt, anonymous(), true, Trust::anonymous},
        {Level::encrypt, untrusted(), true, Trust::untrusted},
        {Level::verify, plaintext(), false, Trust::none},
        {Level::verify, anonymous(), false, Trust::anonymous},
        {Level::verify, untrusted(), false, Trust::untrusted},
        {Level::verify, trusted_other_name(), false, Trust::trusted},
        {Level::verify, verified(), true, Trust::verified},
    };
    for (const auto& c : cases) {
        INFO("level " << to_string(c.level) << ", expected trust " << to_string(c.trust));
        auto verdict = judge(c.level, c.facts, "mx.example.com");
        CHECK(verdict.acceptable == c.acceptable);
        CHECK(verdict.trust == c.trust);
        CHECK(verdict.reason.empty() == c.acceptable);
    }
}

TEST_CASE("policy reasons name the problem") {
    CHECK(judge(Level::verify, untrusted(), "mx.example.com").reason ==
          "server certificate not trusted: certificate signed by an unknown CA");
    CHECK(judge(Level::verify, trusted_other_name(), "mx.example.com").reason ==
          "server certificate name mismatch: mx.example.com is not among the certificate's names (other.example.net)");
    CHECK(judge(Level::encrypt, plaintext(), "mx.example.com").reason == "TLS is required but was not established");
}

TEST_CASE("policy level names round-trip") {
    for (auto level : {Level::none, Level::may, Level::encrypt, Level::verify}) {
        CHECK(parse_level(to_string(level)) == level);
    }
    CHECK_FALSE(parse_level("secure"));
    CHECK_FALSE(parse_level("VERIFY"));
}
