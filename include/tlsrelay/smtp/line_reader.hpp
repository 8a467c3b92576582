// Reads SMTP lines from a stream with a fixed memory bound: a line longer
// than the bound comes back in pieces instead of growing the buffer.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include <asio/awaitable.hpp>

namespace tlsrelay::tls {
class Stream;
}

namespace tlsrelay::smtp {

enum class LineEnd {
    crlf,     // "\r\n"
    bare_lf,  // "\n" without a CR before it
    none,     // the line continues: this piece filled the bound
};

struct Line {
    std::string text;  // without the line end
    LineEnd end = LineEnd::crlf;
};

// Takes the next line or piece from `buffer` starting at `start`, advancing
// `start`; std::nullopt when the buffered bytes hold neither a full line nor
// a full piece. The reader below uses it; it is separate so the splitting
// rules can be tested and fuzzed without a stream.
std::optional<Line> take_line(const std::string& buffer, std::size_t& start, std::size_t max_piece);

class LineReader {
public:
    LineReader(tls::Stream& stream, std::size_t max_piece) : stream_(stream), max_piece_(max_piece) {}

    // Returns the next line or piece; raises asio::system_error at end of stream.
    asio::awaitable<Line> read_line();

    // True when bytes the peer sent are waiting in the buffer, e.g. commands
    // pipelined after STARTTLS that must not be honoured after the handshake.
    bool has_buffered() const { return start_ < buffer_.size(); }
    // True when read_line() would return without reading from the stream.
    bool has_line() const {
        return buffer_.find('\n', start_) != std::string::npos || buffer_.size() - start_ >= max_piece_;
    }
    void discard_buffered();

    // Raw access for binary framing (PROXY protocol v2, BDAT chunks):
    // the unread bytes, reading more when none are buffered.
    asio::awaitable<std::string_view> read_bytes();
    // Reads more bytes after those already buffered.
    asio::awaitable<void> fill();
    std::string_view buffered() const { return std::string_view(buffer_).substr(start_); }
    void consume(std::size_t count) { start_ += count; }
    void set_max_piece(std::size_t max_piece) { max_piece_ = max_piece; }

private:
    tls::Stream& stream_;
    std::size_t max_piece_;
    std::string buffer_;
    std::size_t start_ = 0;
    int reads_without_yield_ = 0;  // reads in a row that found bytes at once
};

}  // namespace tlsrelay::smtp
