// DANE TLSA matching (RFC 6698, RFC 7671, RFC 7672) and the certificate
// digests that TLSA records and fingerprint policies compare. Plain C++
// types only, so the policy and delivery code compile without wolfSSL.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tlsrelay::tls {

using Der = std::vector<unsigned char>;

// One TLSA record: certificate usage, selector, matching type and the
// certificate association data.
struct TlsaRecord {
    std::uint8_t usage = 0;
    std::uint8_t selector = 0;
    std::uint8_t matching_type = 0;
    std::vector<unsigned char> data;
};

// "3 1 1": the record's parameters as admins write them.
std::string describe_parameters(const TlsaRecord& record);

// True when SMTP can use the record (RFC 7672 section 3.1): usage
// DANE-TA(2) or DANE-EE(3), selector Cert(0) or SPKI(1), matching type
// Full(0), SHA2-256(1) or SHA2-512(2). PKIX-TA(0) and PKIX-EE(1) are not
// usable for SMTP (RFC 7672 section 3.1.3).
bool is_usable(const TlsaRecord& record);

// The DER SubjectPublicKeyInfo of a DER certificate. Empty when the
// certificate cannot be parsed.
Der subject_public_key_info(const Der& certificate);

// Returns the data a TLSA record with this selector and matching type
// would carry for `certificate`: the certificate or its SPKI (selector),
// in full or hashed with SHA-256 or SHA-512 (matching type). Empty when
// the certificate cannot be parsed or the parameters are unknown.
std::vector<unsigned char> tlsa_association_data(const Der& certificate, std::uint8_t selector,
                                                 std::uint8_t matching_type);

// Lower-case hex with colons ("3d:95:..."), as fingerprints are written.
std::string hex_fingerprint(const std::vector<unsigned char>& bytes);

// SHA-256 digests of a certificate and of its public key, in hex_fingerprint
// form; empty strings when the certificate cannot be parsed.
struct CertificateDigests {
    std::string certificate_sha256;
    std::string public_key_sha256;
};
CertificateDigests certificate_digests(const Der& certificate);

struct DaneMatch {
    bool matched = false;
    // Explanation of the match, e.g. "DANE TLSA 3 1 1 matched the leaf
    // certificate"; empty when nothing matched.
    std::string how;
    // Reason no record authenticated the chain; empty when one did.
    std::string reason;
};

// Authenticates a server chain (DER, leaf first, as the server sent it)
// against usable TLSA records:
// - DANE-EE(3) matches the leaf only; names and validity dates are ignored
//   (RFC 7672 section 3.1.1).
// - DANE-TA(2) matches a certificate of the chain, or with matching type
//   Full and selector Cert is itself the trust anchor when the server left
//   it out. The leaf must chain to that anchor with valid dates, and one of
//   its names must match one of `reference_names` (RFC 7672 section 3.1.2
//   and 3.2.2).
// Unusable records are skipped; the caller decides what a set with no
// usable record means.
DaneMatch match_tlsa(const std::vector<TlsaRecord>& records, const std::vector<Der>& chain,
                     const std::vector<std::string>& reference_names);

}  // namespace tlsrelay::tls
