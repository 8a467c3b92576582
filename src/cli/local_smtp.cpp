#include "local_smtp.hpp"

#include <sys/socket.h>
#include <sys/time.h>

#include <stdexcept>

#include <asio/connect.hpp>
#include <asio/write.hpp>

namespace tlsrelay::cli {

asio::ip::tcp::endpoint local_endpoint(const config::Config& config) {
    asio::ip::tcp::endpoint endpoint;
    if (!config.smtpd.listen.empty()) {
        endpoint = config.smtpd.listen.front();
    } else if (!config.smtpd.listeners.empty()) {
        endpoint = config.smtpd.listeners.front().address;
    }
    if (endpoint.address().is_unspecified()) {
        endpoint.address(endpoint.address().is_v4() ? asio::ip::address(asio::ip::address_v4::loopback())
                                                    : asio::ip::address(asio::ip::address_v6::loopback()));
    }
    return endpoint;
}

LocalSmtp::LocalSmtp(const asio::ip::tcp::endpoint& endpoint, std::chrono::seconds timeout) : socket_(io_) {
    socket_.open(endpoint.protocol());
    timeval limit{static_cast<time_t>(timeout.count()), 0};
    ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
    std::error_code error;
    socket_.connect(endpoint, error);
    if (error) {
        throw std::runtime_error("cannot connect to the relay at " + endpoint.address().to_string() + ":" +
                                 std::to_string(endpoint.port()) + ": " + error.message());
    }
}

smtp::Reply LocalSmtp::read_reply() {
    smtp::ReplyParser parser;
    for (int lines = 0; lines < 100;) {
        auto newline = buffer_.find("\r\n");
        if (newline == std::string::npos) {
            char chunk[4096];
            std::error_code error;
            auto count = socket_.read_some(asio::buffer(chunk), error);
            if (error) {
                throw std::runtime_error("no reply from the relay: " + error.message());
            }
            buffer_.append(chunk, count);
            continue;
        }
        auto line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 2);
        ++lines;
        if (!parser.feed(line)) {
            throw std::runtime_error("malformed reply from the relay: " + line);
        }
        if (parser.complete()) {
            return parser.reply();
        }
    }
    throw std::runtime_error("reply from the relay is too long");
}

smtp::Reply LocalSmtp::command(const std::string& line) {
    send_raw(line + "\r\n");
    return read_reply();
}

void LocalSmtp::send_raw(const std::string& bytes) {
    std::error_code error;
    asio::write(socket_, asio::buffer(bytes), error);
    if (error) {
        throw std::runtime_error("cannot send to the relay: " + error.message());
    }
}

}  // namespace tlsrelay::cli
