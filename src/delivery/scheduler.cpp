#include "tlsrelay/delivery/scheduler.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <string_view>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>

#include "tlsrelay/delivery/routing.hpp"
#include "tlsrelay/queue/committer.hpp"
#include "tlsrelay/queue/control.hpp"
#include "tlsrelay/queue/schedule.hpp"
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

std::int64_t unix_now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// The steady-clock time of a wall-clock instant stored in the spool.
Clock::time_point steady_from_unix_ms(std::int64_t unix_ms) {
    return Clock::now() + std::chrono::milliseconds(unix_ms - unix_now_ms());
}

// RFC 3461 section 4.1: without NOTIFY, failures are reported and delays
// may be; NOTIFY=NEVER or a list without the keyword turns a report off.
bool notify_allows(const queue::Envelope& envelope, std::size_t index, std::string_view keyword) {
    if (index >= envelope.recipient_dsn.size() || envelope.recipient_dsn[index].notify.empty()) {
        return true;
    }
    std::string notify = envelope.recipient_dsn[index].notify;
    std::transform(notify.begin(), notify.end(), notify.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    return notify.find(keyword) != std::string::npos;
}

std::string format_seconds(std::chrono::seconds duration) {
    auto seconds = duration.count();
    if (seconds % 86400 == 0 && seconds > 0) return std::to_string(seconds / 86400) + "d";
    if (seconds % 3600 == 0 && seconds > 0) return std::to_string(seconds / 3600) + "h";
    return std::to_string(seconds) + "s";
}

bool equal_ignoring_case(std::string_view a, std::string_view b) {
    if (!a.empty() && a.back() == '.') a.remove_suffix(1);
    if (!b.empty() && b.back() == '.') b.remove_suffix(1);
    return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
        return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
    });
}

asio::awaitable<std::string> run_spool_work(std::function<void()> work) {
    std::string error;
    try {
        work();
    } catch (const std::exception& failure) {
        error = failure.what();
    }
    co_return error;
}

// Ends an idle or unusable session with QUIT, off the delivery's path.
asio::awaitable<void> close_connection(std::unique_ptr<Connection> connection) {
    co_await connection->quit();
}

}  // namespace

Scheduler::Scheduler(asio::any_io_executor executor, queue::Spool& spool, dns::Resolver& resolver,
                     SchedulerSettings settings)
    : executor_(executor), spool_(spool), resolver_(resolver), settings_(std::move(settings)), wake_(executor) {}

void Scheduler::add(queue::StoredMessage message) {
    auto id = message.envelope.id;
    Entry entry;
    entry.message = std::move(message);
    entry.message.state.recipients.resize(entry.message.envelope.recipients.size());

    // A message with deferred recipients keeps its retry time across a
    // restart; one with untried recipients is due at once.
    entry.next_attempt = Clock::now();
    entry.ready = true;
    std::optional<std::int64_t> next_try;
    for (const auto& recipient : entry.message.state.recipients) {
        if (recipient.status == queue::RecipientStatus::pending) {
            next_try.reset();
            break;
        }
        if (recipient.status == queue::RecipientStatus::deferred) {
            next_try = std::min(next_try.value_or(recipient.next_try_unix_ms), recipient.next_try_unix_ms);
        }
    }
    if (next_try && *next_try > unix_now_ms()) {
        entry.next_attempt = steady_from_unix_ms(*next_try);
        entry.ready = false;
    }
    entries_.insert_or_assign(id, std::move(entry));
    wake_.cancel();
}

void Scheduler::recover() {
    auto messages = spool_.recover();
    if (!messages.empty()) {
        log::info("recovered " + std::to_string(messages.size()) + " queued message(s) from " + spool_.directory().string());
    }
    std::vector<std::string> ids;
    for (auto& message : messages) {
        ids.push_back(message.envelope.id);
        add(std::move(message));
    }

    // A crash may have come between recording a bounce and queueing its
    // notification; settle() sends what is still owed.
    for (const auto& id : ids) {
        settle(id);
    }
}

void Scheduler::enqueue(queue::StoredMessage message) {
    add(std::move(message));
}

void Scheduler::start() {
    asio::co_spawn(executor_, run(), asio::detached);
    asio::co_spawn(executor_, watch_control(), asio::detached);
    if (settings_.connection_cache_time_limit.count() > 0) {
        asio::co_spawn(executor_, expire_connections(), asio::detached);
    }
}

void Scheduler::stop() {
    stopped_ = true;
    wake_.cancel();
    close_cached_connections();
}

void Scheduler::close_cached_connections() {
    for (auto& [key, connections] : connection_cache_) {
        for (auto& cached : connections) {
            asio::co_spawn(executor_, close_connection(std::move(cached.connection)), asio::detached);
        }
    }
    connection_cache_.clear();
}

// Closes the sessions that waited longer than connection_cache_time_limit.
asio::awaitable<void> Scheduler::expire_connections() {
    asio::steady_timer timer(executor_);
    auto interval = std::min<std::chrono::milliseconds>(settings_.connection_cache_time_limit, std::chrono::seconds(1));
    while (!stopped_) {
        timer.expires_after(interval);
        std::error_code ignored;
        co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
        auto expired_before = Clock::now() - settings_.connection_cache_time_limit;
        for (auto it = connection_cache_.begin(); it != connection_cache_.end();) {
            auto& connections = it->second;
            auto first_kept = std::stable_partition(connections.begin(), connections.end(), [&](const CachedConnection& cached) {
                return cached.idle_since <= expired_before;
            });
            for (auto expired = connections.begin(); expired != first_kept; ++expired) {
                asio::co_spawn(executor_, close_connection(std::move(expired->connection)), asio::detached);
            }
            connections.erase(connections.begin(), first_kept);
            it = connections.empty() ? connection_cache_.erase(it) : std::next(it);
        }
    }
}

// Returns the most recently used open session for `key`, closing those
// found closed by their server or too old to reuse.
std::optional<Scheduler::CachedConnection> Scheduler::take_cached_connection(const std::string& key) {
    auto found = connection_cache_.find(key);
    while (found != connection_cache_.end() && !found->second.empty()) {
        auto cached = std::move(found->second.back());
        found->second.pop_back();
        if (found->second.empty()) {
            connection_cache_.erase(found);
            found = connection_cache_.end();
        }
        bool too_old = Clock::now() - cached.opened >= settings_.connection_reuse_time_limit;
        if (!too_old && cached.connection->idle_and_open()) {
            return cached;
        }
        asio::co_spawn(executor_, close_connection(std::move(cached.connection)), asio::detached);
    }
    return std::nullopt;
}

// Keeps a session for the next message to the same destination, or closes it.
void Scheduler::release_connection(const std::string& key, CachedConnection cached) {
    auto now = Clock::now();
    bool keep = !stopped_ && settings_.connection_cache_time_limit.count() > 0 && cached.connection->reusable() &&
                now - cached.opened < settings_.connection_reuse_time_limit;
    auto& connections = connection_cache_[key];
    if (keep && connections.size() < settings_.destination_concurrency_limit) {
        cached.idle_since = now;
        connections.push_back(std::move(cached));
        return;
    }
    if (connections.empty()) {
        connection_cache_.erase(key);
    }
    asio::co_spawn(executor_, close_connection(std::move(cached.connection)), asio::detached);
}

// Delivers on an open session to the destination when one is cached.
// Returns false when there was none, or each turned out closed before the
// server accepted MAIL, so nothing was sent and a new connection is needed.
asio::awaitable<bool> Scheduler::deliver_on_cached_connection(Entry& entry, const std::string& key,
                                                              const std::vector<std::size_t>& indices,
                                                              std::vector<RecipientResult>& results) {
    for (;;) {
        // GCC 12 miscompiles a coroutine that declares a variable in a
        // loop condition and suspends in the loop body.
        auto cached = take_cached_connection(key);
        if (!cached) {
            break;
        }
        const auto& target = cached->connection->target();
        auto relay = format_peer(target.host, target.address, target.port);
        auto attempt = co_await cached->connection->send(entry.message, indices);
        if (cached->connection->stale()) {
            log::debug(entry.message.envelope.id + ": cached session with " + relay + " was closed by the server; " +
                       "opening a new one");
            continue;
        }
        for (const auto& result : attempt.recipients) {
            report(entry, result, relay, attempt.trust, results);
        }
        release_connection(key, std::move(*cached));
        co_return true;
    }
    co_return false;
}

asio::awaitable<void> Scheduler::run() {
    while (!stopped_) {
        // Deferred messages join the due ones only at a queue run, so a
        // failing destination is not retried more often than
        // queue_run_delay, whatever the backoff computes.
        auto now = Clock::now();
        if (now >= next_queue_run_) {
            next_queue_run_ = now + settings_.queue_run_delay;
            for (auto& [id, entry] : entries_) {
                if (!entry.busy && !entry.message.state.held && entry.next_attempt <= now) {
                    entry.ready = true;
                }
            }
        }

        // Pick the due messages first and start them after the loop: a
        // delivery that finishes without waiting (a DNS answer from the
        // cache, a bounce) erases its entry while it runs.
        std::vector<std::string> due;
        for (auto& [id, entry] : entries_) {
            if (entry.busy || !entry.ready || entry.message.state.held) {
                continue;
            }
            if (active_ + due.size() >= settings_.max_parallel_deliveries) {
                break;
            }
            entry.busy = true;
            entry.ready = false;
            due.push_back(id);
        }
        for (auto& id : due) {
            ++active_;
            asio::co_spawn(executor_, deliver(std::move(id)), asio::detached);
        }

        // A finished delivery, a new message or a queue command cancels
        // this wait early.
        wake_.expires_at(std::min(next_queue_run_, Clock::now() + std::chrono::hours(1)));
        std::error_code ignored;
        co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    }
}

asio::awaitable<void> Scheduler::watch_control() {
    asio::steady_timer timer(executor_);
    while (!stopped_) {
        std::vector<queue::ControlRequest> requests;
        try {
            requests = queue::take_requests(spool_.directory());
        } catch (const std::exception& error) {
            log::error(std::string("cannot read queue commands: ") + error.what());
        }
        for (const auto& request : requests) {
            log::info("queue command: " + request.text);
            apply_request(request.text);
            queue::finish_request(request);
        }
        timer.expires_after(settings_.control_poll_interval);
        std::error_code ignored;
        co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    }
}

void Scheduler::apply_request(const std::string& request) {
    auto space = request.find(' ');
    std::string verb = request.substr(0, space);
    std::string argument = space == std::string::npos ? "" : request.substr(space + 1);
    if (verb == "flush") {
        flush();
        return;
    }
    std::vector<std::string> ids;
    if (argument == "ALL") {
        for (const auto& [id, entry] : entries_) {
            ids.push_back(id);
        }
    } else {
        ids.push_back(argument);
    }
    if (verb != "delete" && verb != "hold" && verb != "release") {
        log::error("unknown queue command \"" + request + "\" in the control folder; ignored");
        return;
    }
    for (const auto& id : ids) {
        bool found = false;
        if (verb == "delete") {
            found = remove(id);
        } else if (verb == "hold") {
            found = hold(id);
        } else {
            found = release(id);
        }
        if (!found) {
            log::warning("queue " + verb + ": no queued message " + id);
        }
    }
}

void Scheduler::flush() {
    for (auto& [name, destination] : *destinations_) {
        destination.suspended_until = {};
    }
    for (auto& [id, entry] : entries_) {
        if (!entry.busy && !entry.message.state.held) {
            entry.ready = true;
        }
    }
    wake_.cancel();
}

bool Scheduler::remove(const std::string& id) {
    auto found = entries_.find(id);
    if (found == entries_.end()) {
        return false;
    }
    if (found->second.busy) {
        found->second.delete_requested = true;
        log::info(id + ": delete requested; the message is removed when its delivery attempt ends");
        return true;
    }
    try {
        spool_.remove(id);
    } catch (const queue::SpoolError& error) {
        log::error(id + ": cannot delete: " + error.what());
        return true;
    }
    entries_.erase(found);
    log::info(id + ": removed by queue delete");
    return true;
}

bool Scheduler::hold(const std::string& id) {
    auto found = entries_.find(id);
    if (found == entries_.end()) {
        return false;
    }
    // During an attempt the hold is only noted: the attempt writes the
    // state file when it ends, and writes it again when the hold arrived
    // while that write was running on the disk executor.
    auto& entry = found->second;
    entry.message.state.held = true;
    entry.ready = false;
    if (entry.busy) {
        entry.hold_changed = true;
        log::info(id + ": on hold from the end of its delivery attempt");
        return true;
    }
    try {
        entry.message.has_state_file = true;
        spool_.record_state(id, entry.message.state);
        log::info(id + ": on hold");
    } catch (const queue::SpoolError& error) {
        log::error(id + ": cannot record the hold: " + error.what());
    }
    return true;
}

bool Scheduler::release(const std::string& id) {
    auto found = entries_.find(id);
    if (found == entries_.end()) {
        return false;
    }
    auto& entry = found->second;
    entry.message.state.held = false;
    entry.ready = !entry.busy;
    if (entry.busy) {
        entry.hold_changed = true;
        log::info(id + ": released from hold");
        return true;
    }
    try {
        entry.message.has_state_file = true;
        spool_.record_state(id, entry.message.state);
        log::info(id + ": released from hold");
    } catch (const queue::SpoolError& error) {
        log::error(id + ": cannot record the release: " + error.what());
    }
    wake_.cancel();
    return true;
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

    // Record the results before anything else, in one write, so a crash
    // from here on cannot send these recipients again. With every recipient
    // sent, removing the file is that one record.
    bool all_sent = record_results(entry, results);
    // The work is a named variable: GCC 12 destroys a temporary lambda
    // twice when it is converted to std::function inside a co_await.
    std::function<void()> spool_work;
    if (all_sent) {
        spool_work = [this, id, has_state_file = entry.message.has_state_file] {
            spool_.remove(id, has_state_file);
        };
    } else {
        spool_work = [this, id, state = entry.message.state] { spool_.record_state(id, state); };
        entry.message.has_state_file = true;
        // A message that stays queued gives its memory copy back; later
        // attempts read the file.
        entry.message.content.reset();
    }
    std::string spool_error;
    if (all_sent && settings_.committer) {
        spool_error = co_await queue::async_remove(*settings_.committer, id, entry.message.has_state_file);
    } else {
        spool_error = co_await on_disk(std::move(spool_work));
    }
    if (!spool_error.empty()) {
        log::error(id + ": cannot update queue file: " + spool_error);
    } else if (all_sent) {
        log::info(id + ": removed");
        --active_;
        entries_.erase(id);
        wake_.cancel();
        co_return;
    }

    entry.busy = false;
    --active_;
    wake_.cancel();
    if (entry.hold_changed) {
        entry.hold_changed = false;
        try {
            entry.message.has_state_file = true;
            spool_.record_state(id, entry.message.state);
        } catch (const queue::SpoolError& error) {
            log::error(id + ": cannot record the hold or release: " + error.what());
        }
    }
    if (entry.delete_requested) {
        remove(id);
        co_return;
    }
    settle(id);
}

// Runs a spool operation on the disk executor and returns its error text,
// empty on success.
asio::awaitable<std::string> Scheduler::on_disk(std::function<void()> work) {
    if (!settings_.disk_executor) {
        co_return co_await run_spool_work(std::move(work));
    }
    co_return co_await asio::co_spawn(settings_.disk_executor, run_spool_work(std::move(work)), asio::use_awaitable);
}

// Applies an attempt's results to the state in memory; returns true when
// every recipient is now sent.
bool Scheduler::record_results(Entry& entry, const std::vector<RecipientResult>& results) {
    auto now = unix_now_ms();
    std::int64_t next_try = 0;
    for (const auto& result : results) {
        auto& state = entry.message.state.recipients[result.index];
        state.attempts += 1;
        state.dsn = result.dsn;
        state.reason = result.detail;
        if (result.outcome == Outcome::deferred) {
            auto delay = queue::retry_delay(state.attempts, settings_.minimal_backoff_time, settings_.maximal_backoff_time);
            state.status = queue::RecipientStatus::deferred;
            state.next_try_unix_ms = now + std::chrono::duration_cast<std::chrono::milliseconds>(delay).count();
            next_try = next_try == 0 ? state.next_try_unix_ms : std::min(next_try, state.next_try_unix_ms);
            continue;
        }
        state.status = result.outcome == Outcome::sent ? queue::RecipientStatus::sent : queue::RecipientStatus::bounced;
        state.next_try_unix_ms = 0;
        entry.message.finished.insert(result.index);
    }
    if (next_try != 0) {
        entry.next_attempt = steady_from_unix_ms(next_try);
    }
    return std::all_of(entry.message.state.recipients.begin(), entry.message.state.recipients.end(),
                       [](const queue::RecipientState& state) { return state.status == queue::RecipientStatus::sent; });
}

// Queues the notifications a message owes its sender, then removes the
// message when every recipient is final, or records the notices sent.
// Returns true when the message left the queue.
bool Scheduler::settle(const std::string& id) {
    auto found = entries_.find(id);
    if (found == entries_.end() || found->second.busy) {
        return false;
    }
    auto& entry = found->second;
    auto& states = entry.message.state.recipients;
    const auto& envelope = entry.message.envelope;
    auto now = unix_now_ms();
    bool changed = false;

    std::vector<std::size_t> failed;
    std::vector<std::size_t> delayed;
    for (std::size_t index = 0; index < states.size(); ++index) {
        auto& state = states[index];
        if (state.status == queue::RecipientStatus::bounced && !state.notified) {
            if (notify_allows(envelope, index, "FAILURE")) {
                failed.push_back(index);
            } else {
                state.notified = true;
                changed = true;
            }
        }
        if (state.status == queue::RecipientStatus::deferred && !state.delay_warned &&
            queue::delay_warning_due(envelope.arrival_unix_ms, now, settings_.delay_warning_time)) {
            if (notify_allows(envelope, index, "DELAY")) {
                delayed.push_back(index);
            } else {
                state.delay_warned = true;
                changed = true;
            }
        }
    }

    // A notice that cannot be queued stays owed and is tried again after
    // the next attempt or at the next start.
    if (!failed.empty() && queue_notice(entry, queue::DsnAction::failed, failed)) {
        for (auto index : failed) {
            states[index].notified = true;
        }
        changed = true;
    }
    if (!delayed.empty() && queue_notice(entry, queue::DsnAction::delayed, delayed)) {
        for (auto index : delayed) {
            states[index].delay_warned = true;
        }
        changed = true;
    }

    bool done = std::all_of(states.begin(), states.end(), [](const queue::RecipientState& state) {
        return state.status == queue::RecipientStatus::sent ||
               (state.status == queue::RecipientStatus::bounced && state.notified);
    });
    try {
        if (done) {
            spool_.remove(id);
            log::info(id + ": removed");
            entries_.erase(found);
            wake_.cancel();
            return true;
        }
        if (changed) {
            entry.message.has_state_file = true;
            spool_.record_state(id, entry.message.state);
        }
    } catch (const queue::SpoolError& error) {
        log::error(id + ": cannot update queue file: " + error.what());
    }
    return false;
}

std::chrono::seconds Scheduler::lifetime_of(const queue::Envelope& envelope) const {
    return envelope.sender.empty() ? settings_.bounce_queue_lifetime : settings_.maximal_queue_lifetime;
}

// Writes a delivery status notification as a new spool message from the
// null sender and schedules it; returns false when it could not be queued.
bool Scheduler::queue_notice(const Entry& entry, queue::DsnAction action, const std::vector<std::size_t>& indices) {
    const auto& envelope = entry.message.envelope;
    const char* kind = action == queue::DsnAction::failed ? "non-delivery" : "delay";
    // RFC 5321 section 4.5.5: mail from the null sender never gets a
    // notification, which keeps bounces from looping.
    if (envelope.sender.empty()) {
        log::info(envelope.id + ": no " + kind + " notification: the sender is the null sender <>");
        return true;
    }

    queue::DsnReport report;
    report.action = action;
    report.reporting_mta = settings_.client.helo_name;
    report.queue_id = envelope.id;
    report.envid = envelope.dsn_envid;
    report.arrival_unix_ms = envelope.arrival_unix_ms;
    report.now_unix_ms = unix_now_ms();
    report.retry_until_unix_ms =
        envelope.arrival_unix_ms +
        std::chrono::duration_cast<std::chrono::milliseconds>(lifetime_of(envelope)).count();
    report.sender = envelope.sender;
    report.return_full = envelope.dsn_ret != "HDRS" && envelope.dsn_ret != "hdrs";
    for (auto index : indices) {
        const auto& state = entry.message.state.recipients[index];
        queue::DsnRecipient recipient;
        recipient.address = envelope.recipients[index];
        if (index < envelope.recipient_dsn.size()) {
            recipient.orcpt = envelope.recipient_dsn[index].orcpt;
        }
        recipient.status = state.dsn;
        recipient.relay = state.relay;
        recipient.reason = state.reason;
        report.recipients.push_back(std::move(recipient));
    }

    try {
        // Only the part that can be returned is read: the whole message up
        // to the return limit, else enough to find its header.
        std::ifstream in(entry.message.file, std::ios::binary);
        in.seekg(static_cast<std::streamoff>(entry.message.content_offset));
        std::string original(queue::dsn_return_limit + 1, '\0');
        in.read(original.data(), static_cast<std::streamsize>(original.size()));
        original.resize(static_cast<std::size_t>(std::max<std::streamsize>(0, in.gcount())));
        if (!in && !in.eof()) {
            throw queue::SpoolError("cannot read " + entry.message.file.string());
        }

        bool eight_bit = false;
        auto content = queue::compose_dsn(report, original, eight_bit);
        queue::Envelope notice;
        notice.id = queue::make_queue_id();
        notice.recipients = {envelope.sender};
        notice.recipient_dsn.emplace_back();
        notice.arrival_unix_ms = report.now_unix_ms;
        notice.client = "local";
        notice.eight_bit = eight_bit || envelope.eight_bit;
        notice.smtputf8 = envelope.smtputf8;
        auto writer = spool_.create(notice);
        writer.append(content);
        writer.commit();
        log::info(envelope.id + ": sender " + kind + " notification: " + notice.id);
        enqueue(writer.stored_message(notice));
        return true;
    } catch (const std::exception& error) {
        log::error(envelope.id + ": cannot queue the " + kind + " notification: " + error.what());
        return false;
    }
}

asio::awaitable<void> Scheduler::deliver_domain(Entry& entry, const std::string& domain,
                                                std::vector<std::size_t> indices, std::vector<RecipientResult>& results) {
    std::string idna_error;
    if (!to_a_label(domain, idna_error)) {
        for (auto index : indices) {
            RecipientResult result{index, Outcome::bounced, "5.1.2",
                                   "invalid domain name " + domain + " in the recipient address: " + idna_error};
            report(entry, result, "none", policy::Trust::none, results);
        }
        co_return;
    }

    const auto& id = entry.message.envelope.id;
    auto fail_all = [&](Outcome outcome, const std::string& dsn, const std::string& reason, const std::string& relay,
                        policy::Trust trust) {
        for (auto index : indices) {
            report(entry, RecipientResult{index, outcome, dsn, reason}, relay, trust, results);
        }
    };

    // A transport entry for the domain wins over the relayhost.
    const auto hop = choose_next_hop(settings_, domain, entry.message.envelope.sender).hop;
    std::string next_hop = hop ? hop->host : domain;

    // A destination that just failed as a whole is not tried again for
    // each of its messages until its suspension ends.
    if (auto found = destinations_->find(next_hop);
        found != destinations_->end() && found->second.suspended_until > Clock::now()) {
        fail_all(Outcome::deferred, found->second.dsn, "delivery temporarily suspended: " + found->second.reason,
                 "none", policy::Trust::none);
        co_return;
    }
    auto slot = co_await take_destination_slot(next_hop);
    if (!slot) {
        fail_all(Outcome::deferred, "4.4.5",
                 "too many deliveries to " + next_hop + " in progress (default_destination_concurrency_limit " +
                     std::to_string(settings_.destination_concurrency_limit) + ")",
                 "none", policy::Trust::none);
        co_return;
    }

    // The policy of the next hop: the relayhost as "[host]:port", else the
    // recipient domain, then its parent domains, then the global default.
    std::string policy_key = hop ? policy::next_hop_key(hop->host, hop->port, hop->port_given, hop->mx_lookup) : domain;
    const policy::Entry* table_entry = settings_.policy_table.lookup(policy_key);
    const policy::Policy& policy = table_entry ? table_entry->policy : settings_.default_policy;

    // An open session to the destination carries the message without a
    // DNS lookup, a TCP connect or a TLS handshake.
    std::string cache_key = policy_key + " " + next_hop;
    if (co_await deliver_on_cached_connection(entry, cache_key, indices, results)) {
        (*destinations_)[next_hop].suspended_until = {};
        co_return;
    }

    auto route = co_await find_route(resolver_, domain, hop, settings_.port);
    if (route.status != Route::Status::ok) {
        auto outcome = route.status == Route::Status::permanent_failure ? Outcome::bounced : Outcome::deferred;
        fail_all(outcome, route.dsn, route.reason, "none", policy::Trust::none);
        co_return;
    }
    if (loops_back(settings_, route)) {
        fail_all(Outcome::bounced, "5.4.6", "mail for " + domain + " loops back to myself", "none",
                 policy::Trust::none);
        co_return;
    }

    // Try each address of each host until one carries the transaction.
    AttemptResult last;
    last.dsn = "4.4.1";
    last.reason = "no host of " + domain + " could be used";
    std::string last_relay = "none";
    for (const auto& host : route.hosts) {
        auto dns = co_await gather_dns_facts(resolver_, settings_.policy_settings, policy, route, host);
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
            auto opened = Clock::now();
            AttemptResult attempt;
            auto connection = co_await Connection::open(settings_.client, target, plan, true, attempt);
            if (!connection && attempt.retry_without_tls) {
                log::info(id + ": TLS failed with " + format_peer(host.name, address, route.port) +
                          ", retrying in plaintext as level may allows");
                connection = co_await Connection::open(settings_.client, target, plan, false, attempt);
            }
            std::string relay = format_peer(host.name, address, route.port);
            if (settings_.recorder && (connection || attempt.connected)) {
                settings_.recorder->record_session(domain, attempt.trust, plan.effective);
            }
            if (connection) {
                (*destinations_)[next_hop].suspended_until = {};
                attempt = co_await connection->send(entry.message, indices);
                for (const auto& result : attempt.recipients) {
                    report(entry, result, relay, attempt.trust, results);
                }
                release_connection(cache_key, CachedConnection{std::move(connection), opened, {}});
                co_return;
            }
            log::info(id + ": " + attempt.reason);
            last = std::move(attempt);
            last_relay = last.connected ? relay : "none";
        }
    }

    // No host carried the transaction: suspend the destination, as
    // Postfix's queue manager does for a dead site, until the next retry.
    auto& destination = (*destinations_)[next_hop];
    destination.suspended_until = Clock::now() + settings_.minimal_backoff_time;
    destination.dsn = last.dsn;
    destination.reason = last.reason;
    log::info("destination " + next_hop + " suspended for " + format_seconds(settings_.minimal_backoff_time) + ": " +
              last.reason);
    fail_all(Outcome::deferred, last.dsn, last.reason, last_relay, last.trust);
}

// Waits for one of the destination's delivery slots; returns a released
// handle when none freed up within the wait limit or the scheduler stops.
asio::awaitable<Scheduler::DestinationSlot> Scheduler::take_destination_slot(const std::string& next_hop) {
    asio::steady_timer timer(executor_);
    auto give_up = Clock::now() + settings_.client.command_timeout;
    while ((*destinations_)[next_hop].connections >= settings_.destination_concurrency_limit) {
        if (stopped_ || Clock::now() >= give_up) {
            co_return DestinationSlot();
        }
        timer.expires_after(std::chrono::milliseconds(100));
        std::error_code ignored;
        co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    }
    ++(*destinations_)[next_hop].connections;
    co_return DestinationSlot(destinations_, next_hop);
}

Scheduler::DestinationSlot::~DestinationSlot() {
    if (!destinations_) {
        return;
    }
    auto found = destinations_->find(next_hop_);
    if (found == destinations_->end()) {
        return;
    }
    --found->second.connections;
    // Keep the map small: an idle destination with no suspension has no state worth keeping.
    if (found->second.connections == 0 && found->second.suspended_until <= Clock::now()) {
        destinations_->erase(found);
    }
}

asio::awaitable<policy::DnsFacts> gather_dns_facts(dns::Resolver& resolver, const policy::Settings& settings,
                                                   const policy::Policy& policy, const Route& route,
                                                   const RouteHost& host) {
    policy::DnsFacts facts;
    facts.mx_secure = route.mx_secure;
    facts.host_secure = host.secure;
    if (!policy::needs_tlsa(policy, facts, settings)) {
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
        auto answer = co_await resolver.query_tlsa(facts.tlsa_name);
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

bool loops_back(const SchedulerSettings& settings, const Route& route) {
    if (route.hosts.empty()) {
        return false;
    }
    const auto& best = route.hosts.front();
    for (const auto& name : settings.own_names) {
        if (!name.empty() && equal_ignoring_case(name, best.name)) {
            return true;
        }
    }
    // The relay's own listeners: the same port and address, or a wildcard
    // listener on that port for a loopback address.
    for (const auto& address : best.addresses) {
        for (const auto& own : settings.own_endpoints) {
            bool same_address = own.address() == address || (own.address().is_unspecified() && address.is_loopback());
            if (own.port() == route.port && same_address) {
                return true;
            }
        }
    }
    return false;
}

NextHopChoice choose_next_hop(const SchedulerSettings& settings, const std::string& domain, const std::string& sender) {
    for (const auto& [pattern, hop] : settings.transports) {
        bool subdomain = pattern.starts_with('.') && domain.size() > pattern.size() && domain.ends_with(pattern);
        if (domain == pattern || subdomain) {
            return {hop, "transport"};
        }
    }

    // The null sender of bounces has no entry; bounces use relayhost.
    auto at = sender.rfind('@');
    if (at != std::string::npos) {
        std::string address = sender;
        std::transform(address.begin(), address.end(), address.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        for (const auto& key : {address, address.substr(at)}) {
            for (const auto& [pattern, hop] : settings.sender_relayhosts) {
                if (pattern == key) {
                    return {hop, "sender relayhost"};
                }
            }
        }
    }
    if (settings.relayhost) {
        return {settings.relayhost, "relayhost"};
    }
    return {};
}

// Turns a deferral past the queue lifetime into a bounce, then logs the
// result and keeps it with the relay that gave it.
void Scheduler::report(Entry& entry, RecipientResult result, const std::string& relay, policy::Trust trust,
                       std::vector<RecipientResult>& results) {
    const auto& envelope = entry.message.envelope;
    auto lifetime = lifetime_of(envelope);
    if (result.outcome == Outcome::deferred && queue::lifetime_exceeded(envelope.arrival_unix_ms, unix_now_ms(), lifetime)) {
        result.outcome = Outcome::bounced;
        result.detail += "; message expired: queued longer than " + format_seconds(lifetime);
    }
    log_result(entry, result, relay, trust);
    entry.message.state.recipients[result.index].relay = relay;
    results.push_back(std::move(result));
}

void Scheduler::log_result(const Entry& entry, const RecipientResult& result, const std::string& relay,
                           policy::Trust trust) const {
    const auto& envelope = entry.message.envelope;
    log::info(envelope.id + ": to=<" + envelope.recipients[result.index] + ">, relay=" + relay +
              ", delay=" + format_delay(envelope.arrival_unix_ms) + ", tls=" + policy::to_string(trust) +
              ", dsn=" + result.dsn + ", status=" + to_string(result.outcome) + " (" + result.detail + ")");
    if (settings_.recorder) {
        settings_.recorder->record_result(envelope.recipients[result.index], to_string(result.outcome), trust,
                                          result.dsn, result.detail);
    }
}

std::int64_t Scheduler::oldest_arrival_unix_ms() const {
    std::int64_t oldest = 0;
    for (const auto& [id, entry] : entries_) {
        auto arrival = entry.message.envelope.arrival_unix_ms;
        oldest = oldest == 0 ? arrival : std::min(oldest, arrival);
    }
    return oldest;
}

}  // namespace tlsrelay::delivery
