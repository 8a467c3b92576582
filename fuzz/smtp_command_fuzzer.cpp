// Feeds arbitrary command lines through the inbound state machine: the
// command and mailbox parsers, ESMTP parameters, AUTH exchanges and BDAT
// arguments. Any crash, sanitizer report or broken invariant is a finding.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "tlsrelay/smtpd/protocol.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const tlsrelay::smtpd::ProtocolSettings settings = [] {
        tlsrelay::smtpd::ProtocolSettings s;
        s.myhostname = "relay.fuzz";
        s.auth_available = true;
        s.mynetworks = {*tlsrelay::parse_network("127.0.0.0/8")};
        s.relay_domains = {"relay.fuzz", ".sub.fuzz"};
        s.message_size_limit = 100000;
        s.recipient_limit = 50;
        return s;
    }();

    // The first byte picks the client address and whether TLS is up, so
    // both relay rules and the AUTH paths are reached.
    std::string_view input(reinterpret_cast<const char*>(data), size);
    unsigned char mode = input.empty() ? 0 : static_cast<unsigned char>(input.front());
    if (!input.empty()) {
        input.remove_prefix(1);
    }
    auto client = asio::ip::make_address((mode & 1) != 0 ? "127.0.0.1" : "192.0.2.1");
    tlsrelay::smtpd::Protocol protocol(settings, client);
    if ((mode & 2) != 0) {
        protocol.tls_started("TLSv1.3");
    }

    // Lines separated by LF; a CR before it is dropped as the reader would.
    while (!input.empty()) {
        auto newline = input.find('\n');
        auto line = input.substr(0, newline);
        input = newline == std::string_view::npos ? std::string_view{} : input.substr(newline + 1);
        if (!line.empty() && line.back() == '\r') {
            line.remove_suffix(1);
        }

        auto response = protocol.handle(line);
        if (response.action == tlsrelay::smtpd::Action::verify_auth) {
            response = protocol.auth_result((mode & 4) != 0);
        }
        // Invariants: every reply has a valid code, and a transaction never
        // holds more recipients than the limit.
        if (response.action != tlsrelay::smtpd::Action::verify_auth &&
            (response.reply.code < 200 || response.reply.code > 599) && response.action != tlsrelay::smtpd::Action::read_chunk) {
            std::abort();
        }
        if (protocol.transaction().recipients.size() > settings.recipient_limit) {
            std::abort();
        }
        if (response.action == tlsrelay::smtpd::Action::close) {
            break;
        }
    }
    return 0;
}
