// Certificate details for the admin commands (`tlsrelay tlsa`, `tlsrelay
// check`): names, validity dates and the public key digest of a DER
// certificate, and PEM chain files read into DER. Plain C++ types only.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "tlsrelay/tls/dane.hpp"

namespace tlsrelay::tls {

struct CertificateDetails {
    // Distinguished names in the certificate's order, "type=value" joined by
    // ", ", e.g. "C=DE, O=Example, CN=mail.example.org". Control characters
    // in values are replaced by '?'.
    std::string subject;
    std::string issuer;
    // subjectAltName dNSName entries, in the certificate's order.
    std::vector<std::string> dns_names;
    std::chrono::system_clock::time_point not_before;
    std::chrono::system_clock::time_point not_after;
    // SHA-256 of the DER SubjectPublicKeyInfo in lower-case hex without
    // separators: the data of a "3 1 1" TLSA record for this certificate.
    std::string spki_sha256_hex;
};

// Describes a DER certificate. Throws TlsSetupError when `der` cannot be
// parsed as a certificate.
CertificateDetails describe_certificate(const std::vector<unsigned char>& der);

// Converts every "BEGIN CERTIFICATE" block of PEM text to DER, in the
// text's order; other blocks (keys, parameters) are skipped. Throws
// TlsSetupError naming `source` when a certificate block is invalid.
// Returns an empty list when the text has no certificate block.
std::vector<Der> parse_pem_certificates(const std::string& pem, const std::string& source);

// Reads a PEM file with parse_pem_certificates. Throws TlsSetupError when
// the file cannot be read or holds an invalid certificate block.
std::vector<Der> load_pem_certificates(const std::string& path);

// Lower-case hex without separators, as TLSA records are written.
std::string hex_string(const std::vector<unsigned char>& bytes);

}  // namespace tlsrelay::tls
