// An inbound server on 127.0.0.1 with a private spool, run on its own
// thread, and a blocking SMTP client for dialogue tests.
#pragma once

#include <sys/socket.h>
#include <sys/time.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/thread_pool.hpp>
#include <asio/write.hpp>

#include "tlsrelay/queue/spool.hpp"
#include "tlsrelay/smtpd/server.hpp"

namespace test {

namespace fs = std::filesystem;

class TestServer {
public:
    explicit TestServer(const std::function<void(tlsrelay::smtpd::ServerSettings&)>& adjust = {}) {
        directory_ = fs::temp_directory_path() / ("tlsrelay-smtpd-" + std::to_string(std::random_device{}()));
        spool_ = std::make_unique<tlsrelay::queue::Spool>(directory_);

        tlsrelay::smtpd::ServerSettings settings;
        settings.protocol.myhostname = "relay.test";
        settings.protocol.tls_available = false;
        settings.protocol.mynetworks = {*tlsrelay::parse_network("127.0.0.1/32")};
        settings.protocol.message_size_limit = 100000;
        settings.timeout = std::chrono::seconds(5);
        settings.spool = spool_.get();
        settings.connections = std::make_shared<tlsrelay::smtpd::ConnectionCounter>();
        settings.auth_executor = auth_pool_.get_executor();
        settings.disk_executor = disk_pool_.get_executor();
        settings.on_queued = [this](tlsrelay::queue::StoredMessage message) {
            std::lock_guard lock(mutex_);
            queued_.push_back(std::move(message.envelope));
        };
        if (adjust) {
            adjust(settings);
        }
        server_ = std::make_unique<tlsrelay::smtpd::Server>(io_.get_executor(), settings);
        server_->listen({asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)});
        port_ = server_->local_endpoints().at(0).port();
        thread_ = std::thread([this] { io_.run(); });
    }

    ~TestServer() {
        asio::post(io_, [this] { server_->stop(); });
        work_.reset();
        io_.stop();
        thread_.join();
        auth_pool_.join();
        disk_pool_.join();
        std::error_code ignored;
        fs::remove_all(directory_, ignored);
    }

    std::uint16_t port() const { return port_; }
    const fs::path& directory() const { return directory_; }

    std::vector<tlsrelay::queue::Envelope> queued() {
        std::lock_guard lock(mutex_);
        return queued_;
    }

    // The stored content of a queued message (after the envelope).
    std::string content(const std::string& id) {
        auto message = spool_->load(id);
        if (!message) {
            return "(not in the spool)";
        }
        std::ifstream in(message->file, std::ios::binary);
        std::string text((std::istreambuf_iterator<char>(in)), {});
        return text.substr(message->content_offset);
    }

    std::size_t files_in(const char* folder) const {
        std::size_t count = 0;
        for ([[maybe_unused]] const auto& entry : fs::directory_iterator(directory_ / folder)) {
            ++count;
        }
        return count;
    }

private:
    asio::io_context io_;
    asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
    asio::thread_pool auth_pool_{1};
    asio::thread_pool disk_pool_{2};
    fs::path directory_;
    std::unique_ptr<tlsrelay::queue::Spool> spool_;
    std::unique_ptr<tlsrelay::smtpd::Server> server_;
    std::uint16_t port_ = 0;
    std::thread thread_;
    std::mutex mutex_;
    std::vector<tlsrelay::queue::Envelope> queued_;
};

// A blocking client with a receive timeout, so a missing reply fails the
// test instead of hanging it.
class Client {
public:
    explicit Client(std::uint16_t port, const char* local_address = "127.0.0.1") : socket_(io_) {
        socket_.open(asio::ip::tcp::v4());
        socket_.bind(asio::ip::tcp::endpoint(asio::ip::make_address(local_address), 0));
        socket_.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
        timeval timeout{5, 0};
        ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    }

    void send(const std::string& bytes) { asio::write(socket_, asio::buffer(bytes)); }

    // Reads one complete reply and returns it without the line ends of its
    // last line; "" when the connection closed or timed out.
    std::string reply() {
        std::string reply_text;
        for (;;) {
            auto line = read_line();
            if (line.empty()) {
                return reply_text;
            }
            reply_text += line;
            if (line.size() < 4 || line[3] != '-') {
                reply_text.resize(reply_text.size() - 2);
                return reply_text;
            }
        }
    }

    // The first three characters of the next reply, or "" at end of stream.
    std::string code() { return reply().substr(0, 3); }

    // Sends a command and returns the reply.
    std::string command(const std::string& line) {
        send(line + "\r\n");
        return reply();
    }

    bool closed() {
        char byte;
        std::error_code error;
        auto count = socket_.read_some(asio::buffer(&byte, 1), error);
        return count == 0 && error == asio::error::eof;
    }

private:
    std::string read_line() {
        for (;;) {
            auto newline = buffer_.find("\r\n");
            if (newline != std::string::npos) {
                auto line = buffer_.substr(0, newline + 2);
                buffer_.erase(0, newline + 2);
                return line;
            }
            char chunk[4096];
            std::error_code error;
            auto count = socket_.read_some(asio::buffer(chunk), error);
            if (error || count == 0) {
                return {};
            }
            buffer_.append(chunk, count);
        }
    }

    asio::io_context io_;
    asio::ip::tcp::socket socket_;
    std::string buffer_;
};

}  // namespace test
