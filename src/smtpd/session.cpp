// One inbound SMTP connection: reads command lines, lets Protocol decide,
// and does the I/O that a decision calls for (TLS handshake, message content).
#include <ctime>

#include <asio/use_awaitable.hpp>

#include "tlsrelay/queue/spool.hpp"
#include "tlsrelay/smtp/line_reader.hpp"
#include "tlsrelay/smtpd/server.hpp"
#include "tlsrelay/tls/stream.hpp"
#include "tlsrelay/util/deadline.hpp"
#include "tlsrelay/util/log.hpp"

namespace tlsrelay::smtpd {
namespace {

// RFC 5321 section 4.5.3.1.4 allows 512 octets per command; ESMTP parameters
// add to that, so longer lines are tolerated up to this bound.
constexpr std::size_t max_command_piece = 4096;
// A command without a line end after this many bytes ends the session.
constexpr std::size_t max_command_bytes = 64 * 1024;
// Content lines longer than this are read in pieces, keeping memory fixed.
constexpr std::size_t max_content_piece = 8192;
constexpr auto last_reply_timeout = std::chrono::seconds(10);

std::string rfc5322_date(std::time_t when) {
    std::tm utc{};
    gmtime_r(&when, &utc);
    char text[64];
    std::strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S +0000", &utc);
    return text;
}

class Session {
public:
    Session(asio::ip::tcp::socket socket, std::shared_ptr<const ServerSettings> settings)
        : settings_(std::move(settings)),
          stream_(std::move(socket)),
          reader_(stream_, max_command_piece),
          client_address_(remote_address()),
          protocol_(settings_->protocol, client_address_),
          deadline_(std::make_shared<Deadline>(stream_.socket())) {
        peer_ = "unknown[" + client_address_.to_string() + "]";
    }

    asio::awaitable<void> run() {
        log::info("connect from " + peer_);
        deadline_->start();
        std::exception_ptr failure;
        try {
            co_await converse();
        } catch (const std::exception&) {
            failure = std::current_exception();
        }
        if (failure) {
            co_await report_failure(failure);
        }
        deadline_->stop();
        stream_.close();
        log::info("disconnect from " + peer_ + " commands=" + std::to_string(commands_) +
                  " errors=" + std::to_string(errors_));
    }

private:
    asio::ip::address remote_address() {
        std::error_code error;
        auto endpoint = stream_.socket().remote_endpoint(error);
        return error ? asio::ip::address{} : endpoint.address();
    }

    asio::awaitable<void> send(const smtp::Reply& reply) {
        deadline_->arm(settings_->timeout);
        co_await stream_.write_all(asio::buffer(reply.wire()));
    }

    asio::awaitable<void> converse() {
        co_await send(protocol_.greeting().reply);

        for (;;) {
            deadline_->arm(settings_->timeout);
            auto line = co_await reader_.read_line();
            ++commands_;

            // An over-long command is read to its end and answered once; one
            // that never ends closes the session.
            if (line.end == smtp::LineEnd::none) {
                if (!co_await skip_long_line()) {
                    co_await send(smtp::make_reply(500, "5.5.2", "Error: line too long, closing connection"));
                    co_return;
                }
                if (co_await reject(smtp::make_reply(500, "5.5.2", "Error: line too long"))) {
                    co_return;
                }
                continue;
            }
            if (line.end == smtp::LineEnd::bare_lf) {
                if (co_await reject(smtp::make_reply(500, "5.5.2", "Error: bare <LF> received, lines must end with <CR><LF>"))) {
                    co_return;
                }
                continue;
            }

            auto response = protocol_.handle(line.text);
            if (response.reply.code >= 500) {
                if (co_await reject(response.reply)) {
                    co_return;
                }
                continue;
            }
            if (response.action == Action::read_data) {
                co_await receive_message(response.reply);
                continue;
            }
            co_await send(response.reply);
            if (response.action == Action::close) {
                co_return;
            }
            if (response.action == Action::start_tls) {
                co_await start_tls();
            }
        }
    }

    // Sends an error reply; returns true when the error limit closed the session.
    asio::awaitable<bool> reject(const smtp::Reply& reply) {
        ++errors_;
        co_await send(reply);
        if (!protocol_.count_error()) {
            co_return false;
        }
        log::warning("too many errors from " + peer_ + ", closing connection");
        co_await send(smtp::make_reply(421, "4.7.0", settings_->protocol.myhostname + " Error: too many errors"));
        co_return true;
    }

    // Reads the rest of an over-long line; false when it exceeds the hard bound.
    asio::awaitable<bool> skip_long_line() {
        std::size_t total = max_command_piece;
        for (;;) {
            deadline_->arm(settings_->timeout);
            auto piece = co_await reader_.read_line();
            total += piece.text.size();
            if (piece.end != smtp::LineEnd::none) {
                co_return true;
            }
            if (total > max_command_bytes) {
                co_return false;
            }
        }
    }

    asio::awaitable<void> start_tls() {
        // Commands sent after STARTTLS but before the handshake were injected
        // in plaintext (CVE-2011-0411 class); they must not run under TLS.
        if (reader_.has_buffered()) {
            log::warning("discarding plaintext pipelined after STARTTLS from " + peer_);
            reader_.discard_buffered();
        }

        deadline_->arm(settings_->timeout);
        co_await stream_.handshake_server(*settings_->tls);
        const auto& session = stream_.session();
        log::info("Anonymous TLS connection established from " + peer_ + ": " + session.protocol + " with cipher " +
                  session.cipher);
        protocol_.tls_started(session.protocol + " with cipher " + session.cipher);
    }

    std::string received_header(const queue::Envelope& envelope) const {
        std::string protocol = protocol_.esmtp() ? "ESMTP" : "SMTP";
        if (protocol_.tls_active()) {
            protocol += "S";
        }
        std::string header = "Received: from " + protocol_.helo_name() + " (" + peer_ + ")\r\n";
        if (protocol_.tls_active()) {
            header += "\t(using " + protocol_.tls_description() + ")\r\n";
        }
        header += "\tby " + settings_->protocol.myhostname + " (tlsrelay) with " + protocol + " id " + envelope.id + "\r\n";
        if (envelope.recipients.size() == 1) {
            header += "\tfor <" + envelope.recipients.front() + ">";
        }
        header += "; " + rfc5322_date(static_cast<std::time_t>(envelope.arrival_unix_ms / 1000)) + "\r\n";
        return header;
    }

    asio::awaitable<void> receive_message(const smtp::Reply& go_ahead) {
        const auto& transaction = protocol_.transaction();
        queue::Envelope envelope;
        envelope.id = queue::make_queue_id();
        envelope.sender = transaction.sender;
        envelope.recipients = transaction.recipients;
        envelope.arrival_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count();
        envelope.client = peer_;
        envelope.eight_bit = transaction.eight_bit;

        std::optional<queue::MessageWriter> writer;
        try {
            writer.emplace(settings_->spool->create(envelope));
            writer->append(received_header(envelope));
        } catch (const queue::SpoolError& error) {
            log::error(envelope.id + ": cannot create queue file: " + error.what());
            writer.reset();
        }
        if (!writer) {
            protocol_.end_transaction();
            co_await send(smtp::make_reply(451, "4.3.0", "Error: queue file write error"));
            co_return;
        }
        co_await send(go_ahead);

        auto result = co_await read_content(*writer);
        protocol_.end_transaction();
        if (result.too_big) {
            log::info(envelope.id + ": reject: message size exceeds limit of " +
                      std::to_string(settings_->protocol.message_size_limit) + " bytes from " + peer_);
            co_await send(smtp::make_reply(552, "5.3.4", "Error: message size exceeds fixed limit"));
            co_return;
        }
        if (!result.write_error.empty()) {
            log::error(envelope.id + ": queue file write error: " + result.write_error);
            co_await send(smtp::make_reply(451, "4.3.0", "Error: queue file write error"));
            co_return;
        }

        bool committed = false;
        try {
            writer->commit();
            committed = true;
        } catch (const queue::SpoolError& error) {
            log::error(envelope.id + ": cannot commit queue file: " + error.what());
        }
        if (!committed) {
            co_await send(smtp::make_reply(451, "4.3.0", "Error: queue file write error"));
            co_return;
        }
        log::info(envelope.id + ": client=" + peer_ + ", from=<" + envelope.sender + ">, size=" +
                  std::to_string(writer->content_size()) + ", nrcpt=" + std::to_string(envelope.recipients.size()) +
                  " (queue active)");
        if (settings_->on_queued) {
            settings_->on_queued(envelope);
        }
        co_await send(smtp::make_reply(250, "2.0.0", "Ok: queued as " + envelope.id));
    }

    struct ContentResult {
        bool too_big = false;
        std::string write_error;
    };

    // Reads content up to CRLF.CRLF. Only a "." line that follows a CRLF and
    // ends in CRLF ends the data: bare LF and bare CR never do, so a second
    // transaction smuggled inside the content stays content. Bare LF line
    // ends are stored as CRLF.
    asio::awaitable<ContentResult> read_content(queue::MessageWriter& writer) {
        ContentResult result;
        reader_.set_max_piece(max_content_piece);
        bool at_line_start = true;
        bool after_crlf = true;

        for (;;) {
            deadline_->arm(settings_->timeout);
            auto line = co_await reader_.read_line();
            if (at_line_start && after_crlf && line.end == smtp::LineEnd::crlf && line.text == ".") {
                break;
            }

            std::string_view text = line.text;
            // RFC 5321 section 4.5.2: remove one leading dot of a content line.
            if (at_line_start && text.size() > 1 && text.front() == '.') {
                text.remove_prefix(1);
            }
            std::size_t added = text.size() + (line.end == smtp::LineEnd::none ? 0 : 2);
            if (writer.content_size() + added > settings_->protocol.message_size_limit) {
                result.too_big = true;
            }
            if (!result.too_big && result.write_error.empty()) {
                try {
                    writer.append(text);
                    if (line.end != smtp::LineEnd::none) {
                        writer.append("\r\n");
                    }
                } catch (const queue::SpoolError& error) {
                    result.write_error = error.what();
                }
            }
            at_line_start = line.end != smtp::LineEnd::none;
            after_crlf = line.end == smtp::LineEnd::crlf;
        }

        reader_.set_max_piece(max_command_piece);
        co_return result;
    }

    asio::awaitable<void> report_failure(std::exception_ptr failure) {
        std::string what;
        bool lost = false;
        bool tls_failure = false;
        try {
            std::rethrow_exception(failure);
        } catch (const std::system_error& error) {
            what = error.what();
            lost = error.code() == asio::error::eof || error.code() == asio::error::connection_reset;
        } catch (const tls::TlsError& error) {
            what = error.what();
            tls_failure = true;
        } catch (const std::exception& error) {
            what = error.what();
        }

        if (deadline_->expired()) {
            log::info("timeout after command " + std::to_string(commands_) + " from " + peer_);
            try {
                deadline_->arm(last_reply_timeout);
                co_await stream_.write_all(asio::buffer(
                    smtp::make_reply(421, "4.4.2", settings_->protocol.myhostname + " Error: timeout exceeded").wire()));
            } catch (const std::exception&) {
                // The client is gone; nothing more to tell it.
            }
        } else if (lost) {
            log::info("lost connection after command " + std::to_string(commands_) + " from " + peer_);
        } else if (tls_failure) {
            log::warning("TLS error from " + peer_ + ": " + what);
        } else {
            log::warning("session with " + peer_ + " failed: " + what);
        }
    }

    std::shared_ptr<const ServerSettings> settings_;
    tls::Stream stream_;
    smtp::LineReader reader_;
    asio::ip::address client_address_;
    Protocol protocol_;
    std::shared_ptr<Deadline> deadline_;
    std::string peer_;
    int commands_ = 0;
    int errors_ = 0;
};

}  // namespace

asio::awaitable<void> run_session(asio::ip::tcp::socket socket, std::shared_ptr<const ServerSettings> settings) {
    Session session(std::move(socket), std::move(settings));
    co_await session.run();
}

}  // namespace tlsrelay::smtpd
