#include "tlsrelay/smtp/line_reader.hpp"

#include <asio/post.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "tlsrelay/tls/stream.hpp"

namespace tlsrelay::smtp {
namespace {
constexpr std::size_t read_chunk = 4096;
constexpr int max_reads_without_yield = 16;
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
            // A read that found bytes did not pass through the event loop.
            // After a run of them the session lets other sessions run, as
            // an asynchronous read would, so one fast sender cannot hold
            // the loop for a whole message.
            if (++reads_without_yield_ >= max_reads_without_yield) {
                reads_without_yield_ = 0;
                auto executor = co_await asio::this_coro::executor;
                co_await asio::post(executor, asio::use_awaitable);
            }
            co_return;
        }
        reads_without_yield_ = 0;
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
