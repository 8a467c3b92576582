#include "tlsrelay/stats/recorder.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "tlsrelay/util/idna.hpp"
#include "tlsrelay/util/log.hpp"

namespace tlsrelay::stats {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view file_header = "tlsrelay-tls-outcomes 1";

constexpr std::array<Deferral, deferral_count> all_deferrals = {
    Deferral::tls_required, Deferral::connect, Deferral::dns,  Deferral::remote_4xx,
    Deferral::auth,         Deferral::concurrency, Deferral::other,
};

constexpr std::array<policy::Trust, trust_count> all_trusts = {
    policy::Trust::none, policy::Trust::anonymous, policy::Trust::untrusted, policy::Trust::trusted,
    policy::Trust::verified,
};

std::size_t index_of(policy::Trust trust) { return static_cast<std::size_t>(trust); }
std::size_t index_of(Deferral reason) { return static_cast<std::size_t>(reason); }

std::optional<policy::Trust> parse_trust(std::string_view text) {
    for (auto trust : all_trusts) {
        if (text == policy::to_string(trust)) {
            return trust;
        }
    }
    return std::nullopt;
}

std::int64_t system_unix_seconds() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

void append_count(std::string& line, std::string_view name, std::uint64_t value) {
    if (value == 0) {
        return;
    }
    line += ' ';
    line += name;
    line += '=';
    line += std::to_string(value);
}

// Stores one "name=value" counter of a file line. Returns false when this
// version cannot read the name or the value.
bool read_counter(std::string_view token, Counts& counts) {
    auto equals = token.find('=');
    if (equals == std::string_view::npos) {
        return false;
    }
    auto name = token.substr(0, equals);
    auto text = token.substr(equals + 1);
    std::uint64_t value = 0;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || end != text.data() + text.size() || text.empty()) {
        return false;
    }

    auto group = name.substr(0, name.find('.'));
    auto member = name.find('.') == std::string_view::npos ? std::string_view() : name.substr(name.find('.') + 1);
    if (group == "sessions" || group == "messages") {
        auto trust = parse_trust(member);
        if (!trust) {
            return false;
        }
        (group == "sessions" ? counts.sessions : counts.messages)[index_of(*trust)] += value;
        return true;
    }
    if (group == "deferrals") {
        auto reason = parse_deferral(member);
        if (!reason) {
            return false;
        }
        counts.deferrals[index_of(*reason)] += value;
        return true;
    }
    if (name == "dane_sessions") {
        counts.dane_sessions += value;
        return true;
    }
    if (name == "bounces") {
        counts.bounces += value;
        return true;
    }
    return false;
}

// A domain that would break the file's space-separated line is not counted.
bool usable_key(const std::string& domain) {
    return !domain.empty() && std::none_of(domain.begin(), domain.end(), [](unsigned char c) { return c <= ' ' || c == 0x7F; });
}

std::string domain_of_address(std::string_view address) {
    auto at = address.rfind('@');
    return at == std::string_view::npos ? std::string() : std::string(address.substr(at + 1));
}

}  // namespace

const char* to_string(Deferral reason) {
    switch (reason) {
    case Deferral::tls_required: return "tls_required";
    case Deferral::connect: return "connect";
    case Deferral::dns: return "dns";
    case Deferral::remote_4xx: return "remote_4xx";
    case Deferral::auth: return "auth";
    case Deferral::concurrency: return "concurrency";
    case Deferral::other: break;
    }
    return "other";
}

std::optional<Deferral> parse_deferral(std::string_view text) {
    for (auto reason : all_deferrals) {
        if (text == to_string(reason)) {
            return reason;
        }
    }
    return std::nullopt;
}

Deferral classify_deferral(std::string_view dsn, std::string_view reason) {
    // The order matters: an AUTH failure quotes the server's reply, and a
    // server's own reply may carry a 4.7.x code that has nothing to do
    // with the relay's TLS policy.
    if (reason.find("SMTP AUTH") != std::string_view::npos) {
        return Deferral::auth;
    }
    if (reason.find(" said: ") != std::string_view::npos) {
        return Deferral::remote_4xx;
    }
    if (dsn == "4.7.4" || dsn == "4.7.5") {
        return Deferral::tls_required;
    }
    if (dsn == "4.4.3") {
        return Deferral::dns;
    }
    if (dsn == "4.4.1" || dsn == "4.4.2") {
        return Deferral::connect;
    }
    if (dsn == "4.4.5") {
        return Deferral::concurrency;
    }
    return Deferral::other;
}

Counts& Counts::operator+=(const Counts& other) {
    for (std::size_t i = 0; i < trust_count; ++i) {
        sessions[i] += other.sessions[i];
        messages[i] += other.messages[i];
    }
    for (std::size_t i = 0; i < deferral_count; ++i) {
        deferrals[i] += other.deferrals[i];
    }
    dane_sessions += other.dane_sessions;
    bounces += other.bounces;
    return *this;
}

std::uint64_t Counts::total_sessions() const {
    std::uint64_t total = 0;
    for (auto count : sessions) total += count;
    return total;
}

std::uint64_t Counts::total_messages() const {
    std::uint64_t total = 0;
    for (auto count : messages) total += count;
    return total;
}

std::uint64_t Counts::total_deferrals() const {
    std::uint64_t total = 0;
    for (auto count : deferrals) total += count;
    return total;
}

bool Counts::empty() const {
    return total_sessions() == 0 && total_messages() == 0 && total_deferrals() == 0 && bounces == 0 &&
           dane_sessions == 0;
}

Day day_of(std::int64_t unix_seconds) {
    // Floor division, so instants before 1970 fall on the day before.
    return unix_seconds >= 0 ? unix_seconds / 86400 : -((-unix_seconds + 86399) / 86400);
}

std::string format_day(Day day) {
    std::chrono::year_month_day date{std::chrono::sys_days{std::chrono::days{day}}};
    char text[16];
    std::snprintf(text, sizeof text, "%04d-%02u-%02u", static_cast<int>(date.year()),
                  static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()));
    return text;
}

std::optional<Day> parse_day(std::string_view text) {
    if (text.size() != 10 || text[4] != '-' || text[7] != '-') {
        return std::nullopt;
    }
    auto number = [&](std::size_t at, std::size_t length) -> std::optional<int> {
        int value = 0;
        auto [end, error] = std::from_chars(text.data() + at, text.data() + at + length, value);
        if (error != std::errc() || end != text.data() + at + length) {
            return std::nullopt;
        }
        return value;
    };
    auto year = number(0, 4);
    auto month = number(5, 2);
    auto day = number(8, 2);
    if (!year || !month || !day) {
        return std::nullopt;
    }
    std::chrono::year_month_day date{std::chrono::year{*year}, std::chrono::month{static_cast<unsigned>(*month)},
                                     std::chrono::day{static_cast<unsigned>(*day)}};
    if (!date.ok()) {
        return std::nullopt;
    }
    return std::chrono::sys_days{date}.time_since_epoch().count();
}

std::string normalize_domain(std::string_view domain) {
    if (!domain.empty() && domain.back() == '.') {
        domain.remove_suffix(1);
    }
    bool ascii = std::all_of(domain.begin(), domain.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
    std::string result(domain);
    if (!ascii) {
        std::string error;
        result = to_a_label(domain, error).value_or(result);
    }
    std::transform(result.begin(), result.end(), result.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return result;
}

Counts& History::at(const std::string& domain, Day day) { return domains_[domain][day]; }

void History::drop_before(Day first_day) {
    for (auto domain = domains_.begin(); domain != domains_.end();) {
        auto& days = domain->second;
        days.erase(days.begin(), days.lower_bound(first_day));
        domain = days.empty() ? domains_.erase(domain) : std::next(domain);
    }
}

std::map<std::string, Counts> History::totals(Day first_day, Day last_day) const {
    std::map<std::string, Counts> sums;
    for (const auto& [domain, days] : domains_) {
        for (auto day = days.lower_bound(first_day); day != days.end() && day->first <= last_day; ++day) {
            sums[domain] += day->second;
        }
    }
    return sums;
}

std::string History::serialize() const {
    std::string text(file_header);
    text += '\n';
    for (const auto& [domain, days] : domains_) {
        for (const auto& [day, counts] : days) {
            if (counts.empty()) {
                continue;
            }
            std::string line = format_day(day) + " " + domain;
            for (auto trust : all_trusts) {
                append_count(line, std::string("messages.") + policy::to_string(trust), counts.messages[index_of(trust)]);
            }
            for (auto trust : all_trusts) {
                append_count(line, std::string("sessions.") + policy::to_string(trust), counts.sessions[index_of(trust)]);
            }
            append_count(line, "dane_sessions", counts.dane_sessions);
            for (auto reason : all_deferrals) {
                append_count(line, std::string("deferrals.") + to_string(reason), counts.deferrals[index_of(reason)]);
            }
            append_count(line, "bounces", counts.bounces);
            text += line;
            text += '\n';
        }
    }
    return text;
}

History History::parse(std::string_view text, std::vector<std::string>& problems) {
    History history;
    std::size_t line_number = 0;
    std::size_t start = 0;
    while (start < text.size()) {
        auto end = text.find('\n', start);
        if (end == std::string_view::npos) {
            end = text.size();
        }
        auto line = text.substr(start, end - start);
        start = end + 1;
        ++line_number;
        const auto where = "line " + std::to_string(line_number) + ": ";

        if (line_number == 1) {
            if (line != file_header) {
                problems.push_back(where + "expected \"" + std::string(file_header) + "\"; the file is not read");
                return history;
            }
            continue;
        }
        if (line.empty()) {
            continue;
        }

        std::vector<std::string_view> tokens;
        for (std::size_t at = 0; at < line.size();) {
            auto space = line.find(' ', at);
            if (space == std::string_view::npos) {
                space = line.size();
            }
            if (space > at) {
                tokens.push_back(line.substr(at, space - at));
            }
            at = space + 1;
        }
        auto day = tokens.empty() ? std::nullopt : parse_day(tokens[0]);
        if (!day || tokens.size() < 2) {
            problems.push_back(where + "expected a day (YYYY-MM-DD) and a domain; line skipped");
            continue;
        }
        Counts counts;
        for (std::size_t i = 2; i < tokens.size(); ++i) {
            if (!read_counter(tokens[i], counts)) {
                problems.push_back(where + "unknown counter \"" + std::string(tokens[i]) + "\" skipped");
            }
        }
        history.at(std::string(tokens[1]), *day) += counts;
    }
    return history;
}

fs::path outcomes_file(const fs::path& queue_directory) { return queue_directory / "stats" / "tls-outcomes"; }

History read_outcomes(const fs::path& file, std::vector<std::string>& problems) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
        if (errno == ENOENT) {
            return {};
        }
        throw std::runtime_error("cannot read " + file.string() + ": " + std::strerror(errno));
    }
    std::ostringstream text;
    text << in.rdbuf();
    return History::parse(text.str(), problems);
}

Recorder::Recorder(fs::path file, int window_days, std::size_t metrics_domain_limit)
    : file_(std::move(file)),
      window_days_(std::max(window_days, 1)),
      metrics_domain_limit_(metrics_domain_limit),
      clock_(system_unix_seconds) {}

void Recorder::load() {
    std::vector<std::string> problems;
    try {
        history_ = read_outcomes(file_, problems);
    } catch (const std::exception& error) {
        log::warning(std::string(error.what()) + "; delivery counters start empty");
        history_ = History();
    }
    for (const auto& problem : problems) {
        log::warning(file_.string() + ": " + problem);
    }

    newest_day_ = day_of(clock_());
    history_.drop_before(newest_day_ - window_days_ + 1);

    // The busiest domains of the window keep their own metrics series.
    std::vector<std::pair<std::uint64_t, std::string>> busiest;
    for (const auto& [domain, counts] : history_.totals(newest_day_ - window_days_ + 1, newest_day_)) {
        busiest.emplace_back(counts.total_messages() + counts.total_sessions() + counts.total_deferrals(), domain);
    }
    std::sort(busiest.begin(), busiest.end(), [](const auto& a, const auto& b) {
        return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    for (const auto& [count, domain] : busiest) {
        if (totals_.size() >= metrics_domain_limit_) {
            break;
        }
        totals_.try_emplace(domain);
    }
}

bool Recorder::save() {
    if (!dirty_) {
        return true;
    }
    history_.drop_before(day_of(clock_()) - window_days_ + 1);

    auto temporary = file_;
    temporary += ".tmp";
    std::error_code error;
    fs::create_directories(file_.parent_path(), error);
    bool written = false;
    if (!error) {
        std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
        auto text = history_.serialize();
        out.write(text.data(), static_cast<std::streamsize>(text.size()));
        out.close();
        written = static_cast<bool>(out);
        if (written) {
            fs::rename(temporary, file_, error);
            written = !error;
        } else {
            error = std::error_code(errno, std::generic_category());
        }
    }

    if (!written) {
        if (!last_save_failed_) {
            log::warning("cannot save delivery counters to " + file_.string() + ": " + error.message() +
                         "; retrying at the next save");
        }
        last_save_failed_ = true;
        return false;
    }

    if (last_save_failed_) {
        log::info("delivery counters saved to " + file_.string() + " again");
    }
    last_save_failed_ = false;
    dirty_ = false;
    return true;
}

Counts& Recorder::bucket(const std::string& domain) {
    auto today = day_of(clock_());
    if (today > newest_day_) {
        newest_day_ = today;
        history_.drop_before(today - window_days_ + 1);
    }
    dirty_ = true;
    return history_.at(domain, today);
}

Counts& Recorder::process_totals(const std::string& domain) {
    auto found = totals_.find(domain);
    if (found != totals_.end()) {
        return found->second;
    }
    if (totals_.size() < metrics_domain_limit_) {
        return totals_[domain];
    }
    return other_totals_;
}

void Recorder::record_session(std::string_view domain, policy::Trust trust, policy::Level level) {
    auto key = normalize_domain(domain);
    if (!usable_key(key)) {
        return;
    }
    bool dane = trust == policy::Trust::verified && (level == policy::Level::dane || level == policy::Level::dane_only);
    for (Counts* counts : {&bucket(key), &process_totals(key)}) {
        counts->sessions[index_of(trust)] += 1;
        counts->dane_sessions += dane ? 1 : 0;
    }
}

void Recorder::record_result(std::string_view recipient, std::string_view status, policy::Trust trust,
                             std::string_view dsn, std::string_view reason) {
    auto key = normalize_domain(domain_of_address(recipient));
    if (!usable_key(key)) {
        return;
    }
    for (Counts* counts : {&bucket(key), &process_totals(key)}) {
        if (status == "sent") {
            counts->messages[index_of(trust)] += 1;
        } else if (status == "deferred") {
            counts->deferrals[index_of(classify_deferral(dsn, reason))] += 1;
        } else if (status == "bounced") {
            counts->bounces += 1;
        }
    }
}

}  // namespace tlsrelay::stats
