#include "tlsrelay/delivery/routing.hpp"

namespace tlsrelay::delivery {
namespace {

Route failure(Route::Status status, std::string dsn, std::string reason) {
    Route route;
    route.status = status;
    route.dsn = std::move(dsn);
    route.reason = std::move(reason);
    return route;
}

// Looks up A and AAAA of one host. Sets `temporary` when a lookup failed
// temporarily, so the caller can defer instead of bouncing.
asio::awaitable<RouteHost> resolve_host(dns::Resolver& resolver, const std::string& name, bool& temporary,
                                        std::string& reason) {
    RouteHost host{name, {}};
    auto ipv4 = co_await resolver.query_a(name);
    auto ipv6 = co_await resolver.query_aaaa(name);
    for (const auto* answer : {&ipv4, &ipv6}) {
        if (answer->status == dns::Status::ok) {
            host.addresses.insert(host.addresses.end(), answer->records.begin(), answer->records.end());
        } else if (answer->status == dns::Status::temporary_failure) {
            temporary = true;
            reason = "Host or domain name lookup failed for " + name + ": " + answer->reason;
        }
    }
    co_return host;
}

// A literal address such as "[192.0.2.1]" or "192.0.2.1" needs no lookup.
std::optional<asio::ip::address> literal_address(const std::string& host) {
    std::error_code error;
    auto address = asio::ip::make_address(host, error);
    if (error) {
        return std::nullopt;
    }
    return address;
}

}  // namespace

asio::awaitable<Route> find_route(dns::Resolver& resolver, const std::string& domain,
                                  const std::optional<NextHop>& relayhost, std::uint16_t default_port) {
    std::string target = relayhost ? relayhost->host : domain;
    bool mx_lookup = relayhost ? relayhost->mx_lookup : true;
    std::uint16_t port = relayhost && relayhost->port_given ? relayhost->port : default_port;

    if (auto address = literal_address(target)) {
        Route route;
        route.port = port;
        route.hosts.push_back(RouteHost{target, {*address}});
        co_return route;
    }

    std::vector<std::string> names;
    if (mx_lookup) {
        auto mx = co_await resolver.query_mx(target);
        switch (mx.status) {
        case dns::Status::ok:
            // RFC 7505: a single "0 ." MX record means the domain accepts no mail.
            if (mx.records.size() == 1 && mx.records.front().exchange.empty()) {
                co_return failure(Route::Status::permanent_failure, "5.1.10",
                                  "Domain " + target + " does not accept mail (null MX)");
            }
            for (const auto& record : mx.records) {
                if (!record.exchange.empty()) {
                    names.push_back(record.exchange);
                }
            }
            break;
        case dns::Status::nodata:
            // RFC 5321 section 5.1: no MX records, so the domain itself is the host.
            names.push_back(target);
            break;
        case dns::Status::nxdomain:
            co_return failure(Route::Status::permanent_failure, "5.1.2",
                              "Host or domain name not found. Name service error for name=" + target +
                                  " type=MX: Host not found");
        case dns::Status::temporary_failure:
            co_return failure(Route::Status::temporary_failure, "4.4.3",
                              "Host or domain name lookup failed for " + target + " type=MX: " + mx.reason);
        }
    } else {
        names.push_back(target);
    }

    Route route;
    route.port = port;
    bool temporary = false;
    std::string reason;
    for (const auto& name : names) {
        auto host = co_await resolve_host(resolver, name, temporary, reason);
        if (!host.addresses.empty()) {
            route.hosts.push_back(std::move(host));
        }
    }
    if (route.hosts.empty()) {
        if (temporary) {
            co_return failure(Route::Status::temporary_failure, "4.4.3", reason);
        }
        co_return failure(Route::Status::permanent_failure, "5.4.4",
                          "Host or domain name not found. Name service error for name=" + names.front() +
                              " type=A: Host not found");
    }
    co_return route;
}

}  // namespace tlsrelay::delivery
