// Helpers for the DNS tests: a scripted DNS server on loopback that answers
// over UDP and TCP, and a lab that runs lookups against such servers.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/udp.hpp>
#include <asio/read.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <catch2/catch.hpp>

#include "../../src/dns/wire.hpp"
#include "tlsrelay/dns/resolver.hpp"

namespace dns_test {

namespace wire = tlsrelay::dns::wire;

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

enum class Transport { udp, tcp };

// Returns the messages a server sends for one query. An empty list means no reply.
using Handler = std::function<std::vector<wire::Bytes>(const wire::Message& query, Transport transport)>;

// Starts a reply to `query`: same id, RD and question, NOERROR, no records.
inline wire::MessageDraft reply_to(const wire::Message& query) {
    wire::MessageDraft draft;
    draft.id = query.id;
    draft.recursion_desired = query.recursion_desired;
    draft.questions = query.questions;
    return draft;
}

// A handler that sends one reply with the given answer records.
inline Handler answer_with(std::vector<std::string> answers, int rcode = wire::rcode_noerror) {
    return [answers = std::move(answers), rcode](const wire::Message& query, Transport) {
        auto reply = reply_to(query);
        reply.rcode = rcode;
        reply.answers = answers;
        return std::vector<wire::Bytes>{wire::encode_message(reply)};
    };
}

// A DNS server on loopback that passes each decoded query to a handler and
// records what it received. UDP and TCP listen on the same port.
class FakeServer : public std::enable_shared_from_this<FakeServer> {
public:
    // Upper bound on queries and connections served, so no loop runs forever.
    static constexpr int max_queries = 1000;

    FakeServer(asio::io_context& io, Handler handler, const asio::ip::address& address)
        : udp_(io), tcp_(io), handler_(std::move(handler)) {
        bind(address);
    }

    static std::shared_ptr<FakeServer> start(asio::io_context& io, Handler handler,
                                             const asio::ip::address& address) {
        auto server = std::make_shared<FakeServer>(io, std::move(handler), address);
        asio::co_spawn(io, server->serve_udp(server), asio::detached);
        asio::co_spawn(io, server->serve_tcp(server), asio::detached);
        return server;
    }

    tlsrelay::dns::Nameserver nameserver() const {
        return {udp_.local_endpoint().address(), udp_.local_endpoint().port()};
    }

    void stop() {
        std::error_code ignored;
        udp_.close(ignored);
        tcp_.close(ignored);
    }

    // Called with each decoded UDP query and its source before the handler,
    // e.g. to send a forged reply from another socket.
    std::function<void(const wire::Message&, const asio::ip::udp::endpoint&)> udp_observer;

    std::vector<wire::Message> udp_queries;
    std::vector<asio::ip::udp::endpoint> udp_sources;
    std::vector<wire::Message> tcp_queries;

private:
    // Binds UDP to a free port, then TCP to the same port. Another process
    // may hold that TCP port, so a few ports are tried.
    void bind(const asio::ip::address& address) {
        for (int attempt = 0; attempt < 20; ++attempt) {
            std::error_code error;
            if (udp_.is_open()) {
                udp_.close();
            }
            udp_.open(address.is_v6() ? asio::ip::udp::v6() : asio::ip::udp::v4());
            udp_.bind({address, 0});
            asio::ip::tcp::endpoint endpoint(address, udp_.local_endpoint().port());
            tcp_.open(endpoint.protocol());
            tcp_.bind(endpoint, error);
            if (!error) {
                tcp_.listen();
                return;
            }
            tcp_.close();
        }
        FAIL("fake DNS server: no port on " << address.to_string() << " was free for both UDP and TCP");
    }

    // `self` keeps the server alive while the coroutine runs.
    asio::awaitable<void> serve_udp([[maybe_unused]] std::shared_ptr<FakeServer> self) {
        std::vector<std::uint8_t> buffer(65535);
        for (int served = 0; served < max_queries; ++served) {
            asio::ip::udp::endpoint sender;
            auto [error, size] = co_await udp_.async_receive_from(asio::buffer(buffer), sender, use_tuple);
            if (error) {
                co_return;
            }
            auto query = wire::decode_message(std::span(buffer.data(), size));
            if (!query) {
                continue;
            }
            udp_queries.push_back(*query);
            udp_sources.push_back(sender);
            if (udp_observer) {
                udp_observer(*query, sender);
            }
            for (const auto& reply : handler_(*query, Transport::udp)) {
                co_await udp_.async_send_to(asio::buffer(reply), sender, use_tuple);
            }
        }
    }

    asio::awaitable<void> serve_tcp([[maybe_unused]] std::shared_ptr<FakeServer> self) {
        for (int served = 0; served < max_queries; ++served) {
            auto [error, socket] = co_await tcp_.async_accept(use_tuple);
            if (error) {
                co_return;
            }
            co_await serve_connection(std::move(socket));
        }
    }

    // Serves one query per connection, with the two-byte length prefix.
    asio::awaitable<void> serve_connection(asio::ip::tcp::socket socket) {
        std::array<std::uint8_t, 2> length{};
        auto [length_error, length_read] = co_await asio::async_read(socket, asio::buffer(length), use_tuple);
        if (length_error) {
            co_return;
        }
        std::vector<std::uint8_t> buffer((length[0] << 8) | length[1]);
        auto [read_error, read] = co_await asio::async_read(socket, asio::buffer(buffer), use_tuple);
        auto query = wire::decode_message(buffer);
        if (read_error || !query) {
            co_return;
        }
        tcp_queries.push_back(*query);

        for (const auto& reply : handler_(*query, Transport::tcp)) {
            std::array<std::uint8_t, 2> reply_length{static_cast<std::uint8_t>(reply.size() >> 8),
                                                     static_cast<std::uint8_t>(reply.size() & 0xff)};
            std::array<asio::const_buffer, 2> buffers{asio::buffer(reply_length), asio::buffer(reply)};
            co_await asio::async_write(socket, buffers, use_tuple);
        }
    }

    asio::ip::udp::socket udp_;
    asio::ip::tcp::acceptor tcp_;
    Handler handler_;
};

// An io_context with fake servers, and a way to run one lookup at a time.
class Lab {
public:
    // Upper bound on one lookup in a test, far above any timeout the tests set.
    static constexpr std::chrono::seconds max_run_time{30};

    ~Lab() {
        for (auto& server : servers_) {
            server->stop();
        }
        io.restart();
        io.run_for(std::chrono::seconds(5));
    }

    std::shared_ptr<FakeServer> add_server(Handler handler,
                                           const asio::ip::address& address = asio::ip::make_address("127.0.0.1")) {
        servers_.push_back(FakeServer::start(io, std::move(handler), address));
        return servers_.back();
    }

    // Creates a resolver for the given servers, in the order given. Tests
    // that count the queries a server receives pass cache_size 0.
    tlsrelay::dns::Resolver resolver(std::vector<std::shared_ptr<FakeServer>> servers,
                                     std::chrono::milliseconds timeout = std::chrono::milliseconds(1000),
                                     int attempts = 2, std::size_t cache_size = 10000) {
        tlsrelay::dns::ResolverOptions options;
        for (const auto& server : servers) {
            options.nameservers.push_back(server->nameserver());
        }
        options.timeout = timeout;
        options.attempts = attempts;
        options.cache_size = cache_size;
        return tlsrelay::dns::Resolver(io.get_executor(), std::move(options));
    }

    // Runs one coroutine to completion and returns its result.
    template <typename T>
    T run(asio::awaitable<T> operation) {
        // Shared with the completion handler, which may still run after a
        // failed check here has left this function.
        struct Outcome {
            std::optional<T> result;
            std::exception_ptr failure;
        };
        auto outcome = std::make_shared<Outcome>();
        asio::co_spawn(io, std::move(operation), [this, outcome](std::exception_ptr error, T value) {
            outcome->failure = error;
            outcome->result = std::move(value);
            io.stop();
        });
        io.restart();
        io.run_for(max_run_time);
        if (outcome->failure) {
            std::rethrow_exception(outcome->failure);
        }
        if (!outcome->result) {
            FAIL("the lookup did not finish within " << max_run_time.count() << " s");
        }
        return std::move(*outcome->result);
    }

    asio::io_context io;

private:
    std::vector<std::shared_ptr<FakeServer>> servers_;
};

}  // namespace dns_test
