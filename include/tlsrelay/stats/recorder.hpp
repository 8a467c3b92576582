// Per-destination delivery counters: TLS sessions and delivered messages
// by the trust level reached (the log's tls= words), deferrals by reason,
// and bounces, kept in UTC day buckets over a rolling window and saved to
// <queue_directory>/stats/tls-outcomes for `tlsrelay report`.
//
// The data is advisory: the file is rewritten (temporary file, then
// rename, no fsync) when the server saves it, so a crash loses at most the
// counts since the last save.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "tlsrelay/policy/policy.hpp"

namespace tlsrelay::stats {

// Number of policy::Trust values; arrays of counts are indexed by them.
inline constexpr std::size_t trust_count = 5;

// The reason class of a deferral.
enum class Deferral {
    tls_required,  // a mandatory TLS level could not be met (4.7.4, 4.7.5)
    connect,       // connection refused, lost or timed out (4.4.1, 4.4.2)
    dns,           // the MX or address lookup failed temporarily (4.4.3)
    remote_4xx,    // the remote server replied with a 4xx code
    auth,          // SMTP AUTH with the next hop failed or was impossible
    concurrency,   // too many deliveries to the next hop in progress (4.4.5)
    other,
};
inline constexpr std::size_t deferral_count = 7;

const char* to_string(Deferral reason);
std::optional<Deferral> parse_deferral(std::string_view text);

// Classifies a deferral from its enhanced status code and the reason text
// of the status=deferred log line.
Deferral classify_deferral(std::string_view dsn, std::string_view reason);

struct Counts {
    std::array<std::uint64_t, trust_count> sessions{};  // outbound connections, by trust
    // Verified sessions that DANE TLSA records authenticated (levels dane
    // and dane-only); the other verified sessions matched a CA-signed
    // certificate or a fingerprint.
    std::uint64_t dane_sessions = 0;
    std::array<std::uint64_t, trust_count> messages{};  // recipients sent, by trust
    std::array<std::uint64_t, deferral_count> deferrals{};
    std::uint64_t bounces = 0;

    Counts& operator+=(const Counts& other);
    std::uint64_t total_sessions() const;
    std::uint64_t total_messages() const;
    std::uint64_t total_deferrals() const;
    bool empty() const;
};

// Days since 1970-01-01 in UTC.
using Day = std::int64_t;

Day day_of(std::int64_t unix_seconds);
std::string format_day(Day day);                     // "2025-12-04"
std::optional<Day> parse_day(std::string_view text);  // the reverse

// Lower case, A-label form and no trailing dot, so one destination has one
// key however recipients spell it.
std::string normalize_domain(std::string_view domain);

// Counts per destination domain and day.
class History {
public:
    Counts& at(const std::string& domain, Day day);
    // Removes every bucket of a day before `first_day`.
    void drop_before(Day first_day);
    // The sums per domain over the days first_day to last_day, inclusive.
    std::map<std::string, Counts> totals(Day first_day, Day last_day) const;
    const std::map<std::string, std::map<Day, Counts>>& domains() const { return domains_; }

    // The file format: a "tlsrelay-tls-outcomes 1" line, then one line per
    // domain and day: "2025-12-04 example.org messages.verified=12
    // sessions.verified=2 deferrals.tls_required=1 bounces=0 ...", with
    // counts of zero left out.
    std::string serialize() const;
    // Reads that format. Lines and counters it cannot read are skipped,
    // each described in `problems` with its line number.
    static History parse(std::string_view text, std::vector<std::string>& problems);

private:
    std::map<std::string, std::map<Day, Counts>> domains_;
};

// The counters file of a queue directory.
std::filesystem::path outcomes_file(const std::filesystem::path& queue_directory);

// Reads a counters file; a missing file is an empty history. Raises
// std::runtime_error when the file exists but cannot be read.
History read_outcomes(const std::filesystem::path& file, std::vector<std::string>& problems);

// Records delivery outcomes on the server's event loop. It keeps two sets
// of counts: the day buckets of the window, saved to the file, and totals
// since the process started, for the Prometheus counters (which must never
// decrease, so they cannot be window sums). The totals keep their own
// series for at most `metrics_domain_limit` domains; the rest are added up
// in other_totals().
class Recorder {
public:
    Recorder(std::filesystem::path file, int window_days, std::size_t metrics_domain_limit);

    // Reads the file and drops the days outside the window. The domains
    // with the most messages in the window get the first metrics series.
    // Problems with the file are logged as warnings; counting starts empty.
    void load();
    // Writes the file when a count changed since the last save. Returns
    // false when the write failed; the first failure in a row is logged.
    bool save();

    // Counts one outbound session to a host of `domain` that reached
    // `trust`. `level` is the level enforced for the host (the plan's
    // effective level), which separates DANE from CA verification.
    void record_session(std::string_view domain, policy::Trust trust, policy::Level level);
    // Counts one recipient result as logged: status "sent", "deferred" or
    // "bounced", with the session's trust, the enhanced status code and the
    // reason.
    void record_result(std::string_view recipient, std::string_view status, policy::Trust trust,
                       std::string_view dsn, std::string_view reason);

    const History& history() const { return history_; }
    const std::map<std::string, Counts>& domain_totals() const { return totals_; }
    const Counts& other_totals() const { return other_totals_; }
    const std::filesystem::path& file() const { return file_; }
    int window_days() const { return window_days_; }

    // Replaces the clock (Unix seconds), for tests.
    void set_clock(std::function<std::int64_t()> clock) { clock_ = std::move(clock); }

private:
    Counts& bucket(const std::string& domain);
    Counts& process_totals(const std::string& domain);

    std::filesystem::path file_;
    int window_days_;
    std::size_t metrics_domain_limit_;
    std::function<std::int64_t()> clock_;
    History history_;
    Day newest_day_ = 0;
    std::map<std::string, Counts> totals_;
    Counts other_totals_;
    bool dirty_ = false;
    bool last_save_failed_ = false;
};

}  // namespace tlsrelay::stats
