#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "commands.hpp"

namespace {

const char* usage_text =
    "usage: tlsrelay COMMAND [OPTIONS]\n"
    "\n"
    "commands:\n"
    "  serve [--config FILE] run the relay in the foreground (SIGINT or SIGTERM stops it);\n"
    "                        TLSRELAY_SECTION__KEY variables override configuration keys\n"
    "  sendmail [-t] [-i] [-f SENDER] [--config FILE] [RECIPIENT...]\n"
    "                        submit a message from standard input to the local relay\n"
    "  healthcheck [--config FILE]\n"
    "                        exit 0 when the local relay answers with a 220 greeting\n"
    "  passwd USER (--file USERS_FILE | --config FILE)\n"
    "                        add or change an SMTP AUTH user; the password is read from standard input\n"
    "  queue [--config FILE] list [--json] | show ID | flush | delete ID|ALL | hold ID|ALL | release ID|ALL\n"
    "                        list or change queued mail; safe while the server runs\n"
    "  report [--config FILE] [--json] [--days N]\n"
    "                        delivery counters per domain by TLS trust, with safe policy upgrades\n"
    "  tlsa [--cert FILE] [--next-cert FILE] [--host NAME] [--port N] [--config FILE]\n"
    "                        print the TLSA records to publish for the relay's certificate\n"
    "  check DOMAIN [--level L] [--json] [--port N] [--sender ADDRESS] [--verbose] [--config FILE]\n"
    "                        probe DOMAIN's mail servers as delivery would and explain the TLS\n"
    "                        verdict; sends no mail; exit 0 when delivery would succeed\n"
    "  version               print the version\n"
    "  help                  print this text\n";

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> arguments(argv + 1, argv + argc);
    // Installed as /usr/sbin/sendmail (a symbolic link), it acts as sendmail.
    std::string program = argv[0];
    if (program.substr(program.rfind('/') + 1) == "sendmail") {
        return tlsrelay::cli::sendmail(arguments);
    }
    if (arguments.empty()) {
        std::fputs(usage_text, stderr);
        return 2;
    }

    std::string command = arguments.front();
    arguments.erase(arguments.begin());
    if (command == "serve") {
        return tlsrelay::cli::serve(arguments);
    }
    if (command == "sendmail") {
        return tlsrelay::cli::sendmail(arguments);
    }
    if (command == "healthcheck") {
        return tlsrelay::cli::healthcheck(arguments);
    }
    if (command == "passwd") {
        return tlsrelay::cli::passwd(arguments);
    }
    if (command == "queue") {
        return tlsrelay::cli::queue_command(arguments);
    }
    if (command == "report") {
        return tlsrelay::cli::report_command(arguments);
    }
    if (command == "tlsa") {
        return tlsrelay::cli::tlsa(arguments);
    }
    if (command == "check") {
        return tlsrelay::cli::check(arguments);
    }
    if (command == "version" || command == "--version") {
        std::puts("tlsrelay " TLSRELAY_VERSION);
        return 0;
    }
    if (command == "help" || command == "--help" || command == "-h") {
        std::fputs(usage_text, stdout);
        return 0;
    }
    std::fprintf(stderr, "tlsrelay: unknown command \"%s\"\n\n%s", command.c_str(), usage_text);
    return 2;
}
