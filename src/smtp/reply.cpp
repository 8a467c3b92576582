#include "tlsrelay/smtp/reply.hpp"

#include <cctype>

namespace tlsrelay::smtp {
namespace {

// Matches an RFC 3463 status code "c.sss.ddd" at the start of text, where
// c is 2, 4 or 5 and the other parts have one to three digits.
std::size_t enhanced_code_length(std::string_view text) {
    if (text.size() < 5 || (text[0] != '2' && text[0] != '4' && text[0] != '5') || text[1] != '.') {
        return 0;
    }
    std::size_t pos = 2;
    for (int part = 0; part < 2; ++part) {
        std::size_t digits = 0;
        while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos])) && digits < 3) {
            ++pos;
            ++digits;
        }
        if (digits == 0) {
            return 0;
        }
        if (part == 0) {
            if (pos >= text.size() || text[pos] != '.') {
                return 0;
            }
            ++pos;
        }
    }
    if (pos < text.size() && text[pos] != ' ') {
        return 0;
    }
    return pos;
}

}  // namespace

std::string Reply::status() const {
    if (!enhanced.empty()) {
        return enhanced;
    }
    if (code >= 500) return "5.0.0";
    if (code >= 200 && code < 300) return "2.0.0";
    return "4.0.0";
}

std::string Reply::wire() const {
    std::string out;
    std::string prefix = std::to_string(code);
    std::size_t count = lines.empty() ? 1 : lines.size();
    for (std::size_t i = 0; i < count; ++i) {
        out += prefix;
        out += (i + 1 < count) ? '-' : ' ';
        if (!enhanced.empty()) {
            out += enhanced;
            out += ' ';
        }
        if (i < lines.size()) {
            out += lines[i];
        }
        out += "\r\n";
    }
    return out;
}

std::string Reply::summary() const {
    std::string out = std::to_string(code);
    if (!enhanced.empty()) {
        out += ' ';
        out += enhanced;
    }
    for (const auto& line : lines) {
        out += ' ';
        out += line;
    }
    return out;
}

Reply make_reply(int code, std::string enhanced, std::string text) {
    Reply reply;
    reply.code = code;
    reply.enhanced = std::move(enhanced);
    reply.lines.push_back(std::move(text));
    return reply;
}

bool ReplyParser::feed(std::string_view line) {
    if (complete_) {
        reset();
    }
    if (line.size() < 3 || !std::isdigit(static_cast<unsigned char>(line[0])) ||
        !std::isdigit(static_cast<unsigned char>(line[1])) || !std::isdigit(static_cast<unsigned char>(line[2]))) {
        return false;
    }
    if (line.size() > 3 && line[3] != ' ' && line[3] != '-') {
        return false;
    }
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (code < 200 || code > 599) {
        return false;
    }
    if (started_ && code != reply_.code) {
        return false;
    }
    reply_.code = code;
    started_ = true;

    std::string_view text = line.size() > 4 ? line.substr(4) : std::string_view{};
    // The enhanced code is taken from the first line; later lines repeat it
    // and it is stripped there too.
    if (auto length = enhanced_code_length(text); length > 0 && text[0] == line[0]) {
        if (reply_.lines.empty()) {
            reply_.enhanced = std::string(text.substr(0, length));
        }
        text = text.substr(length);
        if (!text.empty() && text[0] == ' ') {
            text.remove_prefix(1);
        }
    }
    reply_.lines.emplace_back(text);
    complete_ = line.size() == 3 || line[3] == ' ';
    return true;
}

void ReplyParser::reset() {
    reply_ = Reply{};
    complete_ = false;
    started_ = false;
}

}  // namespace tlsrelay::smtp
