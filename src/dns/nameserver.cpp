#include "tlsrelay/dns/nameserver.hpp"

#include <algorithm>
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

namespace {

// glibc 2.36 limits (RES_MAXRETRANS and RES_MAXRETRY in resolv.h).
constexpr int max_resolv_conf_timeout = 30;
constexpr int max_resolv_conf_attempts = 5;

// Parses the decimal value of an option such as "timeout:3". Returns
// std::nullopt when `option` does not start with `name` or the value is not
// a number.
std::optional<int> option_value(std::string_view option, std::string_view name, int min, int max) {
    if (!option.starts_with(name)) {
        return std::nullopt;
    }
    // An unsigned parse rejects a sign, so "attempts:-1" is invalid.
    std::string_view digits = option.substr(name.size());
    unsigned value = 0;
    auto [stop, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (digits.empty() || stop != digits.data() + digits.size()) {
        return std::nullopt;
    }
    if (error == std::errc::result_out_of_range) {
        return max;
    }
    return static_cast<int>(std::clamp(value, static_cast<unsigned>(min), static_cast<unsigned>(max)));
}

void parse_options(std::istringstream& words, ResolvConf& conf) {
    std::string option;
    while (words >> option) {
        if (auto timeout = option_value(option, "timeout:", 1, max_resolv_conf_timeout)) {
            conf.timeout = std::chrono::seconds(*timeout);
        } else if (auto attempts = option_value(option, "attempts:", 1, max_resolv_conf_attempts)) {
            conf.attempts = *attempts;
        }
    }
}

}  // namespace

ResolvConf parse_resolv_conf(std::string_view text) {
    ResolvConf conf;
    std::istringstream lines{std::string(text)};
    std::string line;
    while (std::getline(lines, line)) {
        // '#' and ';' start comments in resolv.conf.
        line = line.substr(0, line.find_first_of("#;"));

        std::istringstream words(line);
        std::string keyword;
        if (!(words >> keyword)) {
            continue;
        }
        if (keyword == "options") {
            parse_options(words, conf);
            continue;
        }

        // resolv.conf has no port syntax, so like the C library's resolver
        // this reads an address only and uses port 53.
        std::string value;
        if (keyword == "nameserver" && words >> value) {
            if (auto address = parse_address(value)) {
                conf.nameservers.push_back(Nameserver{*address, 53});
            }
        }
    }
    return conf;
}

ResolvConf read_resolv_conf_file(const std::string& path) {
    std::ifstream file(path);
    std::ostringstream content;
    content << file.rdbuf();
    return parse_resolv_conf(content.str());
}

std::vector<Nameserver> read_resolv_conf(const std::string& path) {
    return read_resolv_conf_file(path).nameservers;
}

}  // namespace tlsrelay::dns
