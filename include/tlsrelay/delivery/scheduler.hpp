// The queue manager: keeps every queued message in memory with its next
// attempt time, runs deliveries, logs one line per recipient per attempt,
// and records final results in the spool. It alone decides between sent,
// deferred and bounced.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include "tlsrelay/delivery/client.hpp"
#include "tlsrelay/delivery/routing.hpp"
#include "tlsrelay/dns/resolver.hpp"
#include "tlsrelay/policy/table.hpp"
#include "tlsrelay/queue/spool.hpp"
#include "tlsrelay/util/address.hpp"

namespace tlsrelay::delivery {

struct SchedulerSettings {
    ClientOptions client;
    // The global default policy ([smtp] tls_security_level) and the
    // per-destination entries that override it.
    policy::Policy default_policy;
    policy::Table policy_table;
    policy::Settings policy_settings;
    // This relay's own host names and addresses: a best MX among them means
    // the mail would loop back here.
    std::vector<std::string> own_names;
    std::vector<asio::ip::tcp::endpoint> own_endpoints;  // the relay's listeners
    std::optional<NextHop> relayhost;
    // Next hops per destination domain ("example.com", or ".example.com"
    // for its subdomains); they win over relayhost, as Postfix's
    // transport_maps win over relayhost.
    std::vector<std::pair<std::string, NextHop>> transports;
    std::uint16_t port = 25;
    std::chrono::seconds minimal_backoff_time{300};
    std::chrono::seconds maximal_backoff_time{4000};
    std::size_t max_parallel_deliveries = 20;
};

class Scheduler {
public:
    Scheduler(asio::any_io_executor executor, queue::Spool& spool, dns::Resolver& resolver, SchedulerSettings settings);

    // Loads every message found in the spool, due at once.
    void recover();
    // Adds a message that was just committed to the spool.
    void enqueue(const queue::Envelope& envelope);

    void start();
    // Stops starting deliveries; running ones finish on their own.
    void stop();
    std::size_t active_deliveries() const { return active_; }
    std::size_t queued_messages() const { return entries_.size(); }

private:
    struct Entry {
        queue::StoredMessage message;
        std::chrono::steady_clock::time_point next_attempt;
        std::chrono::seconds backoff{0};
        bool busy = false;
    };

    asio::awaitable<void> run();
    asio::awaitable<void> deliver(std::string id);
    asio::awaitable<void> deliver_domain(Entry& entry, const std::string& domain, std::vector<std::size_t> indices,
                                         std::vector<RecipientResult>& results);
    asio::awaitable<policy::DnsFacts> dns_facts(const policy::Policy& policy, const Route& route, const RouteHost& host);
    bool loops_back(const Route& route) const;
    void log_result(const Entry& entry, const RecipientResult& result, const std::string& relay, policy::Trust trust) const;
    void add(queue::StoredMessage message);
    std::optional<NextHop> next_hop_for(const std::string& domain) const;

    asio::any_io_executor executor_;
    queue::Spool& spool_;
    dns::Resolver& resolver_;
    SchedulerSettings settings_;
    std::map<std::string, Entry> entries_;
    asio::steady_timer wake_;
    std::size_t active_ = 0;
    bool stopped_ = false;
};

}  // namespace tlsrelay::delivery
