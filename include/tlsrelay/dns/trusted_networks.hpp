// Networks whose nameservers are trusted to set the AD bit. A stub resolver
// cannot check DNSSEC signatures itself, so the AD bit means something only
// when the path to the validating resolver cannot be tampered with.
#pragma once

#include <vector>

#include <asio/ip/address.hpp>
#include <asio/ip/network_v4.hpp>
#include <asio/ip/network_v6.hpp>

namespace tlsrelay::dns {

class TrustedNetworks {
public:
    // Loopback only: 127.0.0.0/8 and ::1/128.
    TrustedNetworks()
        : v4_{asio::ip::make_network_v4("127.0.0.0/8")}, v6_{asio::ip::make_network_v6("::1/128")} {}

    TrustedNetworks(std::vector<asio::ip::network_v4> v4, std::vector<asio::ip::network_v6> v6)
        : v4_(std::move(v4)), v6_(std::move(v6)) {}

    // IPv4-mapped IPv6 addresses (::ffff:127.0.0.1) are checked as IPv4.
    bool contains(const asio::ip::address& address) const {
        if (address.is_v6() && address.to_v6().is_v4_mapped()) {
            return contains_v4(asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()));
        }
        if (address.is_v4()) {
            return contains_v4(address.to_v4());
        }
        return contains_v6(address.to_v6());
    }

private:
    bool contains_v4(const asio::ip::address_v4& address) const {
        for (const auto& network : v4_) {
            if ((address.to_uint() & network.netmask().to_uint()) == network.network().to_uint()) {
                return true;
            }
        }
        return false;
    }

    bool contains_v6(const asio::ip::address_v6& address) const {
        for (const auto& network : v6_) {
            if (asio::ip::network_v6(address, network.prefix_length()).network() == network.network()) {
                return true;
            }
        }
        return false;
    }

    std::vector<asio::ip::network_v4> v4_;
    std::vector<asio::ip::network_v6> v6_;
};

}  // namespace tlsrelay::dns
