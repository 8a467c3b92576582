#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <optional>
#include <string>

#include "commands.hpp"
#include "tlsrelay/config/config.hpp"
#include "tlsrelay/smtpd/users.hpp"

namespace tlsrelay::cli {
namespace {

// Reads one line from standard input; on a terminal, without echo.
std::optional<std::string> read_secret(const char* prompt) {
    bool terminal = ::isatty(STDIN_FILENO) != 0;
    termios saved{};
    if (terminal) {
        std::fputs(prompt, stderr);
        ::tcgetattr(STDIN_FILENO, &saved);
        termios quiet = saved;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    std::string line;
    bool ok = static_cast<bool>(std::getline(std::cin, line));
    if (terminal) {
        ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
        std::fputs("\n", stderr);
    }
    if (!ok) {
        return std::nullopt;
    }
    return line;
}

}  // namespace

int passwd(const std::vector<std::string>& arguments) {
    std::string user;
    std::string file;
    std::string config_file;
    for (std::size_t i = 0; i < arguments.size(); ++i) {
        if (arguments[i] == "--file" && i + 1 < arguments.size()) {
            file = arguments[++i];
        } else if (arguments[i] == "--config" && i + 1 < arguments.size()) {
            config_file = arguments[++i];
        } else if (user.empty() && !arguments[i].starts_with("-")) {
            user = arguments[i];
        } else {
            std::fprintf(stderr, "tlsrelay: passwd: unexpected argument \"%s\"\n", arguments[i].c_str());
            return 2;
        }
    }
    if (user.empty() || (file.empty() && config_file.empty())) {
        std::fputs("usage: tlsrelay passwd USER (--file USERS_FILE | --config FILE)\n"
                   "Reads the password from standard input (twice, without echo, on a terminal).\n",
                   stderr);
        return 2;
    }

    try {
        if (file.empty()) {
            auto config = config::load(config_file);
            if (config.smtpd.auth_users_file.empty()) {
                std::fprintf(stderr, "tlsrelay: %s sets no smtpd.auth_users_file\n", config_file.c_str());
                return 1;
            }
            file = config.smtpd.auth_users_file.string();
        }

        auto password = read_secret("Password: ");
        if (!password || password->empty()) {
            std::fputs("tlsrelay: passwd: no password given\n", stderr);
            return 1;
        }
        if (::isatty(STDIN_FILENO)) {
            auto again = read_secret("Password again: ");
            if (!again || *again != *password) {
                std::fputs("tlsrelay: passwd: the passwords differ; nothing changed\n", stderr);
                return 1;
            }
        }
        smtpd::set_password(file, user, *password);
        std::fprintf(stderr, "tlsrelay: password for %s set in %s\n", user.c_str(), file.c_str());
        return 0;
    } catch (const std::exception& error) {
        std::fprintf(stderr, "tlsrelay: passwd: %s\n", error.what());
        return 1;
    }
}

}  // namespace tlsrelay::cli
