// Drives thousands of sessions through the inbound server, clean and
// aborted, and checks that the heap does not grow with them. Under the
// sanitizer build, LeakSanitizer also checks that nothing leaks.
#include <catch2/catch.hpp>

#include <malloc.h>

#include <atomic>

#include "smtpd_test_server.hpp"
#include "tlsrelay/tls/context.hpp"

using test::Client;
using test::TestServer;

namespace {

std::size_t heap_in_use() { return mallinfo2().uordblks; }

void clean_session(std::uint16_t port) {
    Client client(port);
    client.reply();
    client.send("EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<b@remote.test>\r\nDATA\r\n");
    for (int i = 0; i < 4; ++i) {
        client.reply();
    }
    client.send("Subject: s\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    client.reply();
    client.reply();
}

void aborted_in_data(std::uint16_t port) {
    Client client(port);
    client.reply();
    client.send("EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<b@remote.test>\r\nDATA\r\n");
    for (int i = 0; i < 4; ++i) {
        client.reply();
    }
    client.send("Subject: cut\r\n\r\nhalf a li");
}

void aborted_in_handshake(std::uint16_t port) {
    Client client(port);
    client.reply();
    client.send("EHLO c.test\r\nSTARTTLS\r\n");
    client.reply();
    client.reply();
    // A truncated TLS ClientHello, then the connection closes.
    client.send(std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11));
}

void run_mix(std::uint16_t port, int rounds) {
    for (int i = 0; i < rounds; ++i) {
        clean_session(port);
        aborted_in_data(port);
        aborted_in_handshake(port);
    }
}

}  // namespace

TEST_CASE("sessions clean and aborted leave no growth", "[smtpd][sessions]") {
    auto directory = std::filesystem::temp_directory_path() / ("tlsrelay-sessions-" + std::to_string(::getpid()));
    std::filesystem::create_directories(directory);
    auto cert = (directory / "cert.pem").string();
    auto key = (directory / "key.pem").string();
    tlsrelay::tls::generate_self_signed("relay.test", cert, key);
    auto context = tlsrelay::tls::make_server_context(cert, key);

    // Count queued messages instead of keeping their envelopes, which
    // would themselves grow the heap.
    std::atomic<int> queued{0};
    TestServer server([&](auto& settings) {
        settings.tls = context;
        settings.protocol.tls_available = true;
        settings.connections->per_client_limit = 1000;
        settings.on_queued = [&queued](const tlsrelay::queue::StoredMessage&) { ++queued; };
    });

    // Warm up caches and allocator pools, then measure over many more sessions.
    run_mix(server.port(), 100);
    // Sessions end asynchronously after the client closes; give them a moment.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto before = heap_in_use();
    run_mix(server.port(), 1000);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto after = heap_in_use();

    CHECK(queued == 1100);
    CHECK(server.files_in("tmp") == 0);
    INFO("heap in use before " << before << " bytes, after " << after << " bytes");
    // 3,000 sessions: anything kept per session would show as hundreds of
    // kilobytes; allocator noise stays well under this bound.
    CHECK(after < before + 64 * 1024);
    std::filesystem::remove_all(directory);
}
