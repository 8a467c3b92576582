// Output of `tlsrelay check`: a report with one section per step for people,
// and one JSON object for scripts.
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include "check.hpp"
#include "tlsrelay/util/address.hpp"
#include "tlsrelay/util/json.hpp"

namespace tlsrelay::cli::check_report {
namespace {

std::string iso_time(std::chrono::system_clock::time_point time) {
    std::time_t seconds = std::chrono::system_clock::to_time_t(time);
    std::tm utc{};
    ::gmtime_r(&seconds, &utc);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
    return text;
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

const char* tlsa_status(policy::TlsaLookup lookup) {
    switch (lookup) {
    case policy::TlsaLookup::not_done: return "not looked up";
    case policy::TlsaLookup::found: return "found";
    case policy::TlsaLookup::none: return "none";
    case policy::TlsaLookup::insecure: return "insecure";
    case policy::TlsaLookup::failed: return "failed";
    }
    return "?";
}

std::string tlsa_text(const tls::TlsaRecord& record) {
    return tls::describe_parameters(record) + " " + tls::hex_string(record.data);
}

bool any_usable(const std::vector<tls::TlsaRecord>& records) {
    for (const auto& record : records) {
        if (tls::is_usable(record)) {
            return true;
        }
    }
    return false;
}

const char* secure_word(bool secure) { return secure ? "secure" : "insecure"; }

// ----------------------------------------------------------------------------
// Text

std::string describe_tlsa_lookup(const TlsaReport& tlsa) {
    const auto& facts = tlsa.facts;
    switch (facts.tlsa) {
    case policy::TlsaLookup::not_done: return "not looked up: the address records are not DNSSEC-signed";
    case policy::TlsaLookup::found: return "found (DNSSEC: secure)";
    case policy::TlsaLookup::none: return "none (DNSSEC: secure proof of non-existence)";
    case policy::TlsaLookup::insecure: return "not DNSSEC-signed, treated as none";
    case policy::TlsaLookup::failed: return "lookup failed: " + facts.tlsa_failure;
    }
    return "?";
}

void print_host_dns(const HostReport& host) {
    std::string heading = "Host " + host.name;
    if (host.preference) {
        heading += " (MX preference " + std::to_string(*host.preference) + ")";
    }
    std::printf("\n%s\n", heading.c_str());
    if (!host.canonical_name.empty() && host.canonical_name != host.name) {
        std::printf("  canonical name: %s\n", host.canonical_name.c_str());
    }
    std::vector<std::string> addresses;
    for (const auto& address : host.addresses) {
        addresses.push_back(address.to_string());
    }
    std::printf("  addresses:  %s (DNSSEC: %s)\n", join(addresses).c_str(), secure_word(host.secure));

    const auto& tlsa = host.tlsa;
    std::string name = tlsa.facts.tlsa_name.empty() ? "TLSA" : "TLSA " + tlsa.facts.tlsa_name;
    std::printf("  %s: %s%s\n", name.c_str(), describe_tlsa_lookup(tlsa).c_str(),
                tlsa.used ? "" : " (shown only: the level does not use TLSA)");
    for (const auto& record : tlsa.facts.tlsa_records) {
        std::printf("    %s  %s\n", tlsa_text(record).c_str(),
                    tls::is_usable(record) ? "usable" : "unusable for SMTP (RFC 7672 section 3.1)");
    }

    const auto& plan = host.plan;
    std::string plan_text = std::string("level ") + policy::to_string(plan.effective);
    if (plan.tls_required) {
        plan_text += ", TLS required";
    } else if (plan.try_tls) {
        plan_text += ", TLS optional";
    } else {
        plan_text += ", no TLS";
    }
    if (plan.try_tls) {
        plan_text += ", SNI " + plan.sni;
    }
    std::printf("  plan:       %s\n", plan_text.c_str());
    if (!plan.note.empty()) {
        std::printf("  note:       %s\n", plan.note.c_str());
    }
    if (plan.action == policy::Action::next_host) {
        std::printf("  skipped:    %s\n", plan.reason.c_str());
    }
}

void print_certificate(std::size_t depth, const CertificateReport& certificate) {
    if (!certificate.details) {
        std::printf("    certificate %zu: cannot be parsed: %s\n", depth, certificate.error.c_str());
        return;
    }
    const auto& details = *certificate.details;
    std::printf("    certificate %zu:\n", depth);
    std::printf("      subject:      %s\n", details.subject.c_str());
    std::printf("      issuer:       %s\n", details.issuer.c_str());
    std::printf("      DNS names:    %s\n", details.dns_names.empty() ? "(none)" : join(details.dns_names).c_str());
    std::printf("      valid:        %s to %s\n", iso_time(details.not_before).c_str(),
                iso_time(details.not_after).c_str());
    std::printf("      SPKI SHA-256: %s\n", details.spki_sha256_hex.c_str());
}

// Returns the JSON form of a probe's verdict. A rejected host gets the
// text report's word "rejected", not the policy's action name "next host".
const char* json_verdict(policy::Action action) {
    return action == policy::Action::next_host ? "rejected" : policy::to_string(action);
}

const char* action_text(const ProbeReport& probe) {
    switch (probe.action) {
    case policy::Action::deliver: return "would deliver";
    case policy::Action::deliver_in_clear: return "TLS failed, level may retries in plaintext";
    case policy::Action::next_host: return "rejected";
    }
    return "?";
}

void print_probe(const ProbeReport& probe) {
    std::printf("\n  %s%s\n", format_peer(probe.host, probe.address, probe.port).c_str(),
                probe.plaintext_retry ? ", plaintext retry" : "");
    if (!probe.connected) {
        std::printf("    connection:    failed\n");
    }
    if (probe.starttls_offered) {
        std::printf("    STARTTLS:      %s\n", *probe.starttls_offered ? "offered" : "not offered");
    }
    if (probe.session) {
        const auto& session = *probe.session;
        std::printf("    TLS:           %s with cipher %s\n", session.protocol.c_str(), session.cipher.c_str());
        for (std::size_t depth = 0; depth < probe.chain.size(); ++depth) {
            print_certificate(depth, probe.chain[depth]);
        }
        std::printf("    CA validation: %s\n",
                    session.chain_trusted ? "trusted" : ("not trusted: " + session.verify_error).c_str());
        std::string names = join(probe.reference_names);
        if (probe.matched_name) {
            std::printf("    name match:    %s matched (reference names: %s)\n", probe.matched_name->c_str(),
                        names.c_str());
        } else {
            std::printf("    name match:    none of %s\n", names.c_str());
        }
        if (probe.dane) {
            std::printf("    DANE match:    %s\n",
                        probe.dane->matched ? probe.dane->how.c_str() : ("failed: " + probe.dane->reason).c_str());
        }
    } else if (probe.connected && !probe.plaintext_retry) {
        std::printf("    TLS:           none\n");
    }
    std::string verdict = std::string(action_text(probe)) + ", TLS trust " + policy::to_string(probe.trust);
    if (!probe.trust_how.empty()) {
        verdict += " (" + probe.trust_how + ")";
    }
    std::printf("    verdict:       %s\n", verdict.c_str());
    if (!probe.reason.empty()) {
        std::printf("    reason:        %s%s\n", probe.dsn.empty() ? "" : (probe.dsn + " ").c_str(),
                    probe.reason.c_str());
    }
}

void print_mx(const Report& report) {
    const auto& mx = report.mx;
    std::printf("\nMX records of %s: ", report.next_hop.host.c_str());
    if (mx.status == "not looked up") {
        std::printf("not looked up (the next hop is used as it is)\n");
        return;
    }
    if (mx.status == "failed") {
        std::printf("lookup failed: %s\n", mx.reason.c_str());
        return;
    }
    if (mx.status == "nxdomain") {
        std::printf("the domain does not exist (DNSSEC: %s)\n", secure_word(mx.secure));
        return;
    }
    if (mx.status == "implicit") {
        std::printf("none, so the domain is its own mail host (DNSSEC: %s)\n", secure_word(mx.secure));
        return;
    }
    if (mx.status == "null") {
        std::printf("null MX: the domain accepts no mail (DNSSEC: %s)\n", secure_word(mx.secure));
        return;
    }
    std::printf("DNSSEC %s\n", secure_word(mx.secure));
    for (const auto& record : mx.records) {
        std::printf("  %u %s\n", static_cast<unsigned>(record.preference),
                    record.exchange.empty() ? "." : record.exchange.c_str());
    }
}

// ----------------------------------------------------------------------------
// JSON

class JsonObject {
public:
    explicit JsonObject(std::string& out) : out_(out) { out_ += '{'; }
    ~JsonObject() { out_ += '}'; }
    JsonObject(const JsonObject&) = delete;
    JsonObject& operator=(const JsonObject&) = delete;

    std::string& key(std::string_view name) {
        if (!first_) {
            out_ += ',';
        }
        first_ = false;
        json::append_string(out_, name);
        out_ += ':';
        return out_;
    }
    void string(std::string_view name, std::string_view value) { json::append_string(key(name), value); }
    void boolean(std::string_view name, bool value) { key(name) += value ? "true" : "false"; }
    void number(std::string_view name, long long value) { key(name) += std::to_string(value); }
    void null(std::string_view name) { key(name) += "null"; }
    void optional_boolean(std::string_view name, const std::optional<bool>& value) {
        if (value) {
            boolean(name, *value);
        } else {
            null(name);
        }
    }
    void strings(std::string_view name, const std::vector<std::string>& values) {
        auto& out = key(name);
        out += '[';
        for (std::size_t i = 0; i < values.size(); ++i) {
            if (i > 0) {
                out += ',';
            }
            json::append_string(out, values[i]);
        }
        out += ']';
    }

private:
    std::string& out_;
    bool first_ = true;
};

void append_tlsa(std::string& out, const TlsaReport& tlsa) {
    JsonObject object(out);
    object.string("status", tlsa_status(tlsa.facts.tlsa));
    object.string("name", tlsa.facts.tlsa_name);
    object.boolean("used", tlsa.used);
    if (tlsa.facts.tlsa == policy::TlsaLookup::failed) {
        object.string("failure", tlsa.facts.tlsa_failure);
    }
    auto& records = object.key("records");
    records += '[';
    for (std::size_t i = 0; i < tlsa.facts.tlsa_records.size(); ++i) {
        const auto& record = tlsa.facts.tlsa_records[i];
        if (i > 0) {
            records += ',';
        }
        JsonObject entry(records);
        entry.number("usage", record.usage);
        entry.number("selector", record.selector);
        entry.number("matching_type", record.matching_type);
        entry.string("data", tls::hex_string(record.data));
        entry.boolean("usable", tls::is_usable(record));
    }
    records += ']';
    object.boolean("usable", any_usable(tlsa.facts.tlsa_records));
}

void append_host(std::string& out, const HostReport& host) {
    JsonObject object(out);
    object.string("name", host.name);
    if (host.preference) {
        object.number("preference", *host.preference);
    } else {
        object.null("preference");
    }
    object.boolean("secure", host.secure);
    object.string("canonical_name", host.canonical_name);
    std::vector<std::string> addresses;
    for (const auto& address : host.addresses) {
        addresses.push_back(address.to_string());
    }
    object.strings("addresses", addresses);
    append_tlsa(object.key("tlsa"), host.tlsa);

    JsonObject plan(object.key("plan"));
    plan.string("level", policy::to_string(host.plan.effective));
    plan.string("action", policy::to_string(host.plan.action));
    plan.boolean("tls_required", host.plan.tls_required);
    plan.string("sni", host.plan.sni);
    plan.strings("reference_names", host.plan.reference_names);
    plan.string("note", host.plan.note);
    plan.string("reason", host.plan.reason);
}

void append_certificate(std::string& out, const CertificateReport& certificate) {
    JsonObject object(out);
    if (!certificate.details) {
        object.string("error", certificate.error);
        return;
    }
    const auto& details = *certificate.details;
    object.string("subject", details.subject);
    object.string("issuer", details.issuer);
    object.strings("dns_names", details.dns_names);
    object.string("not_before", iso_time(details.not_before));
    object.string("not_after", iso_time(details.not_after));
    object.string("spki_sha256", details.spki_sha256_hex);
}

void append_probe(std::string& out, const ProbeReport& probe) {
    JsonObject object(out);
    object.string("host", probe.host);
    object.string("address", probe.address.to_string());
    object.number("port", probe.port);
    object.boolean("plaintext_retry", probe.plaintext_retry);
    object.boolean("connected", probe.connected);
    object.optional_boolean("starttls_offered", probe.starttls_offered);
    object.strings("extensions", probe.extensions);

    if (probe.session) {
        object.string("protocol", probe.session->protocol);
        object.string("cipher", probe.session->cipher);
        object.string("server_name", probe.session->server_name);
        auto& chain = object.key("chain");
        chain += '[';
        for (std::size_t i = 0; i < probe.chain.size(); ++i) {
            if (i > 0) {
                chain += ',';
            }
            append_certificate(chain, probe.chain[i]);
        }
        chain += ']';
        object.boolean("ca_valid", probe.session->chain_trusted);
        object.string("verify_error", probe.session->verify_error);
        object.boolean("name_match", probe.matched_name.has_value());
        object.string("matched_name", probe.matched_name.value_or(""));
        object.strings("reference_names", probe.reference_names);
    } else {
        for (const char* name : {"protocol", "cipher", "ca_valid", "verify_error", "name_match"}) {
            object.null(name);
        }
        object.strings("chain", {});
    }

    if (probe.dane) {
        JsonObject dane(object.key("dane_match"));
        dane.boolean("matched", probe.dane->matched);
        dane.string("how", probe.dane->how);
        dane.string("reason", probe.dane->reason);
    } else {
        object.null("dane_match");
    }

    object.string("trust", policy::to_string(probe.trust));
    object.string("trust_how", probe.trust_how);
    object.string("verdict", json_verdict(probe.action));
    object.string("dsn", probe.dsn);
    object.string("reason", probe.reason);
}

}  // namespace

void print_text(const Report& report) {
    std::printf("tlsrelay check %s\n", report.domain.c_str());

    std::printf("\nPolicy\n");
    std::printf("  level:  %s", policy::to_string(report.policy.level));
    if (report.policy.configured_level) {
        std::printf(" (from --level; the configuration says %s)", policy::to_string(*report.policy.configured_level));
    }
    std::printf("\n  origin: %s\n", report.policy.origin.c_str());
    if (!report.policy.lookup_key.empty()) {
        std::printf("  key:    %s\n", report.policy.lookup_key.c_str());
    }

    if (!report.next_hop.host.empty()) {
        std::printf("\nNext hop: %s port %u (%s)\n", report.next_hop.host.c_str(),
                    static_cast<unsigned>(report.next_hop.port), report.next_hop.source.c_str());
        print_mx(report);
    }

    for (const auto& host : report.hosts) {
        print_host_dns(host);
        for (const auto& probe : host.probes) {
            print_probe(probe);
        }
    }

    const auto& verdict = report.verdict;
    std::printf("\nVerdict: ");
    if (verdict.deliver) {
        std::printf("mail would be sent to %s with TLS trust %s\n", verdict.relay.c_str(),
                    policy::to_string(verdict.trust));
    } else {
        std::printf("mail would be %s: %s %s\n", verdict.status.c_str(), verdict.dsn.c_str(), verdict.reason.c_str());
    }
}

void print_json(const Report& report) {
    std::string out;
    {
        JsonObject object(out);
        object.string("domain", report.domain);
        {
            JsonObject hop(object.key("next_hop"));
            hop.string("host", report.next_hop.host);
            hop.string("source", report.next_hop.source);
            hop.boolean("mx_lookup", report.next_hop.mx_lookup);
            hop.number("port", report.next_hop.port);
        }
        {
            JsonObject policy_object(object.key("policy"));
            policy_object.string("level", policy::to_string(report.policy.level));
            policy_object.string("origin", report.policy.origin);
            policy_object.string("key", report.policy.lookup_key);
            if (report.policy.configured_level) {
                policy_object.string("configured_level", policy::to_string(*report.policy.configured_level));
            } else {
                policy_object.null("configured_level");
            }
        }
        {
            JsonObject mx(object.key("mx"));
            mx.string("status", report.mx.status);
            mx.boolean("secure", report.mx.secure);
            mx.string("reason", report.mx.reason);
            auto& records = mx.key("records");
            records += '[';
            for (std::size_t i = 0; i < report.mx.records.size(); ++i) {
                if (i > 0) {
                    records += ',';
                }
                JsonObject record(records);
                record.number("preference", report.mx.records[i].preference);
                record.string("exchange", report.mx.records[i].exchange);
            }
            records += ']';
            auto& hosts = mx.key("hosts");
            hosts += '[';
            for (std::size_t i = 0; i < report.hosts.size(); ++i) {
                if (i > 0) {
                    hosts += ',';
                }
                append_host(hosts, report.hosts[i]);
            }
            hosts += ']';
        }
        auto& probes = object.key("hosts");
        probes += '[';
        bool first = true;
        for (const auto& host : report.hosts) {
            for (const auto& probe : host.probes) {
                if (!first) {
                    probes += ',';
                }
                first = false;
                append_probe(probes, probe);
            }
        }
        probes += ']';
        {
            JsonObject verdict(object.key("verdict"));
            verdict.boolean("deliver", report.verdict.deliver);
            verdict.string("status", report.verdict.status);
            verdict.string("trust", policy::to_string(report.verdict.trust));
            verdict.string("relay", report.verdict.relay);
            verdict.string("dsn", report.verdict.dsn);
            verdict.string("reason", report.verdict.reason);
        }
    }
    out += '\n';
    std::fputs(out.c_str(), stdout);
}

}  // namespace tlsrelay::cli::check_report
