// Line splitting without I/O, shared by the line reader and the fuzzers.
#include "tlsrelay/smtp/line_reader.hpp"

namespace tlsrelay::smtp {

std::optional<Line> take_line(const std::string& buffer, std::size_t& start, std::size_t max_piece) {
    auto newline = buffer.find('\n', start);
    if (newline != std::string::npos && newline - start <= max_piece) {
        Line line;
        bool cr = newline > start && buffer[newline - 1] == '\r';
        line.end = cr ? LineEnd::crlf : LineEnd::bare_lf;
        line.text.assign(buffer, start, newline - start - (cr ? 1 : 0));
        start = newline + 1;
        return line;
    }
    if (buffer.size() - start >= max_piece) {
        // Keep a trailing CR in the buffer so a CRLF split across pieces
        // is still seen as one line end.
        std::size_t take = max_piece;
        if (take > 1 && buffer[start + take - 1] == '\r') {
            --take;
        }
        Line piece{buffer.substr(start, take), LineEnd::none};
        start += take;
        return piece;
    }
    return std::nullopt;
}

}  // namespace tlsrelay::smtp
