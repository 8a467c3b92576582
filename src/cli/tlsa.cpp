// `tlsrelay tlsa`: prints the TLSA records to publish for the relay's own
// certificate, and for the next one during a key rollover.
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "arguments.hpp"
#include "commands.hpp"
#include "tlsrelay/config/config.hpp"
#include "tlsrelay/smtpd/own_tlsa.hpp"
#include "tlsrelay/tls/context.hpp"
#include "tlsrelay/tls/inspect.hpp"

namespace tlsrelay::cli {
namespace {

namespace fs = std::filesystem;

const char* tlsa_usage =
    "usage: tlsrelay tlsa [--cert FILE] [--next-cert FILE] [--host NAME] [--port N] [--config FILE]\n"
    "  --cert FILE       PEM chain the relay serves, leaf first (default: smtpd.tls_cert_file of --config)\n"
    "  --next-cert FILE  PEM chain of the next certificate, for a key rollover\n"
    "                    (default: smtpd.tls_next_cert_file of --config)\n"
    "  --host NAME       host name in the record (default: myhostname of --config, else the system host name)\n"
    "  --port N          TCP port in the record (default: 25)\n";

struct TlsaOptions {
    std::string cert_file;
    std::string next_cert_file;
    std::string host;
    std::uint16_t port = 25;
    std::string config_file;
};

TlsaOptions parse_options(const std::vector<std::string>& arguments) {
    TlsaOptions options;
    for (std::size_t i = 0; i < arguments.size(); ++i) {
        std::string name = arguments[i];
        std::optional<std::string> value;
        if (auto equals = name.find('='); name.starts_with("--") && equals != std::string::npos) {
            value = name.substr(equals + 1);
            name = name.substr(0, equals);
        }
        bool known = name == "--cert" || name == "--next-cert" || name == "--host" || name == "--port" ||
                     name == "--config";
        if (!known) {
            throw UsageError("unexpected argument \"" + arguments[i] + "\"");
        }
        if (!value) {
            if (i + 1 >= arguments.size()) {
                throw UsageError(name + " needs a value");
            }
            value = arguments[++i];
        }
        if (name == "--cert") {
            options.cert_file = *value;
        } else if (name == "--next-cert") {
            options.next_cert_file = *value;
        } else if (name == "--host") {
            if (value->empty()) {
                throw UsageError("--host needs a host name, such as mail.example.org");
            }
            options.host = *value;
        } else if (name == "--port") {
            options.port = parse_port(*value);
        } else {
            options.config_file = *value;
        }
    }
    return options;
}

std::string system_host_name() {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') {
        throw std::runtime_error("cannot read the system host name; use --host");
    }
    return name;
}

// Fills what the command line left open from the configuration file:
// myhostname, the served certificate and tls_next_cert_file.
void apply_config(TlsaOptions& options) {
    if (options.config_file.empty()) {
        if (options.cert_file.empty()) {
            throw UsageError("missing --cert FILE (or --config FILE to take smtpd.tls_cert_file)");
        }
        if (options.host.empty()) {
            options.host = system_host_name();
        }
        return;
    }

    config::Config config = config::load(options.config_file, config::process_environment());
    if (options.host.empty()) {
        options.host = config.myhostname;
    }
    if (options.next_cert_file.empty()) {
        options.next_cert_file = config.smtpd.tls_next_cert_file.string();
    }
    if (!options.cert_file.empty()) {
        return;
    }
    if (!config.smtpd.tls_cert_file.empty()) {
        options.cert_file = config.smtpd.tls_cert_file.string();
        return;
    }
    // `serve` creates this self-signed certificate when tls_cert_file is empty.
    fs::path generated = config.queue_directory / "tls" / "smtpd-cert.pem";
    if (!fs::exists(generated)) {
        throw std::runtime_error(options.config_file + " sets no smtpd.tls_cert_file and " + generated.string() +
                                 " does not exist yet (serve creates it at first start); use --cert FILE");
    }
    options.cert_file = generated.string();
}

std::vector<tls::Der> load_chain(const std::string& file) {
    auto chain = tls::load_pem_certificates(file);
    if (chain.empty()) {
        throw std::runtime_error(file + ": no certificate found (expected a \"-----BEGIN CERTIFICATE-----\" block)");
    }
    // The records are only right for a chain in serving order: the leaf
    // first, each certificate followed by the one that issued it. A chain
    // in another order would give records that never match what peers see.
    for (std::size_t i = 0; i + 1 < chain.size(); ++i) {
        auto certificate = tls::describe_certificate(chain[i]);
        auto issuer = tls::describe_certificate(chain[i + 1]);
        if (certificate.issuer != issuer.subject) {
            throw std::runtime_error(file + ": certificate " + std::to_string(i + 2) + " (" + issuer.subject +
                                     ") did not issue certificate " + std::to_string(i + 1) + " (issuer " +
                                     certificate.issuer + "); put the leaf first and each issuer after it");
        }
    }
    return chain;
}

// Prints each record with its comment, and only a comment for a record
// already printed (a renewal that kept the key has the same 3 1 1 record).
void print_records(const std::string& owner, const std::vector<smtpd::PublishedTlsa>& records,
                   std::set<std::string>& printed) {
    for (const auto& published : records) {
        std::string line = smtpd::tlsa_zone_line(owner, published.record);
        std::printf("; %s\n", published.comment.c_str());
        if (printed.insert(line).second) {
            std::printf("%s\n", line.c_str());
        } else {
            std::printf(";   same record as above\n");
        }
    }
}

}  // namespace

int tlsa(const std::vector<std::string>& arguments) {
    for (const auto& argument : arguments) {
        if (argument == "--help" || argument == "-h") {
            std::fputs(tlsa_usage, stdout);
            return 0;
        }
    }

    try {
        TlsaOptions options = parse_options(arguments);
        apply_config(options);
        std::string owner = smtpd::absolute_tlsa_owner(options.host, options.port);

        auto current = smtpd::tlsa_records_for_chain(load_chain(options.cert_file), options.cert_file);
        std::vector<smtpd::PublishedTlsa> next;
        if (!options.next_cert_file.empty()) {
            next = smtpd::tlsa_records_for_chain(load_chain(options.next_cert_file), options.next_cert_file);
        }

        // "_25._tcp.host." without the prefix and the root dot.
        std::string host = owner.substr(owner.find("._tcp.") + 6);
        host.pop_back();
        if (host.find('.') == std::string::npos) {
            std::fprintf(stderr, "tlsrelay: tlsa: host name \"%s\" has no dot; use --host with the name "
                                 "that the MX record points to\n", options.host.c_str());
        }

        std::set<std::string> printed;
        std::printf("; TLSA records for %s port %u. Peers use them only from a DNSSEC-signed zone.\n",
                    host.c_str(), static_cast<unsigned>(options.port));
        print_records(owner, current, printed);
        if (!next.empty()) {
            std::printf("; next certificate: publish these too, at least one TTL before serving it\n");
            print_records(owner, next, printed);
        }
        return 0;
    } catch (const UsageError& error) {
        std::fprintf(stderr, "tlsrelay: tlsa: %s (see tlsrelay tlsa --help)\n", error.what());
        return 2;
    } catch (const std::invalid_argument& error) {
        std::fprintf(stderr, "tlsrelay: tlsa: %s\n", error.what());
        return 2;
    } catch (const std::exception& error) {
        std::fprintf(stderr, "tlsrelay: tlsa: %s\n", error.what());
        return 1;
    }
}

}  // namespace tlsrelay::cli
