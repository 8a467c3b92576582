#include "tlsrelay/delivery/routing.hpp"

#include <string_view>

namespace tlsrelay::delivery {
namespace {

Route failure(Route::Status status, std::string dsn, std::string reason) {
    Route route;
    route.status = status;
    route.dsn = std::move(dsn);
    route.reason = std::move(reason);
    return route;
}

// A host with its address lookups done. `temporary_failure` contains the reason
// when a lookup failed temporarily, so the caller can defer instead of
// bouncing.
struct ResolvedHost {
    RouteHost host;
    std::string temporary_failure;
};

asio::awaitable<ResolvedHost> resolve_host(dns::Resolver& resolver, const std::string& name) {
    ResolvedHost resolved{RouteHost{name, {}, false, name}, {}};
    auto ipv4 = co_await resolver.query_a(name);
    auto ipv6 = co_await resolver.query_aaaa(name);

    bool secure = true;
    bool canonical_name_set = false;
    for (const auto* answer : {&ipv4, &ipv6}) {
        if (answer->status == dns::Status::temporary_failure) {
            resolved.temporary_failure = "Host or domain name lookup failed for " + name + ": " + answer->reason;
            continue;
        }
        secure = secure && answer->secure;
        if (!canonical_name_set) {
            resolved.host.canonical_name = answer->canonical_name;
            canonical_name_set = true;
        }
        resolved.host.addresses.insert(resolved.host.addresses.end(), answer->records.begin(),
                                       answer->records.end());
    }
    resolved.host.secure = secure && !resolved.host.addresses.empty();
    co_return resolved;
}

// A literal address such as "192.0.2.1" or "[192.0.2.1]" needs no lookup.
std::optional<asio::ip::address> literal_address(std::string_view host) {
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    }
    std::error_code error;
    auto address = asio::ip::make_address(std::string(host), error);
    if (error) {
        return std::nullopt;
    }
    return address;
}

// The MX step: the host names to resolve, or a failure that ends routing.
struct MxHosts {
    std::vector<std::string> names;
    bool secure = false;
    std::optional<Route> failure;
};

asio::awaitable<MxHosts> find_mx_hosts(dns::Resolver& resolver, const std::string& domain) {
    MxHosts hosts;
    auto mx = co_await resolver.query_mx(domain);
    hosts.secure = mx.secure;

    switch (mx.status) {
    case dns::Status::ok:
        // RFC 7505: a single "0 ." MX record means the domain accepts no mail.
        if (mx.records.size() == 1 && mx.records.front().exchange.empty()) {
            hosts.failure = failure(Route::Status::permanent_failure, "5.1.10",
                                    "Domain " + domain + " does not accept mail (null MX)");
            co_return hosts;
        }
        for (const auto& record : mx.records) {
            // RFC 7505 section 3 forbids "." beside other MX records, and an
            // MX target must be a host name, never an address (RFC 5321
            // section 5.1), so both are skipped.
            if (!record.exchange.empty() && !literal_address(record.exchange)) {
                hosts.names.push_back(record.exchange);
            }
        }
        if (hosts.names.empty()) {
            hosts.failure = failure(Route::Status::permanent_failure, "5.4.4",
                                    "No usable MX host for " + domain +
                                        ": every MX target is an IP address or \".\"");
        }
        co_return hosts;
    case dns::Status::nodata:
        // RFC 5321 section 5.1: no MX records, so the domain itself is the host.
        hosts.names.push_back(domain);
        co_return hosts;
    case dns::Status::nxdomain:
        hosts.failure = failure(Route::Status::permanent_failure, "5.1.2",
                                "Host or domain name not found. Name service error for name=" + domain +
                                    " type=MX: Host not found");
        co_return hosts;
    case dns::Status::temporary_failure:
        break;
    }
    hosts.failure = failure(Route::Status::temporary_failure, "4.4.3",
                            "Host or domain name lookup failed for " + domain + " type=MX: " + mx.reason);
    co_return hosts;
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
        route.mx_secure = true;
        route.hosts.push_back(RouteHost{target, {*address}, false, target});
        co_return route;
    }

    std::vector<std::string> names;
    bool mx_secure = true;
    if (mx_lookup) {
        MxHosts mx = co_await find_mx_hosts(resolver, target);
        if (mx.failure) {
            co_return std::move(*mx.failure);
        }
        names = std::move(mx.names);
        mx_secure = mx.secure;
    } else {
        names.push_back(target);
    }

    Route route;
    route.port = port;
    route.mx_secure = mx_secure;
    std::string temporary_failure;
    for (const auto& name : names) {
        ResolvedHost resolved = co_await resolve_host(resolver, name);
        if (!resolved.temporary_failure.empty()) {
            temporary_failure = std::move(resolved.temporary_failure);
        }
        if (!resolved.host.addresses.empty()) {
            route.hosts.push_back(std::move(resolved.host));
        }
    }
    if (route.hosts.empty()) {
        if (!temporary_failure.empty()) {
            co_return failure(Route::Status::temporary_failure, "4.4.3", temporary_failure);
        }
        co_return failure(Route::Status::permanent_failure, "5.4.4",
                          "Host or domain name not found. Name service error for name=" + names.front() +
                              " type=A: Host not found");
    }
    co_return route;
}

}  // namespace tlsrelay::delivery
