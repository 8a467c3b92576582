// RFC 6125 reference identity matching, without any TLS library types so
// policy code and tests can use it directly.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tlsrelay::tls {

// True when one of `presented` (dNSName entries, or the CN when the
// certificate has none) matches `reference`. Case-insensitive; a trailing dot
// on either side is ignored; a wildcard is accepted only as the whole
// left-most label ("*.example.com") and matches exactly one label.
bool match_hostname(const std::vector<std::string>& presented, std::string_view reference);

}  // namespace tlsrelay::tls
