#include <cstdio>

#include "tlsrelay/stats/metrics.hpp"

namespace tlsrelay::stats {
namespace {

void header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
}

void sample(std::string& out, std::string_view name, std::string_view labels, std::string_view value) {
    out += name;
    if (!labels.empty()) {
        out += '{';
        out += labels;
        out += '}';
    }
    out += ' ';
    out += value;
    out += '\n';
}

std::string label(std::string_view name, std::string_view value) {
    return std::string(name) + "=\"" + escape_label_value(value) + "\"";
}

std::string format_seconds(double seconds) {
    char text[32];
    std::snprintf(text, sizeof text, "%.3f", seconds);
    return text;
}

// Calls `visit(domain label, counts)` for every domain with its own
// series, then for the domains past the limit.
template <typename Visit>
void for_each_domain(const MetricsSnapshot& snapshot, Visit visit) {
    if (snapshot.domains) {
        for (const auto& [domain, counts] : *snapshot.domains) {
            visit(domain, counts);
        }
    }
    if (snapshot.other_domains) {
        visit(other_domains_label, *snapshot.other_domains);
    }
}

}  // namespace

std::string escape_label_value(std::string_view value) {
    std::string out;
    out.reserve(value.size());
    for (char c : value) {
        switch (c) {
        case '\\': out += "\\\\"; break;
        case '"': out += "\\\""; break;
        case '\n': out += "\\n"; break;
        default: out += c;
        }
    }
    return out;
}

std::string render_prometheus(const MetricsSnapshot& snapshot) {
    std::string out;

    header(out, "tlsrelay_delivery_messages_total", "counter",
           "Recipients delivered (status=sent) by recipient domain and the TLS trust of the session.");
    for_each_domain(snapshot, [&](std::string_view domain, const Counts& counts) {
        for (std::size_t i = 0; i < trust_count; ++i) {
            if (counts.messages[i] > 0) {
                sample(out, "tlsrelay_delivery_messages_total",
                       label("domain", domain) + "," + label("tls", policy::to_string(static_cast<policy::Trust>(i))),
                       std::to_string(counts.messages[i]));
            }
        }
    });

    header(out, "tlsrelay_delivery_sessions_total", "counter",
           "Outbound SMTP sessions by recipient domain and the TLS trust they reached.");
    for_each_domain(snapshot, [&](std::string_view domain, const Counts& counts) {
        for (std::size_t i = 0; i < trust_count; ++i) {
            if (counts.sessions[i] > 0) {
                sample(out, "tlsrelay_delivery_sessions_total",
                       label("domain", domain) + "," + label("tls", policy::to_string(static_cast<policy::Trust>(i))),
                       std::to_string(counts.sessions[i]));
            }
        }
    });

    header(out, "tlsrelay_delivery_dane_sessions_total", "counter",
           "Outbound sessions verified by DANE TLSA records, by recipient domain.");
    for_each_domain(snapshot, [&](std::string_view domain, const Counts& counts) {
        if (counts.dane_sessions > 0) {
            sample(out, "tlsrelay_delivery_dane_sessions_total", label("domain", domain),
                   std::to_string(counts.dane_sessions));
        }
    });

    header(out, "tlsrelay_delivery_deferrals_total", "counter",
           "Recipients deferred (status=deferred) by recipient domain and reason.");
    for_each_domain(snapshot, [&](std::string_view domain, const Counts& counts) {
        for (std::size_t i = 0; i < deferral_count; ++i) {
            if (counts.deferrals[i] > 0) {
                sample(out, "tlsrelay_delivery_deferrals_total",
                       label("domain", domain) + "," + label("reason", to_string(static_cast<Deferral>(i))),
                       std::to_string(counts.deferrals[i]));
            }
        }
    });

    header(out, "tlsrelay_delivery_bounces_total", "counter",
           "Recipients bounced (status=bounced) by recipient domain.");
    for_each_domain(snapshot, [&](std::string_view domain, const Counts& counts) {
        if (counts.bounces > 0) {
            sample(out, "tlsrelay_delivery_bounces_total", label("domain", domain), std::to_string(counts.bounces));
        }
    });

    header(out, "tlsrelay_queue_messages", "gauge", "Messages in the queue.");
    sample(out, "tlsrelay_queue_messages", "", std::to_string(snapshot.queue_messages));
    header(out, "tlsrelay_queue_oldest_message_age_seconds", "gauge",
           "Time since the oldest queued message arrived; 0 when the queue is empty.");
    sample(out, "tlsrelay_queue_oldest_message_age_seconds", "", format_seconds(snapshot.oldest_message_age_seconds));
    header(out, "tlsrelay_deliveries_in_progress", "gauge", "Delivery attempts running now.");
    sample(out, "tlsrelay_deliveries_in_progress", "", std::to_string(snapshot.deliveries_in_progress));

    header(out, "tlsrelay_smtpd_sessions", "gauge", "Inbound SMTP sessions open now.");
    sample(out, "tlsrelay_smtpd_sessions", "", std::to_string(snapshot.inbound_sessions));
    header(out, "tlsrelay_smtpd_sessions_total", "counter", "Inbound SMTP sessions accepted.");
    sample(out, "tlsrelay_smtpd_sessions_total", "", std::to_string(snapshot.inbound_sessions_total));

    header(out, "tlsrelay_errors_total", "counter", "Log lines written at level error.");
    sample(out, "tlsrelay_errors_total", "", std::to_string(snapshot.errors_total));
    return out;
}

}  // namespace tlsrelay::stats
