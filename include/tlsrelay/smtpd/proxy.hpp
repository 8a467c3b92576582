// The PROXY protocol header (HAProxy's versions 1 and 2) that a load
// balancer sends before SMTP, carrying the real client address. It is read
// only on listeners configured for it, because any client could forge it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <asio/ip/address.hpp>

namespace tlsrelay::smtpd {

struct ProxyHeader {
    // The original client, or nothing for a LOCAL/UNKNOWN header (a health
    // check by the proxy itself): the connection's own address applies.
    std::optional<asio::ip::address> source;
    std::uint16_t source_port = 0;
};

enum class ProxyParse { need_more, ok, invalid };

// Upper bound on a header this parser accepts (v1 is at most 107 bytes; v2
// may carry TLVs), so a client cannot make the server buffer without end.
constexpr std::size_t max_proxy_header = 1024;

// Parses a header at the start of `bytes`; on ok, `consumed` is its length.
ProxyParse parse_proxy_header(std::string_view bytes, ProxyHeader& header, std::size_t& consumed,
                              std::string& error);

}  // namespace tlsrelay::smtpd
