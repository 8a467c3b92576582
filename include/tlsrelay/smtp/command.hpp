// SMTP command and mailbox parsing (RFC 5321 sections 4.1.1 and 4.1.2).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tlsrelay::smtp {

enum class Verb { helo, ehlo, mail, rcpt, data, bdat, rset, noop, quit, starttls, auth, vrfy, expn, help, unknown };

struct Command {
    Verb verb = Verb::unknown;
    std::string name;      // the verb as sent, upper-cased
    std::string argument;  // everything after the verb and one space
};

// Splits a command line (without CRLF) into verb and argument.
Command parse_command(std::string_view line);

struct Parameter {
    std::string keyword;  // upper-cased
    std::string value;    // empty when the parameter has no "=value"
};

// The path of a MAIL FROM or RCPT TO command and its ESMTP parameters.
struct PathArgument {
    std::string address;  // "local@domain"; empty for the null reverse-path "<>"
    std::vector<Parameter> parameters;
};

// Why an argument was rejected; `code` and `enhanced` form the reply.
struct ArgumentError {
    int code;
    std::string enhanced;
    std::string text;
};

// Parses "FROM:<path> params" (prefix "FROM") or "TO:<path> params" (prefix
// "TO"). The null path "<>" is accepted only for FROM. Addresses may contain
// UTF-8 (RFC 6531); they are kept byte for byte.
std::pair<std::optional<PathArgument>, std::optional<ArgumentError>> parse_path_argument(std::string_view argument,
                                                                                        std::string_view prefix);

// Checks a mailbox "local@domain" against RFC 5321 (dot-string or quoted
// local part; a domain name or an address literal).
bool is_valid_mailbox(std::string_view mailbox);

// The domain part of a mailbox, lower-cased ASCII; empty for "<>".
std::string domain_of(std::string_view mailbox);

}  // namespace tlsrelay::smtp
