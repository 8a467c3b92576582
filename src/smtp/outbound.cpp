#include "tlsrelay/smtp/outbound.hpp"

#include <algorithm>
#include <cctype>
#include <optional>
#include <vector>

namespace tlsrelay::smtp {

void ContentEncoder::feed(std::string_view content, std::string& out) {
    for (char c : content) {
        if (at_line_start_ && c == '.') {
            out += '.';
            ++column_;
        }
        if (c != '\r' && c != '\n' && column_ >= line_length_limit) {
            out += "\r\n ";
            column_ = 1;
        }
        out += c;
        if (c == '\n') {
            at_line_start_ = true;
            column_ = 0;
        } else {
            at_line_start_ = false;
            if (c != '\r') {
                ++column_;
            }
        }
    }
}

void ContentEncoder::finish(std::string& out) {
    out += at_line_start_ ? ".\r\n" : "\r\n.\r\n";
}

std::string quoted_printable(std::string_view body) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(body.size() + body.size() / 8);
    std::size_t column = 0;
    auto soft_break_if_needed = [&](std::size_t width) {
        if (column + width > 75) {
            out += "=\r\n";
            column = 0;
        }
    };
    for (std::size_t i = 0; i < body.size(); ++i) {
        auto c = static_cast<unsigned char>(body[i]);
        if (c == '\r' && i + 1 < body.size() && body[i + 1] == '\n') {
            out += "\r\n";
            column = 0;
            ++i;
            continue;
        }
        bool at_line_end = i + 1 == body.size() || body[i + 1] == '\r';
        // Space and tab are literal except before a line end, where they
        // would be lost (RFC 2045 rule 3).
        bool literal = (c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !at_line_end);
        if (literal) {
            soft_break_if_needed(1);
            out += static_cast<char>(c);
            column += 1;
        } else {
            soft_break_if_needed(3);
            out += '=';
            out += hex[c >> 4];
            out += hex[c & 15];
            column += 3;
        }
    }
    return out;
}

namespace {

struct Part {
    std::string_view headers;  // including the final CRLF of the last field, without the empty line
    std::string_view body;
};

Part split_part(std::string_view message) {
    if (message.starts_with("\r\n")) {
        return {std::string_view{}, message.substr(2)};
    }
    auto end = message.find("\r\n\r\n");
    if (end == std::string_view::npos) {
        return {message, std::string_view{}};
    }
    return {message.substr(0, end + 2), message.substr(end + 4)};
}

std::string lower(std::string_view text) {
    std::string out(text);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

// The unfolded value of a header field, or nothing.
std::optional<std::string> header_value(std::string_view headers, std::string_view name) {
    std::size_t position = 0;
    while (position < headers.size()) {
        auto end = headers.find("\r\n", position);
        if (end == std::string_view::npos) {
            end = headers.size();
        }
        auto line = headers.substr(position, end - position);
        auto colon = line.find(':');
        if (colon != std::string_view::npos && lower(line.substr(0, colon)) == lower(name)) {
            std::string value(line.substr(colon + 1));
            // Unfold continuation lines.
            auto next = end + 2;
            while (next < headers.size() && (headers[next] == ' ' || headers[next] == '\t')) {
                auto next_end = headers.find("\r\n", next);
                if (next_end == std::string_view::npos) {
                    next_end = headers.size();
                }
                value += std::string(headers.substr(next, next_end - next));
                next = next_end + 2;
            }
            return value;
        }
        position = end + 2;
    }
    return std::nullopt;
}

// The boundary parameter of a multipart Content-Type, or nothing.
std::optional<std::string> multipart_boundary(std::string_view headers) {
    auto type = header_value(headers, "Content-Type");
    if (!type || lower(*type).find("multipart/") == std::string::npos) {
        return std::nullopt;
    }
    auto lowered = lower(*type);
    auto key = lowered.find("boundary=");
    if (key == std::string::npos) {
        return std::nullopt;
    }
    std::string value = type->substr(key + 9);
    if (!value.empty() && value.front() == '"') {
        auto close = value.find('"', 1);
        return value.substr(1, close == std::string::npos ? std::string::npos : close - 1);
    }
    auto end = value.find_first_of("; \t");
    return value.substr(0, end);
}

bool has_8bit(std::string_view text) {
    return std::any_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

// Removes Content-Transfer-Encoding fields (with continuation lines).
std::string without_transfer_encoding(std::string_view headers) {
    std::string out;
    std::size_t position = 0;
    bool skipping = false;
    while (position < headers.size()) {
        auto end = headers.find("\r\n", position);
        end = end == std::string_view::npos ? headers.size() : end + 2;
        auto line = headers.substr(position, end - position);
        bool continuation = !line.empty() && (line[0] == ' ' || line[0] == '\t');
        if (!continuation) {
            skipping = lower(line.substr(0, line.find(':'))) == "content-transfer-encoding";
        }
        if (!skipping) {
            out += line;
        }
        position = end;
    }
    return out;
}

std::string downgrade_part(std::string_view part, int depth);

std::string downgrade_multipart(std::string_view body, const std::string& boundary, int depth) {
    const std::string delimiter = "--" + boundary;
    std::string out;
    std::size_t position = 0;
    bool in_part = false;
    std::size_t part_start = 0;
    while (position <= body.size()) {
        auto end = body.find("\r\n", position);
        auto line_end = end == std::string_view::npos ? body.size() : end;
        auto line = body.substr(position, line_end - position);
        bool is_delimiter = line.starts_with(delimiter);
        if (is_delimiter) {
            if (in_part) {
                // The CRLF before a delimiter belongs to the delimiter (RFC 2046 section 5.1.1).
                auto content_end = position >= 2 ? position - 2 : position;
                out += downgrade_part(body.substr(part_start, content_end - part_start), depth + 1);
                out += "\r\n";
            } else {
                out += std::string(body.substr(0, position));  // preamble
            }
            out += std::string(line);
            if (end != std::string_view::npos) {
                out += "\r\n";
            }
            bool closing = line.substr(delimiter.size()).starts_with("--");
            if (closing) {
                if (end != std::string_view::npos) {
                    out += std::string(body.substr(end + 2));  // epilogue
                }
                return out;
            }
            in_part = true;
            part_start = end == std::string_view::npos ? body.size() : end + 2;
        }
        if (end == std::string_view::npos) {
            break;
        }
        position = end + 2;
    }
    // No closing delimiter: keep the rest as it was.
    if (in_part) {
        out += downgrade_part(body.substr(part_start), depth + 1);
    } else {
        out = std::string(body);
    }
    return out;
}

std::string downgrade_part(std::string_view part, int depth) {
    auto [headers, body] = split_part(part);
    if (!has_8bit(body) || depth > 20) {
        return std::string(part);
    }
    if (auto boundary = multipart_boundary(headers); boundary && !boundary->empty()) {
        return std::string(headers) + "\r\n" + downgrade_multipart(body, *boundary, depth);
    }
    // A leaf with 8-bit octets: 7bit, 8bit or no encoding declared (binary
    // content cannot travel through DATA at all).
    return without_transfer_encoding(headers) + "Content-Transfer-Encoding: quoted-printable\r\n\r\n" +
           quoted_printable(body);
}

}  // namespace

std::string downgrade_to_7bit(std::string_view message) {
    return downgrade_part(message, 0);
}

}  // namespace tlsrelay::smtp
