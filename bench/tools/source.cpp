// bench-source: SMTP load client with optional STARTTLS, for the scenarios
// of bench/run that smtp-source cannot drive (it speaks no TLS).
//
//   bench-source send --connect ADDR:PORT --messages N --sessions C --size S
//                [--tls] [--new-connection-per-message] [--timeout SECONDS]
//   bench-source handshake --connect ADDR:PORT --connections N --sessions C
//                [--timeout SECONDS]
//   bench-source idle --connect ADDR:PORT --connections N --sessions C [--tls]
//                [--hold SECONDS]
//
// send: N messages of S body bytes over C parallel sessions, one command at
// a time (no pipelining, like smtp-source); a session sends messages until
// none are left, or one message per connection with
// --new-connection-per-message. Prints one JSON line with the counts and
// the CLOCK_MONOTONIC times of the first connect and of the last 250.
//
// handshake: N sessions of connect, EHLO, STARTTLS, a full TLS handshake
// (no session resumption) and QUIT, C at a time. Prints one JSON line.
//
// idle: opens N sessions (EHLO, and STARTTLS with --tls), C being opened at
// a time, prints "ready opened=K failed=F", then holds them until a line or
// EOF arrives on stdin or --hold passes, and closes them all.
//
// Every mode stops at --timeout / --hold, so a stuck server cannot hang it.
#include <iostream>
#include <memory>
#include <vector>

#include <asio/posix/stream_descriptor.hpp>

#include "smtp_connection.hpp"

namespace {

using bench::Connection;
using bench::tcp;

constexpr long max_logged_errors = 5;

struct Run {
    asio::io_context io{1};
    asio::ssl::context tls_context{asio::ssl::context::tls_client};
    tcp::endpoint server;
    bool tls = false;
    bool new_connection_per_message = false;
    std::string message;  // content with the terminating ".\r\n"
    long remaining = 0;   // messages or sessions not yet started
    long completed = 0;
    long failed = 0;          // messages, handshakes or sessions that did not complete
    long session_errors = 0;  // connections that ended with an error
    long workers_left = 0;
    double first_connect = 0;
    double last_completion = 0;
    std::vector<std::unique_ptr<Connection>> held;  // idle mode
};

void log_error(Run& run, const std::string& what) {
    ++run.session_errors;
    if (run.session_errors <= max_logged_errors) {
        std::fprintf(stderr, "bench-source: %s\n", what.c_str());
    }
    if (run.session_errors == max_logged_errors) {
        std::fprintf(stderr, "bench-source: further errors are counted, not logged\n");
    }
}

std::string build_message(long body_bytes) {
    std::string text =
        "From: <sender@bench.example>\r\nTo: <rcpt@sink.example>\r\nSubject: bench\r\n\r\n";
    const std::string line(76, 'x');
    long written = 0;
    while (written < body_bytes) {
        long chunk = std::min<long>(76, body_bytes - written);
        text.append(line, 0, static_cast<std::size_t>(chunk));
        text += "\r\n";
        written += chunk + 2;
    }
    text += ".\r\n";
    return text;
}

asio::awaitable<void> expect(Connection& connection, int expected, const char* step) {
    int code = co_await connection.read_reply();
    if (code != expected) {
        throw std::runtime_error(std::string(step) + ": expected " + std::to_string(expected) + ", got " +
                                 std::to_string(code));
    }
}

// Connects and greets; with TLS, also STARTTLS and the second EHLO.
asio::awaitable<void> open_session(Run& run, Connection& connection, bool tls) {
    if (run.first_connect == 0) {
        run.first_connect = bench::monotonic_seconds();
    }
    co_await connection.socket().async_connect(run.server, asio::use_awaitable);
    connection.socket().set_option(tcp::no_delay(true));
    co_await expect(connection, 220, "greeting");
    co_await connection.write("EHLO bench-source.example\r\n");
    co_await expect(connection, 250, "EHLO");
    if (tls) {
        co_await connection.write("STARTTLS\r\n");
        co_await expect(connection, 220, "STARTTLS");
        co_await connection.handshake(asio::ssl::stream_base::client);
        co_await connection.write("EHLO bench-source.example\r\n");
        co_await expect(connection, 250, "EHLO after STARTTLS");
    }
}

asio::awaitable<void> quit_session(Connection& connection) {
    co_await connection.write("QUIT\r\n");
    co_await expect(connection, 221, "QUIT");
    connection.close();
}

void finish_worker(Run& run) {
    if (--run.workers_left == 0) {
        run.io.stop();
    }
}

asio::awaitable<void> send_worker(Run& run) {
    while (run.remaining > 0) {
        Connection connection(run.io.get_executor(), run.tls_context);
        long taken = 0;
        try {
            co_await open_session(run, connection, run.tls);
            while (run.remaining > 0) {
                --run.remaining;
                taken = 1;
                co_await connection.write("MAIL FROM:<sender@bench.example>\r\n");
                co_await expect(connection, 250, "MAIL");
                co_await connection.write("RCPT TO:<rcpt@sink.example>\r\n");
                co_await expect(connection, 250, "RCPT");
                co_await connection.write("DATA\r\n");
                co_await expect(connection, 354, "DATA");
                co_await connection.write(run.message);
                co_await expect(connection, 250, "end of DATA");
                taken = 0;
                ++run.completed;
                run.last_completion = bench::monotonic_seconds();
                if (run.new_connection_per_message) {
                    break;
                }
            }
            co_await quit_session(connection);
        } catch (const std::exception& error) {
            run.failed += taken;
            log_error(run, std::string("send: ") + error.what());
            connection.close();
            if (run.session_errors > 100) {
                break;  // the server is broken; do not spin
            }
        }
    }
    finish_worker(run);
}

asio::awaitable<void> handshake_worker(Run& run) {
    while (run.remaining > 0) {
        --run.remaining;
        Connection connection(run.io.get_executor(), run.tls_context);
        try {
            co_await open_session(run, connection, true);
            co_await quit_session(connection);
            ++run.completed;
            run.last_completion = bench::monotonic_seconds();
        } catch (const std::exception& error) {
            ++run.failed;
            log_error(run, std::string("handshake: ") + error.what());
            connection.close();
        }
    }
    finish_worker(run);
}

asio::awaitable<void> idle_worker(Run& run) {
    while (run.remaining > 0) {
        --run.remaining;
        auto connection = std::make_unique<Connection>(run.io.get_executor(), run.tls_context);
        try {
            co_await open_session(run, *connection, run.tls);
            ++run.completed;
            run.held.push_back(std::move(connection));
        } catch (const std::exception& error) {
            ++run.failed;
            log_error(run, std::string("idle: ") + error.what());
            connection->close();
        }
    }
    if (--run.workers_left == 0) {
        std::printf("ready opened=%ld failed=%ld time=%.6f\n", run.completed, run.failed, bench::monotonic_seconds());
        std::fflush(stdout);
    }
}

// Returns when stdin has a line or reaches EOF.
asio::awaitable<void> wait_for_stdin(Run& run) {
    asio::posix::stream_descriptor input(run.io, ::dup(0));
    char byte = 0;
    std::error_code error;
    co_await input.async_read_some(asio::buffer(&byte, 1), asio::redirect_error(asio::use_awaitable, error));
    run.io.stop();
}

void print_result(const Run& run, const char* mode, bool timed_out) {
    std::printf(
        "{\"mode\": \"%s\", \"completed\": %ld, \"failed\": %ld, \"session_errors\": %ld, \"timed_out\": %s, "
        "\"first_connect\": %.6f, \"last_completion\": %.6f}\n",
        mode, run.completed, run.failed, run.session_errors, timed_out ? "true" : "false", run.first_connect, run.last_completion);
    std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: bench-source send|handshake|idle --connect ADDR:PORT ...\n");
        return 2;
    }
    std::string mode = argv[1];
    try {
        bench::Options options(argc, argv, 2);
        Run run;
        run.server = bench::parse_endpoint(options.text("connect", "127.0.0.1:2525"));
        run.tls = options.flag("tls");
        run.new_connection_per_message = options.flag("new-connection-per-message");
        run.tls_context.set_verify_mode(asio::ssl::verify_none);
        run.tls_context.set_options(asio::ssl::context::no_sslv2 | asio::ssl::context::no_sslv3 |
                                    asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
        long sessions = std::max(1L, options.number("sessions", 1));
        long timeout_seconds = options.number(mode == "idle" ? "hold" : "timeout", 600);

        if (mode == "send") {
            run.remaining = options.number("messages", 1);
            run.message = build_message(options.number("size", 4096));
        } else if (mode == "handshake" || mode == "idle") {
            run.remaining = options.number("connections", 1);
        } else {
            throw std::invalid_argument("unknown mode \"" + mode + "\": expected send, handshake or idle");
        }
        sessions = std::min(sessions, std::max(1L, run.remaining));
        run.workers_left = sessions;

        for (long i = 0; i < sessions; ++i) {
            if (mode == "send") {
                asio::co_spawn(run.io, send_worker(run), asio::detached);
            } else if (mode == "handshake") {
                asio::co_spawn(run.io, handshake_worker(run), asio::detached);
            } else {
                asio::co_spawn(run.io, idle_worker(run), asio::detached);
            }
        }
        if (mode == "idle") {
            asio::co_spawn(run.io, wait_for_stdin(run), asio::detached);
        }

        asio::steady_timer deadline(run.io, std::chrono::seconds(timeout_seconds));
        bool timed_out = false;
        deadline.async_wait([&](std::error_code error) {
            if (!error) {
                timed_out = true;
                run.io.stop();
            }
        });
        run.io.run();

        if (mode == "idle") {
            for (auto& connection : run.held) {
                connection->close();
            }
            return 0;
        }
        print_result(run, mode.c_str(), timed_out);
        return run.failed == 0 && run.session_errors == 0 && !timed_out ? 0 : 1;
    } catch (const std::exception& error) {
        std::fprintf(stderr, "bench-source: %s\n", error.what());
        return 2;
    }
}
