#include "tlsrelay/delivery/scheduler.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <string_view>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>

#include "tlsrelay/delivery/routing.hpp"
#include "tlsrelay/smtp/command.hpp"
#include "tlsrelay/util/idna.hpp"
#include "tlsrelay/util/log.hpp"

namespace tlsrelay::delivery {
namespace {

using Clock = std::chrono::steady_clock;

std::string format_delay(std::int64_t arrival_unix_ms) {
    auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
    double seconds = static_cast<double>(std::max<std::int64_t>(0, now - arrival_unix_ms)) / 1000.0;
    char text[32];
    std::snprintf(text, sizeof text, seconds < 10 ? "%.2g" : "%.0f", seconds);
    return text;
}

bool equal_ignoring_case(std::string_view a, std::string_view b) {
    if (!a.empty() && a.back() == '.') a.remove_suffix(1);
    if (!b.empty() && b.back() == '.') b.remove_suffix(1);
    return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
        return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
    });
}

}  // namespace

Scheduler::Scheduler(asio::any_io_executor executor, queue::Spool& spool, dns::Resolver& resolver,
                     SchedulerSettings settings)
    : executor_(executor), spool_(spool), resolver_(resolver), settings_(std::move(settings)), wake_(executor) {}

void Scheduler::add(queue::StoredMessage message) {
    auto id = message.envelope.id;
    Entry entry;
    entry.message = std::move(message);
    entry.next_attempt = Clock::now();
    entries_.insert_or_assign(id, std::move(entry));
    wake_.cancel();
}

void Scheduler::recover() {
    auto messages = spool_.recover();
    if (!messages.empty()) {
        log::info("recovered " + std::to_string(messages.size()) + " queued message(s) from " + spool_.directory().string());
    }
    for (auto& message : messages) {
        add(std::move(message));
    }
}

void Scheduler::enqueue(const queue::Envelope& envelope) {
    auto message = spool_.load(envelope.id);
    if (!message) {
        log::error(envelope.id + ": queue file vanished before delivery; it will be picked up at the next start if it reappears");
        return;
    }
    add(std::move(*message));
}

void Scheduler::start() {
    asio::co_spawn(executor_, run(), asio::detached);
}

void Scheduler::stop() {
    stopped_ = true;
    wake_.cancel();
}

asio::awaitable<void> Scheduler::run() {
    while (!stopped_) {
        auto now = Clock::now();
        auto next_wake = now + std::chrono::hours(1);
        // Pick the due messages first and start them after the loop: a
        // delivery that finishes without waiting (a DNS answer from the
        // cache, a bounce) erases its entry while it runs.
        std::vector<std::string> due;
        for (auto& [id, entry] : entries_) {
            if (entry.busy) {
                continue;
            }
            if (entry.next_attempt <= now && active_ + due.size() < settings_.max_parallel_deliveries) {
                entry.busy = true;
                due.push_back(id);
            } else {
                next_wake = std::min(next_wake, std::max(entry.next_attempt, now + std::chrono::milliseconds(10)));
            }
        }
        for (auto& id : due) {
            ++active_;
            asio::co_spawn(executor_, deliver(std::move(id)), asio::detached);
        }

        wake_.expires_at(next_wake);
        std::error_code ignored;
        co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    }
}

asio::awaitable<void> Scheduler::deliver(std::string id) {
    auto& entry = entries_.at(id);
    const auto& envelope = entry.message.envelope;

    // Recipients without a final result, grouped by domain: one
    // connection carries all recipients of one domain.
    std::map<std::string, std::vector<std::size_t>> by_domain;
    for (std::size_t index = 0; index < envelope.recipients.size(); ++index) {
        if (!entry.message.finished.contains(index)) {
            // SMTPUTF8 domains are routed by their A-label form; a name that
            // is not valid IDNA keeps its form and bounces below.
            auto domain = smtp::domain_of(envelope.recipients[index]);
            std::string idna_error;
            by_domain[to_a_label(domain, idna_error).value_or(domain)].push_back(index);
        }
    }

    std::vector<RecipientResult> results;
    for (auto& [domain, indices] : by_domain) {
        try {
            co_await deliver_domain(entry, domain, indices, results);
        } catch (const std::exception& error) {
            log::error(id + ": delivery to " + domain + " failed unexpectedly: " + error.what());
        }
    }

    // Record final results before anything else, so a crash from here on
    // cannot send these recipients again.
    bool changed = false;
    for (const auto& result : results) {
        if (result.outcome != Outcome::deferred) {
            changed |= entry.message.finished.insert(result.index).second;
        }
    }
    try {
        if (entry.message.finished.size() == envelope.recipients.size()) {
            spool_.remove(id);
            log::info(id + ": removed");
            --active_;
            entries_.erase(id);
            wake_.cancel();
            co_return;
        }
        if (changed) {
            spool_.record_finished(id, entry.message.finished);
        }
    } catch (const queue::SpoolError& error) {
        log::error(id + ": cannot update queue file: " + error.what());
    }

    entry.backoff = entry.backoff.count() == 0 ? settings_.minimal_backoff_time
                                               : std::min(entry.backoff * 2, settings_.maximal_backoff_time);
    entry.next_attempt = Clock::now() + entry.backoff;
    entry.busy = false;
    --active_;
    wake_.cancel();
}

asio::awaitable<void> Scheduler::deliver_domain(Entry& entry, const std::string& domain,
                                                std::vector<std::size_t> indices, std::vector<RecipientResult>& results) {
    std::string idna_error;
    if (!to_a_label(domain, idna_error)) {
        for (auto index : indices) {
            RecipientResult result{index, Outcome::bounced, "5.1.2",
                                   "invalid domain name " + domain + " in the recipient address: " + idna_error};
            log_result(entry, result, "none", policy::Trust::none);
            results.push_back(result);
        }
        co_return;
    }

    const auto& id = entry.message.envelope.id;
    auto fail_all = [&](Outcome outcome, const std::string& dsn, const std::string& reason, const std::string& relay,
                        policy::Trust trust) {
        for (auto index : indices) {
            RecipientResult result{index, outcome, dsn, reason};
            log_result(entry, result, relay, trust);
            results.push_back(result);
        }
    };

    // A transport entry for the domain wins over the relayhost.
    const auto hop = next_hop_for(domain);
    auto route = co_await find_route(resolver_, domain, hop, settings_.port);
    if (route.status != Route::Status::ok) {
        auto outcome = route.status == Route::Status::permanent_failure ? Outcome::bounced : Outcome::deferred;
        fail_all(outcome, route.dsn, route.reason, "none", policy::Trust::none);
        co_return;
    }
    if (loops_back(route)) {
        fail_all(Outcome::bounced, "5.4.6", "mail for " + domain + " loops back to myself", "none",
                 policy::Trust::none);
        co_return;
    }

    // The policy of the next hop: the relayhost as "[host]:port", else the
    // recipient domain, then its parent domains, then the global default.
    std::string next_hop = hop ? hop->host : domain;
    std::string policy_key = hop ? policy::next_hop_key(hop->host, hop->port, hop->port_given, hop->mx_lookup) : domain;
    const policy::Entry* table_entry = settings_.policy_table.lookup(policy_key);
    const policy::Policy& policy = table_entry ? table_entry->policy : settings_.default_policy;

    // Try each address of each host until one carries the transaction.
    AttemptResult last;
    last.dsn = "4.4.1";
    last.reason = "no host of " + domain + " could be used";
    std::string last_relay = "none";
    for (const auto& host : route.hosts) {
        auto dns = co_await dns_facts(policy, route, host);
        auto plan = policy::plan_host(policy, policy::Destination{next_hop, host.name}, dns, settings_.policy_settings);
        if (!plan.note.empty()) {
            log::info(id + ": " + host.name + ": " + plan.note);
        }
        if (plan.action == policy::Action::next_host) {
            log::info(id + ": skipping " + host.name + ": " + plan.reason);
            last = AttemptResult{};
            last.dsn = "4.7.5";
            last.reason = plan.reason;
            last_relay = "none";
            continue;
        }

        for (const auto& address : host.addresses) {
            Target target{host.name, address, route.port};
            auto attempt = co_await attempt_delivery(settings_.client, target, plan, entry.message, indices, true);
            if (attempt.host_failed && attempt.retry_without_tls) {
                log::info(id + ": TLS failed with " + format_peer(host.name, address, route.port) +
                          ", retrying in plaintext as level may allows");
                attempt = co_await attempt_delivery(settings_.client, target, plan, entry.message, indices, false);
            }
            std::string relay = format_peer(host.name, address, route.port);
            if (!attempt.host_failed) {
                for (const auto& result : attempt.recipients) {
                    log_result(entry, result, relay, attempt.trust);
                    results.push_back(result);
                }
                co_return;
            }
            log::info(id + ": " + attempt.reason);
            last = std::move(attempt);
            last_relay = last.connected ? relay : "none";
        }
    }

    fail_all(Outcome::deferred, last.dsn, last.reason, last_relay, last.trust);
}

// Gathers the DNSSEC facts DANE needs, and looks up the host's TLSA records
// when the policy calls for them (RFC 7672 section 2.2).
asio::awaitable<policy::DnsFacts> Scheduler::dns_facts(const policy::Policy& policy, const Route& route,
                                                       const RouteHost& host) {
    policy::DnsFacts facts;
    facts.mx_secure = route.mx_secure;
    facts.host_secure = host.secure;
    if (!policy::needs_tlsa(policy, facts, settings_.policy_settings)) {
        co_return facts;
    }

    // RFC 7672 section 2.2.2: for a host name that is a CNAME, the TLSA
    // records of the expanded name come first, then those of the original.
    std::vector<std::string> bases;
    if (!host.canonical_name.empty() && host.canonical_name != host.name) {
        bases.push_back(host.canonical_name);
    }
    bases.push_back(host.name);

    for (const auto& base : bases) {
        facts.tlsa_name = dns::tlsa_owner_name(base, route.port);
        facts.tlsa_base_name = base;
        auto answer = co_await resolver_.query_tlsa(facts.tlsa_name);
        switch (answer.status) {
        case dns::Status::ok:
            facts.tlsa = answer.secure ? policy::TlsaLookup::found : policy::TlsaLookup::insecure;
            for (const auto& record : answer.records) {
                facts.tlsa_records.push_back(tls::TlsaRecord{record.usage, record.selector, record.matching_type,
                                                             record.data});
            }
            co_return facts;
        case dns::Status::nodata:
        case dns::Status::nxdomain:
            facts.tlsa = answer.secure ? policy::TlsaLookup::none : policy::TlsaLookup::insecure;
            break;
        case dns::Status::temporary_failure:
            facts.tlsa = policy::TlsaLookup::failed;
            facts.tlsa_failure = answer.reason;
            co_return facts;
        }
        if (facts.tlsa == policy::TlsaLookup::insecure) {
            co_return facts;
        }
    }
    co_return facts;
}

// True when the best MX host is this relay (one of its names or
// addresses), as Postfix checks before connecting.
bool Scheduler::loops_back(const Route& route) const {
    if (route.hosts.empty()) {
        return false;
    }
    const auto& best = route.hosts.front();
    for (const auto& name : settings_.own_names) {
        if (!name.empty() && equal_ignoring_case(name, best.name)) {
            return true;
        }
    }
    // The relay's own listeners: the same port and address, or a wildcard
    // listener on that port for a loopback address.
    for (const auto& address : best.addresses) {
        for (const auto& own : settings_.own_endpoints) {
            bool same_address = own.address() == address || (own.address().is_unspecified() && address.is_loopback());
            if (own.port() == route.port && same_address) {
                return true;
            }
        }
    }
    return false;
}

std::optional<NextHop> Scheduler::next_hop_for(const std::string& domain) const {
    for (const auto& [pattern, hop] : settings_.transports) {
        bool subdomain = pattern.starts_with('.') && domain.size() > pattern.size() && domain.ends_with(pattern);
        if (domain == pattern || subdomain) {
            return hop;
        }
    }
    return settings_.relayhost;
}

void Scheduler::log_result(const Entry& entry, const RecipientResult& result, const std::string& relay,
                           policy::Trust trust) const {
    const auto& envelope = entry.message.envelope;
    log::info(envelope.id + ": to=<" + envelope.recipients[result.index] + ">, relay=" + relay +
              ", delay=" + format_delay(envelope.arrival_unix_ms) + ", tls=" + policy::to_string(trust) +
              ", dsn=" + result.dsn + ", status=" + to_string(result.outcome) + " (" + result.detail + ")");
}

}  // namespace tlsrelay::delivery
