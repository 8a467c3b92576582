#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tlsrelay/config/config.hpp"
#include "tlsrelay/delivery/client.hpp"

using tlsrelay::delivery::SaslPasswordError;
using tlsrelay::delivery::SaslPasswords;

namespace {

std::string parse_error(const std::string& text) {
    try {
        SaslPasswords::parse(text, "sasl_passwd");
    } catch (const SaslPasswordError& error) {
        return error.what();
    }
    return "(no error)";
}

std::filesystem::path write_file(const std::string& name, const std::string& text, mode_t mode) {
    auto path = std::filesystem::temp_directory_path() / name;
    std::ofstream(path) << text;
    ::chmod(path.c_str(), mode);
    return path;
}

}  // namespace

TEST_CASE("sasl passwords parse Postfix lines", "[smarthost]") {
    auto table = SaslPasswords::parse("# provider\n"
                                      "[smtp.Provider.example]:587 alice@example.com:pa:ss\n"
                                      "\n"
                                      "  relay.example   bob:secret\r\n",
                                      "sasl_passwd");
    CHECK(table.size() == 2);

    const auto* alice = table.find("smtp.provider.example", 587);
    REQUIRE(alice != nullptr);
    CHECK(alice->user == "alice@example.com");
    CHECK(alice->password == "pa:ss");

    const auto* bob = table.find("relay.example", 25);
    REQUIRE(bob != nullptr);
    CHECK(bob->user == "bob");
    CHECK(bob->password == "secret");
}

TEST_CASE("sasl passwords lookup order", "[smarthost]") {
    auto table = SaslPasswords::parse("[host.example]:465 exact:1\n"
                                      "[host.example] bracket:2\n"
                                      "host.example:587 plain-port:3\n"
                                      "host.example bare:4\n",
                                      "sasl_passwd");
    CHECK(table.find("host.example", 465)->user == "exact");
    CHECK(table.find("host.example", 587)->user == "bracket");
    CHECK(table.find("other.example", 587) == nullptr);

    auto without_brackets = SaslPasswords::parse("host.example:587 plain-port:3\nhost.example bare:4\n", "f");
    CHECK(without_brackets.find("host.example", 587)->user == "plain-port");
    CHECK(without_brackets.find("host.example", 25)->user == "bare");
}

TEST_CASE("sasl passwords errors hide the line", "[smarthost]") {
    CHECK(parse_error("[host]:587 user-without-password\n") ==
          "sasl_passwd:1: invalid line: expected \"[host]:port user:password\"");
    CHECK(parse_error("\n[host]:587 user:secret extra\n") ==
          "sasl_passwd:2: invalid line: expected \"[host]:port user:password\"");
    CHECK(parse_error("[host]:587 user:\n") == "sasl_passwd:1: invalid line: expected \"[host]:port user:password\"");
    CHECK(parse_error("[host]:587\n") == "sasl_passwd:1: invalid line: expected \"[host]:port user:password\"");
    CHECK(parse_error("[host]:587 a:b\n[HOST]:587 c:d\n") == "sasl_passwd:2: duplicate entry for [host]:587");
}

TEST_CASE("sasl password file must be private", "[smarthost]") {
    auto open_file = write_file("tlsrelay-test-sasl-open", "[host]:587 user:secret\n", 0644);
    try {
        SaslPasswords::load(open_file);
        FAIL("a file readable by others was accepted");
    } catch (const SaslPasswordError& error) {
        std::string message = error.what();
        CHECK(message.find("accessible by group or others") != std::string::npos);
        CHECK(message.find("secret") == std::string::npos);
    }

    auto private_file = write_file("tlsrelay-test-sasl-private", "[host]:587 user:secret\n", 0600);
    CHECK(SaslPasswords::load(private_file).size() == 1);

    std::filesystem::remove(open_file);
    std::filesystem::remove(private_file);
    CHECK_THROWS_AS(SaslPasswords::load(private_file), SaslPasswordError);
}

TEST_CASE("implicit TLS follows port unless set", "[smarthost]") {
    using tlsrelay::delivery::uses_implicit_tls;
    CHECK(uses_implicit_tls(std::nullopt, 465));
    CHECK_FALSE(uses_implicit_tls(std::nullopt, 587));
    CHECK_FALSE(uses_implicit_tls(std::nullopt, 25));
    CHECK(uses_implicit_tls(true, 2465));
    CHECK_FALSE(uses_implicit_tls(false, 465));
}

TEST_CASE("config reads smarthost keys", "[smarthost][config]") {
    auto config = tlsrelay::config::parse("[smtp]\n"
                                          "relayhost = \"[smtp.provider.example]:465\"\n"
                                          "tls_wrappermode = false\n"
                                          "sasl_password_file = \"sasl_passwd\"\n"
                                          "[[smtp.sender_relayhost]]\n"
                                          "sender = \"Alice@Example.com\"\n"
                                          "nexthop = \"[smtp.other.example]:587\"\n"
                                          "[[smtp.sender_relayhost]]\n"
                                          "sender = \"@example.org\"\n"
                                          "nexthop = \"smtp.third.example\"\n",
                                          "/etc/tlsrelay/test.toml");
    REQUIRE(config.smtp.tls_wrappermode);
    CHECK_FALSE(*config.smtp.tls_wrappermode);
    CHECK(config.smtp.sasl_password_file == "/etc/tlsrelay/sasl_passwd");
    REQUIRE(config.smtp.sender_relayhost.size() == 2);
    CHECK(config.smtp.sender_relayhost[0].sender == "alice@example.com");
    CHECK(config.smtp.sender_relayhost[0].nexthop.host == "smtp.other.example");
    CHECK(config.smtp.sender_relayhost[0].nexthop.port == 587);
    CHECK_FALSE(config.smtp.sender_relayhost[0].nexthop.mx_lookup);
    CHECK(config.smtp.sender_relayhost[1].sender == "@example.org");
    CHECK(config.smtp.sender_relayhost[1].nexthop.mx_lookup);

    auto defaults = tlsrelay::config::parse("", "/etc/tlsrelay/test.toml");
    CHECK_FALSE(defaults.smtp.tls_wrappermode);
    CHECK(defaults.smtp.sasl_password_file.empty());
    CHECK(defaults.smtp.sender_relayhost.empty());
}

TEST_CASE("config smarthost errors", "[smarthost][config]") {
    auto error_of = [](const std::string& text) -> std::string {
        try {
            tlsrelay::config::parse(text, "/etc/tlsrelay/test.toml");
        } catch (const tlsrelay::config::ConfigError& error) {
            return error.what();
        }
        return "(no error)";
    };
    CHECK(error_of("[smtp]\ntls_wrappermode = \"yes\"\n") ==
          "/etc/tlsrelay/test.toml:2: invalid smtp.tls_wrappermode \"yes\": expected true or false");
    CHECK(error_of("[[smtp.sender_relayhost]]\nsender = \"example.com\"\nnexthop = \"[h]:587\"\n") ==
          "/etc/tlsrelay/test.toml:2: invalid smtp.sender_relayhost.sender \"example.com\": expected "
          "\"user@example.com\" or \"@example.com\"");
    CHECK(error_of("[[smtp.sender_relayhost]]\nsender = \"@example.com\"\n") ==
          "/etc/tlsrelay/test.toml:1: smtp.sender_relayhost entry needs sender and nexthop");
}
