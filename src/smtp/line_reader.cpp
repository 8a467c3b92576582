#include "tlsrelay/smtp/line_reader.hpp"

#include "tlsrelay/tls/stream.hpp"

namespace tlsrelay::smtp {
namespace {
constexpr std::size_t read_chunk = 4096;
}

asio::awaitable<Line> LineReader::read_line() {
    for (;;) {
        if (auto line = take_line(buffer_, start_, max_piece_)) {
            co_return std::move(*line);
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
    if (used == 0) {
        buffer_.resize(read_chunk);
        std::size_t received = 0;
        auto ready = tls::Stream::ReadNow::ready;
        try {
            ready = stream_.read_now(asio::buffer(buffer_), received);
        } catch (...) {
            buffer_.clear();
            throw;
        }
        if (ready == tls::Stream::ReadNow::done) {
            buffer_.resize(received);
            co_return;
        }
        if (ready == tls::Stream::ReadNow::would_block) {
            // An idle session keeps no read buffer while it waits for its
            // peer, which saves 4 KiB per session when thousands are open.
            std::string().swap(buffer_);
            co_await stream_.wait_readable();
        }
    }
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
