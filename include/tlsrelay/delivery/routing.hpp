// Finds where mail for a domain goes: the relayhost, or the domain's MX
// hosts in preference order (its own address records when it has no MX),
// each with its addresses.
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
    std::string name;
    std::vector<asio::ip::address> addresses;
};

struct Route {
    enum class Status { ok, temporary_failure, permanent_failure } status = Status::ok;
    std::vector<RouteHost> hosts;  // in the order to try
    std::uint16_t port = 25;
    std::string dsn;     // for failures
    std::string reason;  // for failures, in the words the log shows
};

// `relayhost`, when set, replaces the MX lookup of `domain`.
asio::awaitable<Route> find_route(dns::Resolver& resolver, const std::string& domain,
                                  const std::optional<NextHop>& relayhost, std::uint16_t default_port);

}  // namespace tlsrelay::delivery
