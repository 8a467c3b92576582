// tls::Stream over real loopback connections: handshakes, data, trust
// decisions, errors and cancellation.
#include <signal.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/this_coro.hpp>

#include "tls_test_support.hpp"

using namespace tls_test;
using tlsrelay::tls::ClientContext;
using tlsrelay::tls::ClientContextOptions;
using tlsrelay::tls::ServerContext;
using tlsrelay::tls::SessionInfo;
using tlsrelay::tls::Stream;
using tlsrelay::tls::TlsError;

namespace {

std::shared_ptr<ServerContext> server_context(const std::string& cert, const std::string& key) {
    const TestPki& pki = test_pki();
    return tlsrelay::tls::make_server_context(pki.file(cert), pki.file(key));
}

std::shared_ptr<ClientContext> client_context_trusting(const std::string& ca_file) {
    ClientContextOptions options;
    if (!ca_file.empty()) {
        options.ca_file = test_pki().file(ca_file);
    }
    return tlsrelay::tls::make_client_context(options);
}

// Runs a handshake against a server using `cert`/`key` and returns what the
// client recorded.
SessionInfo client_session_against(const std::string& cert, const std::string& key,
                                   const std::string& ca_file,
                                   const std::string& server_name = "mx.test.example") {
    auto server = server_context(cert, key);
    auto client = client_context_trusting(ca_file);
    SessionInfo info;
    run_pair(
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await stream.handshake_server(*server);
            co_await stream.shutdown();
        },
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await stream.handshake_client(*client, server_name);
            info = stream.session();
            co_await stream.shutdown();
        });
    return info;
}

std::string random_bytes(std::size_t size) {
    std::mt19937 generator(12345);
    std::uniform_int_distribution<int> byte(0, 255);
    std::string data(size, '\0');
    for (char& c : data) {
        c = static_cast<char>(byte(generator));
    }
    return data;
}

// Waits `delay`, then runs `action`; used to cancel a pending operation.
asio::awaitable<void> after(std::chrono::milliseconds delay, std::function<void()> action) {
    asio::steady_timer timer(co_await asio::this_coro::executor, delay);
    co_await timer.async_wait(asio::use_awaitable);
    action();
}

}  // namespace

TEST_CASE("TLS session exchanges data both ways", "[tls][stream]") {
    auto server = server_context("server.crt", "server.key");
    auto client = client_context_trusting("ca.crt");
    const std::string big = random_bytes(1024 * 1024);
    SessionInfo server_info;
    SessionInfo client_info;
    std::string server_received;
    std::string client_received;
    bool server_saw_eof = false;

    run_pair(
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await stream.handshake_server(*server);
            server_info = stream.session();
            std::string line = co_await read_until(stream, "\n");
            co_await write_text(stream, "pong: " + line);
            server_received = co_await read_exactly(stream, big.size());
            co_await stream.write_all(asio::buffer(big));
            char byte = 0;
            try {
                co_await stream.read_some(asio::buffer(&byte, 1));
            } catch (const asio::system_error& error) {
                server_saw_eof = error.code() == asio::error::eof;
            }
            stream.close();
        },
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await stream.handshake_client(*client, "mx.test.example");
            client_info = stream.session();
            co_await write_text(stream, "ping\n");
            std::string reply = co_await read_until(stream, "\n");
            CHECK(reply == "pong: ping\n");
            co_await stream.write_all(asio::buffer(big));
            client_received = co_await read_exactly(stream, big.size());
            co_await stream.shutdown();
        });

    CHECK(server_received == big);
    CHECK(client_received == big);
    CHECK(server_saw_eof);

    CHECK(client_info.protocol == "TLSv1.3");
    CHECK(client_info.cipher.rfind("TLS_", 0) == 0);
    CHECK(client_info.peer_certificate_present);
    CHECK(client_info.chain_trusted);
    CHECK(client_info.verify_error.empty());
    CHECK(client_info.peer_names ==
          std::vector<std::string>{"mx.test.example", "*.mail.test.example"});
    REQUIRE(client_info.peer_chain_der.size() == 1);
    CHECK(client_info.peer_chain_der[0] == read_bytes(test_pki().file("server.der")));
    CHECK(client_info.server_name == "mx.test.example");

    CHECK(server_info.protocol == "TLSv1.3");
    CHECK(server_info.cipher == client_info.cipher);
    CHECK_FALSE(server_info.peer_certificate_present);
    CHECK(server_info.server_name == "mx.test.example");
}

TEST_CASE("STARTTLS switches from plaintext to TLS", "[tls][stream]") {
    auto server = server_context("server.crt", "server.key");
    auto client = client_context_trusting("ca.crt");

    run_pair(
        [&](Stream& stream) -> asio::awaitable<void> {
            CHECK_FALSE(stream.is_tls());
            std::string command = co_await read_until(stream, "\r\n");
            CHECK(command == "STARTTLS\r\n");
            co_await write_text(stream, "220 ready\r\n");
            co_await stream.handshake_server(*server);
            CHECK(stream.is_tls());
            std::string secret = co_await read_until(stream, "\r\n");
            CHECK(secret == "EHLO client.test.example\r\n");
            co_await stream.shutdown();
        },
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await write_text(stream, "STARTTLS\r\n");
            std::string reply = co_await read_until(stream, "\r\n");
            CHECK(reply == "220 ready\r\n");
            co_await stream.handshake_client(*client, "mx.test.example");
            CHECK(stream.is_tls());
            co_await write_text(stream, "EHLO client.test.example\r\n");
            co_await stream.shutdown();
        });
}

TEST_CASE("client trusts chain through intermediate", "[tls][verify]") {
    SessionInfo info = client_session_against("chained-chain.crt", "chained.key", "ca.crt",
                                              "chained.test.example");
    CHECK(info.chain_trusted);
    CHECK(info.verify_error.empty());
    CHECK(info.peer_chain_der.size() == 2);
    CHECK(info.peer_names == std::vector<std::string>{"chained.test.example"});
    // Leaf first: the intermediate's DER differs from the leaf's.
    REQUIRE(info.peer_chain_der.size() == 2);
    CHECK(info.peer_chain_der[0] != info.peer_chain_der[1]);
}

TEST_CASE("client distrusts chain from unrelated CA", "[tls][verify]") {
    SessionInfo info = client_session_against("server.crt", "server.key", "other-ca.crt");
    CHECK(info.peer_certificate_present);
    CHECK_FALSE(info.chain_trusted);
    CHECK_FALSE(info.verify_error.empty());
}

TEST_CASE("client distrusts self-signed server", "[tls][verify]") {
    SessionInfo info = client_session_against("self-signed.crt", "self-signed.key", "ca.crt");
    CHECK_FALSE(info.chain_trusted);
    CHECK_FALSE(info.verify_error.empty());
    CHECK(info.peer_names == std::vector<std::string>{"mx.test.example"});
}

TEST_CASE("client distrusts untrusted root sent at depth 1", "[tls][verify]") {
    // wolfSSL reports preverify=1 for such a root, so only the leaf decides.
    SessionInfo info = client_session_against("other-chain.crt", "other-leaf.key", "ca.crt");
    CHECK(info.peer_chain_der.size() == 2);
    CHECK_FALSE(info.chain_trusted);
    CHECK_FALSE(info.verify_error.empty());
}

TEST_CASE("client distrusts expired leaf from trusted CA", "[tls][verify]") {
    SessionInfo info = client_session_against("expired.crt", "expired.key", "ca.crt");
    CHECK_FALSE(info.chain_trusted);
    CHECK(info.verify_error.find("expired") != std::string::npos);
}

TEST_CASE("client without CA store distrusts every chain", "[tls][verify]") {
    SessionInfo info = client_session_against("server.crt", "server.key", "");
    CHECK(info.peer_certificate_present);
    CHECK_FALSE(info.chain_trusted);
    CHECK_FALSE(info.verify_error.empty());
}

TEST_CASE("trust result does not leak between sessions", "[tls][verify]") {
    // Same client context: an untrusted session, then a trusted one, then
    // an untrusted one again.
    auto client = client_context_trusting("ca.crt");
    auto trusted_server = server_context("server.crt", "server.key");
    auto untrusted_server = server_context("other-chain.crt", "other-leaf.key");
    std::vector<bool> results;
    for (auto* server : {untrusted_server.get(), trusted_server.get(), untrusted_server.get()}) {
        run_pair(
            [&](Stream& stream) -> asio::awaitable<void> {
                co_await stream.handshake_server(*server);
                co_await stream.shutdown();
            },
            [&](Stream& stream) -> asio::awaitable<void> {
                co_await stream.handshake_client(*client, "mx.test.example");
                results.push_back(stream.session().chain_trusted);
                co_await stream.shutdown();
            });
    }
    CHECK(results == std::vector<bool>{false, true, false});
}

TEST_CASE("peer names fall back to CN", "[tls][verify]") {
    SessionInfo info = client_session_against("cn-only.crt", "cn-only.key", "ca.crt",
                                              "cn-only.test.example");
    CHECK(info.chain_trusted);
    CHECK(info.peer_names == std::vector<std::string>{"cn-only.test.example"});
}

TEST_CASE("client without SNI sends no server name", "[tls][stream]") {
    auto server = server_context("server.crt", "server.key");
    auto client = client_context_trusting("ca.crt");
    std::string received_name = "unset";
    run_pair(
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await stream.handshake_server(*server);
            received_name = stream.session().server_name;
            co_await stream.shutdown();
        },
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await stream.handshake_client(*client, "");
            co_await stream.shutdown();
        });
    CHECK(received_name.empty());
}

TEST_CASE("TCP close without close_notify reads as eof", "[tls][stream]") {
    auto server = server_context("server.crt", "server.key");
    auto client = client_context_trusting("ca.crt");
    asio::error_code read_error;
    run_pair(
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await stream.handshake_server(*server);
            char byte = 0;
            co_await stream.read_some(asio::buffer(&byte, 1));
            try {
                co_await stream.read_some(asio::buffer(&byte, 1));
            } catch (const asio::system_error& error) {
                read_error = error.code();
            }
        },
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await stream.handshake_client(*client, "mx.test.example");
            co_await write_text(stream, "x");
            stream.close();
        });
    CHECK(read_error == asio::error::eof);
}

TEST_CASE("TLS write to closed peer raises", "[tls][stream]") {
    // SIGPIPE's default action ends the process, so this test would crash
    // the runner if a send() lacked MSG_NOSIGNAL.
    struct sigaction previous {};
    struct sigaction default_action {};
    default_action.sa_handler = SIG_DFL;
    ::sigaction(SIGPIPE, &default_action, &previous);

    auto server = server_context("server.crt", "server.key");
    auto client = client_context_trusting("ca.crt");
    asio::error_code write_error;
    run_pair(
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await stream.handshake_server(*server);
            stream.close();
        },
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await stream.handshake_client(*client, "mx.test.example");
            const std::string chunk(65536, 'a');
            // The first writes may land in socket buffers before the reset
            // arrives; 64 MiB at most is far more than any buffer holds.
            try {
                for (int i = 0; i < 1024; ++i) {
                    co_await stream.write_all(asio::buffer(chunk));
                }
            } catch (const asio::system_error& error) {
                write_error = error.code();
            }
        });
    ::sigaction(SIGPIPE, &previous, nullptr);

    CHECK((write_error == asio::error::broken_pipe ||
           write_error == asio::error::connection_reset));
}

TEST_CASE("plaintext write to closed peer raises", "[tls][stream]") {
    // Asio 1.22 passes MSG_NOSIGNAL on Linux; with SIGPIPE at its default
    // action, a send without it would end the test runner.
    struct sigaction previous {};
    struct sigaction default_action {};
    default_action.sa_handler = SIG_DFL;
    ::sigaction(SIGPIPE, &default_action, &previous);

    asio::error_code write_error;
    run_pair(
        [&](Stream& stream) -> asio::awaitable<void> {
            stream.close();
            co_return;
        },
        [&](Stream& stream) -> asio::awaitable<void> {
            const std::string chunk(65536, 'a');
            try {
                for (int i = 0; i < 1024; ++i) {
                    co_await stream.write_all(asio::buffer(chunk));
                }
            } catch (const asio::system_error& error) {
                write_error = error.code();
            }
        });
    ::sigaction(SIGPIPE, &previous, nullptr);

    CHECK((write_error == asio::error::broken_pipe ||
           write_error == asio::error::connection_reset));
}

TEST_CASE("handshake with plaintext peer raises TlsError", "[tls][errors]") {
    auto client = client_context_trusting("ca.crt");
    std::string client_error;
    bool read_after_failure_raised = false;
    run_pair(
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await write_text(stream, "220 mx.test.example ESMTP\r\n");
            // Keep the connection open until the client gives up.
            char buffer[512];
            asio::error_code ignored;
            co_await stream.socket().async_read_some(
                asio::buffer(buffer), asio::redirect_error(asio::use_awaitable, ignored));
        },
        [&](Stream& stream) -> asio::awaitable<void> {
            try {
                co_await stream.handshake_client(*client, "mx.test.example");
            } catch (const TlsError& error) {
                client_error = error.what();
            }
            try {
                char byte = 0;
                co_await stream.read_some(asio::buffer(&byte, 1));
            } catch (const TlsError&) {
                read_after_failure_raised = true;
            }
            stream.close();
        });
    CHECK(client_error.find("TLS handshake (client side) failed") != std::string::npos);
    CHECK(read_after_failure_raised);
}

TEST_CASE("server handshake with garbage raises TlsError", "[tls][errors]") {
    auto server = server_context("server.crt", "server.key");
    std::string server_error;
    run_pair(
        [&](Stream& stream) -> asio::awaitable<void> {
            try {
                co_await stream.handshake_server(*server);
            } catch (const TlsError& error) {
                server_error = error.what();
            }
            stream.close();
        },
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await write_text(stream, "EHLO this is not a ClientHello at all\r\n");
            char buffer[512];
            asio::error_code ignored;
            co_await stream.socket().async_read_some(
                asio::buffer(buffer), asio::redirect_error(asio::use_awaitable, ignored));
        });
    CHECK(server_error.find("TLS handshake (server side) failed") != std::string::npos);
}

TEST_CASE("peer closing mid-handshake raises TlsError", "[tls][errors]") {
    auto client = client_context_trusting("ca.crt");
    std::string client_error;
    run_pair(
        [&](Stream& stream) -> asio::awaitable<void> {
            char buffer[512];
            co_await stream.read_some(asio::buffer(buffer));  // the ClientHello
            stream.close();
        },
        [&](Stream& stream) -> asio::awaitable<void> {
            try {
                co_await stream.handshake_client(*client, "mx.test.example");
            } catch (const TlsError& error) {
                client_error = error.what();
            }
        });
    CHECK(client_error.find("closed the connection") != std::string::npos);
}

TEST_CASE("cancel during handshake resumes with error", "[tls][cancel]") {
    auto client = client_context_trusting("ca.crt");
    asio::error_code handshake_error;
    run_pair(
        [&](Stream& stream) -> asio::awaitable<void> {
            // Send nothing, and wait for the client to go away.
            char buffer[4096];
            asio::error_code ignored;
            for (int i = 0; i < 16 && !ignored; ++i) {
                co_await stream.socket().async_read_some(
                    asio::buffer(buffer), asio::redirect_error(asio::use_awaitable, ignored));
            }
        },
        [&](Stream& stream) -> asio::awaitable<void> {
            asio::co_spawn(co_await asio::this_coro::executor,
                           after(100ms, [&] { stream.socket().cancel(); }), asio::detached);
            try {
                co_await stream.handshake_client(*client, "mx.test.example");
            } catch (const asio::system_error& error) {
                handshake_error = error.code();
            }
            stream.close();
        },
        5s);
    CHECK(handshake_error == asio::error::operation_aborted);
}

TEST_CASE("close during TLS read resumes with error", "[tls][cancel]") {
    auto server = server_context("server.crt", "server.key");
    auto client = client_context_trusting("ca.crt");
    asio::error_code read_error;
    run_pair(
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await stream.handshake_server(*server);
            char byte = 0;
            asio::error_code ignored;
            co_await stream.socket().async_wait(
                asio::socket_base::wait_read, asio::redirect_error(asio::use_awaitable, ignored));
            (void)byte;
        },
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await stream.handshake_client(*client, "mx.test.example");
            asio::co_spawn(co_await asio::this_coro::executor,
                           after(100ms, [&] { stream.close(); }), asio::detached);
            char byte = 0;
            try {
                co_await stream.read_some(asio::buffer(&byte, 1));
            } catch (const asio::system_error& error) {
                read_error = error.code();
            }
            // A further read on the closed stream fails at once.
            try {
                co_await stream.read_some(asio::buffer(&byte, 1));
            } catch (const asio::system_error& error) {
                CHECK(error.code() == asio::error::bad_descriptor);
            }
        },
        5s);
    CHECK(read_error == asio::error::operation_aborted);
}

TEST_CASE("cancel during plaintext read resumes with error", "[tls][cancel]") {
    asio::error_code read_error;
    run_pair(
        [&](Stream& stream) -> asio::awaitable<void> {
            asio::error_code ignored;
            co_await stream.socket().async_wait(
                asio::socket_base::wait_read, asio::redirect_error(asio::use_awaitable, ignored));
        },
        [&](Stream& stream) -> asio::awaitable<void> {
            asio::co_spawn(co_await asio::this_coro::executor,
                           after(100ms, [&] { stream.socket().cancel(); }), asio::detached);
            char byte = 0;
            try {
                co_await stream.read_some(asio::buffer(&byte, 1));
            } catch (const asio::system_error& error) {
                read_error = error.code();
            }
            stream.close();
        },
        5s);
    CHECK(read_error == asio::error::operation_aborted);
}

TEST_CASE("second handshake on one stream is rejected", "[tls][errors]") {
    auto server = server_context("server.crt", "server.key");
    auto client = client_context_trusting("ca.crt");
    bool rejected = false;
    run_pair(
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await stream.handshake_server(*server);
            co_await stream.shutdown();
        },
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await stream.handshake_client(*client, "mx.test.example");
            try {
                co_await stream.handshake_client(*client, "mx.test.example");
            } catch (const TlsError&) {
                rejected = true;
            }
            co_await stream.shutdown();
        });
    CHECK(rejected);
}

TEST_CASE("cancelled TLS write blocks later writes", "[tls][cancel]") {
    auto server = server_context("server.crt", "server.key");
    auto client = client_context_trusting("ca.crt");
    asio::error_code first_error;
    std::string second_error;
    run_pair(
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await stream.handshake_server(*server);
            // Read nothing, so the client's write fills the socket buffers.
            asio::steady_timer timer(co_await asio::this_coro::executor, 2s);
            asio::error_code ignored;
            co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
            stream.close();
        },
        [&](Stream& stream) -> asio::awaitable<void> {
            co_await stream.handshake_client(*client, "mx.test.example");
            asio::co_spawn(co_await asio::this_coro::executor,
                           after(200ms, [&] { stream.socket().cancel(); }), asio::detached);
            // Far more than loopback socket buffers hold.
            const std::string big(64 * 1024 * 1024, 'a');
            try {
                co_await stream.write_all(asio::buffer(big));
            } catch (const asio::system_error& error) {
                first_error = error.code();
            }
            try {
                co_await write_text(stream, "next");
            } catch (const TlsError& error) {
                second_error = error.what();
            }
            stream.close();
        },
        10s);
    CHECK(first_error == asio::error::operation_aborted);
    CHECK(second_error.find("interrupted") != std::string::npos);
}
