// Heap cost of idle sessions, measured with mallinfo2. Hidden from the
// default run because the numbers depend on the allocator and are printed,
// not asserted. Run: tls_unit_tests "[.memory]"
#include <malloc.h>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "tls_test_support.hpp"

using namespace tls_test;
using tlsrelay::tls::ClientContext;
using tlsrelay::tls::ServerContext;
using tlsrelay::tls::Stream;

namespace {

std::size_t heap_in_use() {
    struct mallinfo2 info = ::mallinfo2();
    return info.uordblks + info.hblkhd;
}

struct Contexts {
    std::shared_ptr<ServerContext> server;
    std::shared_ptr<ClientContext> client;
};

struct HeapGrowth {
    std::size_t total = 0;   // all streams idle
    std::size_t client = 0;  // released when the client streams are destroyed
    std::size_t server = 0;  // released when the server streams are destroyed
};

std::size_t difference(std::size_t larger, std::size_t smaller) {
    return larger > smaller ? larger - smaller : 0;
}

// Opens `pairs` loopback connections, optionally runs TLS on both ends and
// exchanges `exchange_size` bytes each way, then measures how much the heap
// grew while all the streams sit idle, and how much each side gives back.
HeapGrowth heap_growth(int pairs, const Contexts* contexts, std::size_t exchange_size) {
    asio::io_context io;
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    tcp::endpoint endpoint = acceptor.local_endpoint();
    std::vector<std::unique_ptr<Stream>> server_streams;
    std::vector<std::unique_ptr<Stream>> client_streams;
    server_streams.reserve(static_cast<std::size_t>(pairs));
    client_streams.reserve(static_cast<std::size_t>(pairs));
    const std::string payload(exchange_size, 'x');
    int finished = 0;

    auto on_done = [&](std::exception_ptr error) {
        if (error) {
            std::rethrow_exception(error);
        }
        if (++finished == 2 * pairs) {
            io.stop();
        }
    };

    std::size_t before = heap_in_use();
    for (int i = 0; i < pairs; ++i) {
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                auto stream =
                    std::make_unique<Stream>(co_await acceptor.async_accept(asio::use_awaitable));
                if (contexts != nullptr) {
                    co_await stream->handshake_server(*contexts->server);
                }
                if (exchange_size > 0) {
                    co_await read_exactly(*stream, exchange_size);
                    co_await stream->write_all(asio::buffer(payload));
                }
                server_streams.push_back(std::move(stream));
            },
            on_done);
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                tcp::socket socket(io);
                co_await socket.async_connect(endpoint, asio::use_awaitable);
                auto stream = std::make_unique<Stream>(std::move(socket));
                if (contexts != nullptr) {
                    co_await stream->handshake_client(*contexts->client, "mx.test.example");
                }
                if (exchange_size > 0) {
                    co_await stream->write_all(asio::buffer(payload));
                    co_await read_exactly(*stream, exchange_size);
                }
                client_streams.push_back(std::move(stream));
            },
            on_done);
    }
    io.run_for(120s);
    REQUIRE(finished == 2 * pairs);

    HeapGrowth growth;
    std::size_t idle = heap_in_use();
    growth.total = difference(idle, before);
    client_streams.clear();
    std::size_t without_clients = heap_in_use();
    growth.client = difference(idle, without_clients);
    server_streams.clear();
    growth.server = difference(without_clients, heap_in_use());
    return growth;
}

void print_row(const char* label, const HeapGrowth& growth, int pairs) {
    std::cout << "  " << label << ": server " << growth.server / pairs << ", client "
              << growth.client / pairs << ", total per pair " << growth.total / pairs << "\n";
}

}  // namespace

TEST_CASE("idle session heap cost", "[.memory]") {
    const TestPki& pki = test_pki();
    Contexts contexts;
    contexts.server =
        tlsrelay::tls::make_server_context(pki.file("server.crt"), pki.file("server.key"));
    tlsrelay::tls::ClientContextOptions options;
    options.ca_file = pki.file("ca.crt");
    contexts.client = tlsrelay::tls::make_client_context(options);

    // Warm up with a full batch first: wolfSSL fills process-wide caches
    // (ECC fixed-point tables, session cache) during the first sessions.
    constexpr int pairs = 100;
    heap_growth(pairs, &contexts, 1024);

    HeapGrowth plain = heap_growth(pairs, nullptr, 0);
    HeapGrowth after_handshake = heap_growth(pairs, &contexts, 0);
    HeapGrowth after_small = heap_growth(pairs, &contexts, 1024);
    HeapGrowth after_large = heap_growth(pairs, &contexts, 64 * 1024);

    std::cout << "idle heap per session in bytes (" << pairs
              << " pairs, RSA-2048 server certificate, TLS 1.3):\n";
    print_row("plaintext TCP          ", plain, pairs);
    print_row("TLS after handshake    ", after_handshake, pairs);
    print_row("TLS after 1 KiB each   ", after_small, pairs);
    print_row("TLS after 64 KiB each  ", after_large, pairs);
    CHECK(after_handshake.total > plain.total);
}
