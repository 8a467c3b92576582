// JSON text helpers for the log, the report and other machine-readable
// output (RFC 8259).
#pragma once

#include <string>
#include <string_view>

namespace tlsrelay::json {

// Appends `text` as a JSON string with its quotes. Valid UTF-8 is kept as
// it is, and control characters are escaped. Each byte that is not part of
// a valid UTF-8 sequence becomes U+FFFD, so the output is valid UTF-8.
void append_string(std::string& out, std::string_view text);

// `text` as a JSON string with its quotes.
std::string quote(std::string_view text);

}  // namespace tlsrelay::json
