// Interoperability with OpenSSL's command-line peers on 127.0.0.1.
#include <string>

#include <asio/redirect_error.hpp>
#include <asio/this_coro.hpp>

#include "tls_test_support.hpp"

using namespace tls_test;
using tlsrelay::tls::ClientContextOptions;
using tlsrelay::tls::SessionInfo;
using tlsrelay::tls::Stream;

namespace {

// Connects to 127.0.0.1:port, retrying while the child process starts
// listening: 100 attempts, 50 ms apart.
asio::awaitable<tcp::socket> connect_when_listening(unsigned short port) {
    auto executor = co_await asio::this_coro::executor;
    tcp::endpoint endpoint(asio::ip::address_v4::loopback(), port);
    asio::error_code error;
    for (int attempt = 0; attempt < 100; ++attempt) {
        tcp::socket socket(executor);
        co_await socket.async_connect(endpoint, asio::redirect_error(asio::use_awaitable, error));
        if (!error) {
            co_return socket;
        }
        asio::steady_timer timer(executor, 50ms);
        co_await timer.async_wait(asio::use_awaitable);
    }
    throw asio::system_error(error, "connect to openssl s_server on port " + std::to_string(port));
}

}  // namespace

TEST_CASE("client talks TLS 1.2 to openssl s_server", "[tls][interop]") {
    const TestPki& pki = test_pki();
    TempDir dir;
    std::string input = dir.file("stdin");
    std::string output = dir.file("s_server.log");
    write_text(input, "");
    unsigned short port = free_loopback_port();

    // The default certificate is self-signed; only a client that sends SNI
    // mx.test.example gets the one from the test CA.
    ChildProcess server({"openssl", "s_server", "-accept", "127.0.0.1:" + std::to_string(port),
                         "-naccept", "1", "-tls1_2", "-rev",
                         "-cert", pki.file("self-signed.crt"), "-key", pki.file("self-signed.key"),
                         "-servername", "mx.test.example",
                         "-cert2", pki.file("server.crt"), "-key2", pki.file("server.key")},
                        input, output);

    ClientContextOptions options;
    options.ca_file = pki.file("ca.crt");
    auto client = tlsrelay::tls::make_client_context(options);
    SessionInfo info;
    std::string reply;
    bool done = false;

    asio::io_context io;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            Stream stream(co_await connect_when_listening(port));
            co_await stream.handshake_client(*client, "mx.test.example");
            info = stream.session();
            co_await write_text(stream, "hello tlsrelay\n");
            reply = co_await read_until(stream, "\n");
            co_await stream.shutdown();
            done = true;
        },
        [](std::exception_ptr error) {
            if (error) {
                std::rethrow_exception(error);
            }
        });
    io.run_for(20s);

    INFO("s_server output:\n" << read_text(output));
    REQUIRE(done);
    CHECK(reply == "yalerslt olleh\n");
    CHECK(info.protocol == "TLSv1.2");
    CHECK(info.cipher.rfind("TLS_ECDHE_RSA_WITH_", 0) == 0);
    CHECK(info.chain_trusted);
    CHECK(info.peer_names ==
          std::vector<std::string>{"mx.test.example", "*.mail.test.example"});
}

TEST_CASE("server accepts openssl s_client", "[tls][interop]") {
    const TestPki& pki = test_pki();
    TempDir dir;
    std::string input = dir.file("stdin");
    std::string output = dir.file("s_client.log");
    write_text(input, "hello from openssl\n");

    auto server = tlsrelay::tls::make_server_context(pki.file("chained-chain.crt"),
                                                     pki.file("chained.key"));
    asio::io_context io;
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    unsigned short port = acceptor.local_endpoint().port();

    // -ign_eof keeps s_client reading after its input ends, until the
    // server closes the connection.
    ChildProcess client({"openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(port),
                         "-servername", "chained.test.example", "-CAfile", pki.file("ca.crt"),
                         "-verify_return_error", "-verify_hostname", "chained.test.example",
                         "-ign_eof"},
                        input, output);

    SessionInfo info;
    std::string line;
    bool done = false;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            Stream stream(co_await acceptor.async_accept(asio::use_awaitable));
            co_await stream.handshake_server(*server);
            info = stream.session();
            line = co_await read_until(stream, "\n");
            co_await write_text(stream, "hello from tlsrelay\n");
            co_await stream.shutdown();
            done = true;
        },
        [](std::exception_ptr error) {
            if (error) {
                std::rethrow_exception(error);
            }
        });
    io.run_for(20s);
    int status = client.wait(10s);

    std::string client_output = read_text(output);
    INFO("s_client output:\n" << client_output);
    REQUIRE(done);
    CHECK(status == 0);
    CHECK(line == "hello from openssl\n");
    CHECK(info.protocol == "TLSv1.3");
    CHECK(info.server_name == "chained.test.example");
    CHECK(client_output.find("Verify return code: 0 (ok)") != std::string::npos);
    CHECK(client_output.find("hello from tlsrelay") != std::string::npos);
}

TEST_CASE("server rejects suite outside cipher list", "[tls][interop]") {
    // wolfSSL enables TLS_AES_128_CCM_8_SHA256 (a 64-bit tag) by default;
    // the contexts' cipher list leaves it out.
    const TestPki& pki = test_pki();
    TempDir dir;
    std::string input = dir.file("stdin");
    std::string output = dir.file("s_client.log");
    write_text(input, "");

    auto server =
        tlsrelay::tls::make_server_context(pki.file("server.crt"), pki.file("server.key"));
    asio::io_context io;
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    unsigned short port = acceptor.local_endpoint().port();
    ChildProcess client({"openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(port),
                         "-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_8_SHA256"},
                        input, output);

    std::string server_error;
    bool done = false;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            Stream stream(co_await acceptor.async_accept(asio::use_awaitable));
            try {
                co_await stream.handshake_server(*server);
            } catch (const tlsrelay::tls::TlsError& error) {
                server_error = error.what();
            }
            stream.close();
            done = true;
        },
        [](std::exception_ptr error) {
            if (error) {
                std::rethrow_exception(error);
            }
        });
    io.run_for(20s);
    int status = client.wait(10s);

    INFO("s_client output:\n" << read_text(output));
    REQUIRE(done);
    CHECK(status != 0);
    INFO("server error: " << server_error);
    CHECK(server_error.find("TLS handshake (server side) failed") != std::string::npos);
}
