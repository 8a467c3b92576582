// The validated configuration. Every key is defined once, in config.cpp,
// with its default; conf/tlsrelay.toml lists each key at that default.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <asio/ip/tcp.hpp>

#include "tlsrelay/dns/nameserver.hpp"
#include "tlsrelay/policy/policy.hpp"
#include "tlsrelay/policy/table.hpp"
#include "tlsrelay/util/address.hpp"

namespace tlsrelay::config {

// Raised with one line that names the file, the line, the key, the value and
// what is accepted.
class ConfigError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

enum class InboundTlsLevel { none, may, encrypt };
enum class BareNewlinePolicy { normalize, reject };

// One [[smtpd.listener]] table: a listening address with its own settings.
struct Listener {
    asio::ip::tcp::endpoint address;
    bool implicit_tls = false;  // tls = "implicit" (port 465); default "starttls"
    std::optional<InboundTlsLevel> tls_security_level;  // unset: [smtpd] tls_security_level
    bool auth_required = false;   // submission: MAIL only after AUTH
    bool proxy_protocol = false;  // a PROXY v1/v2 header precedes SMTP
};

// One [[smtpd.tls_sni]] table: the certificate presented for a server name.
struct SniCertificate {
    std::string name;  // lower case; "*.example.com" matches one label
    std::filesystem::path cert_file;
    std::filesystem::path key_file;
};

struct Smtpd {
    std::vector<asio::ip::tcp::endpoint> listen;
    std::vector<Listener> listeners;
    InboundTlsLevel tls_security_level = InboundTlsLevel::may;
    std::filesystem::path tls_cert_file;  // empty: self-signed, generated at first start
    std::filesystem::path tls_key_file;
    // The certificate chain that will replace tls_cert_file; empty: none.
    // Only the TLSA check after start and reload reads it.
    std::filesystem::path tls_next_cert_file;
    std::vector<SniCertificate> tls_sni;
    bool tls_require_tls13 = false;  // tls_protocols = ">=TLSv1.3"; default ">=TLSv1.2"
    std::vector<Network> mynetworks;
    std::filesystem::path auth_users_file;  // empty: AUTH not offered
    BareNewlinePolicy forbid_bare_newline = BareNewlinePolicy::normalize;
    std::chrono::seconds timeout{300};
    std::size_t connection_limit = 1000;
    std::size_t client_connection_count_limit = 50;
    std::size_t recipient_limit = 1000;
    int hard_error_limit = 20;
};

// One [[transport]] table: where mail for a relay domain goes.
struct Transport {
    std::string domain;  // "example.com", or ".example.com" for its subdomains
    NextHop nexthop;
};

struct Smtp {
    policy::Level tls_security_level = policy::Level::may;
    std::filesystem::path tls_CAfile;
    std::filesystem::path tls_CApath;
    std::uint16_t port = 25;
    std::optional<NextHop> relayhost;
    std::chrono::seconds connect_timeout{30};
    std::chrono::seconds command_timeout{300};
    // How long a session stays open after its transaction, waiting for the
    // next message to the same destination (Postfix's
    // smtp_connection_cache_time_limit); 0 closes every session at once.
    std::chrono::seconds connection_cache_time_limit{2};
    // A session open for this long is closed instead of carrying another
    // transaction (Postfix's smtp_connection_reuse_time_limit).
    std::chrono::seconds connection_reuse_time_limit{300};
    // Per-destination policies: [[smtp.tls_policy]] entries, then the
    // entries of the Postfix table file tls_policy_maps (loaded at start).
    policy::Table tls_policy;
    std::filesystem::path tls_policy_maps;
    // Postfix's smtp_tls_dane_insecure_mx_policy: true for "dane", false for "may".
    bool tls_dane_insecure_mx = true;
    // Postfix's smtp_tls_wrappermode; unset: implicit TLS on port 465 only.
    std::optional<bool> tls_wrappermode;
    // "[host]:port user:password" lines (Postfix's smtp_sasl_password_maps
    // source format); empty: no SMTP AUTH. Read by serve at start.
    std::filesystem::path sasl_password_file;
    // One [[smtp.sender_relayhost]] table (Postfix's
    // sender_dependent_relayhost_maps): mail from `sender` goes to `nexthop`.
    struct SenderRelayhost {
        std::string sender;  // "user@example.com" or "@example.com", lower case
        NextHop nexthop;
    };
    std::vector<SenderRelayhost> sender_relayhost;
};

struct Dns {
    std::vector<dns::Nameserver> nameservers;  // empty: /etc/resolv.conf
    // Per query and server. Unset: "options timeout:" of /etc/resolv.conf
    // when the nameservers come from there, else 5 s.
    std::optional<std::chrono::seconds> timeout;
    // Rounds over all nameservers. Unset: "options attempts:" of
    // /etc/resolv.conf when the nameservers come from there, else 2.
    std::optional<int> attempts;
    // Nameservers whose AD bit is trusted; loopback only by default.
    std::vector<Network> trusted_ad_networks;
    std::uint16_t edns_buffer_size = 1232;  // bytes
    std::size_t cache_size = 10000;         // cached replies; 0 disables the cache
};

struct Queue {
    std::chrono::seconds minimal_backoff_time{300};
    std::chrono::seconds maximal_backoff_time{4000};
    std::chrono::seconds queue_run_delay{300};
    std::chrono::seconds maximal_queue_lifetime{5 * 86400};
    std::chrono::seconds bounce_queue_lifetime{5 * 86400};
    std::chrono::seconds delay_warning_time{0};  // 0: no delay notifications
    std::size_t default_destination_concurrency_limit = 20;  // deliveries at once to one next hop
    std::size_t default_process_limit = 100;                 // deliveries at once in total
};

enum class LogFormat { text, json };

struct Log {
    LogFormat format = LogFormat::text;
};

struct Metrics {
    std::optional<asio::ip::tcp::endpoint> listen;  // the Prometheus endpoint; unset: off
    int window_days = 30;                            // days of delivery counters kept for `tlsrelay report`
    std::size_t domain_limit = 100;                  // domains with their own metrics series
};

struct Config {
    std::filesystem::path config_file;
    std::string myhostname;
    std::filesystem::path queue_directory;
    std::size_t message_size_limit = 10240000;
    int hopcount_limit = 50;
    std::vector<std::string> relay_domains;  // lower case; ".example.com" for subdomains
    std::vector<Transport> transports;
    Smtpd smtpd;
    Smtp smtp;
    Dns dns;
    Queue queue;
    Log log;
    Metrics metrics;
};

// Variables that override configuration keys, as (name, value) pairs.
// TLSRELAY_KEY sets a top-level key and TLSRELAY_SECTION__KEY a key in a
// section; names match case-insensitively and each value is read as a
// TOML value, or as a plain string when it is not one. TLSRELAY_CONFIG_TOML
// holds a TOML fragment merged after the file, with arrays of tables (such
// as [[smtpd.listener]]) appended. Variables override the file; the
// fragment is applied before single keys.
using Environment = std::vector<std::pair<std::string, std::string>>;
inline constexpr const char* fragment_variable = "TLSRELAY_CONFIG_TOML";

// The TLSRELAY_* variables of this process.
Environment process_environment();

// Every configuration key as "key" or "section.key".
std::vector<std::string> known_keys();

// Reads and validates a TOML file; raises ConfigError on the first problem.
Config load(const std::filesystem::path& file, const Environment& environment = {});

// The same for TOML text, with `file` used in messages and as the base of
// relative paths.
Config parse(std::string_view toml_text, const std::filesystem::path& file, const Environment& environment = {});

}  // namespace tlsrelay::config
