#include "tlsrelay/stats/metrics.hpp"

#include <algorithm>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/ip/v6_only.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "tlsrelay/util/deadline.hpp"
#include "tlsrelay/util/log.hpp"

namespace tlsrelay::stats {

struct MetricsServer::Shared {
    Shared(asio::any_io_executor executor, std::function<std::string()> render_function)
        : render(std::move(render_function)), acceptor(std::move(executor)) {}

    std::function<std::string()> render;
    asio::ip::tcp::acceptor acceptor;
    std::size_t open_connections = 0;
};

namespace {

constexpr std::size_t max_request_bytes = 8192;
constexpr auto request_timeout = std::chrono::seconds(10);
// Scrapers open one connection at a time; more than this are closed at
// once, so a flood cannot take memory or descriptors from mail.
constexpr std::size_t max_open_connections = 16;

std::string endpoint_text(const asio::ip::tcp::endpoint& endpoint) {
    if (endpoint.address().is_v6()) {
        return "[" + endpoint.address().to_string() + "]:" + std::to_string(endpoint.port());
    }
    return endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
}

std::string response(std::string_view status, std::string_view content_type, const std::string& body,
                     bool with_body, std::string_view extra_headers = "") {
    std::string text = "HTTP/1.0 ";
    text += status;
    text += "\r\nContent-Type: ";
    text += content_type;
    text += "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
    text += extra_headers;
    text += "Connection: close\r\n\r\n";
    if (with_body) {
        text += body;
    }
    return text;
}

// Builds the reply to one request head (request line and headers).
std::string answer(std::string_view head, const std::function<std::string()>& render) {
    auto line_end = head.find_first_of("\r\n");
    auto line = head.substr(0, line_end);
    auto first_space = line.find(' ');
    auto second_space = first_space == std::string_view::npos ? first_space : line.find(' ', first_space + 1);
    if (second_space == std::string_view::npos || !line.substr(second_space + 1).starts_with("HTTP/1.")) {
        return response("400 Bad Request", "text/plain; charset=utf-8", "malformed HTTP request\n", true);
    }
    auto method = line.substr(0, first_space);
    auto target = line.substr(first_space + 1, second_space - first_space - 1);
    auto path = target.substr(0, target.find('?'));
    if (path != "/metrics") {
        return response("404 Not Found", "text/plain; charset=utf-8", "not found; the metrics are at /metrics\n",
                        method != "HEAD");
    }
    if (method != "GET" && method != "HEAD") {
        return response("405 Method Not Allowed", "text/plain; charset=utf-8", "use GET\n", true,
                        "Allow: GET, HEAD\r\n");
    }
    return response("200 OK", "text/plain; version=0.0.4; charset=utf-8", render(), method == "GET");
}

asio::awaitable<void> serve_connection(asio::ip::tcp::socket socket, std::shared_ptr<MetricsServer::Shared> shared) {
    struct OpenConnection {
        explicit OpenConnection(MetricsServer::Shared& counted) : shared(counted) { ++shared.open_connections; }
        ~OpenConnection() { --shared.open_connections; }
        MetricsServer::Shared& shared;
    } open(*shared);

    auto deadline = std::make_shared<Deadline>(socket);
    deadline->start();
    deadline->arm(request_timeout);

    // Read the request head: everything up to the blank line. A body, if
    // any, is ignored.
    std::string request;
    std::string reply;
    char buffer[1024];
    for (;;) {
        // The limit applies to the head itself, whatever the last read
        // brought after it.
        auto head_end = std::min(request.find("\r\n\r\n"), request.find("\n\n"));
        if (head_end != std::string::npos && head_end <= max_request_bytes) {
            reply = answer(request, shared->render);
            break;
        }
        if (request.size() > max_request_bytes) {
            reply = response("400 Bad Request", "text/plain; charset=utf-8", "request too large\n", true);
            break;
        }
        std::error_code error;
        auto size = co_await socket.async_read_some(asio::buffer(buffer), asio::redirect_error(asio::use_awaitable, error));
        if (error) {
            break;  // closed, reset or timed out: no client is left to reply to
        }
        request.append(buffer, size);
    }

    if (!reply.empty()) {
        std::error_code error;
        co_await asio::async_write(socket, asio::buffer(reply), asio::redirect_error(asio::use_awaitable, error));
        socket.shutdown(asio::ip::tcp::socket::shutdown_send, error);
    }
    deadline->stop();
    std::error_code ignored;
    socket.close(ignored);
}

asio::awaitable<void> accept_loop(std::shared_ptr<MetricsServer::Shared> shared) {
    while (shared->acceptor.is_open()) {
        std::error_code error;
        auto socket = co_await shared->acceptor.async_accept(asio::redirect_error(asio::use_awaitable, error));
        if (error == asio::error::operation_aborted || !shared->acceptor.is_open()) {
            break;
        }
        if (error) {
            log::warning("metrics: accept failed: " + error.message());
            asio::steady_timer pause(shared->acceptor.get_executor(), std::chrono::milliseconds(100));
            co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, error));
            continue;
        }
        if (shared->open_connections >= max_open_connections) {
            socket.close(error);
            continue;
        }
        asio::co_spawn(shared->acceptor.get_executor(), serve_connection(std::move(socket), shared), asio::detached);
    }
}

}  // namespace

MetricsServer::MetricsServer(asio::any_io_executor executor, std::function<std::string()> render)
    : executor_(executor), shared_(std::make_shared<Shared>(executor, std::move(render))) {}

MetricsServer::~MetricsServer() { stop(); }

void MetricsServer::listen(const asio::ip::tcp::endpoint& endpoint) {
    auto& acceptor = shared_->acceptor;
    std::error_code error;
    acceptor.open(endpoint.protocol(), error);
    if (!error) {
        acceptor.set_option(asio::socket_base::reuse_address(true), error);
    }
    if (!error && endpoint.address().is_v6()) {
        acceptor.set_option(asio::ip::v6_only(true), error);
    }
    if (!error) {
        acceptor.bind(endpoint, error);
    }
    if (!error) {
        acceptor.listen(asio::socket_base::max_listen_connections, error);
    }
    if (error) {
        std::error_code ignored;
        acceptor.close(ignored);
        throw std::runtime_error("cannot listen on " + endpoint_text(endpoint) + " for metrics: " + error.message());
    }
    log::info("metrics: listening on " + endpoint_text(local_endpoint()) + ", GET /metrics");
    asio::co_spawn(executor_, accept_loop(shared_), asio::detached);
}

void MetricsServer::stop() {
    std::error_code ignored;
    shared_->acceptor.close(ignored);
}

asio::ip::tcp::endpoint MetricsServer::local_endpoint() const {
    std::error_code error;
    return shared_->acceptor.local_endpoint(error);
}

}  // namespace tlsrelay::stats
