#include "tlsrelay/delivery/scheduler.hpp"

#include <algorithm>
#include <cstdio>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>

#include "tlsrelay/delivery/routing.hpp"
#include "tlsrelay/smtp/command.hpp"
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
        for (auto& [id, entry] : entries_) {
            if (entry.busy) {
                continue;
            }
            if (entry.next_attempt <= now && active_ < settings_.max_parallel_deliveries) {
                entry.busy = true;
                ++active_;
                asio::co_spawn(executor_, deliver(id), asio::detached);
            } else {
                next_wake = std::min(next_wake, std::max(entry.next_attempt, now + std::chrono::milliseconds(10)));
            }
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
            by_domain[smtp::domain_of(envelope.recipients[index])].push_back(index);
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
    auto route = co_await find_route(resolver_, domain, settings_.relayhost, settings_.port);
    if (route.status != Route::Status::ok) {
        auto outcome = route.status == Route::Status::permanent_failure ? Outcome::bounced : Outcome::deferred;
        for (auto index : indices) {
            RecipientResult result{index, outcome, route.dsn, route.reason};
            log_result(entry, result, "none", policy::Trust::none);
            results.push_back(result);
        }
        co_return;
    }

    // Try each address of each host until one carries the transaction.
    AttemptResult last;
    std::string last_relay = "none";
    for (const auto& host : route.hosts) {
        for (const auto& address : host.addresses) {
            Target target{host.name, address, route.port};
            auto attempt = co_await attempt_delivery(settings_.client, target, entry.message, indices, true);
            if (attempt.host_failed && attempt.retry_without_tls) {
                log::info(entry.message.envelope.id + ": TLS failed with " + format_peer(host.name, address, route.port) +
                          ", retrying in plaintext as level may allows");
                attempt = co_await attempt_delivery(settings_.client, target, entry.message, indices, false);
            }
            std::string relay = format_peer(host.name, address, route.port);
            if (!attempt.host_failed) {
                for (const auto& result : attempt.recipients) {
                    log_result(entry, result, relay, attempt.trust);
                    results.push_back(result);
                }
                co_return;
            }
            log::info(entry.message.envelope.id + ": " + attempt.reason);
            last = std::move(attempt);
            last_relay = last.connected ? relay : "none";
        }
    }

    for (auto index : indices) {
        RecipientResult result{index, Outcome::deferred, last.dsn, last.reason};
        log_result(entry, result, last_relay, last.trust);
        results.push_back(result);
    }
}

void Scheduler::log_result(const Entry& entry, const RecipientResult& result, const std::string& relay,
                           policy::Trust trust) const {
    const auto& envelope = entry.message.envelope;
    log::info(envelope.id + ": to=<" + envelope.recipients[result.index] + ">, relay=" + relay +
              ", delay=" + format_delay(envelope.arrival_unix_ms) + ", tls=" + policy::to_string(trust) +
              ", dsn=" + result.dsn + ", status=" + to_string(result.outcome) + " (" + result.detail + ")");
}

}  // namespace tlsrelay::delivery
