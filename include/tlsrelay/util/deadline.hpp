// A per-connection deadline. Each I/O step re-arms it; when it passes, the
// socket's pending operations are cancelled so the suspended coroutine
// resumes with an error and can send a last reply. A second expiry, armed
// for that last reply, shuts the socket down for good.
#pragma once

#include <chrono>
#include <memory>

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

namespace tlsrelay {

class Deadline : public std::enable_shared_from_this<Deadline> {
public:
    Deadline(asio::ip::tcp::socket& socket);

    // Starts the watching coroutine; the socket must outlive stop().
    void start();
    void stop();
    void arm(std::chrono::steady_clock::duration timeout);
    bool expired() const { return expirations_ > 0; }

private:
    asio::awaitable<void> watch();

    asio::ip::tcp::socket& socket_;
    asio::steady_timer timer_;
    int expirations_ = 0;
    bool stopped_ = false;
};

}  // namespace tlsrelay
