// Outbound TLS policy: Postfix's security levels and attributes, the plan
// for one MX host given the DNS facts, and the verdict on a session given
// the TLS facts. Pure code: no I/O, so every combination is testable in a
// table.
//
// A delivery to one host runs in two steps:
//   1. plan_host(policy, destination, dns facts) -> HostPlan: connect or
//      skip the host, whether TLS is mandatory, which TLSA records or names
//      authenticate the server, the SNI name.
//   2. judge(plan, tls facts) -> Verdict: deliver at a trust level, deliver
//      in clear, or try the next host, with the reason in admin words.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tlsrelay/tls/dane.hpp"

namespace tlsrelay::policy {

// Postfix's smtp_tls_security_level values.
enum class Level { none, may, encrypt, fingerprint, verify, secure, dane, dane_only };

std::optional<Level> parse_level(std::string_view text);
const char* to_string(Level level);
// "none, may, encrypt, fingerprint, verify, secure, dane, dane-only"
const char* level_names();

// What the peer's TLS proved, in the words Postfix logs use.
enum class Trust { none, anonymous, untrusted, trusted, verified };

const char* to_string(Trust trust);

// TLS protocol versions, as a bit set.
enum Protocol : unsigned {
    tls_v1 = 1,
    tls_v1_1 = 2,
    tls_v1_2 = 4,
    tls_v1_3 = 8,
};
constexpr unsigned all_protocols = tls_v1 | tls_v1_1 | tls_v1_2 | tls_v1_3;

// Parses Postfix's protocol syntax: a list of names separated by colons,
// commas or spaces, each "TLSv1.2" (include), "!TLSv1" (exclude), or a
// bound ">=TLSv1.2" / "<=TLSv1.3". SSLv2 and SSLv3 are accepted as names
// and never used. Returns the allowed set, or nullopt with `error` set.
std::optional<unsigned> parse_protocols(std::string_view text, std::string& error);

// The policy for one destination: a level and Postfix's attributes.
struct Policy {
    Level level = Level::may;
    // verify, secure, dane (for DANE-TA names): the names the certificate
    // must match. Each is "hostname", "nexthop", "dot-nexthop", a domain
    // name, or ".domain" for its subdomains. Empty: the level's default.
    std::vector<std::string> match;
    // fingerprint: SHA-256 digests of accepted certificates or public keys,
    // lower-case hex with colons.
    std::vector<std::string> fingerprints;
    // Allowed protocol versions and the text they came from ("" = default).
    unsigned protocols = all_protocols;
    std::string protocols_text;
    // Postfix cipher grade (export, low, medium, high, null; "" = default).
    std::string ciphers;
};

// Normalises a fingerprint written as hex with or without colons; returns
// nullopt unless it is a 32-byte (SHA-256) digest.
std::optional<std::string> normalize_fingerprint(std::string_view text);

// The destination of one attempt: the next-hop domain (or relayhost name)
// and the MX host being tried.
struct Destination {
    std::string nexthop;  // "example.com", or the relayhost's host name
    std::string host;     // MX host name (or relayhost), lower case
};

// The outcome of the TLSA lookup for one host.
enum class TlsaLookup {
    not_done,        // not looked up (the policy or the DNS facts did not call for it)
    found,           // DNSSEC-secure answer with records
    none,            // DNSSEC-secure proof that no TLSA records exist
    insecure,        // answer without DNSSEC validation: treated as no records
    failed,          // SERVFAIL, bogus, timeout
};

struct DnsFacts {
    // The MX RRset was DNSSEC-secure, or no MX lookup was made (relayhost,
    // or a host named without MX lookup).
    bool mx_secure = false;
    // The host's A/AAAA records were DNSSEC-secure.
    bool host_secure = false;
    TlsaLookup tlsa = TlsaLookup::not_done;
    std::string tlsa_name;       // "_25._tcp.mx.example.com"
    std::string tlsa_base_name;  // "mx.example.com", or the name its CNAME points to
    std::vector<tls::TlsaRecord> tlsa_records;
    std::string tlsa_failure;  // for failed: "SERVFAIL" or the resolver's reason
};

// Policy choices that are global settings, not per destination.
struct Settings {
    // Postfix's smtp_tls_dane_insecure_mx_policy: under dane, a host found
    // through an insecure MX RRset still gets DANE when its own address
    // records and TLSA records are secure (true, Postfix's default since
    // 3.6), or is treated as may (false).
    bool dane_insecure_mx = true;
};

// True when the host's TLSA records must be looked up before connecting:
// the level is dane or dane-only and the host's addresses are DNSSEC-secure
// (RFC 7672 section 2.2).
bool needs_tlsa(const Policy& policy, const DnsFacts& dns, const Settings& settings);

// True when a presented certificate name matches a reference pattern:
// ".example.com" matches any name below example.com, anything else is an
// RFC 6125 host name match. The verify, secure and DANE name checks use it.
bool name_matches(const std::vector<std::string>& presented, const std::string& pattern);

enum class Action {
    deliver,           // go ahead (plan) / the session may carry the mail (verdict)
    deliver_in_clear,  // verdict only: reconnect to the same host without STARTTLS
    next_host,         // this host must not be used; try the next one, else defer
};

const char* to_string(Action action);

struct HostPlan {
    Action action = Action::deliver;
    std::string reason;  // for next_host
    // The level enforced for this host after the DNS facts: dane becomes
    // may (no usable DNSSEC facts), encrypt (only unusable TLSA records), or
    // stays dane (usable records).
    Level effective = Level::may;
    bool tls_required = false;
    bool try_tls = true;  // false at level none
    std::vector<tls::TlsaRecord> tlsa_records;  // usable records, under dane
    std::string sni;  // server name to send; the TLSA base name under DANE
    // Names a CA-signed or DANE-TA certificate must match.
    std::vector<std::string> reference_names;
    std::vector<std::string> fingerprints;
    unsigned protocols = all_protocols;
    std::string protocols_text;
    // Log text on the level change the DNS facts caused; empty when none did.
    std::string note;
};

HostPlan plan_host(const Policy& policy, const Destination& destination, const DnsFacts& dns,
                   const Settings& settings);

// How far STARTTLS got on one connection.
enum class TlsStage {
    not_tried,         // level none, or the plaintext retry at may
    not_offered,       // EHLO reply without STARTTLS
    rejected,          // STARTTLS got a reply other than 220
    handshake_failed,  // the TLS handshake failed
    established,
};

// Facts about one TLS session, gathered by the delivery code.
struct TlsFacts {
    TlsStage stage = TlsStage::not_tried;
    std::string failure;  // for rejected and handshake_failed: the reply or the library's reason
    std::string protocol;  // "TLSv1.3"
    bool certificate_present = false;
    bool chain_trusted = false;  // validated against the CA store
    std::string verify_error;
    std::vector<std::string> peer_names;  // leaf dNSNames, or CN when there are none
    tls::CertificateDigests digests;      // of the leaf
    std::optional<tls::DaneMatch> dane;   // set when the plan carried TLSA records
};

struct Verdict {
    Action action = Action::deliver;
    Trust trust = Trust::none;
    // Explanation of the trust, e.g. "CA verified, name matched
    // mx.example.com" or "DANE TLSA 3 1 1 matched the leaf certificate".
    std::string how;
    std::string reason;  // why the session is not acceptable; empty when it is
    std::string dsn;     // enhanced status code for next_host, e.g. "4.7.5"
};

Verdict judge(const HostPlan& plan, const TlsFacts& facts, std::string_view host);

}  // namespace tlsrelay::policy
