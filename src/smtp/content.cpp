#include "tlsrelay/smtp/content.hpp"

#include <cctype>

namespace tlsrelay::smtp {

void DataDecoder::append_text(std::string_view text, std::string& out) {
    // A CR inside the line is not followed by LF (the line reader split at
    // LF and took off a CR right before it), so it is a bare CR.
    for (char c : text) {
        if (c == '\r') {
            bare_newline_seen_ = true;
            if (mode_ == BareNewline::normalize) {
                out += "\r\n";
            }
            continue;
        }
        out += c;
    }
}

bool DataDecoder::feed(const Line& line, std::string& out) {
    // RFC 5321 section 4.1.1.4: only "." alone on a line that both follows
    // and ends with CRLF ends the data.
    if (at_line_start_ && after_crlf_ && line.end == LineEnd::crlf && line.text == ".") {
        return true;
    }

    std::string_view text = line.text;
    // RFC 5321 section 4.5.2: a leading dot on a content line was added by
    // the client and is removed. A lone "." that did not end the data
    // (because a bare LF came before it) is kept as content.
    if (at_line_start_ && text.size() > 1 && text.front() == '.') {
        text.remove_prefix(1);
    }
    append_text(text, out);

    switch (line.end) {
    case LineEnd::crlf:
        out += "\r\n";
        break;
    case LineEnd::bare_lf:
        bare_newline_seen_ = true;
        if (mode_ == BareNewline::normalize) {
            out += "\r\n";
        }
        break;
    case LineEnd::none:
        break;
    }
    at_line_start_ = line.end != LineEnd::none;
    after_crlf_ = line.end == LineEnd::crlf;
    return false;
}

void ChunkDecoder::feed(std::string_view bytes, std::string& out) {
    for (char c : bytes) {
        if (pending_cr_) {
            pending_cr_ = false;
            if (c == '\n') {
                out += "\r\n";
                continue;
            }
            bare_newline_seen_ = true;
            if (mode_ == BareNewline::normalize) {
                out += "\r\n";
            }
        }
        if (c == '\r') {
            pending_cr_ = true;
        } else if (c == '\n') {
            bare_newline_seen_ = true;
            if (mode_ == BareNewline::normalize) {
                out += "\r\n";
            }
        } else {
            out += c;
        }
    }
}

void ChunkDecoder::finish(std::string& out) {
    if (pending_cr_) {
        pending_cr_ = false;
        bare_newline_seen_ = true;
        if (mode_ == BareNewline::normalize) {
            out += "\r\n";
        }
    }
}

void HopCounter::feed(std::string_view bytes) {
    constexpr std::string_view field = "received:";
    for (char c : bytes) {
        if (!in_headers_) {
            return;
        }
        if (c == '\n') {
            // An empty line ends the header section (RFC 5322 section 2.1).
            if (line_empty_) {
                in_headers_ = false;
            }
            line_start_.clear();
            line_empty_ = true;
            continue;
        }
        if (c == '\r') {
            continue;
        }
        line_empty_ = false;
        if (line_start_.size() < field.size()) {
            line_start_ += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            if (line_start_ == field) {
                ++hops_;
            }
        }
    }
}

}  // namespace tlsrelay::smtp
