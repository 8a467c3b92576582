#include "tlsrelay/util/json.hpp"

#include <cstdio>

namespace tlsrelay::json {

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
        // C1 controls, U+0080 to U+009F, are C2 80 to C2 9F in UTF-8.
        // Terminals act on some of them (U+009B starts a CSI sequence).
        if (length == 2 && c == 0xC2 && static_cast<unsigned char>(text[i + 1]) < 0xA0) {
            char escaped[8];
            std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned char>(text[i + 1]));
            out += escaped;
            i += length;
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
