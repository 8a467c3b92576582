// Parsing of the address forms used in configuration: listen endpoints,
// client networks (CIDR) and next-hop destinations.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <asio/ip/address.hpp>
#include <asio/ip/tcp.hpp>

namespace tlsrelay {

// "addr:port" or "[v6addr]:port".
std::optional<asio::ip::tcp::endpoint> parse_endpoint(std::string_view text);

// An IPv4 or IPv6 network in CIDR form: "127.0.0.0/8", "[::1]/128", or a
// bare address meaning a single host.
struct Network {
    asio::ip::address address;
    unsigned prefix_length = 0;

    bool contains(const asio::ip::address& candidate) const;
};

std::optional<Network> parse_network(std::string_view text);

// A next hop as Postfix writes it: "[host]:port" disables the MX lookup,
// "host:port" or "host" looks up MX records for host.
struct NextHop {
    std::string host;
    std::uint16_t port = 25;
    bool port_given = false;
    bool mx_lookup = true;
};

std::optional<NextHop> parse_next_hop(std::string_view text);

// "host[addr]:port", the form Postfix logs peers in.
std::string format_peer(std::string_view host, const asio::ip::address& address, std::uint16_t port);

}  // namespace tlsrelay
