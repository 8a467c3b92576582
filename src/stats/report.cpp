#include "tlsrelay/stats/report.hpp"

#include <algorithm>

#include "tlsrelay/util/json.hpp"

namespace tlsrelay::stats {
namespace {

using policy::Level;
using policy::Trust;

constexpr std::array<Trust, trust_count> trusts_strongest_first = {
    Trust::verified, Trust::trusted, Trust::untrusted, Trust::anonymous, Trust::none,
};

// How much a level demands of a session: 0 nothing, 1 TLS when offered
// (may, and dane without usable TLSA records), 2 any TLS, 3 an
// authenticated peer.
int strictness(Level level) {
    switch (level) {
    case Level::none: return 0;
    case Level::may:
    case Level::dane: return 1;
    case Level::encrypt: return 2;
    case Level::fingerprint:
    case Level::verify:
    case Level::secure:
    case Level::dane_only: return 3;
    }
    return 0;
}

// The trust word as Postfix capitalises it at the start of its TLS lines.
std::string capitalised(Trust trust) {
    if (trust == Trust::none) {
        return "none (no TLS)";
    }
    std::string word = policy::to_string(trust);
    word[0] = static_cast<char>(word[0] - 'a' + 'A');
    return word;
}

std::string plural(std::uint64_t count, const std::string& noun) {
    return std::to_string(count) + " " + noun + (count == 1 ? "" : "s");
}

std::uint64_t count_of(const std::array<std::uint64_t, trust_count>& counts, Trust trust) {
    return counts[static_cast<std::size_t>(trust)];
}

// The strictest level that every counted message would have passed.
std::optional<Level> strictest_passed(const Counts& counts) {
    auto total = counts.total_messages();
    if (total == 0 || count_of(counts.messages, Trust::none) > 0) {
        return std::nullopt;
    }
    if (count_of(counts.messages, Trust::verified) < total) {
        return Level::encrypt;
    }
    // Verified sessions are either all authenticated by DANE or all by a
    // CA (or fingerprint); a mix fits neither dane-only nor verify.
    auto verified_sessions = count_of(counts.sessions, Trust::verified);
    if (counts.dane_sessions == 0) {
        return Level::verify;
    }
    if (counts.dane_sessions == verified_sessions) {
        return Level::dane_only;
    }
    return Level::encrypt;
}

std::string trust_list(const std::array<std::uint64_t, trust_count>& counts) {
    std::string text;
    for (auto trust : trusts_strongest_first) {
        if (auto count = count_of(counts, trust)) {
            text += (text.empty() ? "" : ", ") + std::to_string(count) + " " + capitalised(trust);
        }
    }
    return text;
}

std::string deferral_list(const Counts& counts) {
    std::string text;
    for (std::size_t i = 0; i < deferral_count; ++i) {
        if (counts.deferrals[i] > 0) {
            text += (text.empty() ? "" : ", ") + std::string(to_string(static_cast<Deferral>(i))) + " " +
                    std::to_string(counts.deferrals[i]);
        }
    }
    return text;
}

void append_counts_object(std::string& out, const std::array<std::uint64_t, trust_count>& counts,
                          const std::string& extra_name, std::uint64_t extra_value) {
    out += '{';
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < trust_count; ++i) {
        out += '"';
        out += policy::to_string(static_cast<Trust>(i));
        out += "\":" + std::to_string(counts[i]) + ",";
        total += counts[i];
    }
    if (!extra_name.empty()) {
        out += "\"" + extra_name + "\":" + std::to_string(extra_value) + ",";
    }
    out += "\"total\":" + std::to_string(total) + "}";
}

}  // namespace

DomainPolicy policy_for(const config::Config& config, const std::string& domain) {
    // The same next hop the scheduler picks, without the sender.
    std::optional<NextHop> hop;
    for (const auto& transport : config.transports) {
        const auto& pattern = transport.domain;
        bool subdomain = pattern.starts_with('.') && domain.size() > pattern.size() && domain.ends_with(pattern);
        if (domain == pattern || subdomain) {
            hop = transport.nexthop;
            break;
        }
    }
    if (!hop) {
        hop = config.smtp.relayhost;
    }

    DomainPolicy result;
    result.next_hop = hop ? policy::next_hop_key(hop->host, hop->port, hop->port_given, hop->mx_lookup) : domain;
    if (const auto* entry = config.smtp.tls_policy.lookup(result.next_hop)) {
        result.level = entry->policy.level;
        result.source = entry->origin;
    } else {
        result.level = config.smtp.tls_security_level;
        result.source = "smtp.tls_security_level";
    }
    return result;
}

DomainReport assess(const std::string& domain, const Counts& counts, const DomainPolicy& policy, int days) {
    DomainReport report;
    report.domain = domain;
    report.counts = counts;
    report.policy = policy;

    auto total = counts.total_messages();
    report.summary = domain + ": " + plural(total, "message") + " over " + plural(static_cast<std::uint64_t>(days), "day");
    if (total > 0) {
        bool one_level = std::any_of(counts.messages.begin(), counts.messages.end(),
                                     [total](std::uint64_t count) { return count == total; });
        if (one_level) {
            auto trust = *std::find_if(trusts_strongest_first.begin(), trusts_strongest_first.end(),
                                       [&](Trust t) { return count_of(counts.messages, t) == total; });
            report.summary += total == 1 ? ", " + capitalised(trust) : ", all " + capitalised(trust);
        } else {
            report.summary += ": " + trust_list(counts.messages);
        }
    }

    auto passed = strictest_passed(counts);
    if (passed && strictness(*passed) > strictness(policy.level)) {
        report.suggestion = passed;
        report.summary += std::string(" → `") + policy::to_string(*passed) + "` would have delivered " +
                          (total == 1 ? "it" : "all of them");
    }

    // Deferrals for TLS reasons come only from a level that makes TLS
    // mandatory (or dane with usable TLSA records): the policy is holding
    // mail back, which bounces once the queue lifetime ends.
    auto tls_deferrals = counts.deferrals[static_cast<std::size_t>(Deferral::tls_required)];
    if (tls_deferrals > 0) {
        report.warnings.push_back("warning: " + domain + ": level `" + policy::to_string(policy.level) + "` (" +
                                  policy.source + ") caused " + plural(tls_deferrals, "deferral") +
                                  " because the TLS it requires could not be reached; see the status=deferred "
                                  "lines with dsn=4.7.4 or 4.7.5 in the log");
    }
    return report;
}

Report build_report(const History& history, int days, Day today, const std::string& file,
                    const std::function<DomainPolicy(const std::string&)>& policy_lookup) {
    Report report;
    report.file = file;
    report.days = days;
    report.last_day = today;
    report.first_day = today - days + 1;
    for (const auto& [domain, counts] : history.totals(report.first_day, report.last_day)) {
        if (!counts.empty()) {
            report.domains.push_back(assess(domain, counts, policy_lookup(domain), days));
        }
    }
    std::sort(report.domains.begin(), report.domains.end(), [](const DomainReport& a, const DomainReport& b) {
        auto a_messages = a.counts.total_messages();
        auto b_messages = b.counts.total_messages();
        if (a_messages != b_messages) {
            return a_messages > b_messages;
        }
        if (a.counts.total_deferrals() != b.counts.total_deferrals()) {
            return a.counts.total_deferrals() > b.counts.total_deferrals();
        }
        return a.domain < b.domain;
    });
    return report;
}

std::string render_text(const Report& report) {
    std::string out = "Delivery counters from " + report.file + ", " + format_day(report.first_day) + " to " +
                      format_day(report.last_day) + " UTC (" + plural(static_cast<std::uint64_t>(report.days), "day") +
                      ")\n";
    if (report.domains.empty()) {
        return out + "No deliveries were counted in these days.\n";
    }
    for (const auto& domain : report.domains) {
        const auto& counts = domain.counts;
        out += "\n" + domain.summary + "\n";
        out += "  policy: " + std::string(policy::to_string(domain.policy.level)) + " (" + domain.policy.source + ")";
        if (domain.policy.next_hop != domain.domain) {
            out += " for next hop " + domain.policy.next_hop;
        }
        out += "\n";
        if (counts.total_sessions() > 0) {
            out += "  sessions: " + trust_list(counts.sessions);
            if (counts.dane_sessions > 0) {
                out += " (" + std::to_string(counts.dane_sessions) + " Verified by DANE)";
            }
            out += "\n";
        }
        if (counts.total_deferrals() > 0) {
            out += "  deferrals: " + deferral_list(counts) + "\n";
        }
        if (counts.bounces > 0) {
            out += "  bounces: " + std::to_string(counts.bounces) + "\n";
        }
        for (const auto& warning : domain.warnings) {
            out += "  " + warning + "\n";
        }
    }
    return out;
}

std::string render_json(const Report& report) {
    std::string out = "{\"file\":" + json::quote(report.file) + ",\"days\":" + std::to_string(report.days) +
                      ",\"first_day\":\"" + format_day(report.first_day) + "\",\"last_day\":\"" +
                      format_day(report.last_day) + "\",\"domains\":[";
    bool first = true;
    for (const auto& domain : report.domains) {
        const auto& counts = domain.counts;
        out += first ? "" : ",";
        first = false;
        out += "{\"domain\":" + json::quote(domain.domain);
        out += ",\"policy\":{\"level\":\"" + std::string(policy::to_string(domain.policy.level)) +
               "\",\"source\":" + json::quote(domain.policy.source) +
               ",\"next_hop\":" + json::quote(domain.policy.next_hop) + "}";
        out += ",\"messages\":";
        append_counts_object(out, counts.messages, "", 0);
        out += ",\"sessions\":";
        append_counts_object(out, counts.sessions, "dane", counts.dane_sessions);
        out += ",\"deferrals\":{";
        for (std::size_t i = 0; i < deferral_count; ++i) {
            out += "\"" + std::string(to_string(static_cast<Deferral>(i))) + "\":" + std::to_string(counts.deferrals[i]) + ",";
        }
        out += "\"total\":" + std::to_string(counts.total_deferrals()) + "}";
        out += ",\"bounces\":" + std::to_string(counts.bounces);
        out += ",\"suggestion\":";
        out += domain.suggestion ? "\"" + std::string(policy::to_string(*domain.suggestion)) + "\"" : "null";
        out += ",\"summary\":" + json::quote(domain.summary);
        out += ",\"warnings\":[";
        for (std::size_t i = 0; i < domain.warnings.size(); ++i) {
            out += (i ? "," : "") + json::quote(domain.warnings[i]);
        }
        out += "]}";
    }
    out += "]}\n";
    return out;
}

}  // namespace tlsrelay::stats
