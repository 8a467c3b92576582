// The findings of `tlsrelay check` about one destination. The probe in
// check.cpp fills them, and check_report.cpp prints them as text or JSON.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <asio/ip/address.hpp>

#include "tlsrelay/dns/resolver.hpp"
#include "tlsrelay/policy/policy.hpp"
#include "tlsrelay/tls/dane.hpp"
#include "tlsrelay/tls/inspect.hpp"
#include "tlsrelay/tls/stream.hpp"

namespace tlsrelay::cli::check_report {

struct PolicyReport {
    policy::Level level = policy::Level::may;
    // "/etc/tlsrelay/tlsrelay.toml:12 [[smtp.tls_policy]] #2",
    // "/etc/postfix/tls_policy:3", or the global default's description.
    std::string origin;
    // Set when --level replaced the configured level.
    std::optional<policy::Level> configured_level;
    std::string lookup_key;  // the next hop looked up in the policy table
};

struct NextHopReport {
    std::string host;    // the recipient domain, or the relayhost or transport host
    std::string source;  // "MX lookup", "transport", "sender relayhost", "relayhost", "address literal"
    bool mx_lookup = true;
    std::uint16_t port = 25;
};

// The MX lookup result, as delivery's routing reads it.
struct MxReport {
    // "ok", "implicit" (no MX records: the domain is its own host, RFC 5321
    // section 5.1), "null" (RFC 7505), "nxdomain", "failed", or "not looked
    // up" (a relayhost in brackets or an address literal).
    std::string status = "not looked up";
    bool secure = false;
    std::vector<dns::MxRecord> records;
    std::string reason;  // for "failed": the resolver's reason
};

struct TlsaReport {
    policy::DnsFacts facts;  // as the policy got them, or looked up for display only
    // True when the policy looked the records up and planned with them. False
    // when the level does not use TLSA, so they were looked up only to be shown.
    bool used = false;
};

struct CertificateReport {
    std::optional<tls::CertificateDetails> details;
    std::string error;  // when the certificate cannot be parsed
};

// One connection to one address of a host.
struct ProbeReport {
    std::string host;
    asio::ip::address address;
    std::uint16_t port = 25;
    bool connected = false;
    // Unknown when the session failed before the EHLO reply or runs
    // implicit TLS.
    std::optional<bool> starttls_offered;
    // The keywords of the last EHLO reply, which came over TLS when a
    // session was set up and in plaintext otherwise. Empty when the TLS
    // verdict ended the session before its second EHLO.
    std::vector<std::string> extensions;
    std::optional<tls::SessionInfo> session;
    std::vector<CertificateReport> chain;  // leaf first
    std::vector<std::string> reference_names;
    std::optional<std::string> matched_name;  // the reference name the leaf matched
    std::optional<tls::DaneMatch> dane;       // set when the plan carried usable TLSA records
    policy::Trust trust = policy::Trust::none;
    std::string trust_how;
    // deliver; deliver in clear (the TLS attempt failed, and level may
    // allows a plaintext retry, which follows as its own probe); or next host.
    policy::Action action = policy::Action::next_host;
    std::string dsn;
    std::string reason;
    // True for the connection without STARTTLS that follows a TLS attempt
    // whose verdict was "deliver in clear".
    bool plaintext_retry = false;
};

struct HostReport {
    std::string name;
    std::optional<std::uint16_t> preference;  // unset for an implicit MX or a relayhost
    bool secure = false;  // address records DNSSEC-secure
    std::string canonical_name;
    std::vector<asio::ip::address> addresses;
    TlsaReport tlsa;
    policy::HostPlan plan;
    // One per address, plus the plaintext retries; empty when the plan
    // skipped the host.
    std::vector<ProbeReport> probes;
};

// The overall verdict, as delivery would log it.
struct VerdictReport {
    bool deliver = false;
    std::string status = "deferred";  // "sent" (would be sent), "deferred" or "bounced"
    policy::Trust trust = policy::Trust::none;
    std::string relay = "none";  // host[address]:port, as delivery logs relay=
    std::string dsn;
    std::string reason;
};

struct Report {
    std::string domain;
    NextHopReport next_hop;
    PolicyReport policy;
    MxReport mx;
    std::vector<HostReport> hosts;
    VerdictReport verdict;
};

// Prints the report for people: one section per step.
void print_text(const Report& report);
// Prints the report as one JSON object.
void print_json(const Report& report);

}  // namespace tlsrelay::cli::check_report
