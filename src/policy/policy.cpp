// Policy levels, the per-host plan and the verdict. The rules follow
// Postfix's smtp_tls_security_level semantics and RFC 7672 for DANE.
#include "tlsrelay/policy/policy.hpp"

#include <algorithm>
#include <array>

#include "tlsrelay/tls/hostname.hpp"

namespace tlsrelay::policy {

namespace {

struct LevelName {
    Level level;
    const char* name;
};

constexpr std::array<LevelName, 8> level_table = {{
    {Level::none, "none"},
    {Level::may, "may"},
    {Level::encrypt, "encrypt"},
    {Level::fingerprint, "fingerprint"},
    {Level::verify, "verify"},
    {Level::secure, "secure"},
    {Level::dane, "dane"},
    {Level::dane_only, "dane-only"},
}};

std::string lower(std::string_view text) {
    std::string result(text);
    for (char& c : result) {
        if (c >= 'A' && c <= 'Z') {
            c = static_cast<char>(c - 'A' + 'a');
        }
    }
    return result;
}

std::string strip_dot(std::string name) {
    if (!name.empty() && name.back() == '.') {
        name.pop_back();
    }
    return name;
}

std::string join(const std::vector<std::string>& items, const char* separator = ", ") {
    std::string text;
    for (const auto& item : items) {
        if (!text.empty()) {
            text += separator;
        }
        text += item;
    }
    return text;
}

struct ProtocolName {
    const char* name;
    unsigned bit;
};

// SSLv2 and SSLv3 have no bit: they are never offered, so excluding them
// changes nothing and requiring only them leaves nothing.
constexpr std::array<ProtocolName, 6> protocol_table = {{
    {"sslv2", 0},
    {"sslv3", 0},
    {"tlsv1", tls_v1},
    {"tlsv1.1", tls_v1_1},
    {"tlsv1.2", tls_v1_2},
    {"tlsv1.3", tls_v1_3},
}};

std::optional<std::size_t> protocol_index(std::string_view name) {
    std::string wanted = lower(name);
    for (std::size_t i = 0; i < protocol_table.size(); ++i) {
        if (wanted == protocol_table[i].name) {
            return i;
        }
    }
    return std::nullopt;
}

unsigned protocol_bit(std::string_view session_protocol) {
    auto index = protocol_index(session_protocol);
    return index ? protocol_table[*index].bit : 0;
}

std::optional<std::string> first_match(const std::vector<std::string>& presented,
                                       const std::vector<std::string>& patterns) {
    for (const auto& pattern : patterns) {
        if (name_matches(presented, pattern)) {
            return pattern;
        }
    }
    return std::nullopt;
}

// Expands Postfix's match keywords for one destination.
std::vector<std::string> expand_match(const std::vector<std::string>& patterns, const Destination& destination) {
    std::vector<std::string> names;
    for (const auto& pattern : patterns) {
        std::string item = lower(pattern);
        if (item == "hostname") {
            names.push_back(destination.host);
        } else if (item == "nexthop") {
            names.push_back(destination.nexthop);
        } else if (item == "dot-nexthop") {
            names.push_back("." + destination.nexthop);
        } else {
            names.push_back(strip_dot(item));
        }
    }
    return names;
}

HostPlan skip_host(HostPlan plan, std::string reason) {
    plan.action = Action::next_host;
    plan.reason = std::move(reason);
    return plan;
}

// Applies RFC 7672 section 2.2 to the DNS facts. Usable TLSA records make
// TLS mandatory and authenticated by them, and unusable ones make it
// mandatory and unauthenticated. Anything short of a secure TLSA RRset
// makes dane fall back to may, and dane-only give up the host.
HostPlan plan_dane(HostPlan plan, const Policy& policy, const Destination& destination, const DnsFacts& dns,
                   const Settings& settings) {
    const bool dane_only = policy.level == Level::dane_only;
    auto fall_back = [&](const std::string& why) {
        if (dane_only) {
            return skip_host(plan, why + ", and the policy is dane-only");
        }
        HostPlan fallback = plan;
        fallback.effective = Level::may;
        fallback.note = why + ": using level may";
        return fallback;
    };

    if (!dns.mx_secure && !settings.dane_insecure_mx) {
        return fall_back("the MX records of " + destination.nexthop + " are not DNSSEC-signed");
    }
    if (!dns.host_secure) {
        // RFC 7672 section 2.2.2: TLSA records are used only for hosts whose
        // address records are secure.
        return fall_back("the address records of " + destination.host + " are not DNSSEC-signed");
    }

    switch (dns.tlsa) {
    case TlsaLookup::not_done:
        return fall_back("no TLSA lookup was made for " + destination.host);
    case TlsaLookup::failed:
        // RFC 7672 section 2.2.1: a failed lookup must not become a downgrade.
        return skip_host(plan, "TLSA lookup failed for " + dns.tlsa_name + ": " + dns.tlsa_failure);
    case TlsaLookup::none:
        return fall_back("no TLSA records for " + dns.tlsa_name);
    case TlsaLookup::insecure:
        return fall_back("the TLSA records for " + dns.tlsa_name + " are not DNSSEC-signed");
    case TlsaLookup::found:
        break;
    }

    for (const auto& record : dns.tlsa_records) {
        if (tls::is_usable(record)) {
            plan.tlsa_records.push_back(record);
        }
    }
    plan.tls_required = true;
    if (plan.tlsa_records.empty()) {
        if (dane_only) {
            return skip_host(plan, "every TLSA record for " + dns.tlsa_name +
                                       " is unusable, and the policy is dane-only");
        }
        // RFC 7672 section 2.2: TLS stays mandatory, without authentication.
        plan.effective = Level::encrypt;
        plan.note = "every TLSA record for " + dns.tlsa_name + " is unusable: using level encrypt";
        return plan;
    }

    plan.effective = Level::dane;
    const std::string base = dns.tlsa_base_name.empty() ? destination.host : dns.tlsa_base_name;
    // RFC 7672 section 8.1: SNI carries the TLSA base domain.
    plan.sni = base;
    // RFC 7672 section 3.2.2: a DANE-TA certificate must name the TLSA base
    // domain or the MX host name. The next-hop domain and explicit match
    // names are accepted too.
    plan.reference_names = {base};
    for (const auto& name : {destination.host, destination.nexthop}) {
        if (std::find(plan.reference_names.begin(), plan.reference_names.end(), name) == plan.reference_names.end()) {
            plan.reference_names.push_back(name);
        }
    }
    for (const auto& name : expand_match(policy.match, destination)) {
        if (!name.empty() && name.front() != '.' &&
            std::find(plan.reference_names.begin(), plan.reference_names.end(), name) == plan.reference_names.end()) {
            plan.reference_names.push_back(name);
        }
    }
    return plan;
}

// The trust a session reached whatever the level demanded: verified means
// a trusted chain whose leaf matches one of `names`.
Trust classify(const TlsFacts& facts, const std::vector<std::string>& names) {
    if (!facts.certificate_present) {
        return Trust::anonymous;
    }
    if (!facts.chain_trusted) {
        return Trust::untrusted;
    }
    return first_match(facts.peer_names, names) ? Trust::verified : Trust::trusted;
}

std::string describe_names(const std::vector<std::string>& names) {
    if (names.empty()) {
        return "certificate has no DNS names";
    }
    return (names.size() == 1 ? "certificate name " : "certificate names ") + join(names);
}

Verdict refuse(Verdict verdict, std::string dsn, std::string reason) {
    verdict.action = Action::next_host;
    verdict.dsn = std::move(dsn);
    verdict.reason = std::move(reason);
    return verdict;
}

// Judges an established session under the plan's effective level.
Verdict judge_established(const HostPlan& plan, const TlsFacts& facts, std::string_view host) {
    Verdict verdict;
    std::vector<std::string> names = plan.reference_names;
    if (names.empty()) {
        names.push_back(std::string(host));
    }
    verdict.trust = classify(facts, names);
    if (auto matched = first_match(facts.peer_names, names); matched && facts.chain_trusted) {
        verdict.how = "CA verified, name matched " + *matched;
    } else if (facts.chain_trusted) {
        verdict.how = "CA verified, " + describe_names(facts.peer_names) + " does not match " + join(names);
    } else if (facts.certificate_present) {
        verdict.how = "certificate not verified: " + facts.verify_error;
    } else {
        verdict.how = "server sent no certificate";
    }

    unsigned bit = protocol_bit(facts.protocol);
    if ((bit & plan.protocols) == 0) {
        std::string reason = "TLS protocol " + facts.protocol + " is excluded by protocols=" + plan.protocols_text;
        if (!plan.tls_required) {
            verdict.action = Action::deliver_in_clear;
            verdict.reason = reason;
            return verdict;
        }
        return refuse(verdict, "4.7.5", reason);
    }

    switch (plan.effective) {
    case Level::none:
    case Level::may:
    case Level::encrypt:
        return verdict;

    case Level::fingerprint: {
        if (!facts.certificate_present) {
            return refuse(verdict, "4.7.5", "server certificate not verified: the server sent no certificate");
        }
        const auto& list = plan.fingerprints;
        auto listed = [&](const std::string& digest) {
            return !digest.empty() && std::find(list.begin(), list.end(), digest) != list.end();
        };
        if (listed(facts.digests.certificate_sha256)) {
            verdict.trust = Trust::verified;
            verdict.how = "certificate SHA-256 fingerprint matched";
            return verdict;
        }
        if (listed(facts.digests.public_key_sha256)) {
            verdict.trust = Trust::verified;
            verdict.how = "public key SHA-256 fingerprint matched";
            return verdict;
        }
        return refuse(verdict, "4.7.5",
                      "server certificate not verified: certificate fingerprint " + facts.digests.certificate_sha256 +
                          " and public key fingerprint " + facts.digests.public_key_sha256 +
                          " match none of the configured fingerprints");
    }

    case Level::verify:
    case Level::secure:
        if (!facts.certificate_present) {
            return refuse(verdict, "4.7.5", "server certificate not verified: the server sent no certificate");
        }
        if (!facts.chain_trusted) {
            return refuse(verdict, "4.7.5", "server certificate not trusted: " + facts.verify_error);
        }
        if (verdict.trust != Trust::verified) {
            return refuse(verdict, "4.7.5", describe_names(facts.peer_names) + " does not match " + join(names));
        }
        return verdict;

    case Level::dane:
    case Level::dane_only:
        // RFC 7672 section 3.1: under DANE the TLSA records alone decide,
        // so a chain the CA store trusts proves nothing here.
        verdict.trust = facts.certificate_present ? Trust::untrusted : Trust::anonymous;
        verdict.how = facts.certificate_present ? "not authenticated by the TLSA records" : "server sent no certificate";
        if (!facts.dane) {
            return refuse(verdict, "4.7.5", "DANE authentication of " + std::string(host) + " was not performed");
        }
        if (!facts.dane->matched) {
            return refuse(verdict, "4.7.5", "DANE authentication failed for " + std::string(host) + ": " +
                                                facts.dane->reason);
        }
        verdict.trust = Trust::verified;
        verdict.how = facts.dane->how;
        return verdict;
    }
    return verdict;
}

}  // namespace

bool name_matches(const std::vector<std::string>& presented, const std::string& pattern) {
    if (pattern.empty() || pattern.front() != '.') {
        return tls::match_hostname(presented, pattern);
    }
    std::string suffix = lower(strip_dot(pattern));
    for (const auto& candidate : presented) {
        std::string name = lower(strip_dot(candidate));
        // A wildcard stands for one label, so "*.mail.example.com" is a
        // subdomain of example.com, and "*.example.com" is too.
        if (name.starts_with("*.")) {
            name = "x" + name.substr(1);
        }
        if (name.find('*') != std::string::npos) {
            continue;
        }
        if (name.size() > suffix.size() && name.ends_with(suffix)) {
            return true;
        }
    }
    return false;
}

std::optional<Level> parse_level(std::string_view text) {
    for (const auto& entry : level_table) {
        if (text == entry.name) {
            return entry.level;
        }
    }
    return std::nullopt;
}

const char* to_string(Level level) {
    for (const auto& entry : level_table) {
        if (entry.level == level) {
            return entry.name;
        }
    }
    return "?";
}

const char* level_names() { return "none, may, encrypt, fingerprint, verify, secure, dane, dane-only"; }

const char* to_string(Trust trust) {
    switch (trust) {
    case Trust::none: return "none";
    case Trust::anonymous: return "anonymous";
    case Trust::untrusted: return "untrusted";
    case Trust::trusted: return "trusted";
    case Trust::verified: return "verified";
    }
    return "?";
}

const char* to_string(Action action) {
    switch (action) {
    case Action::deliver: return "deliver";
    case Action::deliver_in_clear: return "deliver in clear";
    case Action::next_host: return "next host";
    }
    return "?";
}

std::optional<unsigned> parse_protocols(std::string_view text, std::string& error) {
    unsigned included = 0;
    unsigned excluded = 0;
    unsigned lowest = 0;
    unsigned highest = protocol_table.size() - 1;
    bool any = false;

    std::size_t position = 0;
    while (position < text.size()) {
        std::size_t end = text.find_first_of(":, \t", position);
        if (end == std::string_view::npos) {
            end = text.size();
        }
        std::string_view item = text.substr(position, end - position);
        position = end + 1;
        if (item.empty()) {
            continue;
        }
        any = true;

        std::string_view name = item;
        enum { include, exclude, at_least, at_most } kind = include;
        if (item.starts_with("!")) {
            kind = exclude;
            name = item.substr(1);
        } else if (item.starts_with(">=")) {
            kind = at_least;
            name = item.substr(2);
        } else if (item.starts_with("<=")) {
            kind = at_most;
            name = item.substr(2);
        }
        auto index = protocol_index(name);
        if (!index) {
            error = "unknown TLS protocol \"" + std::string(item) +
                    "\": expected SSLv2, SSLv3, TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3, optionally after !, >= or <=";
            return std::nullopt;
        }
        switch (kind) {
        case include: included |= protocol_table[*index].bit; break;
        case exclude: excluded |= protocol_table[*index].bit; break;
        case at_least: lowest = std::max<unsigned>(lowest, static_cast<unsigned>(*index)); break;
        case at_most: highest = std::min<unsigned>(highest, static_cast<unsigned>(*index)); break;
        }
    }

    unsigned allowed = included != 0 ? included : all_protocols;
    allowed &= ~excluded;
    for (std::size_t i = 0; i < protocol_table.size(); ++i) {
        if (i < lowest || i > highest) {
            allowed &= ~protocol_table[i].bit;
        }
    }
    if (!any) {
        return all_protocols;
    }
    // tlsrelay speaks only TLS 1.2 and 1.3 (RFC 8996 deprecates the older
    // versions), so a list without either leaves no usable protocol.
    if ((allowed & (tls_v1_2 | tls_v1_3)) == 0) {
        error = "protocols \"" + std::string(text) + "\" leave neither TLSv1.2 nor TLSv1.3, the only versions tlsrelay uses";
        return std::nullopt;
    }
    return allowed;
}

std::optional<std::string> normalize_fingerprint(std::string_view text) {
    std::vector<unsigned char> bytes;
    int pending = -1;
    for (char c : text) {
        if (c == ':') {
            if (pending >= 0) {
                return std::nullopt;
            }
            continue;
        }
        int value = -1;
        if (c >= '0' && c <= '9') value = c - '0';
        else if (c >= 'a' && c <= 'f') value = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') value = c - 'A' + 10;
        if (value < 0) {
            return std::nullopt;
        }
        if (pending < 0) {
            pending = value;
        } else {
            bytes.push_back(static_cast<unsigned char>(pending * 16 + value));
            pending = -1;
        }
    }
    if (pending >= 0 || bytes.size() != 32) {
        return std::nullopt;
    }
    return tls::hex_fingerprint(bytes);
}

bool needs_tlsa(const Policy& policy, const DnsFacts& dns, const Settings& settings) {
    if (policy.level != Level::dane && policy.level != Level::dane_only) {
        return false;
    }
    if (!dns.mx_secure && !settings.dane_insecure_mx) {
        return false;
    }
    return dns.host_secure;
}

HostPlan plan_host(const Policy& policy, const Destination& destination, const DnsFacts& dns,
                   const Settings& settings) {
    HostPlan plan;
    plan.effective = policy.level;
    plan.sni = destination.host;
    plan.protocols = policy.protocols;
    plan.protocols_text = policy.protocols_text;

    switch (policy.level) {
    case Level::none:
        plan.try_tls = false;
        return plan;
    case Level::may:
        return plan;
    case Level::encrypt:
        plan.tls_required = true;
        return plan;
    case Level::fingerprint:
        plan.tls_required = true;
        plan.fingerprints = policy.fingerprints;
        if (plan.fingerprints.empty()) {
            return skip_host(plan, "level fingerprint for " + destination.nexthop + " lists no fingerprints");
        }
        return plan;
    case Level::verify:
        plan.tls_required = true;
        // Postfix's default match for verify is the MX host name, even one
        // from insecure DNS.
        plan.reference_names =
            expand_match(policy.match.empty() ? std::vector<std::string>{"hostname"} : policy.match, destination);
        return plan;
    case Level::secure:
        plan.tls_required = true;
        // The default names come from the next-hop domain only, so forged
        // MX records cannot redirect mail to a host with a valid certificate.
        plan.reference_names = expand_match(
            policy.match.empty() ? std::vector<std::string>{"nexthop", "dot-nexthop"} : policy.match, destination);
        return plan;
    case Level::dane:
    case Level::dane_only:
        return plan_dane(plan, policy, destination, dns, settings);
    }
    return plan;
}

Verdict judge(const HostPlan& plan, const TlsFacts& facts, std::string_view host) {
    Verdict verdict;
    switch (facts.stage) {
    case TlsStage::not_tried:
        if (plan.tls_required) {
            return refuse(verdict, "4.7.4", "TLS is required, but was not tried with host " + std::string(host));
        }
        return verdict;
    case TlsStage::not_offered:
        if (plan.tls_required) {
            return refuse(verdict, "4.7.4", "TLS is required, but was not offered by host " + std::string(host));
        }
        return verdict;
    case TlsStage::rejected:
        if (plan.tls_required) {
            return refuse(verdict, "4.7.4",
                          "TLS is required, but host " + std::string(host) + " refused to start TLS: " + facts.failure);
        }
        // RFC 3207 section 4: the session goes on in plaintext.
        return verdict;
    case TlsStage::handshake_failed:
        if (plan.tls_required) {
            return refuse(verdict, "4.7.5", "TLS handshake with " + std::string(host) + " failed: " + facts.failure);
        }
        // At level may, TLS trouble never stops delivery: reconnect in clear.
        verdict.action = Action::deliver_in_clear;
        verdict.reason = "TLS handshake with " + std::string(host) + " failed: " + facts.failure;
        return verdict;
    case TlsStage::established:
        return judge_established(plan, facts, host);
    }
    return verdict;
}

}  // namespace tlsrelay::policy
