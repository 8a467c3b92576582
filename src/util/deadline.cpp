#include "tlsrelay/util/deadline.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>

namespace tlsrelay {

Deadline::Deadline(asio::ip::tcp::socket& socket) : socket_(socket), timer_(socket.get_executor()) {
    timer_.expires_at(std::chrono::steady_clock::time_point::max());
}

void Deadline::start() {
    asio::co_spawn(timer_.get_executor(), [self = shared_from_this()] { return self->watch(); }, asio::detached);
}

void Deadline::stop() {
    stopped_ = true;
    timer_.cancel();
}

void Deadline::arm(std::chrono::steady_clock::duration timeout) {
    timer_.expires_after(timeout);
}

asio::awaitable<void> Deadline::watch() {
    while (!stopped_) {
        std::error_code error;
        co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, error));
        if (stopped_) {
            break;
        }
        // A re-arm cancels the wait; only a real expiry acts.
        if (timer_.expiry() > std::chrono::steady_clock::now()) {
            continue;
        }
        ++expirations_;
        std::error_code ignored;
        if (expirations_ > 1) {
            socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
        }
        socket_.cancel(ignored);
        timer_.expires_at(std::chrono::steady_clock::time_point::max());
    }
}

}  // namespace tlsrelay
