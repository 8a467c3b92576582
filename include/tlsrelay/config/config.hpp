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
#include <vector>

#include <asio/ip/tcp.hpp>

#include "tlsrelay/dns/nameserver.hpp"
#include "tlsrelay/policy/policy.hpp"
#include "tlsrelay/util/address.hpp"

namespace tlsrelay::config {

// Raised with one line that names the file, the line, the key, the value and
// what is accepted.
class ConfigError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

enum class InboundTlsLevel { none, may, encrypt };

struct Smtpd {
    std::vector<asio::ip::tcp::endpoint> listen;
    InboundTlsLevel tls_security_level = InboundTlsLevel::may;
    std::filesystem::path tls_cert_file;  // empty: self-signed, generated at first start
    std::filesystem::path tls_key_file;
    std::vector<Network> mynetworks;
    std::chrono::seconds timeout{300};
};

struct Smtp {
    policy::Level tls_security_level = policy::Level::may;
    std::filesystem::path tls_CAfile;
    std::filesystem::path tls_CApath;
    std::uint16_t port = 25;
    std::optional<NextHop> relayhost;
    std::chrono::seconds connect_timeout{30};
    std::chrono::seconds command_timeout{300};
};

struct Dns {
    std::vector<dns::Nameserver> nameservers;  // empty: /etc/resolv.conf
    std::chrono::seconds timeout{5};
    int attempts = 2;
};

struct Queue {
    std::chrono::seconds minimal_backoff_time{300};
    std::chrono::seconds maximal_backoff_time{4000};
};

struct Config {
    std::filesystem::path config_file;
    std::string myhostname;
    std::filesystem::path queue_directory;
    std::size_t message_size_limit = 10240000;
    Smtpd smtpd;
    Smtp smtp;
    Dns dns;
    Queue queue;
};

// Reads and validates a TOML file; raises ConfigError on the first problem.
Config load(const std::filesystem::path& file);

// The same for TOML text, with `file` used in messages and as the base of
// relative paths.
Config parse(std::string_view toml_text, const std::filesystem::path& file);

}  // namespace tlsrelay::config
