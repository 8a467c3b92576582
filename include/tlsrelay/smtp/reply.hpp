// SMTP replies (RFC 5321 section 4.2) with RFC 3463 enhanced status codes.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tlsrelay::smtp {

struct Reply {
    int code = 0;
    std::string enhanced;            // "2.0.0"; empty when the peer sent none
    std::vector<std::string> lines;  // text after the code (and the enhanced code, when given)

    // Only 2xx completes a command. A 3xx is expected only where the
    // client checks for it (354 after DATA, 334 in AUTH); anywhere else it
    // is a protocol error and must not count as success.
    bool positive() const { return code >= 200 && code < 300; }
    bool transient() const { return code >= 400 && code < 500; }
    bool permanent() const { return code >= 500; }

    // The enhanced code, or the class default when the peer sent none:
    // 2.0.0 for 2xx, 5.0.0 for 5xx, and 4.0.0 for anything else, so an
    // unexpected reply defers rather than bounces.
    std::string status() const;

    // All lines in wire form, each "code-..." except the last "code ...", CRLF-terminated.
    std::string wire() const;

    // One line for logs: "250 2.0.0 queued as X1", lines joined by spaces.
    std::string summary() const;
};

Reply make_reply(int code, std::string enhanced, std::string text);

// Assembles a reply from the lines a server sends. Feed lines without CRLF;
// once complete() is true, reply() returns the whole reply.
class ReplyParser {
public:
    // Returns false when the line is not a valid reply line.
    bool feed(std::string_view line);
    bool complete() const { return complete_; }
    const Reply& reply() const { return reply_; }
    void reset();

private:
    Reply reply_;
    bool complete_ = false;
    bool started_ = false;
};

}  // namespace tlsrelay::smtp
