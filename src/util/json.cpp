#include "tlsrelay/util/json.hpp"

#include <cstdio>

namespace tlsrelay::json {
namespace {

// The length of the valid UTF-8 sequence that starts at `text[at]`, or 0.
// Rejects overlong forms, UTF-16 surrogates and code points above
// U+10FFFF, as RFC 3629 section 4 requires.
std::size_t utf8_sequence_length(std::string_view text, std::size_t at) {
    auto byte = [&](std::size_t offset) { return static_cast<unsigned char>(text[at + offset]); };
    auto continuation = [&](std::size_t offset) {
        return at + offset < text.size() && (byte(offset) & 0xC0) == 0x80;
    };
    unsigned char lead = byte(0);
    if (lead >= 0xC2 && lead <= 0xDF) {
        return continuation(1) ? 2 : 0;
    }
    if (lead >= 0xE0 && lead <= 0xEF) {
        if (!continuation(1) || !continuation(2)) {
            return 0;
        }
        if (lead == 0xE0 && byte(1) < 0xA0) {
            return 0;  // overlong
        }
        if (lead == 0xED && byte(1) >= 0xA0) {
            return 0;  // surrogate
        }
        return 3;
    }
    if (lead >= 0xF0 && lead <= 0xF4) {
        if (!continuation(1) || !continuation(2) || !continuation(3)) {
            return 0;
        }
        if (lead == 0xF0 && byte(1) < 0x90) {
            return 0;  // overlong
        }
        if (lead == 0xF4 && byte(1) >= 0x90) {
            return 0;  // above U+10FFFF
        }
        return 4;
    }
    return 0;
}

}  // namespace

void append_string(std::string& out, std::string_view text) {
    out += '"';
    for (std::size_t i = 0; i < text.size();) {
        auto c = static_cast<unsigned char>(text[i]);
        if (c < 0x80) {
            switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (c < 0x20 || c == 0x7F) {
                    char escaped[8];
                    std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
                    out += escaped;
                } else {
                    out += static_cast<char>(c);
                }
            }
            ++i;
            continue;
        }
        auto length = utf8_sequence_length(text, i);
        if (length == 0) {
            out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
            ++i;
            continue;
        }
        out.append(text.substr(i, length));
        i += length;
    }
    out += '"';
}

std::string quote(std::string_view text) {
    std::string out;
    out.reserve(text.size() + 2);
    append_string(out, text);
    return out;
}

}  // namespace tlsrelay::json
