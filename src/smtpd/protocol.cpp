#include "tlsrelay/smtpd/protocol.hpp"

#include <algorithm>
#include <charconv>

#include "tlsrelay/smtp/command.hpp"

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

}  // namespace

Protocol::Protocol(const ProtocolSettings& settings, asio::ip::address client_address)
    : settings_(settings), client_address_(client_address) {}

Response Protocol::greeting() const {
    return reply(220, "", settings_.myhostname + " ESMTP tlsrelay");
}

bool Protocol::count_error() { return ++errors_ >= settings_.hard_error_limit; }

Response Protocol::handle(std::string_view line) {
    auto command = smtp::parse_command(line);
    switch (command.verb) {
    case smtp::Verb::helo: return on_helo(command.argument, false);
    case smtp::Verb::ehlo: return on_helo(command.argument, true);
    case smtp::Verb::mail: return on_mail(command.argument);
    case smtp::Verb::rcpt: return on_rcpt(command.argument);
    case smtp::Verb::data: return on_data(command.argument);
    case smtp::Verb::starttls: return on_starttls(command.argument);
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
    response.reply.lines = {
        settings_.myhostname,
        "PIPELINING",
        "SIZE " + std::to_string(settings_.message_size_limit),
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
    };
    if (!tls_active_ && settings_.tls_available && settings_.tls_level != config::InboundTlsLevel::none) {
        response.reply.lines.insert(response.reply.lines.begin() + 2, "STARTTLS");
    }
    return response;
}

Response Protocol::on_mail(std::string_view argument) {
    if (helo_name_.empty()) {
        return reply(503, "5.5.1", "Error: send HELO/EHLO first");
    }
    if (settings_.tls_level == config::InboundTlsLevel::encrypt && !tls_active_) {
        return reply(530, "5.7.0", "Must issue a STARTTLS command first");
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
        if (parameter.keyword == "SIZE") {
            auto size = parse_size(parameter.value);
            if (!size) {
                return reply(501, "5.5.4", "Bad message size syntax");
            }
            // RFC 1870: refuse at once what the limit would refuse after DATA.
            if (*size > settings_.message_size_limit) {
                return reply(552, "5.3.4", "Message size exceeds fixed limit");
            }
        } else if (parameter.keyword == "BODY" && esmtp_) {
            if (parameter.value == "8BITMIME") {
                transaction.eight_bit = true;
            } else if (parameter.value != "7BIT") {
                return reply(501, "5.5.4", "Unsupported BODY parameter value " + parameter.value);
            }
        } else {
            return reply(555, "5.5.4", "Unsupported option: " + parameter.keyword);
        }
    }

    transaction.active = true;
    transaction.sender = path->address;
    transaction_ = std::move(transaction);
    return reply(250, "2.1.0", "Ok");
}

bool Protocol::relay_allowed() const {
    return std::any_of(settings_.mynetworks.begin(), settings_.mynetworks.end(),
                       [this](const Network& network) { return network.contains(client_address_); });
}

Response Protocol::on_rcpt(std::string_view argument) {
    if (!transaction_.active) {
        return reply(503, "5.5.1", "Error: need MAIL command");
    }
    auto [path, error] = smtp::parse_path_argument(argument, "TO");
    if (error) {
        return reply(error->code, error->enhanced.c_str(), error->text);
    }
    if (!path->parameters.empty()) {
        return reply(555, "5.5.4", "Unsupported option: " + path->parameters.front().keyword);
    }

    // tlsrelay has no local domains: every recipient is relayed, so only
    // clients in mynetworks may use it.
    if (!relay_allowed()) {
        return reply(554, "5.7.1", "<" + path->address + ">: Relay access denied");
    }
    if (transaction_.recipients.size() >= settings_.recipient_limit) {
        return reply(452, "4.5.3", "Error: too many recipients");
    }
    transaction_.recipients.push_back(path->address);
    return reply(250, "2.1.5", "Ok");
}

Response Protocol::on_data(std::string_view argument) {
    if (!argument.empty()) {
        return reply(501, "5.5.4", "Syntax: DATA");
    }
    if (!transaction_.active) {
        return reply(503, "5.5.1", "Error: need MAIL command");
    }
    if (transaction_.recipients.empty()) {
        return reply(554, "5.5.1", "Error: no valid recipients");
    }
    return reply(354, "", "End data with <CR><LF>.<CR><LF>", Action::read_data);
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
    end_transaction();
}

}  // namespace tlsrelay::smtpd
