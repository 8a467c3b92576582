// Contexts and self-signed certificates: loading, error messages, and the
// content of generated certificates as printed by openssl.
#include <sys/stat.h>

#include <ctime>
#include <string>

#include "tls_test_support.hpp"

using namespace tls_test;
using tlsrelay::tls::ClientContextOptions;
using tlsrelay::tls::SessionInfo;
using tlsrelay::tls::Stream;
using tlsrelay::tls::TlsSetupError;

namespace {

// Returns the message of the TlsSetupError that `action` raises, or "" if
// it raises none.
template <class Action>
std::string setup_error(Action action) {
    try {
        action();
    } catch (const TlsSetupError& error) {
        return error.what();
    }
    return "";
}

// Parses openssl's "notAfter=Jan  1 00:00:00 2035 GMT" form.
std::time_t parse_openssl_date(const std::string& line) {
    std::string value = line.substr(line.find('=') + 1);
    std::tm tm{};
    ::strptime(value.c_str(), "%b %d %H:%M:%S %Y GMT", &tm);
    return ::timegm(&tm);
}

}  // namespace

TEST_CASE("server context reports missing certificate file", "[tls][context]") {
    const TestPki& pki = test_pki();
    std::string missing = pki.file("missing.crt");
    std::string message = setup_error(
        [&] { tlsrelay::tls::make_server_context(missing, pki.file("server.key")); });
    CHECK(message.find(missing) != std::string::npos);
    CHECK(message.find("No such file") != std::string::npos);
}

TEST_CASE("server context reports invalid certificate", "[tls][context]") {
    TempDir dir;
    std::string garbage = dir.file("garbage.crt");
    write_text(garbage, "this is not PEM\n");
    std::string message = setup_error(
        [&] { tlsrelay::tls::make_server_context(garbage, test_pki().file("server.key")); });
    CHECK(message.find(garbage) != std::string::npos);
    CHECK(message.find("invalid PEM certificate chain") != std::string::npos);
}

TEST_CASE("server context reports invalid key", "[tls][context]") {
    TempDir dir;
    std::string garbage = dir.file("garbage.key");
    write_text(garbage, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    std::string message = setup_error(
        [&] { tlsrelay::tls::make_server_context(test_pki().file("server.crt"), garbage); });
    CHECK(message.find(garbage) != std::string::npos);
}

TEST_CASE("server context reports mismatched key", "[tls][context]") {
    const TestPki& pki = test_pki();
    std::string message = setup_error([&] {
        tlsrelay::tls::make_server_context(pki.file("server.crt"), pki.file("chained.key"));
    });
    CHECK(message.find("does not match") != std::string::npos);
    CHECK(message.find(pki.file("chained.key")) != std::string::npos);
}

TEST_CASE("client context reports missing CA file", "[tls][context]") {
    ClientContextOptions options;
    options.ca_file = test_pki().file("missing-ca.crt");
    std::string message = setup_error([&] { tlsrelay::tls::make_client_context(options); });
    CHECK(message.find(options.ca_file) != std::string::npos);
}

TEST_CASE("client context reports missing CA path", "[tls][context]") {
    ClientContextOptions options;
    options.ca_path = test_pki().file("no-such-directory");
    std::string message = setup_error([&] { tlsrelay::tls::make_client_context(options); });
    CHECK(message.find(options.ca_path) != std::string::npos);
    CHECK(message.find("not a directory") != std::string::npos);
}

TEST_CASE("client context loads CA directory", "[tls][context]") {
    // A directory with the test CA and a file that is no certificate, as
    // /etc/ssl/certs has.
    TempDir dir;
    write_text(dir.file("ca.pem"), read_text(test_pki().file("ca.crt")));
    write_text(dir.file("README"), "not a certificate\n");
    ClientContextOptions options;
    options.ca_path = dir.path().string();
    auto client = tlsrelay::tls::make_client_context(options);
    auto server = tlsrelay::tls::make_server_context(test_pki().file("server.crt"),
                                                     test_pki().file("server.key"));
    SessionInfo info;
    run_pair(
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await stream.handshake_server(*server);
            co_await stream.shutdown();
        },
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await stream.handshake_client(*client, "mx.test.example");
            info = stream.session();
            co_await stream.shutdown();
        });
    CHECK(info.chain_trusted);
}

TEST_CASE("client context loads system CA store", "[tls][context]") {
    if (!fs::is_directory("/etc/ssl/certs")) {
        WARN("/etc/ssl/certs is missing; skipped");
        return;
    }
    ClientContextOptions options;
    options.ca_path = "/etc/ssl/certs";
    CHECK_NOTHROW(tlsrelay::tls::make_client_context(options));
}

TEST_CASE("self-signed certificate loads and names host", "[tls][certificate]") {
    TempDir dir;
    std::string cert = dir.file("relay.crt");
    std::string key = dir.file("relay.key");
    tlsrelay::tls::generate_self_signed("relay.test.example", cert, key);

    struct stat key_status {};
    REQUIRE(::stat(key.c_str(), &key_status) == 0);
    CHECK((key_status.st_mode & 0777) == 0600);
    // No temporary files are left behind.
    int entries = 0;
    for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir.path())) {
        ++entries;
    }
    CHECK(entries == 2);

    std::string log = dir.file("openssl.txt");
    run_command("openssl x509 -noout -text -in " + cert, log);
    std::string text = read_text(log);
    CHECK(text.find("DNS:relay.test.example") != std::string::npos);
    CHECK(text.find("Subject: CN = relay.test.example") != std::string::npos);
    CHECK(text.find("ecdsa-with-SHA256") != std::string::npos);
    CHECK(text.find("TLS Web Server Authentication") != std::string::npos);

    std::string dates_log = dir.file("dates.txt");
    run_command("openssl x509 -noout -startdate -enddate -in " + cert, dates_log);
    std::istringstream dates(read_text(dates_log));
    std::string start_line;
    std::string end_line;
    std::getline(dates, start_line);
    std::getline(dates, end_line);
    std::time_t now = std::time(nullptr);
    std::time_t not_before = parse_openssl_date(start_line);
    std::time_t not_after = parse_openssl_date(end_line);
    constexpr std::time_t day = 86400;
    // notBefore about a day back for clock skew, notAfter about ten years on.
    CHECK(not_before <= now - day + 60);
    CHECK(not_before >= now - 2 * day);
    CHECK(not_after >= now + 3640 * day);
    CHECK(not_after <= now + 3660 * day);

    auto server = tlsrelay::tls::make_server_context(cert, key);
    auto client = tlsrelay::tls::make_client_context({});
    SessionInfo info;
    run_pair(
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await stream.handshake_server(*server);
            co_await stream.shutdown();
        },
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await stream.handshake_client(*client, "relay.test.example");
            info = stream.session();
            co_await stream.shutdown();
        });
    CHECK(info.peer_names == std::vector<std::string>{"relay.test.example"});
    CHECK_FALSE(info.chain_trusted);
}

TEST_CASE("self-signed certificate replaces old files", "[tls][certificate]") {
    TempDir dir;
    std::string cert = dir.file("relay.crt");
    std::string key = dir.file("relay.key");
    write_text(cert, "old");
    write_text(key, "old");
    ::chmod(key.c_str(), 0644);
    tlsrelay::tls::generate_self_signed("relay.test.example", cert, key);

    CHECK(read_text(cert).rfind("-----BEGIN CERTIFICATE-----", 0) == 0);
    CHECK(read_text(key).find("PRIVATE KEY-----") != std::string::npos);
    struct stat key_status {};
    REQUIRE(::stat(key.c_str(), &key_status) == 0);
    CHECK((key_status.st_mode & 0777) == 0600);
}

TEST_CASE("self-signed certificate for long hostname", "[tls][certificate]") {
    // 70 characters: longer than the 64 a CN may hold.
    std::string hostname = std::string(60, 'a') + ".test.example";
    TempDir dir;
    std::string cert = dir.file("relay.crt");
    std::string key = dir.file("relay.key");
    tlsrelay::tls::generate_self_signed(hostname, cert, key);

    std::string log = dir.file("openssl.txt");
    run_command("openssl x509 -noout -text -in " + cert, log);
    std::string text = read_text(log);
    CHECK(text.find("DNS:" + hostname) != std::string::npos);
    CHECK(text.find("X509v3 Subject Alternative Name: critical") != std::string::npos);
    CHECK_NOTHROW(tlsrelay::tls::make_server_context(cert, key));
}

TEST_CASE("self-signed certificate rejects invalid hostname", "[tls][certificate]") {
    TempDir dir;
    for (const std::string& hostname : {std::string(), std::string("bad host"),
                                        std::string(254, 'a'), std::string("caf\xc3\xa9.example")}) {
        INFO("hostname [" << hostname << "]");
        std::string message = setup_error([&] {
            tlsrelay::tls::generate_self_signed(hostname, dir.file("x.crt"), dir.file("x.key"));
        });
        CHECK(message.find("invalid hostname") != std::string::npos);
    }
    CHECK_FALSE(fs::exists(dir.file("x.key")));
}

TEST_CASE("self-signed certificate reports unwritable path", "[tls][certificate]") {
    TempDir dir;
    std::string key = dir.file("no-such-dir/relay.key");
    std::string message = setup_error([&] {
        tlsrelay::tls::generate_self_signed("relay.test.example", dir.file("relay.crt"), key);
    });
    CHECK(message.find(key) != std::string::npos);
}
