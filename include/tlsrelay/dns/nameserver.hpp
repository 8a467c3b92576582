#pragma once

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

// Reads the nameserver lines of a resolv.conf file; an unreadable file gives
// an empty list.
std::vector<Nameserver> read_resolv_conf(const std::string& path = "/etc/resolv.conf");

}  // namespace tlsrelay::dns
