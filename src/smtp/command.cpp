#include "tlsrelay/smtp/command.hpp"

#include <algorithm>
#include <array>
#include <cctype>

namespace tlsrelay::smtp {
namespace {

std::string to_upper(std::string_view text) {
    std::string out(text);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    return out;
}

bool is_atext(unsigned char c) {
    // RFC 5322 atext, plus any non-ASCII byte for RFC 6531 UTF-8 addresses.
    static constexpr std::string_view specials = "!#$%&'*+-/=?^_`{|}~";
    return std::isalnum(c) || specials.find(static_cast<char>(c)) != std::string_view::npos || c >= 0x80;
}

bool is_dot_string(std::string_view text) {
    if (text.empty() || text.front() == '.' || text.back() == '.') {
        return false;
    }
    char previous = 0;
    for (char c : text) {
        if (c == '.' && previous == '.') {
            return false;
        }
        if (c != '.' && !is_atext(static_cast<unsigned char>(c))) {
            return false;
        }
        previous = c;
    }
    return true;
}

bool is_quoted_string(std::string_view text) {
    if (text.size() < 2 || text.front() != '"' || text.back() != '"') {
        return false;
    }
    for (std::size_t i = 1; i + 1 < text.size(); ++i) {
        auto c = static_cast<unsigned char>(text[i]);
        if (c == '\\') {
            // quoted-pairSMTP: backslash followed by any printable ASCII character.
            if (i + 2 >= text.size() || text[i + 1] < 32 || text[i + 1] > 126) {
                return false;
            }
            ++i;
        } else if (c == '"' || c < 32 || c == 127) {
            return false;
        }
    }
    return true;
}

bool is_domain(std::string_view text) {
    if (text.empty() || text.size() > 255) {
        return false;
    }
    std::size_t start = 0;
    while (start <= text.size()) {
        auto dot = text.find('.', start);
        auto label = text.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
        if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
            return false;
        }
        for (char c : label) {
            auto byte = static_cast<unsigned char>(c);
            if (!std::isalnum(byte) && c != '-' && byte < 0x80) {
                return false;
            }
        }
        if (dot == std::string_view::npos) {
            return true;
        }
        start = dot + 1;
    }
    return false;
}

bool is_address_literal(std::string_view text) {
    if (text.size() < 3 || text.front() != '[' || text.back() != ']') {
        return false;
    }
    auto inner = text.substr(1, text.size() - 2);
    for (char c : inner) {
        auto byte = static_cast<unsigned char>(c);
        if (byte < 33 || byte > 126 || c == '[' || c == ']' || c == '\\') {
            return false;
        }
    }
    return true;
}

bool is_esmtp_keyword(std::string_view text) {
    if (text.empty() || !std::isalnum(static_cast<unsigned char>(text[0]))) {
        return false;
    }
    return std::all_of(text.begin(), text.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-'; });
}

bool is_esmtp_value(std::string_view text) {
    // RFC 5321: any printable US-ASCII except "=" and SP. RFC 6531 adds UTF-8.
    return std::all_of(text.begin(), text.end(), [](char c) {
        auto byte = static_cast<unsigned char>(c);
        return (byte >= 33 && byte <= 126 && c != '=') || byte >= 0x80;
    });
}

// Returns the position of the '>' that closes the path opened by the '<'
// at text[0], or npos. RFC 5321 section 4.1.2 allows any printable
// character in a quoted local part, '>' included, so a '>' inside quotes
// or after a backslash in them does not close the path. When a quote is
// left open, the first '>' closes the path, so the mailbox check rejects
// the address with a reply that shows it.
std::size_t find_path_end(std::string_view text) {
    bool quoted = false;
    for (std::size_t i = 1; i < text.size(); ++i) {
        char c = text[i];
        if (quoted && c == '\\') {
            ++i;
        } else if (c == '"') {
            quoted = !quoted;
        } else if (c == '>' && !quoted) {
            return i;
        }
    }
    return quoted ? text.find('>') : std::string_view::npos;
}

}  // namespace

Command parse_command(std::string_view line) {
    static constexpr std::array<std::pair<std::string_view, Verb>, 14> verbs{{
        {"HELO", Verb::helo}, {"EHLO", Verb::ehlo}, {"MAIL", Verb::mail}, {"RCPT", Verb::rcpt},
        {"DATA", Verb::data}, {"RSET", Verb::rset}, {"NOOP", Verb::noop}, {"QUIT", Verb::quit},
        {"STARTTLS", Verb::starttls}, {"VRFY", Verb::vrfy}, {"EXPN", Verb::expn}, {"HELP", Verb::help},
        {"BDAT", Verb::bdat}, {"AUTH", Verb::auth},
    }};

    Command command;
    auto space = line.find(' ');
    command.name = to_upper(line.substr(0, space));
    if (space != std::string_view::npos) {
        command.argument = std::string(line.substr(space + 1));
    }
    for (const auto& [name, verb] : verbs) {
        if (command.name == name) {
            command.verb = verb;
            break;
        }
    }
    return command;
}

bool is_valid_mailbox(std::string_view mailbox) {
    auto at = mailbox.rfind('@');
    if (at == std::string_view::npos || at == 0 || mailbox.size() > 254 + 2) {
        return false;
    }
    auto local = mailbox.substr(0, at);
    auto domain = mailbox.substr(at + 1);
    if (local.size() > 64 && !std::any_of(local.begin(), local.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; })) {
        return false;
    }
    return (is_dot_string(local) || is_quoted_string(local)) && (is_domain(domain) || is_address_literal(domain));
}

std::string domain_of(std::string_view mailbox) {
    auto at = mailbox.rfind('@');
    if (at == std::string_view::npos) {
        return {};
    }
    std::string domain(mailbox.substr(at + 1));
    std::transform(domain.begin(), domain.end(), domain.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return domain;
}

std::pair<std::optional<PathArgument>, std::optional<ArgumentError>> parse_path_argument(std::string_view argument,
                                                                                        std::string_view prefix) {
    auto syntax_error = [&](std::string text) {
        return std::make_pair(std::optional<PathArgument>{}, std::optional<ArgumentError>{ArgumentError{501, "5.5.4", std::move(text)}});
    };
    const std::string expected = "Syntax: " + std::string(prefix == "FROM" ? "MAIL FROM:<address>" : "RCPT TO:<address>");

    // "FROM:" or "TO:", case-insensitive; a space after the colon is tolerated
    // because many clients send one.
    if (argument.size() <= prefix.size() || to_upper(argument.substr(0, prefix.size())) != prefix ||
        argument[prefix.size()] != ':') {
        return syntax_error(expected);
    }
    auto rest = argument.substr(prefix.size() + 1);
    while (!rest.empty() && rest.front() == ' ') {
        rest.remove_prefix(1);
    }
    if (rest.empty() || rest.front() != '<') {
        return syntax_error(expected);
    }
    auto close = find_path_end(rest);
    if (close == std::string_view::npos) {
        return syntax_error(expected);
    }

    PathArgument result;
    auto path = rest.substr(1, close - 1);
    // RFC 5321 section 4.1.2: a source route "@a,@b:" is accepted and ignored.
    if (path.starts_with('@')) {
        auto colon = path.find(':');
        if (colon == std::string_view::npos) {
            return syntax_error(expected);
        }
        path = path.substr(colon + 1);
    }

    if (path.empty()) {
        if (prefix != "FROM") {
            return syntax_error("Empty recipient address not allowed");
        }
    } else if (prefix == "TO" && to_upper(path) == "POSTMASTER") {
        result.address = "postmaster";
    } else if (!is_valid_mailbox(path)) {
        return std::make_pair(std::optional<PathArgument>{},
                              std::optional<ArgumentError>{ArgumentError{501, "5.1.3", "Bad address syntax <" + std::string(path) + ">"}});
    } else {
        result.address = std::string(path);
    }

    auto parameters = rest.substr(close + 1);
    while (!parameters.empty()) {
        if (parameters.front() != ' ') {
            return syntax_error(expected);
        }
        while (!parameters.empty() && parameters.front() == ' ') {
            parameters.remove_prefix(1);
        }
        if (parameters.empty()) {
            break;
        }
        auto end = parameters.find(' ');
        auto item = parameters.substr(0, end);
        parameters = end == std::string_view::npos ? std::string_view{} : parameters.substr(end);

        Parameter parameter;
        auto equals = item.find('=');
        parameter.keyword = to_upper(item.substr(0, equals));
        if (equals != std::string_view::npos) {
            parameter.value = std::string(item.substr(equals + 1));
        }
        if (!is_esmtp_keyword(parameter.keyword) || !is_esmtp_value(parameter.value) ||
            (equals != std::string_view::npos && parameter.value.empty())) {
            return std::make_pair(std::optional<PathArgument>{},
                                  std::optional<ArgumentError>{ArgumentError{501, "5.5.4", "Invalid parameter " + std::string(item)}});
        }
        result.parameters.push_back(std::move(parameter));
    }
    return {std::move(result), std::nullopt};
}

}  // namespace tlsrelay::smtp
