// SMTP connection helpers shared by bench-source and bench-sink: one TCP
// socket that switches to TLS after STARTTLS, line and reply reading, and
// the small command-line and clock utilities both tools need.
//
// These tools are load generators for bench/run, built against OpenSSL
// (not the relay's wolfSSL) so that the measuring side and the measured
// side share no TLS code.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>

#include <asio.hpp>
#include <asio/ssl.hpp>

namespace bench {

using asio::ip::tcp;

// Seconds on CLOCK_MONOTONIC, the clock Python's time.monotonic() reads on
// Linux, so bench/run can compare timestamps printed by these tools.
inline double monotonic_seconds() {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) / 1e9;
}

// Parses "a.b.c.d:port" into an endpoint; only IPv4 literals are accepted.
inline tcp::endpoint parse_endpoint(const std::string& text) {
    auto colon = text.rfind(':');
    if (colon == std::string::npos) {
        throw std::invalid_argument("invalid address \"" + text + "\": expected addr:port");
    }
    return {asio::ip::make_address_v4(text.substr(0, colon)),
            static_cast<unsigned short>(std::stoul(text.substr(colon + 1)))};
}

// Options given as "--name value" or "--flag"; flags map to "1".
class Options {
public:
    Options(int argc, char** argv, int first) {
        for (int i = first; i < argc; ++i) {
            std::string name = argv[i];
            if (name.rfind("--", 0) != 0) {
                throw std::invalid_argument("unexpected argument \"" + name + "\"");
            }
            name = name.substr(2);
            if (i + 1 < argc && std::string_view(argv[i + 1]).rfind("--", 0) != 0) {
                values_[name] = argv[++i];
            } else {
                values_[name] = "1";
            }
        }
    }

    std::string text(const std::string& name, const std::string& fallback) const {
        auto found = values_.find(name);
        return found == values_.end() ? fallback : found->second;
    }

    long number(const std::string& name, long fallback) const {
        auto found = values_.find(name);
        return found == values_.end() ? fallback : std::stol(found->second);
    }

    bool flag(const std::string& name) const { return values_.contains(name); }

private:
    std::map<std::string, std::string> values_;
};

// One SMTP connection: plaintext until start_tls(), TLS afterwards.
class Connection {
public:
    Connection(asio::any_io_executor executor, asio::ssl::context& tls_context)
        : stream_(tcp::socket(executor), tls_context) {}

    Connection(tcp::socket socket, asio::ssl::context& tls_context)
        : stream_(std::move(socket), tls_context) {}

    tcp::socket& socket() { return stream_.next_layer(); }
    bool tls_active() const { return tls_active_; }

    asio::awaitable<void> handshake(asio::ssl::stream_base::handshake_type role) {
        co_await stream_.async_handshake(role, asio::use_awaitable);
        tls_active_ = true;
    }

    // Reads one line including its CRLF; throws on EOF or error.
    asio::awaitable<std::string> read_line() {
        std::size_t length = tls_active_
                                 ? co_await asio::async_read_until(stream_, input_, "\r\n", asio::use_awaitable)
                                 : co_await asio::async_read_until(socket(), input_, "\r\n", asio::use_awaitable);
        std::string line(asio::buffers_begin(input_.data()), asio::buffers_begin(input_.data()) + length);
        input_.consume(length);
        co_return line;
    }

    // Reads a complete (possibly multi-line) reply and returns its code.
    asio::awaitable<int> read_reply() {
        for (int lines = 0; lines < 100; ++lines) {
            auto line = co_await read_line();
            if (line.size() < 5) {
                throw std::runtime_error("invalid SMTP reply line: " + line);
            }
            if (line[3] == ' ' || line[3] == '\r') {
                co_return std::atoi(line.substr(0, 3).c_str());
            }
        }
        throw std::runtime_error("SMTP reply longer than 100 lines");
    }

    // Reads message content up to and including the terminating "." line;
    // the caller has just sent 354, so the buffer starts at a line start.
    asio::awaitable<void> read_data() {
        static constexpr std::string_view terminator = "\r\n.\r\n";
        if (input_.size() < 3) {
            co_await read_at_least(3);
        }
        std::string_view start(static_cast<const char*>(input_.data().data()), 3);
        if (start == ".\r\n") {
            input_.consume(3);
            co_return;
        }
        std::size_t length =
            tls_active_ ? co_await asio::async_read_until(stream_, input_, terminator, asio::use_awaitable)
                        : co_await asio::async_read_until(socket(), input_, terminator, asio::use_awaitable);
        input_.consume(length);
    }

    asio::awaitable<void> write(std::string_view text) {
        if (tls_active_) {
            co_await asio::async_write(stream_, asio::buffer(text), asio::use_awaitable);
        } else {
            co_await asio::async_write(socket(), asio::buffer(text), asio::use_awaitable);
        }
    }

    // Bytes read from the peer but not consumed yet (pipelined commands).
    std::size_t buffered() const { return input_.size(); }

    void close() {
        std::error_code ignored;
        socket().shutdown(tcp::socket::shutdown_both, ignored);
        socket().close(ignored);
    }

private:
    asio::awaitable<void> read_at_least(std::size_t count) {
        while (input_.size() < count) {
            auto space = input_.prepare(4096);
            std::size_t got = tls_active_ ? co_await stream_.async_read_some(space, asio::use_awaitable)
                                          : co_await socket().async_read_some(space, asio::use_awaitable);
            input_.commit(got);
        }
    }

    asio::ssl::stream<tcp::socket> stream_;
    asio::streambuf input_;
    bool tls_active_ = false;
};

}  // namespace bench
