#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <asio/ip/address.hpp>

namespace tlsrelay::dns {

struct Nameserver {
    asio::ip::address address;
    std::uint16_t port = 53;
};

// Parses "addr", "addr:port" or "[v6]:port"; std::nullopt when invalid.
std::optional<Nameserver> parse_nameserver(std::string_view text);

// The parts of a resolv.conf(5) file that the resolver uses.
struct ResolvConf {
    std::vector<Nameserver> nameservers;
    // "options timeout:N", in seconds, clamped to 1..30 as glibc 2.36 caps it.
    std::optional<std::chrono::seconds> timeout;
    // "options attempts:N", clamped to 1..5 as glibc 2.36 caps it.
    std::optional<int> attempts;
};

// Parses resolv.conf text. Unknown keywords and options are skipped, and
// for an option given twice the last value counts, as in glibc.
ResolvConf parse_resolv_conf(std::string_view text);

// Reads and parses a resolv.conf file; an unreadable file gives an empty
// result.
ResolvConf read_resolv_conf_file(const std::string& path = "/etc/resolv.conf");

// Reads the nameserver lines of a resolv.conf file; an unreadable file gives
// an empty list.
std::vector<Nameserver> read_resolv_conf(const std::string& path = "/etc/resolv.conf");

}  // namespace tlsrelay::dns
