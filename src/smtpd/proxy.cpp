#include "tlsrelay/smtpd/proxy.hpp"

#include <array>
#include <charconv>
#include <cstring>
#include <vector>

namespace tlsrelay::smtpd {
namespace {

constexpr std::string_view v2_signature{"\r\n\r\n\0\r\nQUIT\n", 12};

std::vector<std::string_view> split_spaces(std::string_view text) {
    std::vector<std::string_view> parts;
    std::size_t start = 0;
    while (start <= text.size()) {
        auto space = text.find(' ', start);
        parts.push_back(text.substr(start, space == std::string_view::npos ? std::string_view::npos : space - start));
        if (space == std::string_view::npos) {
            break;
        }
        start = space + 1;
    }
    return parts;
}

ProxyParse parse_v1(std::string_view bytes, ProxyHeader& header, std::size_t& consumed, std::string& error) {
    auto end = bytes.find("\r\n");
    if (end == std::string_view::npos) {
        if (bytes.size() >= 107) {
            error = "PROXY v1 header longer than 107 bytes";
            return ProxyParse::invalid;
        }
        return ProxyParse::need_more;
    }
    auto parts = split_spaces(bytes.substr(0, end));
    consumed = end + 2;
    if (parts.size() >= 2 && parts[1] == "UNKNOWN") {
        return ProxyParse::ok;
    }
    if (parts.size() != 6 || (parts[1] != "TCP4" && parts[1] != "TCP6")) {
        error = "malformed PROXY v1 header";
        return ProxyParse::invalid;
    }
    std::error_code address_error;
    auto source = asio::ip::make_address(std::string(parts[2]), address_error);
    unsigned port = 0;
    auto [port_end, port_error] = std::from_chars(parts[4].data(), parts[4].data() + parts[4].size(), port);
    if (address_error || port_error != std::errc{} || port_end != parts[4].data() + parts[4].size() || port > 65535 ||
        source.is_v4() != (parts[1] == "TCP4")) {
        error = "malformed PROXY v1 header";
        return ProxyParse::invalid;
    }
    header.source = source;
    header.source_port = static_cast<std::uint16_t>(port);
    return ProxyParse::ok;
}

ProxyParse parse_v2(std::string_view bytes, ProxyHeader& header, std::size_t& consumed, std::string& error) {
    if (bytes.size() < 16) {
        return ProxyParse::need_more;
    }
    auto version_command = static_cast<unsigned char>(bytes[12]);
    auto family = static_cast<unsigned char>(bytes[13]);
    std::size_t length = (static_cast<unsigned char>(bytes[14]) << 8) | static_cast<unsigned char>(bytes[15]);
    if ((version_command >> 4) != 2 || (version_command & 0x0f) > 1) {
        error = "unsupported PROXY v2 version or command";
        return ProxyParse::invalid;
    }
    if (16 + length > max_proxy_header) {
        error = "PROXY v2 header longer than " + std::to_string(max_proxy_header) + " bytes";
        return ProxyParse::invalid;
    }
    if (bytes.size() < 16 + length) {
        return ProxyParse::need_more;
    }
    consumed = 16 + length;
    auto body = bytes.substr(16, length);

    // LOCAL command: the proxy speaks for itself.
    if ((version_command & 0x0f) == 0) {
        return ProxyParse::ok;
    }
    if (family == 0x11 && body.size() >= 12) {  // TCP over IPv4
        asio::ip::address_v4::bytes_type address{};
        std::memcpy(address.data(), body.data(), 4);
        header.source = asio::ip::address_v4(address);
        header.source_port = static_cast<std::uint16_t>((static_cast<unsigned char>(body[8]) << 8) |
                                                        static_cast<unsigned char>(body[9]));
        return ProxyParse::ok;
    }
    if (family == 0x21 && body.size() >= 36) {  // TCP over IPv6
        asio::ip::address_v6::bytes_type address{};
        std::memcpy(address.data(), body.data(), 16);
        header.source = asio::ip::address_v6(address);
        header.source_port = static_cast<std::uint16_t>((static_cast<unsigned char>(body[32]) << 8) |
                                                        static_cast<unsigned char>(body[33]));
        return ProxyParse::ok;
    }
    if (family == 0x00) {  // UNSPEC
        return ProxyParse::ok;
    }
    error = "unsupported PROXY v2 address family";
    return ProxyParse::invalid;
}

}  // namespace

ProxyParse parse_proxy_header(std::string_view bytes, ProxyHeader& header, std::size_t& consumed,
                              std::string& error) {
    header = ProxyHeader{};
    consumed = 0;
    std::size_t prefix = std::min(bytes.size(), v2_signature.size());
    if (bytes.substr(0, prefix) == v2_signature.substr(0, prefix)) {
        return prefix < v2_signature.size() ? ProxyParse::need_more : parse_v2(bytes, header, consumed, error);
    }
    constexpr std::string_view v1_prefix = "PROXY ";
    prefix = std::min(bytes.size(), v1_prefix.size());
    if (bytes.substr(0, prefix) == v1_prefix.substr(0, prefix)) {
        return prefix < v1_prefix.size() ? ProxyParse::need_more : parse_v1(bytes, header, consumed, error);
    }
    error = "connection did not start with a PROXY protocol header";
    return ProxyParse::invalid;
}

}  // namespace tlsrelay::smtpd
