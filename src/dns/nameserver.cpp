#include "tlsrelay/dns/nameserver.hpp"

#include <charconv>
#include <fstream>
#include <sstream>
#include <system_error>

namespace tlsrelay::dns {

namespace {

// Parses a decimal port in 1..65535. Port 0 is rejected because no server
// can listen on it.
std::optional<std::uint16_t> parse_port(std::string_view text) {
    unsigned value = 0;
    const char* end = text.data() + text.size();
    auto [stop, error] = std::from_chars(text.data(), end, value);
    if (text.empty() || error != std::errc{} || stop != end || value == 0 || value > 65535) {
        return std::nullopt;
    }
    return static_cast<std::uint16_t>(value);
}

// Parses a bare unicast address. A scope id ("fe80::1%eth0") is rejected,
// because a link-local nameserver would also need an interface to send from.
std::optional<asio::ip::address> parse_address(std::string_view text) {
    if (text.empty() || text.find('%') != std::string_view::npos) {
        return std::nullopt;
    }
    std::error_code error;
    auto address = asio::ip::make_address(std::string(text), error);
    if (error || address.is_unspecified() || address.is_multicast()) {
        return std::nullopt;
    }
    return address;
}

// Parses "[v6]" or "[v6]:port".
std::optional<Nameserver> parse_bracketed(std::string_view text) {
    auto close = text.find(']');
    if (close == std::string_view::npos) {
        return std::nullopt;
    }
    auto address = parse_address(text.substr(1, close - 1));
    if (!address || !address->is_v6()) {
        return std::nullopt;
    }

    auto rest = text.substr(close + 1);
    if (rest.empty()) {
        return Nameserver{*address, 53};
    }
    if (rest.front() != ':') {
        return std::nullopt;
    }
    auto port = parse_port(rest.substr(1));
    if (!port) {
        return std::nullopt;
    }
    return Nameserver{*address, *port};
}

}  // namespace

std::optional<Nameserver> parse_nameserver(std::string_view text) {
    if (!text.empty() && text.front() == '[') {
        return parse_bracketed(text);
    }

    // More than one colon means a bare IPv6 address, which cannot carry a port.
    auto colon = text.find(':');
    bool has_port = colon != std::string_view::npos && text.find(':', colon + 1) == std::string_view::npos;
    if (!has_port) {
        auto address = parse_address(text);
        if (!address) {
            return std::nullopt;
        }
        return Nameserver{*address, 53};
    }

    auto address = parse_address(text.substr(0, colon));
    auto port = parse_port(text.substr(colon + 1));
    if (!address || !address->is_v4() || !port) {
        return std::nullopt;
    }
    return Nameserver{*address, *port};
}

std::vector<Nameserver> read_resolv_conf(const std::string& path) {
    std::vector<Nameserver> nameservers;
    std::ifstream file(path);
    std::string line;
    while (std::getline(file, line)) {
        // '#' and ';' start comments in resolv.conf.
        line = line.substr(0, line.find_first_of("#;"));

        std::istringstream words(line);
        std::string keyword;
        std::string value;
        if (!(words >> keyword >> value) || keyword != "nameserver") {
            continue;
        }

        // resolv.conf has no port syntax, so like the C library's resolver
        // this reads an address only and uses port 53.
        if (auto address = parse_address(value)) {
            nameservers.push_back(Nameserver{*address, 53});
        }
    }
    return nameservers;
}

}  // namespace tlsrelay::dns
