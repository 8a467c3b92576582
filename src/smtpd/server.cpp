#include "tlsrelay/smtpd/server.hpp"

#include <asio/co_spawn.hpp>
#include <asio/ip/v6_only.hpp>
#include <asio/steady_timer.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>

#include "tlsrelay/util/log.hpp"

namespace tlsrelay::smtpd {
namespace {

std::string endpoint_text(const asio::ip::tcp::endpoint& endpoint) {
    if (endpoint.address().is_v6()) {
        return "[" + endpoint.address().to_string() + "]:" + std::to_string(endpoint.port());
    }
    return endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
}

// Applies the connection limits; a client over a limit gets a 421 and is
// closed at once. The reply is written without waiting: it fits in the
// socket's send buffer of a fresh connection.
bool admit(asio::ip::tcp::socket& socket, const ServerSettings& settings) {
    auto& counter = *settings.connections;
    std::error_code error;
    auto address = socket.remote_endpoint(error).address();
    if (error) {
        return false;
    }

    std::string reason;
    if (counter.total >= counter.limit) {
        reason = "too many connections";
    } else if (counter.per_client[address] >= counter.per_client_limit) {
        reason = "too many connections from " + address.to_string();
    }
    if (reason.empty()) {
        return true;
    }
    if (counter.per_client[address] == 0) {
        counter.per_client.erase(address);
    }
    log::warning("reject: connect from unknown[" + address.to_string() + "]: " + reason);
    auto reply = "421 4.7.0 " + settings.protocol.myhostname + " Error: " + reason + "\r\n";
    socket.non_blocking(true, error);
    socket.write_some(asio::buffer(reply), error);
    socket.close(error);
    return false;
}

asio::awaitable<void> accept_loop(std::shared_ptr<asio::ip::tcp::acceptor> acceptor,
                                  std::shared_ptr<const ServerSettings> settings) {
    while (acceptor->is_open()) {
        std::error_code error;
        auto socket = co_await acceptor->async_accept(asio::redirect_error(asio::use_awaitable, error));
        if (error == asio::error::operation_aborted || !acceptor->is_open()) {
            break;
        }
        if (error) {
            // EMFILE and similar are transient: log, pause briefly, go on.
            log::warning("accept on " + endpoint_text(acceptor->local_endpoint()) + " failed: " + error.message());
            asio::steady_timer pause(acceptor->get_executor(), std::chrono::milliseconds(100));
            co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, error));
            continue;
        }
        if (!admit(socket, *settings)) {
            continue;
        }
        asio::co_spawn(acceptor->get_executor(), run_session(std::move(socket), settings), asio::detached);
    }
}

}  // namespace

Server::Server(asio::any_io_executor executor, ServerSettings settings)
    : executor_(std::move(executor)), settings_(std::make_shared<const ServerSettings>(std::move(settings))) {}

void Server::listen(const std::vector<asio::ip::tcp::endpoint>& endpoints) {
    for (const auto& endpoint : endpoints) {
        auto acceptor = std::make_shared<asio::ip::tcp::acceptor>(executor_);
        std::error_code error;
        acceptor->open(endpoint.protocol(), error);
        if (!error) {
            acceptor->set_option(asio::socket_base::reuse_address(true), error);
        }
        if (!error && endpoint.address().is_v6()) {
            acceptor->set_option(asio::ip::v6_only(true), error);
        }
        if (!error) {
            acceptor->bind(endpoint, error);
        }
        if (!error) {
            acceptor->listen(asio::socket_base::max_listen_connections, error);
        }
        if (error) {
            throw std::runtime_error("cannot listen on " + endpoint_text(endpoint) + ": " + error.message());
        }
        log::info("listening on " + endpoint_text(acceptor->local_endpoint(error)));
        acceptors_.push_back(acceptor);
        asio::co_spawn(executor_, accept_loop(acceptor, settings_), asio::detached);
    }
}

std::vector<asio::ip::tcp::endpoint> Server::local_endpoints() const {
    std::vector<asio::ip::tcp::endpoint> endpoints;
    for (const auto& acceptor : acceptors_) {
        std::error_code error;
        auto endpoint = acceptor->local_endpoint(error);
        if (!error) {
            endpoints.push_back(endpoint);
        }
    }
    return endpoints;
}

void Server::stop() {
    for (auto& acceptor : acceptors_) {
        std::error_code ignored;
        acceptor->close(ignored);
    }
}

}  // namespace tlsrelay::smtpd
