// JSON text helpers for the log, the report and other machine-readable
// output (RFC 8259).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tlsrelay::json {

// Returns the length of the valid UTF-8 sequence of two to four bytes that
// starts at `text[at]`, or 0 when none starts there, as for an ASCII byte.
// Rejects overlong forms, UTF-16 surrogates and code points above
// U+10FFFF, as RFC 3629 section 4 requires.
std::size_t utf8_sequence_length(std::string_view text, std::size_t at);

// Appends `text` as a JSON string with its quotes. Valid UTF-8 is kept as
// it is, and control characters (C0, DEL and C1) are escaped as \uXXXX or
// their short forms. Each byte that is not part of a valid UTF-8 sequence
// becomes U+FFFD, so the output is valid UTF-8.
void append_string(std::string& out, std::string_view text);

// `text` as a JSON string with its quotes.
std::string quote(std::string_view text);

}  // namespace tlsrelay::json
