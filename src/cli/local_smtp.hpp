// A small blocking SMTP client for the commands that talk to the local
// relay (healthcheck, sendmail).
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>

#include "tlsrelay/config/config.hpp"
#include "tlsrelay/smtp/reply.hpp"

namespace tlsrelay::cli {

// The address where local clients reach the relay: the first listener,
// with a wildcard address replaced by loopback.
asio::ip::tcp::endpoint local_endpoint(const config::Config& config);

class LocalSmtp {
public:
    // Connects with a timeout; raises std::runtime_error on failure.
    LocalSmtp(const asio::ip::tcp::endpoint& endpoint, std::chrono::seconds timeout);

    smtp::Reply read_reply();
    smtp::Reply command(const std::string& line);
    void send_raw(const std::string& bytes);

private:
    asio::io_context io_;
    asio::ip::tcp::socket socket_;
    std::string buffer_;
};

}  // namespace tlsrelay::cli
