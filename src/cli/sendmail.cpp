// "tlsrelay sendmail": the sendmail(1) interface that cron, PHP and other
// programs call, submitting over SMTP to the local relay.
#include <pwd.h>
#include <sysexits.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <random>
#include <sstream>

#include "commands.hpp"
#include "local_smtp.hpp"
#include "tlsrelay/util/log.hpp"

namespace tlsrelay::cli {
namespace {

struct Options {
    std::string config_file;
    std::string sender;
    bool recipients_from_headers = false;  // -t
    bool dot_ends_input = true;            // cleared by -i / -oi
    std::vector<std::string> recipients;
};

std::string lower(std::string text) {
    for (auto& c : text) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return text;
}

// Splits an address list header value ("A <a@x>, b@y") into addresses.
std::vector<std::string> parse_address_list(const std::string& value) {
    std::vector<std::string> addresses;
    std::string item;
    bool quoted = false;
    int angle = 0;
    auto finish = [&addresses](std::string text) {
        auto open = text.find('<');
        auto close = text.rfind('>');
        if (open != std::string::npos && close != std::string::npos && close > open) {
            text = text.substr(open + 1, close - open - 1);
        }
        auto first = text.find_first_not_of(" \t");
        auto last = text.find_last_not_of(" \t");
        if (first != std::string::npos && text.find('@') != std::string::npos) {
            addresses.push_back(text.substr(first, last - first + 1));
        }
    };
    for (char c : value) {
        if (c == '"') quoted = !quoted;
        if (!quoted && c == '<') ++angle;
        if (!quoted && c == '>' && angle > 0) --angle;
        if (c == ',' && !quoted && angle == 0) {
            finish(item);
            item.clear();
        } else {
            item += c;
        }
    }
    finish(item);
    return addresses;
}

std::string rfc5322_now() {
    std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char text[64];
    std::strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S %z", &local);
    return text;
}

std::string login_name() {
    if (const auto* entry = ::getpwuid(::getuid())) {
        return entry->pw_name;
    }
    return "nobody";
}

// Reads the message from standard input with CRLF line ends.
std::vector<std::string> read_message(bool dot_ends_input) {
    std::vector<std::string> lines;
    std::string line;
    while (std::getline(std::cin, line)) {
        if (!line.empty() && line.back() == '\r') {
            line.pop_back();
        }
        if (dot_ends_input && line == ".") {
            break;
        }
        lines.push_back(line);
    }
    return lines;
}

int parse_options(const std::vector<std::string>& arguments, Options& options) {
    for (std::size_t i = 0; i < arguments.size(); ++i) {
        const auto& argument = arguments[i];
        if (argument == "--config" && i + 1 < arguments.size()) {
            options.config_file = arguments[++i];
        } else if (argument == "-t") {
            options.recipients_from_headers = true;
        } else if (argument == "-i" || argument == "-oi") {
            options.dot_ends_input = false;
        } else if (argument == "-f" && i + 1 < arguments.size()) {
            options.sender = arguments[++i];
        } else if (argument.starts_with("-f") && argument.size() > 2) {
            options.sender = argument.substr(2);
        } else if (argument == "-F" && i + 1 < arguments.size()) {
            ++i;  // full name: accepted for compatibility, not used
        } else if (argument.starts_with("-o") || argument == "-bm" || argument == "-v") {
            // Other sendmail options that callers pass by habit: ignored.
        } else if (!argument.starts_with("-")) {
            options.recipients.push_back(argument);
        } else {
            std::fprintf(stderr, "tlsrelay: sendmail: unsupported option %s\n", argument.c_str());
            return EX_USAGE;
        }
    }
    return EX_OK;
}

}  // namespace

int sendmail(const std::vector<std::string>& arguments) {
    Options options;
    if (int status = parse_options(arguments, options); status != EX_OK) {
        return status;
    }

    try {
        const char* default_config = "/etc/tlsrelay/tlsrelay.toml";
        auto config = config::load(options.config_file.empty() ? default_config : options.config_file,
                                   config::process_environment());
        auto lines = read_message(options.dot_ends_input);

        // The header section ends at the first empty line. Continuation
        // lines belong to the field before them.
        std::size_t body_start = lines.size();
        for (std::size_t i = 0; i < lines.size(); ++i) {
            if (lines[i].empty()) {
                body_start = i;
                break;
            }
        }
        std::vector<std::string> headers(lines.begin(), lines.begin() + static_cast<std::ptrdiff_t>(body_start));
        bool has_date = false, has_message_id = false, has_from = false;
        std::vector<std::string> kept;
        std::string current_field;
        for (const auto& header : headers) {
            bool continuation = !header.empty() && (header[0] == ' ' || header[0] == '\t');
            if (!continuation) {
                current_field = lower(header.substr(0, header.find(':')));
            }
            if (current_field == "date") has_date = true;
            if (current_field == "message-id") has_message_id = true;
            if (current_field == "from") has_from = true;
            if (options.recipients_from_headers && (current_field == "to" || current_field == "cc" || current_field == "bcc")) {
                auto value = continuation ? header : header.substr(header.find(':') + 1);
                for (auto& address : parse_address_list(value)) {
                    options.recipients.push_back(address);
                }
            }
            // Bcc recipients must not see each other (RFC 5322 section 3.6.3).
            if (current_field != "bcc") {
                kept.push_back(header);
            }
        }
        if (options.recipients.empty()) {
            std::fputs("tlsrelay: sendmail: no recipients: name them as arguments or use -t\n", stderr);
            return EX_USAGE;
        }

        if (options.sender.empty()) {
            options.sender = login_name() + "@" + config.myhostname;
        }
        if (!has_from) kept.insert(kept.begin(), "From: " + options.sender);
        if (!has_date) kept.push_back("Date: " + rfc5322_now());
        if (!has_message_id) {
            std::mt19937_64 random(std::random_device{}());
            std::ostringstream id;
            id << "Message-ID: <" << std::time(nullptr) << "." << std::hex << random() << "@" << config.myhostname << ">";
            kept.push_back(id.str());
        }

        std::string content;
        for (const auto& header : kept) {
            content += (header.starts_with(".") ? "." : "") + header + "\r\n";
        }
        for (std::size_t i = body_start; i < lines.size(); ++i) {
            content += (lines[i].starts_with(".") ? "." : "") + lines[i] + "\r\n";
        }

        LocalSmtp smtp(local_endpoint(config), std::chrono::seconds(60));
        auto check = [](const smtp::Reply& reply, const char* phase) {
            if (!reply.positive()) {
                throw std::runtime_error(std::string("the relay rejected ") + phase + ": " + reply.summary());
            }
        };
        check(smtp.read_reply(), "the connection");
        check(smtp.command("EHLO " + config.myhostname), "EHLO");
        check(smtp.command("MAIL FROM:<" + options.sender + ">"), "the sender");
        for (const auto& recipient : options.recipients) {
            check(smtp.command("RCPT TO:<" + recipient + ">"), ("recipient " + recipient).c_str());
        }
        if (auto go_ahead = smtp.command("DATA"); go_ahead.code != 354) {
            throw std::runtime_error("the relay rejected DATA: " + go_ahead.summary());
        }
        smtp.send_raw(content + ".\r\n");
        auto queued = smtp.read_reply();
        check(queued, "the message");
        smtp.command("QUIT");
        return EX_OK;
    } catch (const config::ConfigError& error) {
        std::fprintf(stderr, "tlsrelay: %s\n", error.what());
        return EX_CONFIG;
    } catch (const std::exception& error) {
        std::fprintf(stderr, "tlsrelay: sendmail: %s\n", error.what());
        return EX_TEMPFAIL;
    }
}

int healthcheck(const std::vector<std::string>& arguments) {
    std::string config_file = "/etc/tlsrelay/tlsrelay.toml";
    for (std::size_t i = 0; i + 1 < arguments.size(); ++i) {
        if (arguments[i] == "--config") {
            config_file = arguments[i + 1];
        }
    }
    try {
        auto config = config::load(config_file, config::process_environment());
        LocalSmtp smtp(local_endpoint(config), std::chrono::seconds(5));
        auto greeting = smtp.read_reply();
        smtp.command("QUIT");
        if (greeting.code != 220) {
            std::fprintf(stderr, "tlsrelay: healthcheck: unexpected greeting %s\n", greeting.summary().c_str());
            return 1;
        }
        return 0;
    } catch (const std::exception& error) {
        std::fprintf(stderr, "tlsrelay: healthcheck: %s\n", error.what());
        return 1;
    }
}

}  // namespace tlsrelay::cli
