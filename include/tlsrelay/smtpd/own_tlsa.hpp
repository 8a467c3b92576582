// TLSA records (RFC 6698, RFC 7672) for this relay's own certificate: the
// records to publish (`tlsrelay tlsa`), and the check after start and
// reload that the published ones match the certificate the relay serves.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <asio/any_io_executor.hpp>

#include "tlsrelay/tls/dane.hpp"

namespace tlsrelay::config {
struct Config;
}
namespace tlsrelay::dns {
class Resolver;
}

namespace tlsrelay::smtpd {

// Returns the owner name in absolute zone-file form,
// "_25._tcp.mail.example.org.", with an IDN host converted to A-labels.
// Throws std::invalid_argument naming the host when it is not a valid
// domain name.
std::string absolute_tlsa_owner(std::string_view host, std::uint16_t port);

// A record to publish, with a comment that names the certificate it designates.
struct PublishedTlsa {
    tls::TlsaRecord record;
    std::string comment;  // e.g. "3 1 1: key of the certificate CN=mail.example.org in /etc/tlsrelay/cert.pem"
};

// Returns the records that authenticate a chain read from `file` (leaf
// first): "3 1 1" (DANE-EE, SHA-256 of the SubjectPublicKeyInfo) for the
// leaf and, when the chain has more than one certificate, "2 1 1"
// (DANE-TA) for its last certificate, the issuing CA. Throws
// tls::TlsSetupError when a certificate cannot be parsed.
std::vector<PublishedTlsa> tlsa_records_for_chain(const std::vector<tls::Der>& chain,
                                                  const std::string& file);

// One zone-file line: "_25._tcp.mail.example.org. IN TLSA 3 1 1 <hex>",
// with the association data in lower-case hex.
std::string tlsa_zone_line(const std::string& absolute_owner, const tls::TlsaRecord& record);

// Outcome of comparing published TLSA records with the relay's
// certificates.
enum class OwnTlsaOutcome {
    no_usable_records,  // none is DANE-TA(2) or DANE-EE(3): SMTP peers ignore the set
    matches_current,    // the certificate the relay serves matches
    matches_sni,        // the certificate of the [[smtpd.tls_sni]] entry that covers the host matches
    matches_next_only,  // only tls_next_cert_file matches: peers that use DANE fail now
    matches_neither,
};

struct OwnTlsaVerdict {
    OwnTlsaOutcome outcome = OwnTlsaOutcome::matches_neither;
    bool next_matches = false;  // tls_next_cert_file is set and matches too
    std::string how;            // which record matched, from tls::match_tlsa
    std::string reason;         // why the current certificate did not match
};

// Compares `records` with the current chain, the chain of the SNI entry
// that covers `hostname` and the next chain, as a peer that uses DANE
// would. Each chain is empty when there is none. `hostname` is the
// reference identifier that DANE-TA records need (RFC 7672 section
// 3.2.2). The outcome names the first of the three chains that matches.
OwnTlsaVerdict judge_own_tlsa(const std::vector<tls::TlsaRecord>& records,
                              const std::vector<tls::Der>& current_chain,
                              const std::vector<tls::Der>& next_chain, const std::string& hostname,
                              const std::vector<tls::Der>& sni_chain = {});

// A [[smtpd.tls_sni]] entry as the check reads it.
struct OwnTlsaSniCertificate {
    std::string name;       // lower case; "*.example.com" covers exactly one more label
    std::string cert_file;
};

struct OwnTlsaCheckSettings {
    std::string hostname;               // myhostname
    std::vector<std::uint16_t> ports;   // one lookup of _<port>._tcp.<hostname> each
    std::string cert_file;              // the served chain; empty when STARTTLS is off
    std::string next_cert_file;         // tls_next_cert_file; empty: none
    std::vector<OwnTlsaSniCertificate> sni_certificates;  // in configuration order; empty when STARTTLS is off
    std::chrono::milliseconds timeout{5000};  // per lookup, over all nameservers and retries
};

// Returns the check's settings for a configuration. The ports are 25 and
// each listener's port, because peers deliver to port 25 even when the
// relay listens on another port behind a port mapping. The certificate is
// tls_cert_file or the generated self-signed one, and none when
// `inbound_tls` is false; the [[smtpd.tls_sni]] entries are left out then
// too.
OwnTlsaCheckSettings own_tlsa_check_settings(const config::Config& config, bool inbound_tls);

// Looks up the TLSA records of each port in the background and logs one
// line per port: a warning when records are published and the current
// certificate matches none of them, an info line otherwise. Returns
// before any lookup starts, so start-up does not wait for DNS.
void start_own_tlsa_check(asio::any_io_executor executor, dns::Resolver& resolver,
                          OwnTlsaCheckSettings settings);

}  // namespace tlsrelay::smtpd
