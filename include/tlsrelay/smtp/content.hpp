// Message content as it arrives in DATA or BDAT, turned into what the queue
// stores: CRLF line ends only, dot-stuffing removed (DATA), the end of data
// recognised only at <CRLF>.<CRLF>.
//
// Invariant: no bare CR or bare LF ever ends the data. In normalize mode a
// bare CR or LF ends a content line and is stored as CRLF; in reject mode
// it marks the message for rejection. Either way a "second transaction"
// smuggled behind a bare line end stays text inside this message, and the
// queue never holds a bare line end that a later hop could read differently.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "tlsrelay/smtp/line_reader.hpp"

namespace tlsrelay::smtp {

// Postfix's smtpd_forbid_bare_newline choices.
enum class BareNewline { normalize, reject };

class DataDecoder {
public:
    explicit DataDecoder(BareNewline mode) : mode_(mode) {}

    // Decodes one line or piece from the line reader, appending content to
    // `out`. Returns true when the line is the end-of-data marker.
    bool feed(const Line& line, std::string& out);

    bool bare_newline_seen() const { return bare_newline_seen_; }

private:
    void append_text(std::string_view text, std::string& out);

    BareNewline mode_;
    bool at_line_start_ = true;
    bool after_crlf_ = true;
    bool bare_newline_seen_ = false;
};

// Normalises BDAT chunk bytes (RFC 3030: no dot-stuffing, no end marker)
// the same way: bare CR or LF becomes CRLF in normalize mode.
class ChunkDecoder {
public:
    explicit ChunkDecoder(BareNewline mode) : mode_(mode) {}

    void feed(std::string_view bytes, std::string& out);
    // Call after the LAST chunk: a CR left pending at the very end is bare.
    void finish(std::string& out);

    bool bare_newline_seen() const { return bare_newline_seen_; }

private:
    BareNewline mode_;
    bool pending_cr_ = false;
    bool bare_newline_seen_ = false;
};

// Counts the Received: header fields of a message for the hop-count limit,
// reading the content as it arrives, until the end of the header section.
class HopCounter {
public:
    // `bytes` is decoded content (CRLF line ends), in order, in any pieces.
    void feed(std::string_view bytes);
    int hops() const { return hops_; }

private:
    bool in_headers_ = true;
    std::string line_start_;  // first bytes of the current line, at most 9
    bool line_empty_ = true;
    int hops_ = 0;
};

}  // namespace tlsrelay::smtp
