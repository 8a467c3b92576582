// The inbound SMTP server: one listener per configured address, one
// coroutine per connection.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>

#include "tlsrelay/queue/spool.hpp"
#include "tlsrelay/smtp/content.hpp"
#include "tlsrelay/smtpd/protocol.hpp"
#include "tlsrelay/smtpd/users.hpp"
#include "tlsrelay/tls/context.hpp"

namespace tlsrelay::smtpd {

// Open inbound connections, shared by all listeners, against the limits.
struct ConnectionCounter {
    std::size_t limit = 1000;           // all clients together
    std::size_t per_client_limit = 50;  // Postfix's smtpd_client_connection_count_limit
    std::size_t total = 0;
    std::uint64_t accepted = 0;  // sessions started since the counter was created
    std::map<asio::ip::address, std::size_t> per_client;
};

struct ServerSettings {
    ProtocolSettings protocol;
    std::chrono::seconds timeout{300};
    bool implicit_tls = false;    // TLS from the first byte (port 465), no STARTTLS
    bool proxy_protocol = false;  // read a PROXY v1/v2 header before the greeting
    smtp::BareNewline bare_newline = smtp::BareNewline::normalize;
    int hopcount_limit = 50;      // Received: headers allowed before 554 5.4.6
    std::shared_ptr<tls::ServerContext> tls;  // null: STARTTLS not offered
    std::shared_ptr<const UserDatabase> users;
    asio::any_io_executor auth_executor;  // where password hashes are computed
    asio::any_io_executor disk_executor;  // where queue files are fsync'd; empty: on the event loop
    std::shared_ptr<ConnectionCounter> connections;
    queue::Spool* spool = nullptr;
    // Commits new messages in batches; null: each commit runs on the disk
    // executor.
    queue::Committer* committer = nullptr;
    // Called after a message is durable and before its 250 is sent, with
    // the message as the spool would load it.
    std::function<void(queue::StoredMessage)> on_queued;
};

class Server {
public:
    Server(asio::any_io_executor executor, ServerSettings settings);

    // Binds every endpoint; raises std::runtime_error naming the endpoint
    // that failed.
    void listen(const std::vector<asio::ip::tcp::endpoint>& endpoints);
    void stop();

    // The bound addresses, with the real port when 0 was configured.
    std::vector<asio::ip::tcp::endpoint> local_endpoints() const;
    // The connection counts, shared by every server built from the same settings.
    std::shared_ptr<const ConnectionCounter> connections() const { return settings_->connections; }

private:
    asio::any_io_executor executor_;
    std::shared_ptr<const ServerSettings> settings_;
    std::vector<std::shared_ptr<asio::ip::tcp::acceptor>> acceptors_;
};

// Runs one SMTP session on an accepted connection until it ends.
asio::awaitable<void> run_session(asio::ip::tcp::socket socket, std::shared_ptr<const ServerSettings> settings);

}  // namespace tlsrelay::smtpd
