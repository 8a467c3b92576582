// The queue manager: keeps every queued message in memory with its next
// attempt time, runs deliveries, logs one line per recipient per attempt,
// and records final results in the spool. It alone decides between sent,
// deferred and bounced.
#pragma once

#include <chrono>
#include <functional>
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
#include "tlsrelay/queue/bounce.hpp"
#include "tlsrelay/queue/spool.hpp"
#include "tlsrelay/stats/recorder.hpp"
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
    // Next hops per envelope sender ("user@example.com", or "@example.com"
    // for every sender in the domain), lower case; they win over relayhost
    // but not over transports, as Postfix's sender_dependent_relayhost_maps.
    std::vector<std::pair<std::string, NextHop>> sender_relayhosts;
    std::uint16_t port = 25;
    std::chrono::seconds minimal_backoff_time{300};
    std::chrono::seconds maximal_backoff_time{4000};
    // Deferred messages are picked up for retry once per queue run.
    std::chrono::seconds queue_run_delay{300};
    // A recipient still deferred after this long in the queue bounces; the
    // bounce lifetime applies to messages from the null sender.
    std::chrono::seconds maximal_queue_lifetime{5 * 86400};
    std::chrono::seconds bounce_queue_lifetime{5 * 86400};
    std::chrono::seconds delay_warning_time{0};  // 0: no delay notifications
    // Messages in delivery at once; each uses one outbound connection at a
    // time, so this caps outbound connections.
    std::size_t max_parallel_deliveries = 100;
    // Deliveries in progress to one next hop (a domain or a relayhost).
    std::size_t destination_concurrency_limit = 20;
    // Sessions kept open after a transaction for the next message to the
    // same next hop, and the age after which one carries no more.
    std::chrono::seconds connection_cache_time_limit{2};
    std::chrono::seconds connection_reuse_time_limit{300};
    // Runs the spool's fsyncs after a delivery off the event loop; empty:
    // they run on the scheduler's executor.
    asio::any_io_executor disk_executor;
    // Removes delivered messages in batches with the new ones; null: the
    // removal runs as other spool work does.
    queue::Committer* committer = nullptr;
    // How often the control folder is checked for queue commands.
    std::chrono::milliseconds control_poll_interval{500};
    // Counts each new session and each recipient result; null: no counting.
    std::shared_ptr<stats::Recorder> recorder;
};

// The next hop for mail to `domain` from `sender`: a transport entry for
// the domain, else the sender's relayhost (the whole address first, then
// "@domain"), else the relayhost. No hop means an MX lookup of the domain.
struct NextHopChoice {
    std::optional<NextHop> hop;
    const char* source = "MX lookup";  // "transport", "sender relayhost", "relayhost" or "MX lookup"
};
NextHopChoice choose_next_hop(const SchedulerSettings& settings, const std::string& domain, const std::string& sender);

// True when the best MX host is this relay (one of its names, or a
// listener's address and port), as Postfix checks before connecting.
bool loops_back(const SchedulerSettings& settings, const Route& route);

// Gathers the DNSSEC facts DANE needs, and looks up the host's TLSA records
// when the policy calls for them (RFC 7672 section 2.2).
asio::awaitable<policy::DnsFacts> gather_dns_facts(dns::Resolver& resolver, const policy::Settings& settings,
                                                   const policy::Policy& policy, const Route& route,
                                                   const RouteHost& host);

class Scheduler {
public:
    Scheduler(asio::any_io_executor executor, queue::Spool& spool, dns::Resolver& resolver, SchedulerSettings settings);

    // Loads every message found in the spool: untried recipients are due
    // at once, deferred ones at their recorded next try. Queues the
    // notifications a crash left unsent.
    void recover();
    // Adds a message that was just committed to the spool.
    void enqueue(queue::StoredMessage message);

    void start();
    // Stops starting deliveries; running ones finish on their own.
    void stop();

    // Queue commands. Each returns false when no such message is queued.
    // A message being delivered is deleted once its attempt ends, and a
    // hold takes effect from its next attempt.
    void flush();
    bool remove(const std::string& id);
    bool hold(const std::string& id);
    bool release(const std::string& id);
    // Applies one request from the control folder ("delete ID", "flush", ...).
    void apply_request(const std::string& request);
    std::size_t active_deliveries() const { return active_; }
    std::size_t queued_messages() const { return entries_.size(); }
    // Arrival of the oldest queued message, Unix milliseconds; 0 when the queue is empty.
    std::int64_t oldest_arrival_unix_ms() const;

private:
    struct Entry {
        queue::StoredMessage message;
        std::chrono::steady_clock::time_point next_attempt;
        bool busy = false;              // an attempt is running
        bool ready = false;             // due: starts when a delivery slot is free
        bool delete_requested = false;  // queue delete arrived during an attempt
        bool hold_changed = false;      // hold or release arrived during an attempt, not yet on disk
    };

    // The per-next-hop record: deliveries in progress, and the suspension
    // after a failure of every host.
    struct Destination {
        std::size_t connections = 0;
        std::chrono::steady_clock::time_point suspended_until{};
        std::string dsn;
        std::string reason;
    };

    using Destinations = std::map<std::string, Destination>;  // by next hop

    // An open session waiting for its next transaction.
    struct CachedConnection {
        std::unique_ptr<Connection> connection;
        std::chrono::steady_clock::time_point opened;
        std::chrono::steady_clock::time_point idle_since;
    };

    // One delivery slot of a destination, given back by the destructor. It
    // shares the map because a coroutine suspended at shutdown is destroyed
    // with the io_context, after the scheduler.
    class DestinationSlot {
    public:
        DestinationSlot() = default;
        DestinationSlot(std::shared_ptr<Destinations> destinations, std::string next_hop)
            : destinations_(std::move(destinations)), next_hop_(std::move(next_hop)) {}
        DestinationSlot(DestinationSlot&& other) noexcept = default;
        DestinationSlot& operator=(DestinationSlot&&) = delete;
        ~DestinationSlot();
        explicit operator bool() const { return destinations_ != nullptr; }

    private:
        std::shared_ptr<Destinations> destinations_;
        std::string next_hop_;
    };

    asio::awaitable<void> run();
    asio::awaitable<void> watch_control();
    asio::awaitable<void> expire_connections();
    std::optional<CachedConnection> take_cached_connection(const std::string& key);
    void release_connection(const std::string& key, CachedConnection cached);
    asio::awaitable<bool> deliver_on_cached_connection(Entry& entry, const std::string& key,
                                                       const std::vector<std::size_t>& indices,
                                                       std::vector<RecipientResult>& results);
    void close_cached_connections();
    asio::awaitable<DestinationSlot> take_destination_slot(const std::string& next_hop);
    bool record_results(Entry& entry, const std::vector<RecipientResult>& results);
    asio::awaitable<std::string> on_disk(std::function<void()> work);
    bool settle(const std::string& id);
    bool queue_notice(const Entry& entry, queue::DsnAction action, const std::vector<std::size_t>& indices);
    std::chrono::seconds lifetime_of(const queue::Envelope& envelope) const;
    void report(Entry& entry, RecipientResult result, const std::string& relay, policy::Trust trust,
                std::vector<RecipientResult>& results);
    asio::awaitable<void> deliver(std::string id);
    asio::awaitable<void> deliver_domain(Entry& entry, const std::string& domain, std::vector<std::size_t> indices,
                                         std::vector<RecipientResult>& results);
    void log_result(const Entry& entry, const RecipientResult& result, const std::string& relay, policy::Trust trust) const;
    void add(queue::StoredMessage message);

    asio::any_io_executor executor_;
    queue::Spool& spool_;
    dns::Resolver& resolver_;
    SchedulerSettings settings_;
    std::map<std::string, Entry> entries_;
    std::shared_ptr<Destinations> destinations_ = std::make_shared<Destinations>();
    // Idle sessions by destination: the policy lookup key and the next hop,
    // so a session is only reused under the policy that opened it.
    std::map<std::string, std::vector<CachedConnection>> connection_cache_;
    asio::steady_timer wake_;
    std::chrono::steady_clock::time_point next_queue_run_{};
    std::size_t active_ = 0;
    bool stopped_ = false;
};

}  // namespace tlsrelay::delivery
