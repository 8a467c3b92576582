// Preparing stored content for the wire on the outbound side.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tlsrelay::smtp {

// Dot-stuffs content (RFC 5321 section 4.5.2) and folds lines longer than
// the SMTP limit of 998 octets plus CRLF (section 4.5.3.1.6), as Postfix's
// smtp_line_length_limit does: a CRLF and a space are inserted, so a long
// header line becomes a folded header and a long body line a continuation.
// The input has CRLF line ends only.
class ContentEncoder {
public:
    static constexpr std::size_t line_length_limit = 990;

    void feed(std::string_view content, std::string& out);
    // Appends the end-of-data marker, with a CRLF first when the content
    // did not end with one.
    void finish(std::string& out);

private:
    bool at_line_start_ = true;
    std::size_t column_ = 0;
};

// Converts the 8-bit parts of a MIME message to quoted-printable, for a
// server that does not offer 8BITMIME (RFC 6152 section 3). Multipart
// bodies are converted part by part; a leaf part whose body has octets
// above 127 gets "Content-Transfer-Encoding: quoted-printable". Header
// fields are left unchanged. `message` has CRLF line ends.
std::string downgrade_to_7bit(std::string_view message);

// Quoted-printable encoding (RFC 2045 section 6.7) of a body with CRLF line
// ends; lines are kept under 76 characters with soft line breaks.
std::string quoted_printable(std::string_view body);

}  // namespace tlsrelay::smtp
