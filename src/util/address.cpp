#include "tlsrelay/util/address.hpp"

#include <charconv>

namespace tlsrelay {
namespace {

std::optional<std::uint16_t> parse_port(std::string_view text) {
    unsigned value = 0;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || error != std::errc{} || end != text.data() + text.size() || value == 0 || value > 65535) {
        return std::nullopt;
    }
    return static_cast<std::uint16_t>(value);
}

std::optional<asio::ip::address> parse_address(std::string_view text) {
    std::error_code error;
    auto address = asio::ip::make_address(std::string(text), error);
    if (error) {
        return std::nullopt;
    }
    return address;
}

}  // namespace

std::optional<asio::ip::tcp::endpoint> parse_endpoint(std::string_view text) {
    std::string_view host;
    std::string_view port;
    if (text.starts_with('[')) {
        auto close = text.find("]:");
        if (close == std::string_view::npos) {
            return std::nullopt;
        }
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos || text.find(':') != colon) {
            return std::nullopt;
        }
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
    }

    auto address = parse_address(host);
    auto port_number = parse_port(port);
    if (!address || !port_number) {
        return std::nullopt;
    }
    return asio::ip::tcp::endpoint(*address, *port_number);
}

bool Network::contains(const asio::ip::address& candidate) const {
    asio::ip::address probe = candidate;
    // An IPv4 client may arrive on an IPv6 socket as ::ffff:a.b.c.d.
    if (probe.is_v6() && probe.to_v6().is_v4_mapped() && address.is_v4()) {
        probe = asio::ip::make_address_v4(asio::ip::v4_mapped, probe.to_v6());
    }
    if (probe.is_v4() != address.is_v4()) {
        return false;
    }

    auto compare = [this](const auto& left, const auto& right) {
        unsigned remaining = prefix_length;
        for (std::size_t i = 0; i < left.size() && remaining > 0; ++i) {
            unsigned bits = remaining >= 8 ? 8 : remaining;
            auto mask = static_cast<unsigned char>(0xff00u >> bits);
            if ((left[i] & mask) != (right[i] & mask)) {
                return false;
            }
            remaining -= bits;
        }
        return true;
    };
    if (probe.is_v4()) {
        return compare(probe.to_v4().to_bytes(), address.to_v4().to_bytes());
    }
    return compare(probe.to_v6().to_bytes(), address.to_v6().to_bytes());
}

std::optional<Network> parse_network(std::string_view text) {
    std::string_view host = text;
    std::optional<unsigned> prefix;
    auto slash = text.find('/');
    if (slash != std::string_view::npos) {
        host = text.substr(0, slash);
        auto digits = text.substr(slash + 1);
        unsigned value = 0;
        auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
        if (digits.empty() || error != std::errc{} || end != digits.data() + digits.size()) {
            return std::nullopt;
        }
        prefix = value;
    }
    if (host.starts_with('[') && host.ends_with(']')) {
        host = host.substr(1, host.size() - 2);
    }

    auto address = parse_address(host);
    if (!address) {
        return std::nullopt;
    }
    unsigned max_prefix = address->is_v4() ? 32 : 128;
    if (prefix.value_or(max_prefix) > max_prefix) {
        return std::nullopt;
    }
    return Network{*address, prefix.value_or(max_prefix)};
}

std::optional<NextHop> parse_next_hop(std::string_view text) {
    NextHop hop;
    std::string_view rest = text;
    if (rest.starts_with('[')) {
        auto close = rest.find(']');
        if (close == std::string_view::npos || close == 1) {
            return std::nullopt;
        }
        hop.host = std::string(rest.substr(1, close - 1));
        hop.mx_lookup = false;
        rest = rest.substr(close + 1);
    } else {
        auto colon = rest.find(':');
        hop.host = std::string(rest.substr(0, colon));
        rest = colon == std::string_view::npos ? std::string_view{} : rest.substr(colon);
    }
    if (hop.host.empty()) {
        return std::nullopt;
    }

    if (!rest.empty()) {
        if (!rest.starts_with(':')) {
            return std::nullopt;
        }
        auto port = parse_port(rest.substr(1));
        if (!port) {
            return std::nullopt;
        }
        hop.port = *port;
        hop.port_given = true;
    }
    return hop;
}

std::string format_peer(std::string_view host, const asio::ip::address& address, std::uint16_t port) {
    std::string text(host);
    text += '[';
    text += address.to_string();
    text += "]:";
    text += std::to_string(port);
    return text;
}

}  // namespace tlsrelay
