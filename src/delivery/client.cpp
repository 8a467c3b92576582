#include "tlsrelay/delivery/client.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <asio/use_awaitable.hpp>

#include "tlsrelay/smtp/line_reader.hpp"
#include "tlsrelay/smtp/outbound.hpp"
#include "tlsrelay/smtp/reply.hpp"
#include "tlsrelay/tls/dane.hpp"
#include "tlsrelay/tls/stream.hpp"
#include "tlsrelay/util/address.hpp"
#include "tlsrelay/util/base64.hpp"
#include "tlsrelay/util/deadline.hpp"
#include "tlsrelay/util/log.hpp"

namespace tlsrelay::delivery {

const char* to_string(Outcome outcome) {
    switch (outcome) {
    case Outcome::sent: return "sent";
    case Outcome::deferred: return "deferred";
    case Outcome::bounced: return "bounced";
    }
    return "?";
}

namespace {

std::string lower_case(std::string_view text) {
    std::string lower(text);
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return lower;
}

}  // namespace

SaslPasswords SaslPasswords::parse(std::string_view text, const std::string& origin) {
    SaslPasswords table;
    std::istringstream lines{std::string(text)};
    std::string line;
    for (int number = 1; std::getline(lines, line); ++number) {
        if (!line.empty() && line.back() == '\r') {
            line.pop_back();
        }
        auto start = line.find_first_not_of(" \t");
        if (start == std::string::npos || line[start] == '#') {
            continue;
        }
        std::istringstream fields(line.substr(start));
        std::string key;
        std::string value;
        std::string extra;
        fields >> key >> value >> extra;
        std::string where = origin + ":" + std::to_string(number);
        auto colon = value.find(':');
        if (value.empty() || !extra.empty() || colon == std::string::npos || colon == 0 ||
            colon + 1 == value.size()) {
            throw SaslPasswordError(where + ": invalid line: expected \"[host]:port user:password\"");
        }
        key = lower_case(key);
        if (table.entries_.count(key) > 0) {
            throw SaslPasswordError(where + ": duplicate entry for " + key);
        }
        table.entries_.emplace(key, SaslCredentials{value.substr(0, colon), value.substr(colon + 1)});
    }
    return table;
}

SaslPasswords SaslPasswords::load(const std::filesystem::path& file) {
    struct stat status{};
    if (::stat(file.c_str(), &status) != 0) {
        throw SaslPasswordError("cannot read sasl_password_file " + file.string() + ": " + std::strerror(errno));
    }
    if ((status.st_mode & 077) != 0) {
        throw SaslPasswordError("sasl_password_file " + file.string() +
                                " is accessible by group or others; run chmod 600 on it and make the relay's user "
                                "its owner");
    }
    std::ifstream in(file, std::ios::binary);
    if (!in) {
        throw SaslPasswordError("cannot read sasl_password_file " + file.string() + ": " + std::strerror(errno));
    }
    std::ostringstream text;
    text << in.rdbuf();
    return parse(text.str(), file.string());
}

const SaslCredentials* SaslPasswords::find(std::string_view host, std::uint16_t port) const {
    std::string name = lower_case(host);
    std::string port_text = std::to_string(port);
    for (const auto& key : {"[" + name + "]:" + port_text, "[" + name + "]", name + ":" + port_text, name}) {
        auto found = entries_.find(key);
        if (found != entries_.end()) {
            return &found->second;
        }
    }
    return nullptr;
}

bool uses_implicit_tls(std::optional<bool> wrappermode, std::uint16_t port) {
    return wrappermode.value_or(port == 465);
}

namespace {

// Replies longer than this are a broken or hostile server.
constexpr std::size_t max_reply_line = 4096;
constexpr int max_reply_lines = 100;
constexpr std::size_t content_chunk = 64 * 1024;
// Transactions with more recipients than this are not pipelined. RFC 2920
// leaves the group size to the client; 100 RCPT lines fit in a few KiB.
constexpr std::size_t max_pipelined_recipients = 100;

const char* phase_command(Phase phase) {
    switch (phase) {
    case Phase::connect: return "connect";
    case Phase::greeting: return "initial greeting";
    case Phase::ehlo: return "EHLO";
    case Phase::starttls: return "STARTTLS";
    case Phase::tls_policy: return "STARTTLS";
    case Phase::auth: return "AUTH";
    case Phase::mail: return "MAIL FROM";
    case Phase::rcpt: return "RCPT TO";
    case Phase::data: return "DATA";
    case Phase::data_end: return "end of DATA";
    }
    return "?";
}

std::string capitalised(policy::Trust trust) {
    std::string word = policy::to_string(trust);
    word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0])));
    return word;
}

// A protocol violation by the server, as opposed to a network error.
class ProtocolError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

}  // namespace

class ClientSession {
public:
    ClientSession(ClientOptions options, Target target, policy::HostPlan plan, asio::ip::tcp::socket socket)
        : options_(std::move(options)),
          target_(std::move(target)),
          plan_(std::move(plan)),
          stream_(std::move(socket)),
          reader_(stream_, max_reply_line),
          deadline_(std::make_shared<Deadline>(stream_.socket())),
          peer_(format_peer(target_.host, target_.address, target_.port)),
          implicit_tls_(uses_implicit_tls(options_.tls_wrappermode, target_.port)) {}

    ~ClientSession() {
        deadline_->stop();
        stream_.close();
    }

    // Sets up the session; false when the host cannot be used, with the
    // reason in result().
    asio::awaitable<bool> open(bool use_tls) {
        deadline_->start();
        std::exception_ptr failure;
        bool usable = false;
        try {
            usable = co_await open_session(use_tls);
        } catch (const std::exception&) {
            failure = std::current_exception();
        }
        if (failure) {
            record_failure(failure, {});
        }
        co_return usable;
    }

    asio::awaitable<AttemptResult> send(const queue::StoredMessage& message, const std::vector<std::size_t>& indices) {
        result_.recipients.clear();
        reusable_ = false;
        stale_ = false;
        mail_accepted_ = false;
        std::exception_ptr failure;
        try {
            co_await transaction(message, indices);
            // A transaction that ended before the end of data (every RCPT
            // or the DATA command rejected) is still open on the server:
            // RSET ends it, or the session is not used again.
            if (transaction_open_ && !closing_) {
                transaction_open_ = false;
                auto reply = co_await command("RSET");
                reusable_ = reply.code == 250 && !closing_;
            } else {
                reusable_ = !closing_;
            }
        } catch (const std::exception&) {
            failure = std::current_exception();
        }
        if (failure) {
            // On a reused session, a connection lost before the server
            // accepted MAIL delivered nothing: the caller retries afresh.
            stale_ = transactions_ > 0 && !mail_accepted_;
            record_failure(failure, indices);
        }
        ++transactions_;
        co_return result_;
    }

    asio::awaitable<void> quit() {
        co_await send_quit();
        deadline_->stop();
        stream_.close();
    }

    bool idle_and_open() {
        if (reader_.has_buffered() || !stream_.socket().is_open()) {
            return false;
        }
        char byte = 0;
        ssize_t count = ::recv(stream_.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        return count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }

    const AttemptResult& result() const { return result_; }
    // Drops the copy of the TLS session (with the peer chain) that open()
    // reported, so later transactions do not copy it into every result.
    void forget_reported_tls_session() { result_.tls_session.reset(); }
    bool reusable() const { return reusable_ && !deadline_->expired(); }
    bool stale() const { return stale_; }
    const Target& target() const { return target_; }
    policy::Trust trust() const { return result_.trust; }
    const tls::SessionInfo* tls_session() const { return stream_.is_tls() ? &stream_.session() : nullptr; }
    bool starttls_offered() const { return starttls_offered_; }
    const std::vector<std::string>& extensions() const { return extensions_; }
    std::size_t transactions() const { return transactions_; }

private:
    // Connects, reads the greeting, sends EHLO and sets up TLS as the plan
    // demands. Returns false when the host cannot be used.
    asio::awaitable<bool> open_session(bool use_tls) {
        result_.phase = Phase::connect;
        deadline_->arm(options_.connect_timeout);
        co_await stream_.socket().async_connect(asio::ip::tcp::endpoint(target_.address, target_.port),
                                                asio::use_awaitable);
        result_.connected = true;
        std::error_code ignored;
        stream_.socket().set_option(asio::ip::tcp::no_delay(true), ignored);

        // RFC 8314 section 3: with implicit TLS the handshake comes first,
        // and the greeting arrives over TLS.
        if (implicit_tls_) {
            result_.phase = Phase::starttls;
            if (!co_await establish_tls()) {
                co_return false;
            }
        }

        result_.phase = Phase::greeting;
        auto greeting = co_await read_reply(options_.connect_timeout);
        if (greeting.code != 220) {
            co_return host_failed(greeting.status(), "host " + peer_ + " refused to talk to me: " + greeting.summary());
        }

        if (!co_await hello() || !co_await secure_session(use_tls)) {
            co_return false;
        }
        co_return co_await authenticate();
    }

    // Sends STARTTLS when the plan and the server allow it, and applies the
    // policy verdict. Under implicit TLS the session is already encrypted.
    asio::awaitable<bool> secure_session(bool use_tls) {
        if (implicit_tls_) {
            co_return true;
        }
        policy::TlsFacts facts;
        if (!plan_.try_tls || !use_tls) {
            facts.stage = policy::TlsStage::not_tried;
            co_return co_await apply_plaintext_verdict(facts);
        }
        starttls_offered_ = offers("STARTTLS");
        if (!starttls_offered_) {
            facts.stage = policy::TlsStage::not_offered;
            co_return co_await apply_plaintext_verdict(facts);
        }
        co_return co_await start_tls();
    }

    asio::awaitable<bool> hello() {
        result_.phase = Phase::ehlo;
        auto reply = co_await command("EHLO " + options_.helo_name);
        if (reply.code == 250) {
            extensions_.clear();
            extension_lines_.assign(reply.lines.begin() + (reply.lines.empty() ? 0 : 1), reply.lines.end());
            for (std::size_t i = 1; i < reply.lines.size(); ++i) {
                std::string keyword = reply.lines[i].substr(0, reply.lines[i].find(' '));
                std::transform(keyword.begin(), keyword.end(), keyword.begin(),
                               [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
                extensions_.push_back(keyword);
            }
            co_return true;
        }

        // RFC 5321 section 3.2: fall back to HELO for servers without ESMTP.
        reply = co_await command("HELO " + options_.helo_name);
        if (reply.code == 250) {
            extensions_.clear();
            extension_lines_.clear();
            co_return true;
        }
        co_return host_failed(reply.status(), remote_said(reply));
    }

    bool offers(std::string_view keyword) const {
        return std::find(extensions_.begin(), extensions_.end(), keyword) != extensions_.end();
    }

    // Applies the verdict to a session that stays in plaintext. Under a
    // mandatory level the session ends with QUIT before any mail command,
    // so nothing is sent in clear.
    asio::awaitable<bool> apply_plaintext_verdict(const policy::TlsFacts& facts) {
        auto verdict = policy::judge(plan_, facts, peer_);
        result_.trust = verdict.trust;
        if (verdict.action == policy::Action::deliver) {
            co_return true;
        }
        result_.phase = Phase::starttls;
        result_.plaintext_extensions = extensions_;
        co_await send_quit();
        co_return host_failed(verdict.dsn, verdict.reason);
    }

    asio::awaitable<bool> start_tls() {
        result_.phase = Phase::starttls;
        auto reply = co_await command("STARTTLS");
        policy::TlsFacts facts;
        if (reply.code != 220) {
            facts.stage = policy::TlsStage::rejected;
            facts.failure = reply.summary();
            co_return co_await apply_plaintext_verdict(facts);
        }

        // RFC 3207 section 4.2 and RFC 7672 section 8: anything the server
        // sent after its 220 and before the handshake could be an injected
        // command reply, so it is dropped.
        reader_.discard_buffered();
        if (!co_await establish_tls()) {
            co_return false;
        }

        // RFC 3207 section 4.2: forget what was learned before TLS and greet
        // again; only the EHLO reply over TLS names the extensions.
        extensions_.clear();
        co_return co_await hello();
    }

    // Runs the TLS handshake and applies the policy verdict to it. After
    // STARTTLS, a verdict that allows plaintext asks the caller to retry
    // without TLS. Under implicit TLS there is no plaintext to fall back to.
    asio::awaitable<bool> establish_tls() {
        policy::TlsFacts facts;
        std::string failure;
        try {
            deadline_->arm(options_.command_timeout);
            co_await stream_.handshake_client(*options_.tls, plan_.sni);
        } catch (const tls::TlsError& error) {
            failure = error.what();
        } catch (const std::system_error& error) {
            // A server that resets the connection or goes silent after its
            // 220 to STARTTLS failed the handshake as much as one that sends
            // garbage, so the policy decides about a plaintext retry.
            failure = deadline_->expired() ? "the TLS handshake timed out"
                                           : "connection lost during the TLS handshake: " + error.code().message();
        }
        if (!failure.empty()) {
            log::warning("TLS handshake with " + peer_ + " failed: " + failure);
            facts.stage = policy::TlsStage::handshake_failed;
            facts.failure = failure;
            auto verdict = policy::judge(plan_, facts, peer_);
            // The connection is unusable after a failed handshake, so no QUIT.
            result_.retry_without_tls = !implicit_tls_ && verdict.action == policy::Action::deliver_in_clear;
            co_return host_failed(verdict.action == policy::Action::next_host ? verdict.dsn : "4.7.5",
                                  verdict.reason);
        }

        facts = session_facts();
        result_.tls_session = stream_.session();
        auto verdict = policy::judge(plan_, facts, target_.host);
        result_.trust = verdict.trust;
        result_.trust_how = verdict.how;
        const auto& session = stream_.session();
        log::info(capitalised(verdict.trust) + " TLS connection established to " + peer_ + ": " + session.protocol +
                  " with cipher " + session.cipher);
        log::info("TLS trust for " + peer_ + ": " + policy::to_string(verdict.trust) + ", " + verdict.how);
        if (verdict.action != policy::Action::deliver) {
            result_.phase = Phase::tls_policy;
            result_.retry_without_tls = !implicit_tls_ && verdict.action == policy::Action::deliver_in_clear;
            co_await send_quit();
            co_return host_failed(verdict.dsn.empty() ? "4.7.5" : verdict.dsn, verdict.reason);
        }
        tls_active_ = true;
        co_return true;
    }

    // Logs in with the credentials that sasl_password_file has for this
    // host (RFC 4954), preferring PLAIN to LOGIN. Credentials are sent
    // only over TLS. A failed login defers the mail, as Postfix does with
    // smtp_sasl_auth_soft_bounce = yes, because the usual cause is a changed
    // password, which the administrator can fix before the mail expires.
    asio::awaitable<bool> authenticate() {
        const SaslCredentials* credentials =
            options_.sasl_passwords ? options_.sasl_passwords->find(target_.host, target_.port) : nullptr;
        if (credentials == nullptr) {
            co_return true;
        }

        result_.phase = Phase::auth;
        if (!tls_active_) {
            co_await send_quit();
            co_return host_failed("4.7.0", "SMTP AUTH credentials for " + peer_ +
                                               " are not sent over a connection without TLS");
        }
        auto mechanisms = auth_mechanisms();
        auto offered = [&mechanisms](std::string_view name) {
            return std::find(mechanisms.begin(), mechanisms.end(), name) != mechanisms.end();
        };

        smtp::Reply reply;
        std::string mechanism;
        if (offered("PLAIN")) {
            // RFC 4616: authorization identity (empty), NUL, user, NUL, password.
            mechanism = "PLAIN";
            std::string message = std::string(1, '\0') + credentials->user + '\0' + credentials->password;
            reply = co_await command("AUTH PLAIN " + base64_encode(message));
        } else if (offered("LOGIN")) {
            // The LOGIN mechanism (draft-murchison-sasl-login): the server
            // prompts for user and password with 334 replies.
            mechanism = "LOGIN";
            reply = co_await command("AUTH LOGIN");
            if (reply.code == 334) {
                reply = co_await command(base64_encode(credentials->user));
            }
            if (reply.code == 334) {
                reply = co_await command(base64_encode(credentials->password));
            }
        } else {
            co_await send_quit();
            co_return host_failed("4.7.0", "host " + peer_ +
                                               " offers no SMTP AUTH mechanism that tlsrelay supports (PLAIN, "
                                               "LOGIN), so the credentials for it cannot be used");
        }

        if (reply.code != 235) {
            // A 334 here means the server wants more than LOGIN sends; "*"
            // cancels the exchange (RFC 4954 section 4).
            if (reply.code == 334) {
                co_await command("*");
            }
            co_await send_quit();
            std::string status = reply.status();
            if (!status.empty() && status[0] == '5') {
                status[0] = '4';
            }
            co_return host_failed(status.empty() ? "4.7.0" : status,
                                  "SMTP AUTH " + mechanism + " failed: " + remote_said(reply));
        }
        log::info("SMTP AUTH " + mechanism + " with " + peer_ + " succeeded");
        co_return true;
    }

    // The mechanisms named by the EHLO reply's AUTH lines, upper case.
    // Old servers write "AUTH=LOGIN PLAIN", which is accepted too.
    std::vector<std::string> auth_mechanisms() const {
        std::vector<std::string> mechanisms;
        for (const auto& line : extension_lines_) {
            std::string upper = line;
            std::transform(upper.begin(), upper.end(), upper.begin(),
                           [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
            if (upper.rfind("AUTH ", 0) != 0 && upper.rfind("AUTH=", 0) != 0) {
                continue;
            }
            std::istringstream words(upper.substr(5));
            std::string word;
            while (words >> word) {
                mechanisms.push_back(word);
            }
        }
        return mechanisms;
    }

    // Collects what the handshake established, and checks the chain against
    // the plan's TLSA records when there are any.
    policy::TlsFacts session_facts() const {
        const auto& session = stream_.session();
        policy::TlsFacts facts;
        facts.stage = policy::TlsStage::established;
        facts.protocol = session.protocol;
        facts.certificate_present = session.peer_certificate_present;
        facts.chain_trusted = session.chain_trusted;
        facts.verify_error = session.verify_error;
        facts.peer_names = session.peer_names;
        if (!session.peer_chain_der.empty()) {
            facts.digests = tls::certificate_digests(session.peer_chain_der.front());
        }
        if (!plan_.tlsa_records.empty()) {
            facts.dane = tls::match_tlsa(plan_.tlsa_records, session.peer_chain_der, plan_.reference_names);
        }
        return facts;
    }

    asio::awaitable<void> transaction(const queue::StoredMessage& message, const std::vector<std::size_t>& indices) {
        const auto& envelope = message.envelope;

        result_.phase = Phase::mail;
        // RFC 6531 section 3.4: a UTF-8 envelope needs a server that
        // offers SMTPUTF8; no conversion can make it fit another server.
        if (envelope.smtputf8 && !offers("SMTPUTF8")) {
            for (auto index : indices) {
                result_.recipients.push_back(RecipientResult{
                    index, Outcome::bounced, "5.6.7", "SMTPUTF8 is required, but was not offered by host " + peer_});
            }
            co_return;
        }
        std::string mail = "MAIL FROM:<" + envelope.sender + ">";
        if (offers("SIZE")) {
            mail += " SIZE=" + std::to_string(message.content_size);
        }
        if (envelope.eight_bit && offers("8BITMIME")) {
            mail += " BODY=8BITMIME";
        }
        if (envelope.smtputf8) {
            mail += " SMTPUTF8";
        }
        // RFC 3461: DSN parameters travel on to a server that offers DSN.
        bool dsn = offers("DSN");
        if (dsn && !envelope.dsn_ret.empty()) {
            mail += " RET=" + envelope.dsn_ret;
        }
        if (dsn && !envelope.dsn_envid.empty()) {
            mail += " ENVID=" + envelope.dsn_envid;
        }
        auto rcpt_line = [&envelope, dsn](std::size_t index) {
            std::string rcpt = "RCPT TO:<" + envelope.recipients[index] + ">";
            if (dsn && index < envelope.recipient_dsn.size()) {
                const auto& parameters = envelope.recipient_dsn[index];
                if (!parameters.notify.empty()) {
                    rcpt += " NOTIFY=" + parameters.notify;
                }
                if (!parameters.orcpt.empty()) {
                    rcpt += " ORCPT=" + parameters.orcpt;
                }
            }
            return rcpt;
        };

        // RFC 2920: with PIPELINING, MAIL, every RCPT and DATA go out in
        // one write, and the replies are read in the same order.
        // A long recipient list goes in lock-step instead, so neither side
        // fills its socket buffers with commands and unread replies.
        const bool pipelining = offers("PIPELINING") && indices.size() <= max_pipelined_recipients;
        smtp::Reply reply;
        if (pipelining) {
            std::string commands = mail + "\r\n";
            for (auto index : indices) {
                commands += rcpt_line(index) + "\r\n";
            }
            commands += "DATA\r\n";
            deadline_->arm(options_.command_timeout);
            co_await stream_.write_all(asio::buffer(commands));
            reply = co_await read_reply(options_.command_timeout);
        } else {
            reply = co_await command(mail);
        }
        if (!reply.positive()) {
            // On a reused session, a 421 means the server closed it while it
            // sat idle, and a 503 that it still saw an earlier transaction:
            // neither is about this message.
            stale_ = (reply.code == 421 || reply.code == 503) && transactions_ > 0;
            finish_all(indices, reply);
            if (pipelining && !closing_) {
                co_await skip_pipelined_replies(indices.size());
            }
            co_return;
        }
        mail_accepted_ = true;
        transaction_open_ = true;

        result_.phase = Phase::rcpt;
        std::vector<std::size_t> accepted;
        for (std::size_t position = 0; position < indices.size(); ++position) {
            auto index = indices[position];
            if (pipelining) {
                reply = co_await read_reply(options_.command_timeout);
            } else {
                reply = co_await command(rcpt_line(index));
            }
            if (reply.positive()) {
                accepted.push_back(index);
            } else {
                finish(index, reply);
            }
            if (closing_) {
                // After a 421 the server closes the session, so that reply
                // applies to the accepted recipients and the unread ones.
                finish_all(accepted, reply);
                for (auto rest = position + 1; rest < indices.size(); ++rest) {
                    finish(indices[rest], reply);
                }
                co_return;
            }
        }

        result_.phase = Phase::data;
        if (pipelining) {
            reply = co_await read_reply(options_.command_timeout);
            if (reply.code == 354 && accepted.empty()) {
                // The server took DATA although it rejected every
                // recipient: end the empty message.
                co_await end_empty_message();
                co_return;
            }
        } else if (!accepted.empty()) {
            reply = co_await command("DATA");
        }
        if (accepted.empty()) {
            co_return;
        }
        if (reply.code != 354) {
            if (reply.positive()) {
                // A 2xx to DATA would otherwise count as delivery of content
                // that was never sent.
                throw ProtocolError("unexpected reply to DATA from " + peer_ + ": " + reply.summary());
            }
            finish_all(accepted, reply);
            co_return;
        }

        result_.phase = Phase::data_end;
        co_await send_content(message);
        reply = co_await read_reply(options_.command_timeout * 2);
        finish_all(accepted, reply);
        transaction_open_ = false;
    }

    // Reads the RCPT and DATA replies that follow a rejected MAIL in a
    // pipelined transaction, so the session stays in step.
    asio::awaitable<void> skip_pipelined_replies(std::size_t recipients) {
        for (std::size_t count = 0; count < recipients && !closing_; ++count) {
            co_await read_reply(options_.command_timeout);
        }
        if (closing_) {
            co_return;
        }
        auto reply = co_await read_reply(options_.command_timeout);
        if (reply.code == 354) {
            // Without an accepted MAIL the server may still hold an earlier
            // transaction, which an end of data would send: close instead.
            throw ProtocolError("server " + peer_ + " accepted DATA after rejecting MAIL");
        }
    }

    // Ends a message the server let begin without any recipient.
    asio::awaitable<void> end_empty_message() {
        result_.phase = Phase::data_end;
        deadline_->arm(options_.command_timeout);
        co_await stream_.write_all(asio::buffer(std::string_view(".\r\n")));
        co_await read_reply(options_.command_timeout * 2);
        transaction_open_ = false;
    }

    asio::awaitable<void> send_content(const queue::StoredMessage& message) {
        // A new small message has its content in memory; otherwise the
        // content is read from the queue file in chunks.
        int fd = -1;
        if (!message.content) {
            fd = ::open(message.file.c_str(), O_RDONLY | O_CLOEXEC);
            if (fd < 0) {
                throw std::runtime_error("cannot open queue file " + message.file.string() + ": " +
                                         std::strerror(errno));
            }
        }
        std::shared_ptr<void> closer(nullptr, [fd](void*) {
            if (fd >= 0) {
                ::close(fd);
            }
        });

        // 8-bit content for a server without 8BITMIME is converted to
        // quoted-printable as a whole (it is at most message_size_limit).
        bool downgrade = message.envelope.eight_bit && !offers("8BITMIME");
        std::string whole;

        smtp::ContentEncoder encoder;
        std::string chunk(message.content ? 0 : content_chunk, '\0');
        std::string out;
        off_t offset = static_cast<off_t>(message.content_offset);
        bool memory_sent = false;
        for (;;) {
            std::string_view bytes;
            if (message.content) {
                if (memory_sent) {
                    break;
                }
                memory_sent = true;
                bytes = *message.content;
            } else {
                ssize_t count = ::pread(fd, chunk.data(), chunk.size(), offset);
                if (count < 0) {
                    throw std::runtime_error("cannot read queue file " + message.file.string() + ": " +
                                             std::strerror(errno));
                }
                if (count == 0) {
                    break;
                }
                offset += count;
                bytes = std::string_view(chunk.data(), static_cast<std::size_t>(count));
            }
            if (downgrade) {
                whole.append(bytes);
                continue;
            }
            // Each chunk is written when the next one is read, so the last
            // one is still in `out` when the end-of-data marker is added.
            if (!out.empty()) {
                deadline_->arm(options_.command_timeout);
                co_await stream_.write_all(asio::buffer(out));
                out.clear();
            }
            encoder.feed(bytes, out);
        }

        if (downgrade) {
            encoder.feed(smtp::downgrade_to_7bit(whole), out);
        }
        // The end-of-data marker goes out with the last bytes, so Nagle's
        // algorithm cannot hold it back waiting for an ACK.
        encoder.finish(out);
        deadline_->arm(options_.command_timeout);
        co_await stream_.write_all(asio::buffer(out));
    }

    asio::awaitable<void> send_quit() {
        try {
            deadline_->arm(std::chrono::seconds(10));
            co_await command("QUIT");
        } catch (const std::exception&) {
            // The transaction's outcome is already known; a lost QUIT changes nothing.
        }
    }

    asio::awaitable<smtp::Reply> command(const std::string& line) {
        deadline_->arm(options_.command_timeout);
        co_await stream_.write_all(asio::buffer(line + "\r\n"));
        co_return co_await read_reply(options_.command_timeout);
    }

    asio::awaitable<smtp::Reply> read_reply(std::chrono::seconds timeout) {
        smtp::ReplyParser parser;
        for (int count = 0; count < max_reply_lines; ++count) {
            deadline_->arm(timeout);
            auto line = co_await reader_.read_line();
            if (line.end == smtp::LineEnd::none || !parser.feed(line.text)) {
                throw ProtocolError("malformed reply from " + peer_);
            }
            if (parser.complete()) {
                // RFC 5321 section 3.8: 421 announces that the server closes the session.
                closing_ = closing_ || parser.reply().code == 421;
                co_return parser.reply();
            }
        }
        throw ProtocolError("reply with more than " + std::to_string(max_reply_lines) + " lines from " + peer_);
    }

    std::string remote_said(const smtp::Reply& reply) const {
        return "host " + peer_ + " said: " + reply.summary() + " (in reply to " + phase_command(result_.phase) +
               " command)";
    }

    void finish(std::size_t index, const smtp::Reply& reply) {
        RecipientResult recipient;
        recipient.index = index;
        recipient.dsn = reply.status();
        if (reply.positive()) {
            recipient.outcome = Outcome::sent;
            recipient.detail = reply.summary();
        } else {
            recipient.outcome = reply.permanent() ? Outcome::bounced : Outcome::deferred;
            recipient.detail = remote_said(reply);
        }
        result_.recipients.push_back(std::move(recipient));
    }

    void finish_all(const std::vector<std::size_t>& indices, const smtp::Reply& reply) {
        for (auto index : indices) {
            finish(index, reply);
        }
    }

    bool host_failed(std::string dsn, std::string reason) {
        result_.host_failed = true;
        result_.dsn = std::move(dsn);
        result_.reason = std::move(reason);
        return false;
    }

    // Turns an exception into a result: before MAIL the host failed as a
    // whole; after it, every recipient without a result is deferred.
    void record_failure(std::exception_ptr failure, const std::vector<std::size_t>& indices) {
        std::string what;
        try {
            std::rethrow_exception(failure);
        } catch (const std::system_error& error) {
            if (deadline_->expired() && result_.phase == Phase::greeting) {
                what = "conversation with " + peer_ + " timed out while receiving the initial server greeting";
            } else if (deadline_->expired()) {
                what = "conversation with " + peer_ + " timed out while sending " + phase_command(result_.phase);
            } else if (result_.phase == Phase::connect) {
                what = "connect to " + peer_ + ": " + error.code().message();
            } else {
                what = "lost connection with " + peer_ + " while sending " + phase_command(result_.phase) + ": " +
                       error.code().message();
            }
        } catch (const std::exception& error) {
            what = error.what();
        }

        if (result_.phase < Phase::mail) {
            host_failed(result_.phase == Phase::connect ? "4.4.1" : "4.4.2", what);
            return;
        }
        for (auto index : indices) {
            bool has_result = std::any_of(result_.recipients.begin(), result_.recipients.end(),
                                          [index](const RecipientResult& r) { return r.index == index; });
            if (!has_result) {
                result_.recipients.push_back(RecipientResult{index, Outcome::deferred, "4.4.2", what});
            }
        }
    }

    const ClientOptions options_;
    const Target target_;
    const policy::HostPlan plan_;
    tls::Stream stream_;
    smtp::LineReader reader_;
    std::shared_ptr<Deadline> deadline_;
    std::string peer_;
    bool implicit_tls_;
    bool tls_active_ = false;
    std::vector<std::string> extensions_;
    std::vector<std::string> extension_lines_;  // the EHLO reply's lines after the first
    AttemptResult result_;
    bool starttls_offered_ = false;
    bool closing_ = false;        // the server sent 421
    bool mail_accepted_ = false;     // in the current transaction
    bool transaction_open_ = false;  // MAIL accepted, end of data not reached
    bool reusable_ = false;
    bool stale_ = false;
    std::size_t transactions_ = 0;
};

Connection::Connection(std::unique_ptr<ClientSession> session) : session_(std::move(session)) {}
Connection::~Connection() = default;

asio::awaitable<std::unique_ptr<Connection>> Connection::open(ClientOptions options, Target target,
                                                              policy::HostPlan plan, bool use_tls,
                                                              AttemptResult& result) {
    auto executor = co_await asio::this_coro::executor;
    auto session = std::make_unique<ClientSession>(std::move(options), std::move(target), std::move(plan),
                                                   asio::ip::tcp::socket(executor));
    bool usable = co_await session->open(use_tls);
    result = session->result();
    session->forget_reported_tls_session();
    if (!usable) {
        co_return nullptr;
    }
    co_return std::unique_ptr<Connection>(new Connection(std::move(session)));
}

asio::awaitable<AttemptResult> Connection::send(const queue::StoredMessage& message,
                                                const std::vector<std::size_t>& indices) {
    co_return co_await session_->send(message, indices);
}

bool Connection::reusable() const { return session_->reusable(); }
bool Connection::stale() const { return session_->stale(); }
bool Connection::idle_and_open() { return session_->idle_and_open(); }
asio::awaitable<void> Connection::quit() { co_await session_->quit(); }
const Target& Connection::target() const { return session_->target(); }
policy::Trust Connection::trust() const { return session_->trust(); }
const tls::SessionInfo* Connection::tls_session() const { return session_->tls_session(); }
bool Connection::starttls_offered() const { return session_->starttls_offered(); }
const std::vector<std::string>& Connection::extensions() const { return session_->extensions(); }
std::size_t Connection::transactions() const { return session_->transactions(); }

asio::awaitable<AttemptResult> attempt_delivery(const ClientOptions& options, const Target& target,
                                                const policy::HostPlan& plan, const queue::StoredMessage& message,
                                                const std::vector<std::size_t>& indices, bool use_tls) {
    AttemptResult result;
    auto connection = co_await Connection::open(options, target, plan, use_tls, result);
    if (!connection) {
        co_return result;
    }
    result = co_await connection->send(message, indices);
    co_await connection->quit();
    co_return result;
}

}  // namespace tlsrelay::delivery
