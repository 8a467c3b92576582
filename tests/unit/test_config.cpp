#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "tlsrelay/config/config.hpp"

using tlsrelay::config::ConfigError;
using tlsrelay::config::parse;

namespace {

const std::filesystem::path file = "/etc/tlsrelay/test.toml";

std::string error_of(const std::string& text) {
    try {
        parse(text, file);
    } catch (const ConfigError& error) {
        return error.what();
    }
    return "(no error)";
}

std::string error_of_file(const std::string& text, const std::filesystem::path& toml_file) {
    try {
        parse(text, toml_file);
    } catch (const ConfigError& error) {
        return error.what();
    }
    return "(no error)";
}

}  // namespace

TEST_CASE("config defaults apply to an empty file") {
    auto config = parse("", file);
    REQUIRE(config.smtpd.listen.size() == 1);
    CHECK(config.smtpd.listen[0].port() == 2525);
    CHECK(config.smtpd.listen[0].address().to_string() == "127.0.0.1");
    CHECK(config.queue_directory == "/etc/tlsrelay/var/queue");
    CHECK(config.smtp.tls_security_level == tlsrelay::policy::Level::may);
    CHECK(config.smtp.tls_CApath == "/etc/ssl/certs");
    CHECK(config.smtp.port == 25);
    CHECK_FALSE(config.smtp.relayhost);
    CHECK(config.queue.minimal_backoff_time == std::chrono::seconds(300));
    CHECK(config.queue.queue_run_delay == std::chrono::seconds(300));
    CHECK(config.queue.maximal_queue_lifetime == std::chrono::seconds(5 * 86400));
    CHECK(config.queue.bounce_queue_lifetime == std::chrono::seconds(5 * 86400));
    CHECK(config.queue.delay_warning_time == std::chrono::seconds(0));
    CHECK(config.queue.default_destination_concurrency_limit == 20);
    CHECK(config.queue.default_process_limit == 100);
    CHECK_FALSE(config.myhostname.empty());
    CHECK(config.smtpd.mynetworks.size() == 2);
}

TEST_CASE("config reads every documented key") {
    auto config = parse(R"(
myhostname = "relay.example.net"
queue_directory = "spool"
message_size_limit = 2048000
[smtpd]
listen = ["127.0.0.1:2525", "[::1]:2526"]
tls_security_level = "encrypt"
tls_cert_file = "/etc/ssl/relay.pem"
tls_key_file = "relay.key"
mynetworks = ["10.0.0.0/8", "[2001:db8::]/32"]
timeout = "5m"
[smtp]
tls_security_level = "verify"
tls_CAfile = "ca.pem"
tls_CApath = ""
port = 2525
relayhost = "[smarthost.example.net]:587"
connect_timeout = 10
[dns]
nameservers = ["127.0.0.1:5353", "[::1]:53", "192.0.2.1"]
timeout = "2s"
attempts = 3
[queue]
minimal_backoff_time = "1m"
maximal_backoff_time = "1h"
queue_run_delay = "10s"
maximal_queue_lifetime = "2d"
bounce_queue_lifetime = "1d"
delay_warning_time = "4h"
default_destination_concurrency_limit = 5
default_process_limit = 50
)", file);
    CHECK(config.myhostname == "relay.example.net");
    CHECK(config.queue_directory == "/etc/tlsrelay/spool");
    CHECK(config.message_size_limit == 2048000);
    REQUIRE(config.smtpd.listen.size() == 2);
    CHECK(config.smtpd.listen[1].address().to_string() == "::1");
    CHECK(config.smtpd.listen[1].port() == 2526);
    CHECK(config.smtpd.tls_security_level == tlsrelay::config::InboundTlsLevel::encrypt);
    CHECK(config.smtpd.tls_cert_file == "/etc/ssl/relay.pem");
    CHECK(config.smtpd.tls_key_file == "/etc/tlsrelay/relay.key");
    CHECK(config.smtpd.timeout == std::chrono::seconds(300));
    CHECK(config.smtp.tls_security_level == tlsrelay::policy::Level::verify);
    CHECK(config.smtp.tls_CAfile == "/etc/tlsrelay/ca.pem");
    CHECK(config.smtp.tls_CApath.empty());
    CHECK(config.smtp.port == 2525);
    REQUIRE(config.smtp.relayhost);
    CHECK(config.smtp.relayhost->host == "smarthost.example.net");
    CHECK(config.smtp.relayhost->port == 587);
    CHECK_FALSE(config.smtp.relayhost->mx_lookup);
    CHECK(config.smtp.connect_timeout == std::chrono::seconds(10));
    REQUIRE(config.dns.nameservers.size() == 3);
    CHECK(config.dns.nameservers[0].port == 5353);
    CHECK(config.dns.nameservers[2].port == 53);
    CHECK(config.dns.attempts == 3);
    CHECK(config.queue.minimal_backoff_time == std::chrono::seconds(60));
    CHECK(config.queue.queue_run_delay == std::chrono::seconds(10));
    CHECK(config.queue.maximal_queue_lifetime == std::chrono::seconds(2 * 86400));
    CHECK(config.queue.bounce_queue_lifetime == std::chrono::seconds(86400));
    CHECK(config.queue.delay_warning_time == std::chrono::seconds(4 * 3600));
    CHECK(config.queue.default_destination_concurrency_limit == 5);
    CHECK(config.queue.default_process_limit == 50);
    CHECK(config.queue.maximal_backoff_time == std::chrono::seconds(3600));
}

TEST_CASE("config shipped default file loads") {
    auto config = tlsrelay::config::load(std::filesystem::path(TLSRELAY_SOURCE_DIR) / "conf/tlsrelay.toml");
    CHECK(config.smtpd.listen[0].port() == 2525);
    CHECK(config.queue_directory == std::filesystem::path(TLSRELAY_SOURCE_DIR) / "conf/var/queue");
}

// Each bad configuration stops start-up with one line naming the file, the
// line, the key, the value and what is accepted.
TEST_CASE("config errors name file key value and what is accepted") {
    CHECK(error_of("myhostnme = \"relay\"\n") ==
          "/etc/tlsrelay/test.toml:1: unknown key myhostnme = \"relay\": accepted top-level keys are dns, "
          "hopcount_limit, log, message_size_limit, metrics, myhostname, queue, queue_directory, relay_domains, "
          "smtp, smtpd, transport");
    CHECK(error_of("[smtpd]\nlisen = [\"127.0.0.1:25\"]\n") ==
          "/etc/tlsrelay/test.toml:2: unknown key smtpd.lisen = [ \"127.0.0.1:25\" ]: accepted keys in [smtpd] are "
          "auth_users_file, client_connection_count_limit, connection_limit, forbid_bare_newline, hard_error_limit, "
          "listen, listener, mynetworks, recipient_limit, timeout, tls_cert_file, tls_key_file, tls_next_cert_file, "
          "tls_protocols, tls_security_level, tls_sni");
    CHECK(error_of("[smtp]\ntls_security_level = \"sometimes\"\n") ==
          "/etc/tlsrelay/test.toml:2: invalid smtp.tls_security_level \"sometimes\": expected one of none, may, "
          "encrypt, fingerprint, verify, secure, dane, dane-only");
    CHECK(error_of("[smtpd]\ntls_security_level = \"verify\"\n") ==
          "/etc/tlsrelay/test.toml:2: invalid smtpd.tls_security_level \"verify\": expected one of none, may, encrypt");
    CHECK(error_of("[smtp]\nport = 70000\n") ==
          "/etc/tlsrelay/test.toml:2: invalid smtp.port 70000: expected an integer from 1 to 65535");
    CHECK(error_of("[smtp]\nport = \"25\"\n") ==
          "/etc/tlsrelay/test.toml:2: invalid smtp.port \"25\": expected an integer from 1 to 65535");
    CHECK(error_of("[smtpd]\nlisten = [\"127.0.0.1\"]\n") ==
          "/etc/tlsrelay/test.toml:2: invalid smtpd.listen entry \"127.0.0.1\": expected a list of \"addr:port\" or "
          "\"[v6addr]:port\" strings");
    CHECK(error_of("[smtpd]\nlisten = \"127.0.0.1:25\"\n") ==
          "/etc/tlsrelay/test.toml:2: invalid smtpd.listen \"127.0.0.1:25\": expected a list of \"addr:port\" or "
          "\"[v6addr]:port\" strings");
    CHECK(error_of("[smtpd]\nmynetworks = [\"10.0.0.0/33\"]\n") ==
          "/etc/tlsrelay/test.toml:2: invalid smtpd.mynetworks entry \"10.0.0.0/33\": expected a list of networks "
          "such as \"127.0.0.0/8\" or \"[::1]/128\"");
    CHECK(error_of("[dns]\nnameservers = [\"resolver.example\"]\n") ==
          "/etc/tlsrelay/test.toml:2: invalid dns.nameservers entry \"resolver.example\": expected a list of "
          "\"addr\", \"addr:port\" or \"[v6addr]:port\" strings");
    CHECK(error_of("[queue]\nminimal_backoff_time = \"5 minutes\"\n") ==
          "/etc/tlsrelay/test.toml:2: invalid queue.minimal_backoff_time \"5 minutes\": expected a duration such as "
          "300, \"300s\", \"10m\", \"1h\" or \"5d\"");
    CHECK(error_of("[smtp]\nrelayhost = \"[smarthost.example:587\"\n") ==
          "/etc/tlsrelay/test.toml:2: invalid smtp.relayhost \"[smarthost.example:587\": expected \"[host]:port\", "
          "\"host:port\", \"host\" or \"\"");
    CHECK(error_of("smtp = 5\n") == "/etc/tlsrelay/test.toml:1: invalid smtp 5: expected a table [smtp]");
    CHECK(error_of("[smtpd]\ntls_cert_file = \"cert.pem\"\n") ==
          "/etc/tlsrelay/test.toml: smtpd.tls_cert_file and smtpd.tls_key_file must be set together, or both left "
          "empty for a self-signed certificate");
    CHECK(error_of("[smtpd\nlisten = []\n") ==
          "/etc/tlsrelay/test.toml:1:7: TOML syntax error: Error while parsing table header: expected ']', saw '\\n'");
}

TEST_CASE("config missing file is reported") {
    try {
        tlsrelay::config::load("/nonexistent/tlsrelay.toml");
        FAIL("no error raised");
    } catch (const ConfigError& error) {
        CHECK(std::string(error.what()) == "/nonexistent/tlsrelay.toml: cannot read configuration file: No such file or directory");
    }
}

TEST_CASE("config inbound listener and SNI tables", "[config]") {
    auto config = parse(R"(
relay_domains = ["Example.com", ".example.net"]
hopcount_limit = 30
[smtpd]
listen = []
auth_users_file = "users"
forbid_bare_newline = "reject"
tls_protocols = ">=TLSv1.3"
client_connection_count_limit = 5
[[smtpd.listener]]
address = "127.0.0.1:587"
auth_required = true
[[smtpd.listener]]
address = "[::1]:465"
tls = "implicit"
proxy_protocol = true
tls_security_level = "encrypt"
[[smtpd.tls_sni]]
name = "Mail.Customer.example"
cert_file = "customer.pem"
key_file = "customer.key"
[[transport]]
domain = "example.com"
nexthop = "[10.1.2.3]:2525"
)", file);
    CHECK(config.relay_domains == std::vector<std::string>{"example.com", ".example.net"});
    CHECK(config.hopcount_limit == 30);
    CHECK(config.smtpd.listen.empty());
    REQUIRE(config.smtpd.listeners.size() == 2);
    CHECK(config.smtpd.listeners[0].address.port() == 587);
    CHECK(config.smtpd.listeners[0].auth_required);
    CHECK_FALSE(config.smtpd.listeners[0].implicit_tls);
    CHECK(config.smtpd.listeners[1].implicit_tls);
    CHECK(config.smtpd.listeners[1].proxy_protocol);
    CHECK(config.smtpd.listeners[1].tls_security_level == tlsrelay::config::InboundTlsLevel::encrypt);
    CHECK(config.smtpd.auth_users_file == "/etc/tlsrelay/users");
    CHECK(config.smtpd.forbid_bare_newline == tlsrelay::config::BareNewlinePolicy::reject);
    CHECK(config.smtpd.tls_require_tls13);
    CHECK(config.smtpd.client_connection_count_limit == 5);
    REQUIRE(config.smtpd.tls_sni.size() == 1);
    CHECK(config.smtpd.tls_sni[0].name == "mail.customer.example");
    CHECK(config.smtpd.tls_sni[0].cert_file == "/etc/tlsrelay/customer.pem");
    REQUIRE(config.transports.size() == 1);
    CHECK(config.transports[0].nexthop.host == "10.1.2.3");
    CHECK(config.transports[0].nexthop.port == 2525);
}

TEST_CASE("config inbound errors", "[config]") {
    CHECK(error_of("[smtpd]\nlisten = []\n") ==
          "/etc/tlsrelay/test.toml: no listening address: set smtpd.listen or add an [[smtpd.listener]] table");
    CHECK(error_of("[[smtpd.listener]]\ntls = \"implicit\"\n") ==
          "/etc/tlsrelay/test.toml:1: smtpd.listener entry has no address: add address = \"addr:port\"");
    CHECK(error_of("[[smtpd.listener]]\naddress = \"127.0.0.1:465\"\ntls = \"ssl\"\n") ==
          "/etc/tlsrelay/test.toml:3: invalid smtpd.listener.tls \"ssl\": expected starttls or implicit");
    CHECK(error_of("[[smtpd.listener]]\naddress = \"127.0.0.1:587\"\nauth_required = \"yes\"\n") ==
          "/etc/tlsrelay/test.toml:3: invalid smtpd.listener.auth_required \"yes\": expected true or false");
    CHECK(error_of("[smtpd]\nlistener = 5\n") ==
          "/etc/tlsrelay/test.toml:2: invalid smtpd.listener 5: expected a list of tables written as [[smtpd.listener]]");
    CHECK(error_of("[[smtpd.tls_sni]]\nname = \"a.example\"\n") ==
          "/etc/tlsrelay/test.toml:1: smtpd.tls_sni entry needs name, cert_file and key_file");
    CHECK(error_of("[smtpd]\nforbid_bare_newline = \"yes\"\n") ==
          "/etc/tlsrelay/test.toml:2: invalid smtpd.forbid_bare_newline \"yes\": expected normalize or reject");
    CHECK(error_of("[smtpd]\ntls_protocols = \"TLSv1.1\"\n") ==
          "/etc/tlsrelay/test.toml:2: invalid smtpd.tls_protocols \"TLSv1.1\": expected \">=TLSv1.2\" or \">=TLSv1.3\"");
    CHECK(error_of("relay_domains = [\"bad domain\"]\n") ==
          "/etc/tlsrelay/test.toml:1: invalid relay_domains entry \"bad domain\": expected a list of domains such as "
          "\"example.com\" or \".example.com\"");
    CHECK(error_of("[[transport]]\ndomain = \"example.com\"\n") ==
          "/etc/tlsrelay/test.toml:1: transport entry needs domain and nexthop");
    CHECK(error_of("[smtpd]\nrecipient_limit = 0\n") ==
          "/etc/tlsrelay/test.toml:2: invalid smtpd.recipient_limit 0: expected an integer from 1 to 100000");
}

TEST_CASE("config reads TLS policy entries") {
    auto config = parse(R"(
[smtp]
tls_security_level = "dane"
tls_dane_insecure_mx_policy = "may"

[[smtp.tls_policy]]
domain = "example.org"
level = "secure"
match = [".example.org", "example.net"]
protocols = ">=TLSv1.2"
ciphers = "high"

[[smtp.tls_policy]]
domain = "[smtp.provider.example]:587"
level = "encrypt"

[[smtp.tls_policy]]
domain = ".pinned.example"
level = "fingerprint"
fingerprints = ["3D:95:34:51:24:66:33:B9:D2:40:99:C0:C1:17:0B:D1:CB:B1:F9:AD:A2:29:2F:F3:44:25:4C:37:5C:D4:B1:35"]
)", file);
    using tlsrelay::policy::Level;
    CHECK(config.smtp.tls_security_level == Level::dane);
    CHECK_FALSE(config.smtp.tls_dane_insecure_mx);
    REQUIRE(config.smtp.tls_policy.size() == 3);
    const auto* org = config.smtp.tls_policy.lookup("example.org");
    REQUIRE(org);
    CHECK(org->policy.level == Level::secure);
    CHECK(org->policy.match == std::vector<std::string>{".example.org", "example.net"});
    CHECK(org->origin == "/etc/tlsrelay/test.toml:6 [[smtp.tls_policy]] #1");
    CHECK(config.smtp.tls_policy.lookup("[smtp.provider.example]:587")->policy.level == Level::encrypt);
    CHECK(config.smtp.tls_policy.lookup("mx.pinned.example")->policy.level == Level::fingerprint);
}

TEST_CASE("config loads a Postfix policy file") {
    auto directory = std::filesystem::temp_directory_path() / "tlsrelay-config-policy-test";
    std::filesystem::create_directories(directory);
    auto maps = directory / "tls_policy";
    std::ofstream(maps) << "# outbound TLS\nexample.com verify\n.example.com\n  encrypt\nbad.example sometimes\n";
    auto toml_file = directory / "tlsrelay.toml";

    CHECK(error_of_file("[smtp]\ntls_policy_maps = \"tls_policy\"\n", toml_file) ==
          maps.string() + ":5: invalid security level \"sometimes\": expected one of none, may, encrypt, fingerprint, "
                          "verify, secure, dane, dane-only (for bad.example)");

    std::ofstream(maps) << "# outbound TLS\nexample.com verify\n.example.com\n  encrypt\n";
    auto config = parse("[smtp]\ntls_policy_maps = \"tls_policy\"\n", toml_file);
    CHECK(config.smtp.tls_policy_maps == maps);
    CHECK(config.smtp.tls_policy.lookup("example.com")->policy.level == tlsrelay::policy::Level::verify);
    CHECK(config.smtp.tls_policy.lookup("a.example.com")->policy.level == tlsrelay::policy::Level::encrypt);

    // A TOML entry and a file entry for the same key.
    CHECK(error_of_file("[smtp]\ntls_policy_maps = \"tls_policy\"\n[[smtp.tls_policy]]\ndomain = \"example.com\"\n"
                        "level = \"may\"\n",
                        toml_file) ==
          maps.string() + ":2: duplicate policy for example.com, first defined at " + toml_file.string() +
              ":3 [[smtp.tls_policy]] #1");

    // Origins, as `tlsrelay check` shows them: the file line, and for a
    // TOML entry also its position among the [[smtp.tls_policy]] tables.
    auto both = parse("[smtp]\ntls_policy_maps = \"tls_policy\"\n[[smtp.tls_policy]]\ndomain = \"a.example\"\n"
                      "level = \"may\"\n[[smtp.tls_policy]]\ndomain = \"b.example\"\nlevel = \"verify\"\n",
                      toml_file);
    CHECK(both.smtp.tls_policy.lookup("b.example")->origin == toml_file.string() + ":6 [[smtp.tls_policy]] #2");
    CHECK(both.smtp.tls_policy.lookup("example.com")->origin == maps.string() + ":2");
    std::filesystem::remove_all(directory);

    CHECK(error_of("[smtp]\ntls_policy_maps = \"/nonexistent/tls_policy\"\n") ==
          "/etc/tlsrelay/test.toml:2: cannot read smtp.tls_policy_maps file /nonexistent/tls_policy: No such file or "
          "directory");
}

TEST_CASE("config TLS policy errors") {
    CHECK(error_of("[[smtp.tls_policy]]\ndomain = \"example.com\"\nlevel = \"sometimes\"\n") ==
          "/etc/tlsrelay/test.toml:1: invalid smtp.tls_policy entry for example.com: invalid security level "
          "\"sometimes\": expected one of none, may, encrypt, fingerprint, verify, secure, dane, dane-only");
    CHECK(error_of("[[smtp.tls_policy]]\nlevel = \"verify\"\n") ==
          "/etc/tlsrelay/test.toml:1: invalid smtp.tls_policy entry: domain and level are required");
    CHECK(error_of("[[smtp.tls_policy]]\ndomain = \"example.com\"\nlevel = \"verify\"\nmtach = [\"x\"]\n") ==
          "/etc/tlsrelay/test.toml:4: unknown key smtp.tls_policy.mtach = [ \"x\" ]: accepted keys in "
          "[smtp.tls_policy] are ciphers, domain, fingerprints, level, match, protocols");
    CHECK(error_of("[[smtp.tls_policy]]\ndomain = \"[relay:25\"\nlevel = \"verify\"\n") ==
          "/etc/tlsrelay/test.toml:1: invalid smtp.tls_policy entry for [relay:25: invalid key \"[relay:25\": "
          "expected a domain, .domain, [host], [host]:port or host:port");
    CHECK(error_of("[smtp]\ntls_dane_insecure_mx_policy = \"never\"\n") ==
          "/etc/tlsrelay/test.toml:2: invalid smtp.tls_dane_insecure_mx_policy \"never\": expected one of dane, may");
    CHECK(error_of("[smtp]\nlevel = \"verify\"\n") ==
          "/etc/tlsrelay/test.toml:2: unknown key smtp.level = \"verify\": accepted keys in [smtp] are "
          "command_timeout, connect_timeout, connection_cache_time_limit, connection_reuse_time_limit, port, "
          "relayhost, sasl_password_file, sender_relayhost, tls_CAfile, "
          "tls_CApath, tls_dane_insecure_mx_policy, tls_policy, tls_policy_maps, tls_security_level, tls_wrappermode");
}

TEST_CASE("config dns defaults", "[config][dns]") {
    auto config = parse("", file);
    CHECK(config.dns.nameservers.empty());
    CHECK_FALSE(config.dns.timeout.has_value());
    CHECK_FALSE(config.dns.attempts.has_value());
    REQUIRE(config.dns.trusted_ad_networks.size() == 2);
    CHECK(config.dns.trusted_ad_networks[0].address.to_string() == "127.0.0.0");
    CHECK(config.dns.trusted_ad_networks[0].prefix_length == 8);
    CHECK(config.dns.trusted_ad_networks[1].address.to_string() == "::1");
    CHECK(config.dns.trusted_ad_networks[1].prefix_length == 128);
    CHECK(config.dns.edns_buffer_size == 1232);
    CHECK(config.dns.cache_size == 10000);
}

TEST_CASE("config dns keys", "[config][dns]") {
    auto config = parse(R"([dns]
nameservers = ["127.0.0.1:5353"]
timeout = "2s"
attempts = 3
trusted_ad_networks = ["10.53.0.0/16", "[fd00::53]/128"]
edns_buffer_size = 512
cache_size = 0
)", file);
    CHECK(config.dns.timeout == std::chrono::seconds(2));
    CHECK(config.dns.attempts == 3);
    REQUIRE(config.dns.trusted_ad_networks.size() == 2);
    CHECK(config.dns.trusted_ad_networks[0].contains(asio::ip::make_address("10.53.1.1")));
    CHECK_FALSE(config.dns.trusted_ad_networks[0].contains(asio::ip::make_address("127.0.0.1")));
    CHECK(config.dns.trusted_ad_networks[1].contains(asio::ip::make_address("fd00::53")));
    CHECK(config.dns.edns_buffer_size == 512);
    CHECK(config.dns.cache_size == 0);

    auto untrusting = parse("[dns]\ntrusted_ad_networks = []\n", file);
    CHECK(untrusting.dns.trusted_ad_networks.empty());
}

TEST_CASE("config dns errors", "[config][dns]") {
    CHECK(error_of("[dns]\nresolver = \"127.0.0.1\"\n") ==
          "/etc/tlsrelay/test.toml:2: unknown key dns.resolver = \"127.0.0.1\": accepted keys in [dns] are "
          "attempts, cache_size, edns_buffer_size, nameservers, timeout, trusted_ad_networks");
    CHECK(error_of("[dns]\ntrusted_ad_networks = [\"localhost\"]\n") ==
          "/etc/tlsrelay/test.toml:2: invalid dns.trusted_ad_networks entry \"localhost\": expected a list of "
          "networks such as \"127.0.0.0/8\" or \"[::1]/128\"");
    CHECK(error_of("[dns]\nedns_buffer_size = 511\n") ==
          "/etc/tlsrelay/test.toml:2: invalid dns.edns_buffer_size 511: expected an integer from 512 to 4096");
    CHECK(error_of("[dns]\nedns_buffer_size = 65535\n") ==
          "/etc/tlsrelay/test.toml:2: invalid dns.edns_buffer_size 65535: expected an integer from 512 to 4096");
    CHECK(error_of("[dns]\ncache_size = -1\n") ==
          "/etc/tlsrelay/test.toml:2: invalid dns.cache_size -1: expected an integer from 0 to 1000000");
}

TEST_CASE("config log and metrics keys", "[config]") {
    auto defaults = parse("", file);
    CHECK(defaults.log.format == tlsrelay::config::LogFormat::text);
    CHECK_FALSE(defaults.metrics.listen);
    CHECK(defaults.metrics.window_days == 30);
    CHECK(defaults.metrics.domain_limit == 100);

    auto config = parse("[log]\nformat = \"json\"\n[metrics]\nlisten = \"127.0.0.1:9465\"\nwindow = \"2w\"\n"
                        "domain_limit = 0\n",
                        file);
    CHECK(config.log.format == tlsrelay::config::LogFormat::json);
    REQUIRE(config.metrics.listen);
    CHECK(config.metrics.listen->address().to_string() == "127.0.0.1");
    CHECK(config.metrics.listen->port() == 9465);
    CHECK(config.metrics.window_days == 14);
    CHECK(config.metrics.domain_limit == 0);
    CHECK_FALSE(parse("[metrics]\nlisten = \"\"\n", file).metrics.listen);
    CHECK(parse("[metrics]\nlisten = \"[::1]:9465\"\n", file).metrics.listen->address().is_v6());
}

TEST_CASE("config log and metrics errors", "[config]") {
    CHECK(error_of("[log]\nformat = \"syslog\"\n") ==
          "/etc/tlsrelay/test.toml:2: invalid log.format \"syslog\": expected text or json");
    CHECK(error_of("[log]\nlevel = \"debug\"\n") ==
          "/etc/tlsrelay/test.toml:2: unknown key log.level = \"debug\": accepted keys in [log] are format");
    CHECK(error_of("[metrics]\nlisten = \"9465\"\n") ==
          "/etc/tlsrelay/test.toml:2: invalid metrics.listen \"9465\": expected \"addr:port\", \"[v6addr]:port\" or \"\"");
    CHECK(error_of("[metrics]\nlisten = [\"127.0.0.1:9465\"]\n") ==
          "/etc/tlsrelay/test.toml:2: invalid metrics.listen [ \"127.0.0.1:9465\" ]: expected \"addr:port\", "
          "\"[v6addr]:port\" or \"\"");
    CHECK(error_of("[metrics]\nwindow = \"36h\"\n") ==
          "/etc/tlsrelay/test.toml:2: invalid metrics.window \"36h\": expected a number of days from \"1d\" to \"366d\"");
    CHECK(error_of("[metrics]\nwindow = 0\n") ==
          "/etc/tlsrelay/test.toml:2: invalid metrics.window 0: expected a number of days from \"1d\" to \"366d\"");
    CHECK(error_of("[metrics]\nwindow = \"400d\"\n") ==
          "/etc/tlsrelay/test.toml:2: invalid metrics.window \"400d\": expected a number of days from \"1d\" to \"366d\"");
    CHECK(error_of("[metrics]\nwindow = \"a month\"\n") ==
          "/etc/tlsrelay/test.toml:2: invalid metrics.window \"a month\": expected a duration such as 300, \"300s\", "
          "\"10m\", \"1h\" or \"5d\"");
    CHECK(error_of("[metrics]\ndomain_limit = -1\n") ==
          "/etc/tlsrelay/test.toml:2: invalid metrics.domain_limit -1: expected an integer from 0 to 10000");
    CHECK(error_of("metrics = \"127.0.0.1:9465\"\n") ==
          "/etc/tlsrelay/test.toml:1: invalid metrics \"127.0.0.1:9465\": expected a table [metrics]");
}

TEST_CASE("config environment overrides keys", "[config]") {
    tlsrelay::config::Environment environment{
        {"TLSRELAY_MYHOSTNAME", "sidecar.example.net"},
        {"TLSRELAY_SMTP__TLS_SECURITY_LEVEL", "verify"},
        {"tlsrelay_smtpd__listen", "[\"0.0.0.0:25\"]"},
        {"TLSRELAY_SMTP__TLS_CAFILE", "/etc/ssl/ca.pem"},
        {"TLSRELAY_SMTP__PORT", "2525"},
        {"TLSRELAY_CONFIG_TOML", "[[smtpd.listener]]\naddress = \"127.0.0.1:587\"\nauth_required = true\n"},
        {"OTHER_VARIABLE", "ignored"},
    };
    // Names are matched case-insensitively, so the lower-case one counts too.
    for (auto& entry : environment) {
        if (entry.first == "tlsrelay_smtpd__listen") {
            entry.first = "TLSRELAY_smtpd__LISTEN";
        }
    }
    auto config = parse("myhostname = \"file.example.net\"\n[smtp]\nport = 25\n", file, environment);
    CHECK(config.myhostname == "sidecar.example.net");
    CHECK(config.smtp.tls_security_level == tlsrelay::policy::Level::verify);
    REQUIRE(config.smtpd.listen.size() == 1);
    CHECK(config.smtpd.listen[0].address().to_string() == "0.0.0.0");
    CHECK(config.smtp.tls_CAfile == "/etc/ssl/ca.pem");
    CHECK(config.smtp.port == 2525);
    REQUIRE(config.smtpd.listeners.size() == 1);
    CHECK(config.smtpd.listeners[0].auth_required);
}

TEST_CASE("config environment errors name the variable", "[config]") {
    auto error_with = [](const char* name, const char* value) {
        try {
            parse("", file, {{name, value}});
        } catch (const ConfigError& error) {
            return std::string(error.what());
        }
        return std::string("(no error)");
    };
    CHECK(error_with("TLSRELAY_SMTP__PORT", "99999") ==
          "environment variable TLSRELAY_SMTP__PORT: invalid smtp.port 99999: expected an integer from 1 to 65535");
    CHECK(error_with("TLSRELAY_SMTP__TLS_LEVEL", "verify") ==
          "environment variable TLSRELAY_SMTP__TLS_LEVEL: unknown key smtp.tls_level");
    CHECK(error_with("TLSRELAY_MAIL__PORT", "25") ==
          "environment variable TLSRELAY_MAIL__PORT: unknown section \"mail\": use TLSRELAY_KEY for top-level keys or "
          "TLSRELAY_SECTION__KEY with a section of smtpd, smtp, dns, queue, log, metrics");
    CHECK(error_with("TLSRELAY_SMTPD", "5") == "environment variable TLSRELAY_SMTPD: unknown key smtpd");
    CHECK(error_with("TLSRELAY_CONFIG_TOML", "[smtpd") ==
          "TLSRELAY_CONFIG_TOML:1:7: TOML syntax error: Error while parsing table header: encountered end-of-file");
}

TEST_CASE("config known keys are all documented", "[config]") {
    std::ifstream shipped(std::filesystem::path(TLSRELAY_SOURCE_DIR) / "conf/tlsrelay.toml");
    std::string text((std::istreambuf_iterator<char>(shipped)), {});
    for (const auto& key : tlsrelay::config::known_keys()) {
        auto name = key.substr(key.rfind('.') + 1);
        INFO("key " << key << " is missing from conf/tlsrelay.toml");
        // Arrays of tables are shown as commented [[section.name]] examples.
        bool documented = text.find(name + " =") != std::string::npos || text.find("[[" + key + "]]") != std::string::npos;
        CHECK(documented);
    }
}

TEST_CASE("config shipped smarthost example loads", "[config]") {
    auto config = tlsrelay::config::load(std::filesystem::path(TLSRELAY_SOURCE_DIR) / "conf/smarthost.toml");
    REQUIRE(config.smtp.relayhost);
    CHECK(config.smtp.relayhost->host == "smtp.provider.example");
    CHECK(config.smtp.relayhost->port == 587);
    CHECK_FALSE(config.smtp.relayhost->mx_lookup);
    CHECK(config.smtp.tls_security_level == tlsrelay::policy::Level::verify);
    const auto* entry = config.smtp.tls_policy.lookup("[smtp.provider.example]:587");
    REQUIRE(entry != nullptr);
    CHECK(entry->policy.level == tlsrelay::policy::Level::verify);
}
