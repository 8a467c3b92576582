// The inbound SMTP server: one listener per configured address, one
// coroutine per connection.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>

#include "tlsrelay/queue/spool.hpp"
#include "tlsrelay/smtpd/protocol.hpp"
#include "tlsrelay/tls/context.hpp"

namespace tlsrelay::smtpd {

struct ServerSettings {
    ProtocolSettings protocol;
    std::chrono::seconds timeout{300};
    std::shared_ptr<tls::ServerContext> tls;  // null: STARTTLS not offered
    queue::Spool* spool = nullptr;
    // Called after a message is durable and before its 250 is sent.
    std::function<void(const queue::Envelope&)> on_queued;
};

class Server {
public:
    Server(asio::any_io_executor executor, ServerSettings settings);

    // Binds every endpoint; raises std::runtime_error naming the endpoint
    // that failed.
    void listen(const std::vector<asio::ip::tcp::endpoint>& endpoints);
    void stop();

private:
    asio::any_io_executor executor_;
    std::shared_ptr<const ServerSettings> settings_;
    std::vector<std::shared_ptr<asio::ip::tcp::acceptor>> acceptors_;
};

// Runs one SMTP session on an accepted connection until it ends.
asio::awaitable<void> run_session(asio::ip::tcp::socket socket, std::shared_ptr<const ServerSettings> settings);

}  // namespace tlsrelay::smtpd
