// bench-sink: an SMTP server that accepts every message, discards it and
// counts it, with optional STARTTLS. It plays smtp-sink's role for the TLS
// scenarios of bench/run, which smtp-sink cannot serve.
//
//   bench-sink --listen 127.0.0.1:PORT [--cert FILE --key FILE]
//              [--count N] [--timeout SECONDS]
//
// Prints "listening" once the socket is bound. With --count it prints
// "done count=N time=T" (T in CLOCK_MONOTONIC seconds, when message N was
// accepted) and keeps serving, so that clients can still QUIT cleanly,
// until SIGTERM or --timeout. At --timeout it prints "timeout count=K" and
// exits 3 unless the count was reached.
#include <iostream>
#include <memory>

#include "smtp_connection.hpp"

namespace {

using bench::Connection;
using bench::tcp;

struct Counters {
    long messages = 0;
    long target = 0;
    long session_errors = 0;
};

std::string ehlo_reply(bool offer_starttls) {
    std::string reply = "250-bench-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n";
    if (offer_starttls) {
        reply += "250-STARTTLS\r\n";
    }
    reply += "250 SIZE 104857600\r\n";
    return reply;
}

std::string_view verb_of(const std::string& line) {
    std::string_view view(line);
    auto end = view.find_first_of(" :\r");
    return view.substr(0, end);
}

bool verb_is(std::string_view verb, std::string_view expected) {
    if (verb.size() != expected.size()) {
        return false;
    }
    for (std::size_t i = 0; i < verb.size(); ++i) {
        if (std::toupper(static_cast<unsigned char>(verb[i])) != expected[i]) {
            return false;
        }
    }
    return true;
}

asio::awaitable<void> serve(tcp::socket socket, asio::ssl::context& tls_context, bool tls_enabled,
                            Counters& counters) {
    Connection connection(std::move(socket), tls_context);
    try {
        co_await connection.write("220 bench-sink ESMTP\r\n");
        for (;;) {
            auto line = co_await connection.read_line();
            auto verb = verb_of(line);
            if (verb_is(verb, "EHLO")) {
                co_await connection.write(ehlo_reply(tls_enabled && !connection.tls_active()));
            } else if (verb_is(verb, "STARTTLS") && tls_enabled && !connection.tls_active()) {
                co_await connection.write("220 2.0.0 Ready to start TLS\r\n");
                co_await connection.handshake(asio::ssl::stream_base::server);
            } else if (verb_is(verb, "DATA")) {
                co_await connection.write("354 End data with <CR><LF>.<CR><LF>\r\n");
                co_await connection.read_data();
                ++counters.messages;
                co_await connection.write("250 2.0.0 Ok: queued\r\n");
                if (counters.target > 0 && counters.messages == counters.target) {
                    std::printf("done count=%ld time=%.6f\n", counters.messages, bench::monotonic_seconds());
                    std::fflush(stdout);
                }
            } else if (verb_is(verb, "QUIT")) {
                co_await connection.write("221 2.0.0 Bye\r\n");
                break;
            } else if (verb_is(verb, "HELO") || verb_is(verb, "MAIL") || verb_is(verb, "RCPT") ||
                       verb_is(verb, "RSET") || verb_is(verb, "NOOP")) {
                co_await connection.write("250 2.0.0 Ok\r\n");
            } else {
                co_await connection.write("502 5.5.2 Command not recognized\r\n");
            }
        }
    } catch (const std::exception&) {
        // A peer that disconnects without QUIT is normal for a relay's
        // connection cache; only count it.
        ++counters.session_errors;
    }
    connection.close();
}

asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, asio::ssl::context& tls_context, bool tls_enabled,
                                  Counters& counters) {
    for (;;) {
        auto socket = co_await acceptor.async_accept(asio::use_awaitable);
        socket.set_option(tcp::no_delay(true));
        asio::co_spawn(acceptor.get_executor(), serve(std::move(socket), tls_context, tls_enabled, counters),
                       asio::detached);
    }
}

}  // namespace

int main(int argc, char** argv) {
    try {
        bench::Options options(argc, argv, 1);
        auto endpoint = bench::parse_endpoint(options.text("listen", "127.0.0.1:2626"));
        auto cert_file = options.text("cert", "");
        auto key_file = options.text("key", "");
        long timeout_seconds = options.number("timeout", 600);

        asio::io_context io(1);
        asio::ssl::context tls_context(asio::ssl::context::tls_server);
        bool tls_enabled = !cert_file.empty();
        if (tls_enabled) {
            tls_context.set_options(asio::ssl::context::no_sslv2 | asio::ssl::context::no_sslv3 |
                                    asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
            tls_context.use_certificate_chain_file(cert_file);
            tls_context.use_private_key_file(key_file, asio::ssl::context::pem);
        }

        Counters counters;
        counters.target = options.number("count", 0);

        tcp::acceptor acceptor(io);
        acceptor.open(endpoint.protocol());
        acceptor.set_option(tcp::acceptor::reuse_address(true));
        acceptor.bind(endpoint);
        acceptor.listen(4096);
        std::printf("listening\n");
        std::fflush(stdout);

        asio::steady_timer deadline(io, std::chrono::seconds(timeout_seconds));
        bool timed_out = false;
        deadline.async_wait([&](std::error_code error) {
            if (!error) {
                timed_out = true;
                io.stop();
            }
        });

        asio::co_spawn(io, accept_loop(acceptor, tls_context, tls_enabled, counters), asio::detached);
        io.run();

        if (timed_out && counters.messages < counters.target) {
            std::printf("timeout count=%ld\n", counters.messages);
            std::fflush(stdout);
            return 3;
        }
        return 0;
    } catch (const std::exception& error) {
        std::fprintf(stderr, "bench-sink: %s\n", error.what());
        return 2;
    }
}
