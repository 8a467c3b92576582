// Tests for nameserver address parsing and resolv.conf reading.

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

#include <catch2/catch.hpp>

#include "tlsrelay/dns/nameserver.hpp"
#include "tlsrelay/dns/resolver.hpp"

using tlsrelay::dns::Nameserver;
using tlsrelay::dns::parse_nameserver;
using tlsrelay::dns::read_resolv_conf;

namespace {

std::string to_string(const Nameserver& nameserver) {
    return nameserver.address.to_string() + " port " + std::to_string(nameserver.port);
}

// A file in the system temporary directory, removed when the object goes.
class TempFile {
public:
    explicit TempFile(const std::string& content) {
        std::string pattern = (std::filesystem::temp_directory_path() / "tlsrelay-resolv-XXXXXX").string();
        int fd = mkstemp(pattern.data());
        REQUIRE(fd >= 0);
        close(fd);
        path_ = pattern;
        std::ofstream(path_) << content;
    }
    ~TempFile() { std::filesystem::remove(path_); }

    const std::string& path() const { return path_; }

private:
    std::string path_;
};

}  // namespace

TEST_CASE("parse_nameserver accepts addresses and ports", "[dns][nameserver]") {
    struct Case {
        std::string text;
        std::string expected;
    };
    auto [text, expected] = GENERATE(values<Case>({
        {"127.0.0.1", "127.0.0.1 port 53"},
        {"127.0.0.1:5353", "127.0.0.1 port 5353"},
        {"192.0.2.1:65535", "192.0.2.1 port 65535"},
        {"::1", "::1 port 53"},
        {"[::1]:5353", "::1 port 5353"},
        {"[::1]", "::1 port 53"},
        {"2001:db8::53", "2001:db8::53 port 53"},
        {"[2001:db8::53]:1053", "2001:db8::53 port 1053"},
        {"::ffff:127.0.0.1", "::ffff:127.0.0.1 port 53"},
    }));

    CAPTURE(text);
    auto nameserver = parse_nameserver(text);
    REQUIRE(nameserver.has_value());
    CHECK(to_string(*nameserver) == expected);
}

TEST_CASE("parse_nameserver rejects invalid input", "[dns][nameserver]") {
    auto text = GENERATE(as<std::string>{},
                         "",
                         "localhost",
                         "ns.example.test",
                         "127.0.0.1:",
                         "127.0.0.1:0",
                         "127.0.0.1:65536",
                         "127.0.0.1:53x",
                         "127.0.0.1:-53",
                         "127.0.0.1:+53",
                         " 127.0.0.1",
                         "127.0.0.1 ",
                         "127.0.0",
                         "256.0.0.1",
                         "::1:5353x",
                         "[::1",
                         "[::1]:",
                         "[::1]5353",
                         "[::1]:0",
                         "[127.0.0.1]:53",
                         "[]:53",
                         "fe80::1%eth0",
                         "[fe80::1%eth0]:53",
                         "0.0.0.0",
                         "::",
                         "224.0.0.251",
                         "ff02::fb");

    CAPTURE(text);
    CHECK_FALSE(parse_nameserver(text).has_value());
}

TEST_CASE("read_resolv_conf reads nameserver lines", "[dns][nameserver]") {
    TempFile file(
        "# generated for a test\n"
        "; another comment style\n"
        "search example.test\n"
        "nameserver 127.0.0.53\n"
        "nameserver ::1   # local resolver\n"
        "  nameserver\t127.0.0.2\r\n"
        "nameserver\n"
        "nameserver not-an-address\n"
        "nameserver 127.0.0.1:5353\n"
        "nameserver fe80::1%eth0\n"
        "#nameserver 127.0.0.9\n"
        "nameservers 127.0.0.10\n"
        "options edns0 trust-ad\n"
        "nameserver 127.0.0.3");

    auto nameservers = read_resolv_conf(file.path());

    std::vector<std::string> found;
    for (const auto& nameserver : nameservers) {
        found.push_back(to_string(nameserver));
    }
    CHECK(found == std::vector<std::string>{"127.0.0.53 port 53", "::1 port 53", "127.0.0.2 port 53",
                                            "127.0.0.3 port 53"});
}

TEST_CASE("read_resolv_conf on a missing file", "[dns][nameserver]") {
    auto path = (std::filesystem::temp_directory_path() / "tlsrelay-no-such-resolv.conf").string();
    std::filesystem::remove(path);

    CHECK(read_resolv_conf(path).empty());
}

TEST_CASE("parse_resolv_conf reads timeout and attempts", "[dns][nameserver]") {
    auto conf = tlsrelay::dns::parse_resolv_conf("nameserver 127.0.0.53\n"
                                                 "options edns0 timeout:3 attempts:4 rotate\n"
                                                 "search example.test\n");

    REQUIRE(conf.nameservers.size() == 1);
    CHECK(conf.nameservers[0].address.to_string() == "127.0.0.53");
    CHECK(conf.timeout == std::chrono::seconds(3));
    CHECK(conf.attempts == 4);
}

TEST_CASE("parse_resolv_conf clamps options as glibc does", "[dns][nameserver]") {
    auto high = tlsrelay::dns::parse_resolv_conf("options timeout:99 attempts:99999999999\n");
    CHECK(high.timeout == std::chrono::seconds(30));
    CHECK(high.attempts == 5);

    auto low = tlsrelay::dns::parse_resolv_conf("options timeout:0 attempts:0\n");
    CHECK(low.timeout == std::chrono::seconds(1));
    CHECK(low.attempts == 1);
}

TEST_CASE("parse_resolv_conf takes the last option value", "[dns][nameserver]") {
    auto conf = tlsrelay::dns::parse_resolv_conf("options timeout:2\n"
                                                 "options timeout:7 # later lines win\n");
    CHECK(conf.timeout == std::chrono::seconds(7));
    CHECK_FALSE(conf.attempts.has_value());
}

TEST_CASE("parse_resolv_conf skips invalid options", "[dns][nameserver]") {
    auto conf = tlsrelay::dns::parse_resolv_conf("options timeout: timeout:x attempts:-1 attempts:2a ndots:2\n"
                                                 "; options timeout:9\n");
    CHECK_FALSE(conf.timeout.has_value());
    CHECK_FALSE(conf.attempts.has_value());
    CHECK(conf.nameservers.empty());
}

TEST_CASE("apply_resolv_conf sets only what the file gives", "[dns][nameserver]") {
    tlsrelay::dns::ResolverOptions options;
    tlsrelay::dns::apply_resolv_conf(options, tlsrelay::dns::parse_resolv_conf("nameserver ::1\noptions attempts:3\n"));

    REQUIRE(options.nameservers.size() == 1);
    CHECK(options.nameservers[0].address.to_string() == "::1");
    CHECK(options.attempts == 3);
    CHECK(options.timeout == std::chrono::seconds(5));
}

TEST_CASE("read_resolv_conf_file reads options", "[dns][nameserver]") {
    TempFile file("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n");

    auto conf = tlsrelay::dns::read_resolv_conf_file(file.path());

    CHECK(conf.nameservers.size() == 1);
    CHECK(conf.timeout == std::chrono::seconds(1));
    CHECK(conf.attempts == 1);
}
