// Certificate helpers shared by the TLS sources; not part of the public API.
#pragma once

#include <string>
#include <vector>

namespace tlsrelay::tls {

// Returns the subjectAltName dNSName entries of a DER certificate, or its
// subject CNs when it has no dNSName. Returns an empty list when the DER
// cannot be parsed.
std::vector<std::string> certificate_names(const std::vector<unsigned char>& der);

// Returns the subjectAltName dNSName entries of a DER certificate in the
// certificate's order; empty when there are none or the DER is malformed.
std::vector<std::string> certificate_dns_names(const std::vector<unsigned char>& der);

// Returns readable text for an error code recorded by the verify callback:
// an X509_V_ERR_* code when positive, a wolfSSL error code when negative.
std::string describe_verify_error(int error);

}  // namespace tlsrelay::tls
