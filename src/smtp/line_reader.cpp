#include "tlsrelay/smtp/line_reader.hpp"

#include "tlsrelay/tls/stream.hpp"

namespace tlsrelay::smtp {
namespace {
constexpr std::size_t read_chunk = 4096;
}

asio::awaitable<Line> LineReader::read_line() {
    for (;;) {
        auto newline = buffer_.find('\n', start_);
        if (newline != std::string::npos && newline - start_ <= max_piece_) {
            Line line;
            bool cr = newline > start_ && buffer_[newline - 1] == '\r';
            line.end = cr ? LineEnd::crlf : LineEnd::bare_lf;
            line.text.assign(buffer_, start_, newline - start_ - (cr ? 1 : 0));
            start_ = newline + 1;
            co_return line;
        }
        if (buffer_.size() - start_ >= max_piece_) {
            // Keep a trailing CR in the buffer so a CRLF split across pieces
            // is still seen as one line end.
            std::size_t take = max_piece_;
            if (buffer_[start_ + take - 1] == '\r') {
                --take;
            }
            Line piece{buffer_.substr(start_, take), LineEnd::none};
            start_ += take;
            co_return piece;
        }

        co_await fill();
    }
}

asio::awaitable<void> LineReader::fill() {
    // Compact, then read more after the bytes already buffered.
    if (start_ > 0) {
        buffer_.erase(0, start_);
        start_ = 0;
    }
    std::size_t used = buffer_.size();
    buffer_.resize(used + read_chunk);
    std::size_t received = 0;
    try {
        received = co_await stream_.read_some(asio::buffer(buffer_.data() + used, read_chunk));
    } catch (...) {
        buffer_.resize(used);
        throw;
    }
    buffer_.resize(used + received);
}

asio::awaitable<std::string_view> LineReader::read_bytes() {
    if (start_ >= buffer_.size()) {
        co_await fill();
    }
    co_return buffered();
}

void LineReader::discard_buffered() {
    buffer_.clear();
    buffer_.shrink_to_fit();
    start_ = 0;
}

}  // namespace tlsrelay::smtp
