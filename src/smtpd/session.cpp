// One inbound SMTP connection: reads command lines, lets Protocol decide,
// and does the I/O that a decision calls for (TLS handshake, message
// content, password checks).
#include <ctime>

#include <asio/co_spawn.hpp>
#include <asio/use_awaitable.hpp>

#include "tlsrelay/queue/committer.hpp"
#include "tlsrelay/queue/spool.hpp"
#include "tlsrelay/smtp/command.hpp"
#include "tlsrelay/smtp/content.hpp"
#include "tlsrelay/smtp/line_reader.hpp"
#include "tlsrelay/smtpd/proxy.hpp"
#include "tlsrelay/smtpd/server.hpp"
#include "tlsrelay/tls/stream.hpp"
#include "tlsrelay/util/deadline.hpp"
#include "tlsrelay/util/log.hpp"

namespace tlsrelay::smtpd {
namespace {

// RFC 5321 section 4.5.3.1.4 allows 512 octets per command line; SMTP
// extensions (RFC 1869 section 4.1.2) add up to 500 more for parameters.
constexpr std::size_t max_command_line = 512 + 500;
// A command that keeps coming without a line end is cut off at this bound.
constexpr std::size_t max_command_bytes = 64 * 1024;
// Content lines longer than this are read in pieces, keeping memory fixed.
constexpr std::size_t max_content_piece = 8192;
// Decoded content is written to the spool in blocks of about this size.
constexpr std::size_t spool_block = 64 * 1024;
constexpr auto last_reply_timeout = std::chrono::seconds(10);

std::string rfc5322_date(std::time_t when) {
    std::tm utc{};
    gmtime_r(&when, &utc);
    char text[64];
    std::strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S +0000", &utc);
    return text;
}

// Runs on the hashing executor. A capturing lambda coroutine handed to
// co_spawn crashed here with a double free of its captures (GCC 12, Asio
// 1.22). A plain coroutine function copies its parameters into its frame.
asio::awaitable<bool> verify_password(std::shared_ptr<const UserDatabase> users, std::string user,
                                      std::string password) {
    co_return users->verify(user, password);
}

// Makes a received message durable; returns the error text, empty on success.
asio::awaitable<std::string> commit_message(queue::MessageWriter* writer) {
    try {
        writer->commit();
    } catch (const queue::SpoolError& error) {
        co_return std::string(error.what());
    }
    co_return std::string();
}

// A message being received, from the queue file's creation to its commit.
struct Incoming {
    queue::Envelope envelope;
    std::optional<queue::MessageWriter> writer;
    smtp::HopCounter hops;
    std::uint64_t size = 0;
    bool too_big = false;
    bool bare_newline = false;
    std::string write_error;
    std::string pending;  // decoded bytes not yet written

    void add(std::string_view bytes, std::size_t limit) {
        size += bytes.size();
        if (size > limit) {
            too_big = true;
        }
        hops.feed(bytes);
        if (!too_big && write_error.empty()) {
            pending.append(bytes);
            if (pending.size() >= spool_block) {
                flush();
            }
        }
    }

    void flush() {
        try {
            writer->append(pending);
        } catch (const queue::SpoolError& error) {
            write_error = error.what();
        }
        pending.clear();
    }
};

class Session {
public:
    Session(asio::ip::tcp::socket socket, std::shared_ptr<const ServerSettings> settings)
        : settings_(std::move(settings)),
          stream_(std::move(socket)),
          reader_(stream_, max_command_line),
          client_address_(remote_address()),
          protocol_(std::make_unique<Protocol>(settings_->protocol, client_address_)),
          deadline_(std::make_shared<Deadline>(stream_.socket())) {
        peer_ = "unknown[" + client_address_.to_string() + "]";
        std::error_code ignored;
        stream_.socket().set_option(asio::ip::tcp::no_delay(true), ignored);
    }

    asio::awaitable<void> run() {
        log::info("connect from " + peer_);
        deadline_->start();
        std::exception_ptr failure;
        try {
            co_await converse();
            co_await flush();
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

    // Queues a reply. Replies to pipelined commands (RFC 2920) are sent
    // together once no complete command is left in the input, which saves
    // system calls and never leaves a reply behind a small packet that
    // Nagle's algorithm would hold back.
    asio::awaitable<void> send(const smtp::Reply& reply) {
        output_ += reply.wire();
        if (!reader_.has_line()) {
            co_await flush();
        }
    }

    asio::awaitable<void> flush() {
        if (output_.empty()) {
            co_return;
        }
        deadline_->arm(settings_->timeout);
        std::string pending;
        pending.swap(output_);
        co_await stream_.write_all(asio::buffer(pending));
    }

    asio::awaitable<void> converse() {
        if (settings_->proxy_protocol && !co_await read_proxy_header()) {
            co_return;
        }
        if (settings_->implicit_tls) {
            co_await start_tls();
        }
        co_await send(protocol_->greeting().reply);

        for (;;) {
            deadline_->arm(settings_->timeout);
            auto line = co_await reader_.read_line();
            ++commands_;

            // An over-long command is read to its end and gets one error
            // reply. A command that never ends closes the session.
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
            // A bare LF never ends a command: the line is refused whole.
            if (line.end == smtp::LineEnd::bare_lf) {
                if (co_await reject(smtp::make_reply(500, "5.5.2", "Error: bare <LF> received, lines must end with <CR><LF>"))) {
                    co_return;
                }
                continue;
            }

            auto response = protocol_->handle(line.text);
            if (response.reply.code >= 400) {
                log_rejection(line.text, response.reply);
            }
            if (!co_await perform(response)) {
                co_return;
            }
        }
    }

    // Logs a rejected MAIL or RCPT in Postfix's NOQUEUE form, so the log
    // shows which client was rejected and why.
    void log_rejection(std::string_view line, const smtp::Reply& reply) const {
        auto command = smtp::parse_command(line);
        if (command.verb != smtp::Verb::mail && command.verb != smtp::Verb::rcpt) {
            return;
        }
        const auto& transaction = protocol_->transaction();
        std::string text = "NOQUEUE: reject: " + command.name + " from " + peer_ + ": " + reply.summary();
        if (command.verb == smtp::Verb::rcpt) {
            text += "; from=<" + transaction.sender + ">";
        }
        text += " " + command.name + " " + command.argument.substr(0, 300);
        text += " helo=<" + protocol_->helo_name() + ">";
        log::info(text);
    }

    // Carries out one response; returns false when the session ends.
    asio::awaitable<bool> perform(Response& response) {
        switch (response.action) {
        case Action::read_data:
            co_await receive_data(response.reply);
            co_return true;
        case Action::read_chunk:
            co_await receive_chunk(response);
            co_return true;
        case Action::verify_auth: {
            auto result = protocol_->auth_result(co_await check_password());
            co_return co_await perform(result);
        }
        default:
            break;
        }

        if (response.reply.code >= 500) {
            bool closed = co_await reject(response.reply);
            co_return !closed && response.action != Action::close;
        }
        co_await send(response.reply);
        if (response.action == Action::close) {
            co_return false;
        }
        if (response.action == Action::start_tls) {
            co_await start_tls();
        }
        co_return true;
    }

    // Sends an error reply; returns true when the error limit closed the session.
    asio::awaitable<bool> reject(const smtp::Reply& reply) {
        ++errors_;
        co_await send(reply);
        if (!protocol_->count_error()) {
            co_return false;
        }
        log::warning("too many errors from " + peer_ + ", closing connection");
        co_await send(smtp::make_reply(421, "4.7.0", settings_->protocol.myhostname + " Error: too many errors"));
        co_return true;
    }

    // Reads the rest of an over-long line; false when it exceeds the hard bound.
    asio::awaitable<bool> skip_long_line() {
        std::size_t total = max_command_line;
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

    asio::awaitable<bool> read_proxy_header() {
        for (;;) {
            deadline_->arm(settings_->timeout);
            auto bytes = co_await reader_.read_bytes();
            ProxyHeader header;
            std::size_t consumed = 0;
            std::string error;
            auto result = parse_proxy_header(bytes, header, consumed, error);
            if (result == ProxyParse::invalid) {
                log::warning("PROXY protocol error from " + peer_ + ": " + error);
                co_return false;
            }
            if (result == ProxyParse::ok) {
                reader_.consume(consumed);
                if (header.source) {
                    log::info("PROXY protocol: " + peer_ + " speaks for [" + header.source->to_string() + "]:" +
                              std::to_string(header.source_port));
                    client_address_ = *header.source;
                    peer_ = "unknown[" + client_address_.to_string() + "]";
                    protocol_ = std::make_unique<Protocol>(settings_->protocol, client_address_);
                }
                co_return true;
            }
            if (bytes.size() >= max_proxy_header) {
                log::warning("PROXY protocol error from " + peer_ + ": header too long");
                co_return false;
            }
            co_await reader_.fill();
        }
    }

    asio::awaitable<void> start_tls() {
        co_await flush();

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
                  session.cipher + (session.server_name.empty() ? "" : " (SNI " + session.server_name + ")"));
        protocol_->tls_started(session.protocol + " with cipher " + session.cipher);
    }

    // Checks AUTH credentials on the hashing executor, off the event loop.
    asio::awaitable<bool> check_password() {
        const auto& credentials = protocol_->pending_credentials();
        auto users = settings_->users;
        if (!users) {
            co_return false;
        }
        std::string user = credentials.user;
        std::string password = credentials.password;
        bool valid = co_await asio::co_spawn(settings_->auth_executor, verify_password(users, user, password),
                                             asio::use_awaitable);
        // The user name is logged, the password never.
        if (valid) {
            log::info(peer_ + ": sasl_method=" + std::string("PLAIN/LOGIN") + ", sasl_username=" + user);
        } else {
            log::warning(peer_ + ": SASL authentication failed for user " + user);
        }
        co_return valid;
    }

    std::string received_header(const queue::Envelope& envelope) const {
        // RFC 3848 protocol names: ESMTP, plus S for TLS and A for AUTH.
        std::string protocol = protocol_->esmtp() ? "ESMTP" : "SMTP";
        if (protocol_->tls_active()) {
            protocol += "S";
        }
        if (!protocol_->authenticated_user().empty()) {
            protocol += "A";
        }
        if (envelope.smtputf8) {
            protocol = "UTF8" + protocol;
        }
        std::string header = "Received: from " + protocol_->helo_name() + " (" + peer_ + ")\r\n";
        if (protocol_->tls_active()) {
            header += "\t(using " + protocol_->tls_description() + ")\r\n";
        }
        header += "\tby " + settings_->protocol.myhostname + " (tlsrelay) with " + protocol + " id " + envelope.id;
        // The date follows the last clause on a folded line of its own:
        // "for <rcpt>" names the recipient only when there is one.
        auto date = rfc5322_date(static_cast<std::time_t>(envelope.arrival_unix_ms / 1000));
        if (envelope.recipients.size() == 1) {
            header += "\r\n\tfor <" + envelope.recipients.front() + ">; " + date + "\r\n";
        } else {
            header += ";\r\n\t" + date + "\r\n";
        }
        return header;
    }

    // Creates the queue file for the current transaction; false on error.
    bool open_message() {
        const auto& transaction = protocol_->transaction();
        incoming_ = std::make_unique<Incoming>();
        auto& envelope = incoming_->envelope;
        envelope.id = queue::make_queue_id();
        envelope.sender = transaction.sender;
        envelope.recipients = transaction.recipients;
        envelope.recipient_dsn = transaction.recipient_dsn;
        envelope.dsn_ret = transaction.dsn_ret;
        envelope.dsn_envid = transaction.dsn_envid;
        envelope.smtputf8 = transaction.smtputf8;
        envelope.authenticated_user = protocol_->authenticated_user();
        envelope.arrival_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count();
        envelope.client = peer_;
        envelope.eight_bit = transaction.eight_bit;
        try {
            incoming_->writer.emplace(settings_->spool->create(envelope));
            incoming_->writer->append(received_header(envelope));
            return true;
        } catch (const queue::SpoolError& error) {
            log::error(envelope.id + ": cannot create queue file: " + error.what());
            incoming_.reset();
            return false;
        }
    }

    // Judges and commits a fully received message; returns the final reply.
    asio::awaitable<smtp::Reply> finish_message() {
        auto incoming = std::move(incoming_);
        protocol_->end_transaction();
        const auto& id = incoming->envelope.id;
        const auto limit = settings_->protocol.message_size_limit;

        if (incoming->too_big) {
            log::info(id + ": reject: message size exceeds limit of " + std::to_string(limit) + " bytes from " + peer_);
            co_return smtp::make_reply(552, "5.3.4", "Error: message size exceeds fixed limit");
        }
        if (incoming->bare_newline && settings_->bare_newline == smtp::BareNewline::reject) {
            log::info(id + ": reject: bare <CR> or <LF> in message content from " + peer_);
            co_return smtp::make_reply(554, "5.5.2", "Error: bare <CR> or <LF> received, lines must end with <CR><LF>");
        }
        if (incoming->hops.hops() > settings_->hopcount_limit) {
            log::info(id + ": reject: too many Received: headers (" + std::to_string(incoming->hops.hops()) +
                      "), mail loop, from " + peer_);
            co_return smtp::make_reply(554, "5.4.6", "Error: too many hops");
        }
        incoming->flush();
        if (!incoming->write_error.empty()) {
            log::error(id + ": queue file write error: " + incoming->write_error);
            co_return smtp::make_reply(451, "4.3.0", "Error: queue file write error");
        }
        // The fsyncs run on the disk executor, so one session's commit does
        // not stall every other session on the event loop.
        // NOTE: plain statements, not a conditional expression: GCC 12
        // miscompiles co_await inside "?:" (the result is destroyed twice).
        std::string commit_error;
        if (settings_->committer) {
            commit_error = co_await queue::async_commit(*settings_->committer, *incoming->writer);
        } else if (settings_->disk_executor) {
            commit_error = co_await asio::co_spawn(settings_->disk_executor, commit_message(&*incoming->writer),
                                                   asio::use_awaitable);
        } else {
            commit_error = co_await commit_message(&*incoming->writer);
        }
        if (!commit_error.empty()) {
            log::error(id + ": cannot commit queue file: " + commit_error);
            co_return smtp::make_reply(451, "4.3.0", "Error: queue file write error");
        }

        const auto& envelope = incoming->envelope;
        log::info(id + ": client=" + peer_ + ", from=<" + envelope.sender + ">, size=" +
                  std::to_string(incoming->writer->content_size()) + ", nrcpt=" +
                  std::to_string(envelope.recipients.size()) +
                  (envelope.authenticated_user.empty() ? "" : ", sasl_username=" + envelope.authenticated_user) +
                  " (queue active)");
        if (settings_->on_queued) {
            settings_->on_queued(incoming->writer->stored_message(envelope));
        }
        co_return smtp::make_reply(250, "2.0.0", "Ok: queued as " + id);
    }

    asio::awaitable<void> receive_data(const smtp::Reply& go_ahead) {
        if (!open_message()) {
            protocol_->end_transaction();
            co_await send(smtp::make_reply(451, "4.3.0", "Error: queue file write error"));
            co_return;
        }
        co_await send(go_ahead);

        smtp::DataDecoder decoder(settings_->bare_newline);
        std::string decoded;
        reader_.set_max_piece(max_content_piece);
        for (;;) {
            deadline_->arm(settings_->timeout);
            auto line = co_await reader_.read_line();
            decoded.clear();
            if (decoder.feed(line, decoded)) {
                break;
            }
            incoming_->add(decoded, settings_->protocol.message_size_limit);
        }
        reader_.set_max_piece(max_command_line);
        incoming_->bare_newline = decoder.bare_newline_seen();
        auto final_reply = co_await finish_message();
        co_await send(final_reply);
    }

    asio::awaitable<void> receive_chunk(const Response& response) {
        // A refused chunk, or any chunk after a size or write problem, is
        // still read in full so the next command starts at the right byte.
        bool keep = !response.discard_chunk;
        if (keep && !incoming_) {
            if (!open_message()) {
                keep = false;
            } else {
                protocol_->start_chunking();
                chunk_decoder_.emplace(settings_->bare_newline);
            }
        }

        std::string decoded;
        std::size_t remaining = response.chunk_size;
        while (remaining > 0) {
            deadline_->arm(settings_->timeout);
            auto bytes = co_await reader_.read_bytes();
            auto take = std::min(remaining, bytes.size());
            if (keep) {
                decoded.clear();
                chunk_decoder_->feed(bytes.substr(0, take), decoded);
                incoming_->add(decoded, settings_->protocol.message_size_limit);
            }
            reader_.consume(take);
            remaining -= take;
        }

        if (response.discard_chunk) {
            co_await reject(response.reply);
            co_return;
        }
        if (!keep) {
            protocol_->end_transaction();
            co_await send(smtp::make_reply(451, "4.3.0", "Error: queue file write error"));
            co_return;
        }
        if (!response.last_chunk) {
            co_await send(smtp::make_reply(250, "2.0.0", "Ok: " + std::to_string(response.chunk_size) + " bytes"));
            co_return;
        }
        decoded.clear();
        chunk_decoder_->finish(decoded);
        incoming_->add(decoded, settings_->protocol.message_size_limit);
        incoming_->bare_newline = chunk_decoder_->bare_newline_seen();
        chunk_decoder_.reset();
        auto final_reply = co_await finish_message();
        co_await send(final_reply);
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
    std::unique_ptr<Protocol> protocol_;
    std::shared_ptr<Deadline> deadline_;
    std::unique_ptr<Incoming> incoming_;
    std::optional<smtp::ChunkDecoder> chunk_decoder_;
    std::string peer_;
    std::string output_;  // replies not yet written
    int commands_ = 0;
    int errors_ = 0;
};

}  // namespace

asio::awaitable<void> run_session(asio::ip::tcp::socket socket, std::shared_ptr<const ServerSettings> settings) {
    // Count the connection by its socket address (the proxy's, behind a
    // PROXY protocol listener) for as long as the session runs.
    std::error_code error;
    auto address = socket.remote_endpoint(error).address();
    auto counter = settings->connections;
    ++counter->total;
    ++counter->accepted;
    ++counter->per_client[address];

    Session session(std::move(socket), std::move(settings));
    co_await session.run();

    --counter->total;
    if (--counter->per_client[address] == 0) {
        counter->per_client.erase(address);
    }
}

}  // namespace tlsrelay::smtpd
