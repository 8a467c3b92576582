// IDNA2008 conversion of domain names (libidn2), so a UTF-8 domain from an
// SMTPUTF8 address can be looked up in DNS and compared with certificates.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tlsrelay {

// Returns the A-label form ("xn--bcher-kva.example") in lower case; an
// ASCII domain comes back lower-cased and unchanged. std::nullopt when the
// name is not a valid IDNA2008 domain; `error` then holds libidn2's reason.
std::optional<std::string> to_a_label(std::string_view domain, std::string& error);

}  // namespace tlsrelay
