// `tlsrelay report`: the delivery counters per destination domain over a
// number of days, with the stricter TLS level each domain's deliveries
// would have allowed, and warnings where a mandatory level defers mail.
// Pure code: the caller reads the counters file and the configuration.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "tlsrelay/config/config.hpp"
#include "tlsrelay/policy/policy.hpp"
#include "tlsrelay/stats/recorder.hpp"

namespace tlsrelay::stats {

// The TLS policy that applies to mail for one domain now.
struct DomainPolicy {
    policy::Level level = policy::Level::may;
    std::string source;    // "smtp.tls_security_level", or the table entry's "FILE:LINE"
    std::string next_hop;  // the key looked up: the domain, or "[host]:port" of a relayhost
};

// Finds the policy the scheduler applies to mail for `domain`. The next
// hop is a [[transport]] entry's, else smtp.relayhost, else the domain,
// and its policy table entry wins over smtp.tls_security_level.
// NOTE: [[smtp.sender_relayhost]] entries are not followed, because they
// depend on the sender, which the counters do not keep.
DomainPolicy policy_for(const config::Config& config, const std::string& domain);

struct DomainReport {
    std::string domain;
    Counts counts;
    DomainPolicy policy;
    // A level stricter than the current one under which every counted
    // message would still have been delivered; unset when there is none.
    std::optional<policy::Level> suggestion;
    std::string summary;  // "example.org: 412 messages over 30 days, all Verified → ..."
    std::vector<std::string> warnings;
};

// Judges one domain's counts over `days` days.
DomainReport assess(const std::string& domain, const Counts& counts, const DomainPolicy& policy, int days);

struct Report {
    std::string file;
    int days = 30;
    Day first_day = 0;
    Day last_day = 0;
    std::vector<DomainReport> domains;  // the most messages first
};

// Builds the report over the `days` days that end with `today`.
Report build_report(const History& history, int days, Day today, const std::string& file,
                    const std::function<DomainPolicy(const std::string&)>& policy_lookup);

std::string render_text(const Report& report);
std::string render_json(const Report& report);

}  // namespace tlsrelay::stats
