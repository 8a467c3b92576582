// The inbound SMTP state machine without I/O: each command line goes in, a
// reply and an action come out, so tests drive it without sockets.
//
// Invariants: a transaction (MAIL, RCPT, DATA or BDAT) needs a greeting
// first; RCPT needs MAIL; DATA and BDAT need at least one accepted
// recipient, and a transaction that started with BDAT cannot switch to
// DATA. STARTTLS, HELO, EHLO and RSET end any transaction; STARTTLS also
// forgets the greeting and any authentication (RFC 3207 section 4.2).
// While an AUTH exchange is open, every line is a SASL response.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <asio/ip/address.hpp>

#include "tlsrelay/config/config.hpp"
#include "tlsrelay/queue/spool.hpp"
#include "tlsrelay/smtp/reply.hpp"

namespace tlsrelay::smtpd {

struct ProtocolSettings {
    std::string myhostname;
    config::InboundTlsLevel tls_level = config::InboundTlsLevel::may;
    bool tls_available = true;   // a server certificate is loaded
    bool auth_available = false;  // an auth_users_file is loaded
    bool auth_required = false;   // submission: MAIL only after AUTH
    std::vector<Network> mynetworks;
    std::vector<std::string> relay_domains;  // "example.com" or ".example.com"
    std::size_t message_size_limit = 10240000;
    std::size_t recipient_limit = 1000;  // Postfix's smtpd_recipient_limit
    int hard_error_limit = 20;           // Postfix's smtpd_hard_error_limit
};

enum class Action {
    none,
    start_tls,    // send the reply, then run the TLS handshake
    read_data,    // send the 354 reply, then read the message content
    read_chunk,   // read a BDAT chunk of chunk_size bytes, then reply
    verify_auth,  // check pending_credentials(), then call auth_result()
    close,        // send the reply, then close the connection
};

struct Response {
    smtp::Reply reply;
    Action action = Action::none;
    std::size_t chunk_size = 0;  // read_chunk: bytes to read
    bool last_chunk = false;     // read_chunk: BDAT ... LAST
    bool discard_chunk = false;  // read_chunk: read and drop, then send `reply`
};

// The transaction being built.
struct Transaction {
    bool active = false;
    std::string sender;
    std::vector<std::string> recipients;
    std::vector<queue::RecipientDsn> recipient_dsn;  // parallel to recipients
    bool eight_bit = false;
    bool smtputf8 = false;
    std::string dsn_ret;    // RET=FULL or HDRS; empty when not given
    std::string dsn_envid;  // ENVID, xtext as received
    bool chunking = false;  // BDAT has started
};

struct Credentials {
    std::string user;
    std::string password;
};

class Protocol {
public:
    Protocol(const ProtocolSettings& settings, asio::ip::address client_address);

    Response greeting() const;
    Response handle(std::string_view line);

    // Called after the TLS handshake: resets the session to its initial state.
    void tls_started(std::string description);
    bool tls_active() const { return tls_active_; }
    const std::string& tls_description() const { return tls_description_; }

    // The credentials of an AUTH exchange that returned Action::verify_auth.
    const Credentials& pending_credentials() const { return credentials_; }
    Response auth_result(bool valid);
    const std::string& authenticated_user() const { return authenticated_user_; }

    const std::string& helo_name() const { return helo_name_; }
    bool esmtp() const { return esmtp_; }
    const Transaction& transaction() const { return transaction_; }
    void end_transaction() { transaction_ = Transaction{}; }
    // Marks that BDAT content has started, so DATA is no longer accepted.
    void start_chunking() { transaction_.chunking = true; }

    // Counts a protocol error; returns true when the session should close.
    bool count_error();

private:
    enum class AuthStep { none, plain_response, login_user, login_password };

    Response on_helo(std::string_view argument, bool extended);
    Response on_mail(std::string_view argument);
    Response on_rcpt(std::string_view argument);
    Response on_data(std::string_view argument);
    Response on_bdat(std::string_view argument);
    Response on_starttls(std::string_view argument);
    Response on_auth(std::string_view argument);
    Response on_auth_response(std::string_view line);
    Response take_plain_response(std::string_view encoded);
    bool client_trusted() const;
    bool relay_domain(std::string_view domain) const;

    const ProtocolSettings& settings_;
    asio::ip::address client_address_;
    std::string helo_name_;
    bool esmtp_ = false;
    bool tls_active_ = false;
    std::string tls_description_;
    Transaction transaction_;
    AuthStep auth_step_ = AuthStep::none;
    Credentials credentials_;
    std::string authenticated_user_;
    int errors_ = 0;
};

}  // namespace tlsrelay::smtpd
