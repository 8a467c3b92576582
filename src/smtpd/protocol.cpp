#include "tlsrelay/smtpd/protocol.hpp"

#include <algorithm>
#include <charconv>

#include "tlsrelay/smtp/command.hpp"
#include "tlsrelay/util/base64.hpp"

namespace tlsrelay::smtpd {
namespace {

using smtp::make_reply;

Response reply(int code, const char* enhanced, std::string text, Action action = Action::none) {
    return Response{make_reply(code, enhanced, std::move(text)), action};
}

std::optional<std::size_t> parse_size(std::string_view text) {
    std::size_t value = 0;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || error != std::errc{} || end != text.data() + text.size()) {
        return std::nullopt;
    }
    return value;
}

bool has_non_ascii(std::string_view text) {
    return std::any_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

std::string to_upper(std::string_view text) {
    std::string out(text);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    return out;
}

// RFC 3461 section 4: xtext is printable ASCII except "+" and "=", with
// "+XX" hex escapes.
bool is_xtext(std::string_view text) {
    for (std::size_t i = 0; i < text.size(); ++i) {
        auto c = static_cast<unsigned char>(text[i]);
        if (c == '+') {
            if (i + 2 >= text.size() || !std::isxdigit(static_cast<unsigned char>(text[i + 1])) ||
                !std::isxdigit(static_cast<unsigned char>(text[i + 2]))) {
                return false;
            }
            i += 2;
        } else if (c < 33 || c > 126 || c == '=') {
            return false;
        }
    }
    return true;
}

// RFC 3461 section 4.1: NEVER alone, or a list of SUCCESS, FAILURE, DELAY.
bool is_notify_value(std::string_view value) {
    if (value == "NEVER") {
        return true;
    }
    std::size_t start = 0;
    while (start <= value.size()) {
        auto comma = value.find(',', start);
        auto item = value.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
        if (item != "SUCCESS" && item != "FAILURE" && item != "DELAY") {
            return false;
        }
        if (comma == std::string_view::npos) {
            return true;
        }
        start = comma + 1;
    }
    return false;
}

std::string_view local_part(std::string_view address) {
    auto at = address.rfind('@');
    return at == std::string_view::npos ? address : address.substr(0, at);
}

}  // namespace

Protocol::Protocol(const ProtocolSettings& settings, asio::ip::address client_address)
    : settings_(settings), client_address_(client_address) {}

Response Protocol::greeting() const {
    return reply(220, "", settings_.myhostname + " ESMTP tlsrelay");
}

bool Protocol::count_error() { return ++errors_ >= settings_.hard_error_limit; }

Response Protocol::handle(std::string_view line) {
    if (auth_step_ != AuthStep::none) {
        return on_auth_response(line);
    }

    auto command = smtp::parse_command(line);
    switch (command.verb) {
    case smtp::Verb::helo: return on_helo(command.argument, false);
    case smtp::Verb::ehlo: return on_helo(command.argument, true);
    case smtp::Verb::mail: return on_mail(command.argument);
    case smtp::Verb::rcpt: return on_rcpt(command.argument);
    case smtp::Verb::data: return on_data(command.argument);
    case smtp::Verb::bdat: return on_bdat(command.argument);
    case smtp::Verb::starttls: return on_starttls(command.argument);
    case smtp::Verb::auth: return on_auth(command.argument);
    case smtp::Verb::rset:
        end_transaction();
        return reply(250, "2.0.0", "Ok");
    case smtp::Verb::noop: return reply(250, "2.0.0", "Ok");
    case smtp::Verb::quit: return reply(221, "2.0.0", "Bye", Action::close);
    case smtp::Verb::vrfy:
        return reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery");
    case smtp::Verb::expn: return reply(502, "5.5.1", "EXPN not implemented");
    case smtp::Verb::help: return reply(214, "2.0.0", "See RFC 5321");
    case smtp::Verb::unknown: break;
    }
    return reply(500, "5.5.2", "Error: command not recognized");
}

Response Protocol::on_helo(std::string_view argument, bool extended) {
    while (!argument.empty() && argument.back() == ' ') {
        argument.remove_suffix(1);
    }
    if (argument.empty() || argument.find(' ') != std::string_view::npos) {
        return reply(501, "5.5.4", extended ? "Syntax: EHLO hostname" : "Syntax: HELO hostname");
    }
    helo_name_ = std::string(argument);
    esmtp_ = extended;
    end_transaction();

    if (!extended) {
        return reply(250, "", settings_.myhostname);
    }
    Response response;
    response.reply.code = 250;
    auto& lines = response.reply.lines;
    lines = {settings_.myhostname, "PIPELINING", "SIZE " + std::to_string(settings_.message_size_limit)};
    if (!tls_active_ && settings_.tls_available && settings_.tls_level != config::InboundTlsLevel::none) {
        lines.push_back("STARTTLS");
    }
    // RFC 4954 section 4: plaintext passwords only over TLS, so AUTH is
    // offered only once TLS is active.
    if (settings_.auth_available && tls_active_ && authenticated_user_.empty()) {
        lines.push_back("AUTH PLAIN LOGIN");
    }
    for (const char* keyword : {"ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"}) {
        lines.push_back(keyword);
    }
    return response;
}

bool Protocol::client_trusted() const {
    if (!authenticated_user_.empty()) {
        return true;
    }
    return std::any_of(settings_.mynetworks.begin(), settings_.mynetworks.end(),
                       [this](const Network& network) { return network.contains(client_address_); });
}

bool Protocol::relay_domain(std::string_view domain) const {
    for (const auto& entry : settings_.relay_domains) {
        if (entry.starts_with('.')) {
            if (domain.size() > entry.size() && domain.ends_with(entry)) {
                return true;
            }
        } else if (domain == entry) {
            return true;
        }
    }
    return false;
}

Response Protocol::on_mail(std::string_view argument) {
    if (helo_name_.empty()) {
        return reply(503, "5.5.1", "Error: send HELO/EHLO first");
    }
    if (settings_.tls_level == config::InboundTlsLevel::encrypt && !tls_active_) {
        return reply(530, "5.7.0", "Must issue a STARTTLS command first");
    }
    if (settings_.auth_required && authenticated_user_.empty()) {
        return reply(530, "5.7.0", "Authentication required");
    }
    if (transaction_.active) {
        return reply(503, "5.5.1", "Error: nested MAIL command");
    }

    auto [path, error] = smtp::parse_path_argument(argument, "FROM");
    if (error) {
        return reply(error->code, error->enhanced.c_str(), error->text);
    }

    Transaction transaction;
    for (const auto& parameter : path->parameters) {
        const auto& keyword = parameter.keyword;
        if (keyword == "SIZE") {
            auto size = parse_size(parameter.value);
            if (!size) {
                return reply(501, "5.5.4", "Bad message size syntax");
            }
            // RFC 1870: refuse at once what the limit would refuse after DATA.
            if (*size > settings_.message_size_limit) {
                return reply(552, "5.3.4", "Message size exceeds fixed limit");
            }
        } else if (keyword == "BODY" && esmtp_) {
            auto value = to_upper(parameter.value);
            if (value == "8BITMIME") {
                transaction.eight_bit = true;
            } else if (value != "7BIT") {
                return reply(501, "5.5.4", "Unsupported BODY parameter value " + parameter.value);
            }
        } else if (keyword == "SMTPUTF8" && esmtp_ && parameter.value.empty()) {
            transaction.smtputf8 = true;
        } else if (keyword == "RET" && esmtp_) {
            auto value = to_upper(parameter.value);
            if (value != "FULL" && value != "HDRS") {
                return reply(501, "5.5.4", "Bad RET parameter value " + parameter.value);
            }
            transaction.dsn_ret = value;
        } else if (keyword == "ENVID" && esmtp_) {
            if (parameter.value.size() > 100 || !is_xtext(parameter.value)) {
                return reply(501, "5.5.4", "Bad ENVID parameter value");
            }
            transaction.dsn_envid = parameter.value;
        } else if (keyword == "AUTH" && esmtp_) {
            // RFC 4954 section 5: the original submitter; accepted and not used.
        } else {
            return reply(555, "5.5.4", "Unsupported option: " + keyword);
        }
    }
    if (has_non_ascii(path->address) && !transaction.smtputf8) {
        return reply(553, "5.6.7", "Must declare SMTPUTF8 to send a UTF-8 address");
    }

    transaction.active = true;
    transaction.sender = path->address;
    transaction_ = std::move(transaction);
    return reply(250, "2.1.0", "Ok");
}

Response Protocol::on_rcpt(std::string_view argument) {
    if (!transaction_.active) {
        return reply(503, "5.5.1", "Error: need MAIL command");
    }
    if (transaction_.chunking) {
        return reply(503, "5.5.1", "Error: RCPT after BDAT");
    }
    auto [path, error] = smtp::parse_path_argument(argument, "TO");
    if (error) {
        return reply(error->code, error->enhanced.c_str(), error->text);
    }
    const auto& address = path->address;

    queue::RecipientDsn dsn;
    for (const auto& parameter : path->parameters) {
        if (parameter.keyword == "NOTIFY" && esmtp_) {
            auto value = to_upper(parameter.value);
            if (!is_notify_value(value)) {
                return reply(501, "5.5.4", "Bad NOTIFY parameter value " + parameter.value);
            }
            dsn.notify = value;
        } else if (parameter.keyword == "ORCPT" && esmtp_) {
            auto semicolon = parameter.value.find(';');
            if (semicolon == std::string::npos || semicolon == 0 || parameter.value.size() > 500 ||
                !is_xtext(parameter.value.substr(semicolon + 1))) {
                return reply(501, "5.5.4", "Bad ORCPT parameter value");
            }
            dsn.orcpt = parameter.value;
        } else {
            return reply(555, "5.5.4", "Unsupported option: " + parameter.keyword);
        }
    }

    if (address == "postmaster") {
        // NOTE: RFC 5321 section 4.5.1 requires every MTA to accept <postmaster>,
        // but tlsrelay has no local delivery to hand it to yet.
        return reply(550, "5.1.1", "<postmaster>: Recipient address rejected: no local delivery on this relay");
    }
    if (has_non_ascii(address) && !transaction_.smtputf8) {
        return reply(553, "5.6.7", "Must declare SMTPUTF8 to send a UTF-8 address");
    }

    // tlsrelay has no local domains, so every recipient is relayed. Trusted
    // clients may send anywhere. Others may send only to relay_domains, and
    // only with a plain local part, because "%", "!" and a quoted "@" ask
    // the next hop to route the message on (the "percent hack").
    if (!client_trusted()) {
        auto local = local_part(address);
        bool routed_local_part = local.find_first_of("%!@") != std::string_view::npos;
        if (routed_local_part || !relay_domain(smtp::domain_of(address))) {
            return reply(554, "5.7.1", "<" + address + ">: Relay access denied");
        }
    }
    if (transaction_.recipients.size() >= settings_.recipient_limit) {
        return reply(452, "4.5.3", "Error: too many recipients");
    }
    transaction_.recipients.push_back(address);
    transaction_.recipient_dsn.push_back(std::move(dsn));
    return reply(250, "2.1.5", "Ok");
}

Response Protocol::on_data(std::string_view argument) {
    if (!argument.empty()) {
        return reply(501, "5.5.4", "Syntax: DATA");
    }
    if (!transaction_.active) {
        return reply(503, "5.5.1", "Error: need MAIL command");
    }
    if (transaction_.chunking) {
        return reply(503, "5.5.1", "Error: DATA after BDAT");
    }
    if (transaction_.recipients.empty()) {
        return reply(554, "5.5.1", "Error: no valid recipients");
    }
    return reply(354, "", "End data with <CR><LF>.<CR><LF>", Action::read_data);
}

Response Protocol::on_bdat(std::string_view argument) {
    // RFC 3030 section 2: "BDAT size [LAST]"; the chunk follows at once.
    auto space = argument.find(' ');
    auto size = parse_size(argument.substr(0, space));
    bool last = false;
    if (space != std::string_view::npos) {
        last = to_upper(argument.substr(space + 1)) == "LAST";
        if (!last) {
            size.reset();
        }
    }
    if (!size) {
        return reply(501, "5.5.4", "Syntax: BDAT size [LAST]", Action::close);
    }

    Response response;
    response.action = Action::read_chunk;
    response.chunk_size = *size;
    response.last_chunk = last;
    // The chunk's bytes arrive whatever the reply, so a refused chunk is
    // still read, and dropped, before the error reply (RFC 3030 section 3).
    if (!transaction_.active) {
        response.reply = make_reply(503, "5.5.1", "Error: need MAIL command");
        response.discard_chunk = true;
    } else if (transaction_.recipients.empty()) {
        response.reply = make_reply(554, "5.5.1", "Error: no valid recipients");
        response.discard_chunk = true;
    }
    return response;
}

Response Protocol::on_starttls(std::string_view argument) {
    if (!argument.empty()) {
        return reply(501, "5.5.4", "Syntax: STARTTLS");
    }
    if (tls_active_) {
        return reply(554, "5.5.1", "Error: TLS already active");
    }
    if (!settings_.tls_available || settings_.tls_level == config::InboundTlsLevel::none) {
        return reply(502, "5.5.1", "Error: command not implemented");
    }
    return reply(220, "2.0.0", "Ready to start TLS", Action::start_tls);
}

void Protocol::tls_started(std::string description) {
    tls_active_ = true;
    tls_description_ = std::move(description);
    helo_name_.clear();
    esmtp_ = false;
    authenticated_user_.clear();
    end_transaction();
}

Response Protocol::on_auth(std::string_view argument) {
    if (!settings_.auth_available) {
        return reply(503, "5.5.1", "Error: authentication not enabled");
    }
    if (helo_name_.empty() || !esmtp_) {
        return reply(503, "5.5.1", "Error: send EHLO first");
    }
    if (!tls_active_) {
        return reply(538, "5.7.11", "Encryption required for requested authentication mechanism");
    }
    if (!authenticated_user_.empty()) {
        return reply(503, "5.5.1", "Error: already authenticated");
    }
    if (transaction_.active) {
        return reply(503, "5.5.1", "Error: MAIL transaction in progress");
    }

    auto space = argument.find(' ');
    auto mechanism = to_upper(argument.substr(0, space));
    std::string_view initial = space == std::string_view::npos ? std::string_view{} : argument.substr(space + 1);
    credentials_ = Credentials{};

    if (mechanism == "PLAIN") {
        if (space == std::string_view::npos) {
            auth_step_ = AuthStep::plain_response;
            return reply(334, "", "");
        }
        // RFC 4954 section 4: "=" is an empty initial response.
        return take_plain_response(initial == "=" ? std::string_view{} : initial);
    }
    if (mechanism == "LOGIN") {
        if (space == std::string_view::npos) {
            auth_step_ = AuthStep::login_user;
            return reply(334, "", base64_encode("Username:"));
        }
        auth_step_ = AuthStep::login_user;
        return on_auth_response(initial);
    }
    return reply(504, "5.5.4", "Unsupported authentication mechanism");
}

Response Protocol::on_auth_response(std::string_view line) {
    auto step = auth_step_;
    auth_step_ = AuthStep::none;
    if (line == "*") {
        return reply(501, "5.7.0", "Authentication aborted");
    }
    if (step == AuthStep::plain_response) {
        return take_plain_response(line);
    }

    auto decoded = base64_decode(line);
    if (!decoded) {
        return reply(501, "5.5.2", "Invalid base64 data in authentication response");
    }
    if (step == AuthStep::login_user) {
        credentials_.user = *decoded;
        auth_step_ = AuthStep::login_password;
        return reply(334, "", base64_encode("Password:"));
    }
    credentials_.password = *decoded;
    return Response{{}, Action::verify_auth};
}

Response Protocol::take_plain_response(std::string_view encoded) {
    auto decoded = base64_decode(encoded);
    if (!decoded) {
        return reply(501, "5.5.2", "Invalid base64 data in authentication response");
    }
    // RFC 4616: authzid NUL authcid NUL passwd; an authzid other than the
    // authcid would be a request to act as another user, which is not offered.
    auto first = decoded->find('\0');
    auto second = first == std::string::npos ? std::string::npos : decoded->find('\0', first + 1);
    if (second == std::string::npos) {
        return reply(501, "5.5.2", "Invalid PLAIN authentication response");
    }
    auto authzid = decoded->substr(0, first);
    credentials_.user = decoded->substr(first + 1, second - first - 1);
    credentials_.password = decoded->substr(second + 1);
    if (!authzid.empty() && authzid != credentials_.user) {
        credentials_ = Credentials{};
        return reply(535, "5.7.8", "Authentication credentials invalid");
    }
    return Response{{}, Action::verify_auth};
}

Response Protocol::auth_result(bool valid) {
    auto user = std::move(credentials_.user);
    credentials_ = Credentials{};
    if (!valid) {
        return reply(535, "5.7.8", "Authentication credentials invalid");
    }
    authenticated_user_ = std::move(user);
    return reply(235, "2.7.0", "Authentication successful");
}

}  // namespace tlsrelay::smtpd
