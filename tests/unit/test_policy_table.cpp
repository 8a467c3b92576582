#include <catch2/catch.hpp>

#include <string>

#include "tlsrelay/policy/table.hpp"

using namespace tlsrelay::policy;

namespace {

const std::string file = "/etc/postfix/tls_policy";

std::string error_of(const std::string& text) {
    Table table;
    try {
        parse_postfix_table(text, file, table);
    } catch (const TableError& error) {
        return error.what();
    }
    return "(no error)";
}

}  // namespace

// A policy source file as an admin would feed it to postmap.
TEST_CASE("policy table reads a Postfix source file") {
    const std::string text =
        "# TLS policy for outbound mail\n"
        "gmail.com        verify\n"
        ".gmail.com       verify\n"
        "\n"
        "example.org      secure match=.example.org:example.net\n"
        "   protocols=!SSLv2:!SSLv3:!TLSv1:!TLSv1.1\n"
        "  # a comment between continuation lines\n"
        "   ciphers=high\n"
        "[smtp.provider.example]:587 encrypt\n"
        "Legacy.Example   may\n"
        "pinned.example   fingerprint\n"
        "    match=3D:95:34:51:24:66:33:B9:D2:40:99:C0:C1:17:0B:D1:CB:B1:F9:AD:A2:29:2F:F3:44:25:4C:37:5C:D4:B1:35|"
        "aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899\n"
        "dane.example     dane-only\n";
    Table table;
    parse_postfix_table(text, file, table);
    CHECK(table.size() == 7);

    const Entry* gmail = table.lookup("gmail.com");
    REQUIRE(gmail);
    CHECK(gmail->policy.level == Level::verify);
    CHECK(gmail->origin == file + ":2");

    const Entry* org = table.lookup("example.org");
    REQUIRE(org);
    CHECK(org->policy.level == Level::secure);
    CHECK(org->policy.match == std::vector<std::string>{".example.org", "example.net"});
    CHECK(org->policy.protocols == (tls_v1_2 | tls_v1_3));
    CHECK(org->policy.ciphers == "high");
    CHECK(org->origin == file + ":5");

    const Entry* provider = table.lookup("[smtp.provider.example]:587");
    REQUIRE(provider);
    CHECK(provider->policy.level == Level::encrypt);

    const Entry* legacy = table.lookup("legacy.example");
    REQUIRE(legacy);
    CHECK(legacy->policy.level == Level::may);

    const Entry* pinned = table.lookup("pinned.example");
    REQUIRE(pinned);
    CHECK(pinned->policy.fingerprints ==
          std::vector<std::string>{"3d:95:34:51:24:66:33:b9:d2:40:99:c0:c1:17:0b:d1:cb:b1:f9:ad:a2:29:2f:f3:44:25:4c:37:5c:d4:b1:35",
                                   "aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99"});
    CHECK(table.lookup("dane.example")->policy.level == Level::dane_only);
}

// Postfix's order: the next hop exactly, then parent domains in leading-dot
// form, nearest first; a relayhost key only exactly.
TEST_CASE("policy table lookup order") {
    Table table;
    parse_postfix_table("example.com encrypt\n"
                        ".example.com verify\n"
                        ".mail.example.com secure\n"
                        "[relay.example.com]:587 dane\n",
                        file, table);
    CHECK(table.lookup("example.com")->policy.level == Level::encrypt);
    CHECK(table.lookup("EXAMPLE.com.")->policy.level == Level::encrypt);
    CHECK(table.lookup("sub.example.com")->policy.level == Level::verify);
    CHECK(table.lookup("a.b.example.com")->policy.level == Level::verify);
    CHECK(table.lookup("x.mail.example.com")->policy.level == Level::secure);
    CHECK(table.lookup("mail.example.com")->policy.level == Level::verify);
    CHECK(table.lookup("[relay.example.com]:587")->policy.level == Level::dane);
    CHECK(table.lookup("[relay.example.com]") == nullptr);
    CHECK(table.lookup("[relay.example.com]:25") == nullptr);
    CHECK(table.lookup("example.net") == nullptr);
    CHECK(table.lookup("notexample.com") == nullptr);
}

TEST_CASE("policy table next-hop keys") {
    CHECK(next_hop_key("Relay.Example", 587, true, false) == "[relay.example]:587");
    CHECK(next_hop_key("relay.example", 25, false, false) == "[relay.example]");
    CHECK(next_hop_key("relay.example", 2525, true, true) == "relay.example:2525");
    CHECK(next_hop_key("relay.example", 25, false, true) == "relay.example");
}

// Each bad line stops loading with the file, the line and the problem.
TEST_CASE("policy table errors name file line and problem") {
    CHECK(error_of("example.com sometimes\n") ==
          "/etc/postfix/tls_policy:1: invalid security level \"sometimes\": expected one of none, may, encrypt, "
          "fingerprint, verify, secure, dane, dane-only (for example.com)");
    CHECK(error_of("# comment\nexample.com\n") ==
          "/etc/postfix/tls_policy:2: missing security level for example.com: expected one of none, may, encrypt, "
          "fingerprint, verify, secure, dane, dane-only");
    CHECK(error_of("  verify\n") ==
          "/etc/postfix/tls_policy:1: continuation line (starting with whitespace) without a key line before it");
    CHECK(error_of("[relay.example:25 encrypt\n") ==
          "/etc/postfix/tls_policy:1: invalid key \"[relay.example:25\": expected a domain, .domain, [host], "
          "[host]:port or host:port");
    CHECK(error_of("example.com verify tafile=/etc/ta.pem\n") ==
          "/etc/postfix/tls_policy:1: unsupported attribute \"tafile\": expected match, protocols or ciphers "
          "(for example.com)");
    CHECK(error_of("example.com verify match\n") ==
          "/etc/postfix/tls_policy:1: invalid attribute \"match\": expected name=value (for example.com)");
    CHECK(error_of("example.com may match=example.com\n") ==
          "/etc/postfix/tls_policy:1: match names apply only to levels verify, secure, dane and dane-only, not may "
          "(for example.com)");
    CHECK(error_of("example.com fingerprint\n") ==
          "/etc/postfix/tls_policy:1: level fingerprint needs at least one SHA-256 fingerprint (for example.com)");
    CHECK(error_of("example.com fingerprint match=AB:CD\n") ==
          "/etc/postfix/tls_policy:1: invalid fingerprint \"AB:CD\": expected a SHA-256 digest as 32 hex bytes, "
          "optionally separated by colons (for example.com)");
    CHECK(error_of("example.com secure match=bad..name\n") ==
          "/etc/postfix/tls_policy:1: invalid match name \"bad..name\": expected hostname, nexthop, dot-nexthop, a "
          "domain name or .domain (for example.com)");
    CHECK(error_of("example.com encrypt protocols=TLSv1.4\n") ==
          "/etc/postfix/tls_policy:1: unknown TLS protocol \"TLSv1.4\": expected SSLv2, SSLv3, TLSv1, TLSv1.1, "
          "TLSv1.2 or TLSv1.3, optionally after !, >= or <= (for example.com)");
    CHECK(error_of("example.com encrypt ciphers=strong\n") ==
          "/etc/postfix/tls_policy:1: invalid cipher grade \"strong\": expected one of export, low, medium, high, "
          "null (for example.com)");
    CHECK(error_of("example.com verify\n\nExample.com encrypt\n") ==
          "/etc/postfix/tls_policy:3: duplicate policy for example.com, first defined at /etc/postfix/tls_policy:1");
}
