// Finds where mail for a domain goes: the relayhost, or the domain's MX
// hosts in preference order (its own address records when it has no MX),
// each with its addresses and whether DNSSEC validated them, which DANE
// (RFC 7672) needs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/ip/address.hpp>

#include "tlsrelay/dns/resolver.hpp"
#include "tlsrelay/util/address.hpp"

namespace tlsrelay::delivery {

struct RouteHost {
    std::string name;  // the MX exchange, relayhost or domain; lower case, no trailing dot
    std::vector<asio::ip::address> addresses;  // IPv4 first, then IPv6
    // True when the A and AAAA answers were secure (AD bit from a trusted
    // resolver, and every CNAME link secure). An A or AAAA lookup that failed
    // temporarily gave no addresses and does not count. Always false for an
    // address literal.
    bool secure = false;
    // `name` after following CNAMEs in its address lookup; equal to `name`
    // when there was no CNAME. RFC 7672 section 2.2.2 uses it as the TLSA
    // base name.
    std::string canonical_name;
};

struct Route {
    enum class Status { ok, temporary_failure, permanent_failure } status = Status::ok;
    std::vector<RouteHost> hosts;  // in the order to try
    std::uint16_t port = 25;
    std::string dsn;     // for failures
    std::string reason;  // for failures, in the words the log shows
    // True when the MX answer was secure, including a secure NODATA that made
    // the domain its own host. Also true when no MX lookup was made (a
    // relayhost in brackets or an address literal), because the host name
    // then comes from the configuration or the address, not from DNS.
    bool mx_secure = false;
};

// `relayhost`, when set, replaces the MX lookup of `domain`. A temporary DNS
// failure of the MX lookup, or of every host, gives temporary_failure with
// 4.4.3; only proven non-existence gives permanent_failure. Hosts whose
// address lookups failed temporarily are left out when other hosts have
// addresses.
asio::awaitable<Route> find_route(dns::Resolver& resolver, const std::string& domain,
                                  const std::optional<NextHop>& relayhost, std::uint16_t default_port);

}  // namespace tlsrelay::delivery
