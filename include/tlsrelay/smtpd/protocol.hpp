// The inbound SMTP state machine without I/O: each command line goes in, a
// reply and an action come out, so tests drive it without sockets.
//
// Invariants: a transaction (MAIL, RCPT, DATA) needs a greeting first;
// RCPT needs MAIL; DATA needs at least one accepted recipient. STARTTLS,
// HELO, EHLO and RSET end any transaction, and STARTTLS also forgets the
// greeting (RFC 3207 section 4.2).
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <asio/ip/address.hpp>

#include "tlsrelay/config/config.hpp"
#include "tlsrelay/smtp/reply.hpp"

namespace tlsrelay::smtpd {

struct ProtocolSettings {
    std::string myhostname;
    config::InboundTlsLevel tls_level = config::InboundTlsLevel::may;
    bool tls_available = true;  // a server certificate is loaded
    std::vector<Network> mynetworks;
    std::size_t message_size_limit = 10240000;
    std::size_t recipient_limit = 1000;  // Postfix's smtpd_recipient_limit
    int hard_error_limit = 20;           // Postfix's smtpd_hard_error_limit
};

enum class Action {
    none,
    start_tls,  // send the reply, then run the TLS handshake
    read_data,  // send the 354 reply, then read the message content
    close,      // send the reply, then close the connection
};

struct Response {
    smtp::Reply reply;
    Action action = Action::none;
};

// The transaction being built: sender, recipients and size hint.
struct Transaction {
    bool active = false;
    std::string sender;
    std::vector<std::string> recipients;
    bool eight_bit = false;
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

    const std::string& helo_name() const { return helo_name_; }
    bool esmtp() const { return esmtp_; }
    const Transaction& transaction() const { return transaction_; }
    void end_transaction() { transaction_ = Transaction{}; }

    // Counts a protocol error; returns true when the session should close.
    bool count_error();

private:
    Response on_helo(std::string_view argument, bool extended);
    Response on_mail(std::string_view argument);
    Response on_rcpt(std::string_view argument);
    Response on_data(std::string_view argument);
    Response on_starttls(std::string_view argument);
    bool relay_allowed() const;

    const ProtocolSettings& settings_;
    asio::ip::address client_address_;
    std::string helo_name_;
    bool esmtp_ = false;
    bool tls_active_ = false;
    std::string tls_description_;
    Transaction transaction_;
    int errors_ = 0;
};

}  // namespace tlsrelay::smtpd
