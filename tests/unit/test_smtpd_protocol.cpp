#include <catch2/catch.hpp>

#include "tlsrelay/smtpd/protocol.hpp"

using namespace tlsrelay;
using smtpd::Action;
using smtpd::Protocol;

namespace {

smtpd::ProtocolSettings settings() {
    smtpd::ProtocolSettings s;
    s.myhostname = "relay.example.net";
    s.mynetworks = {*parse_network("127.0.0.0/8")};
    s.message_size_limit = 10000;
    return s;
}

const auto local_client = asio::ip::make_address("127.0.0.1");
const auto remote_client = asio::ip::make_address("192.0.2.7");

std::string code_of(Protocol& protocol, const char* line) {
    auto response = protocol.handle(line);
    return std::to_string(response.reply.code) + " " + response.reply.enhanced;
}

}  // namespace

TEST_CASE("protocol greeting names the host") {
    auto s = settings();
    Protocol protocol(s, local_client);
    CHECK(protocol.greeting().reply.wire() == "220 relay.example.net ESMTP tlsrelay\r\n");
}

TEST_CASE("protocol EHLO advertises STARTTLS until TLS is active") {
    auto s = settings();
    Protocol protocol(s, local_client);
    auto response = protocol.handle("EHLO client.example");
    CHECK(response.reply.code == 250);
    auto& lines = response.reply.lines;
    CHECK(std::find(lines.begin(), lines.end(), "STARTTLS") != lines.end());
    CHECK(std::find(lines.begin(), lines.end(), "8BITMIME") != lines.end());
    CHECK(std::find(lines.begin(), lines.end(), "SIZE 10000") != lines.end());

    auto starttls = protocol.handle("STARTTLS");
    CHECK(starttls.reply.code == 220);
    CHECK(starttls.action == Action::start_tls);
    protocol.tls_started("TLSv1.3 with cipher TLS_AES_128_GCM_SHA256");

    // RFC 3207: the client must greet again, and STARTTLS is not offered twice.
    CHECK(code_of(protocol, "MAIL FROM:<a@example.com>") == "503 5.5.1");
    auto again = protocol.handle("EHLO client.example");
    CHECK(std::find(again.reply.lines.begin(), again.reply.lines.end(), "STARTTLS") == again.reply.lines.end());
    CHECK(code_of(protocol, "STARTTLS") == "554 5.5.1");
}

TEST_CASE("protocol without TLS does not offer STARTTLS") {
    auto s = settings();
    s.tls_level = config::InboundTlsLevel::none;
    Protocol protocol(s, local_client);
    auto response = protocol.handle("EHLO client.example");
    CHECK(std::find(response.reply.lines.begin(), response.reply.lines.end(), "STARTTLS") == response.reply.lines.end());
    CHECK(code_of(protocol, "STARTTLS") == "502 5.5.1");
}

TEST_CASE("protocol full transaction") {
    auto s = settings();
    Protocol protocol(s, local_client);
    CHECK(code_of(protocol, "EHLO client.example") == "250 ");
    CHECK(code_of(protocol, "MAIL FROM:<alice@example.com> BODY=8BITMIME SIZE=500") == "250 2.1.0");
    CHECK(code_of(protocol, "RCPT TO:<bob@example.org>") == "250 2.1.5");
    CHECK(code_of(protocol, "RCPT TO:<carol@example.net>") == "250 2.1.5");
    auto data = protocol.handle("DATA");
    CHECK(data.reply.code == 354);
    CHECK(data.action == Action::read_data);
    CHECK(protocol.transaction().sender == "alice@example.com");
    CHECK(protocol.transaction().recipients.size() == 2);
    CHECK(protocol.transaction().eight_bit);
}

TEST_CASE("protocol enforces command order") {
    auto s = settings();
    Protocol protocol(s, local_client);
    CHECK(code_of(protocol, "MAIL FROM:<a@example.com>") == "503 5.5.1");
    CHECK(code_of(protocol, "HELO client.example") == "250 ");
    CHECK(code_of(protocol, "RCPT TO:<b@example.org>") == "503 5.5.1");
    CHECK(code_of(protocol, "DATA") == "503 5.5.1");
    CHECK(code_of(protocol, "MAIL FROM:<a@example.com>") == "250 2.1.0");
    CHECK(code_of(protocol, "MAIL FROM:<a@example.com>") == "503 5.5.1");
    CHECK(code_of(protocol, "DATA") == "554 5.5.1");
    CHECK(code_of(protocol, "RSET") == "250 2.0.0");
    CHECK(code_of(protocol, "RCPT TO:<b@example.org>") == "503 5.5.1");
}

TEST_CASE("protocol rejects relaying for clients outside mynetworks") {
    auto s = settings();
    Protocol protocol(s, remote_client);
    protocol.handle("EHLO client.example");
    CHECK(code_of(protocol, "MAIL FROM:<a@example.com>") == "250 2.1.0");
    auto response = protocol.handle("RCPT TO:<b@example.org>");
    CHECK(response.reply.code == 554);
    CHECK(response.reply.enhanced == "5.7.1");
    CHECK(response.reply.lines[0] == "<b@example.org>: Relay access denied");
    CHECK(protocol.transaction().recipients.empty());
}

TEST_CASE("protocol checks MAIL parameters") {
    auto s = settings();
    Protocol protocol(s, local_client);
    protocol.handle("EHLO client.example");
    CHECK(code_of(protocol, "MAIL FROM:<a@example.com> SIZE=20000") == "552 5.3.4");
    CHECK(code_of(protocol, "MAIL FROM:<a@example.com> SIZE=big") == "501 5.5.4");
    CHECK(code_of(protocol, "MAIL FROM:<a@example.com> BODY=BINARYMIME") == "501 5.5.4");
    CHECK(code_of(protocol, "MAIL FROM:<a@example.com> XFOO=1") == "555 5.5.4");
    CHECK(code_of(protocol, "MAIL FROM:<a@example.com> SIZE=9000") == "250 2.1.0");
    CHECK(code_of(protocol, "RCPT TO:<b@example.org> XFOO=1") == "555 5.5.4");
    CHECK(code_of(protocol, "RCPT TO:<b@example.org> NOTIFY=SOMETIMES") == "501 5.5.4");
}

TEST_CASE("protocol requires STARTTLS at level encrypt") {
    auto s = settings();
    s.tls_level = config::InboundTlsLevel::encrypt;
    Protocol protocol(s, local_client);
    protocol.handle("EHLO client.example");
    CHECK(code_of(protocol, "MAIL FROM:<a@example.com>") == "530 5.7.0");
    protocol.handle("STARTTLS");
    protocol.tls_started("TLSv1.3");
    protocol.handle("EHLO client.example");
    CHECK(code_of(protocol, "MAIL FROM:<a@example.com>") == "250 2.1.0");
}

TEST_CASE("protocol answers other verbs") {
    auto s = settings();
    Protocol protocol(s, local_client);
    CHECK(code_of(protocol, "NOOP") == "250 2.0.0");
    CHECK(code_of(protocol, "VRFY bob") == "252 2.5.2");
    CHECK(code_of(protocol, "EXPN list") == "502 5.5.1");
    CHECK(code_of(protocol, "HELO") == "501 5.5.4");
    CHECK(code_of(protocol, "DATA now") == "501 5.5.4");
    auto quit = protocol.handle("QUIT");
    CHECK(quit.reply.code == 221);
    CHECK(quit.action == Action::close);
}

TEST_CASE("protocol error limit closes the session") {
    auto s = settings();
    s.hard_error_limit = 3;
    Protocol protocol(s, local_client);
    CHECK_FALSE(protocol.count_error());
    CHECK_FALSE(protocol.count_error());
    CHECK(protocol.count_error());
}

TEST_CASE("protocol AUTH only after TLS", "[smtpd]") {
    auto s = settings();
    s.auth_available = true;
    Protocol protocol(s, remote_client);
    auto ehlo = protocol.handle("EHLO client.example");
    CHECK(std::find(ehlo.reply.lines.begin(), ehlo.reply.lines.end(), "AUTH PLAIN LOGIN") == ehlo.reply.lines.end());
    CHECK(code_of(protocol, "AUTH PLAIN AGJvYgBzZWNyZXQ=") == "538 5.7.11");

    protocol.tls_started("TLSv1.3");
    ehlo = protocol.handle("EHLO client.example");
    CHECK(std::find(ehlo.reply.lines.begin(), ehlo.reply.lines.end(), "AUTH PLAIN LOGIN") != ehlo.reply.lines.end());
}

TEST_CASE("protocol AUTH PLAIN with initial response", "[smtpd]") {
    auto s = settings();
    s.auth_available = true;
    Protocol protocol(s, remote_client);
    protocol.tls_started("TLSv1.3");
    protocol.handle("EHLO client.example");

    // base64("\0bob\0secret")
    auto response = protocol.handle("AUTH PLAIN AGJvYgBzZWNyZXQ=");
    REQUIRE(response.action == Action::verify_auth);
    CHECK(protocol.pending_credentials().user == "bob");
    CHECK(protocol.pending_credentials().password == "secret");
    CHECK(protocol.auth_result(true).reply.wire() == "235 2.7.0 Authentication successful\r\n");
    CHECK(protocol.authenticated_user() == "bob");
    CHECK(protocol.pending_credentials().password.empty());

    // Authenticated clients may relay from anywhere.
    CHECK(code_of(protocol, "MAIL FROM:<bob@example.com>") == "250 2.1.0");
    CHECK(code_of(protocol, "RCPT TO:<carol@example.org>") == "250 2.1.5");
    CHECK(code_of(protocol, "AUTH PLAIN AGJvYgBzZWNyZXQ=") == "503 5.5.1");
}

TEST_CASE("protocol AUTH LOGIN exchange", "[smtpd]") {
    auto s = settings();
    s.auth_available = true;
    Protocol protocol(s, remote_client);
    protocol.tls_started("TLSv1.3");
    protocol.handle("EHLO client.example");

    CHECK(protocol.handle("AUTH LOGIN").reply.wire() == "334 VXNlcm5hbWU6\r\n");
    CHECK(protocol.handle("Ym9i").reply.wire() == "334 UGFzc3dvcmQ6\r\n");
    auto response = protocol.handle("d3Jvbmc=");
    REQUIRE(response.action == Action::verify_auth);
    CHECK(protocol.pending_credentials().user == "bob");
    CHECK(protocol.auth_result(false).reply.wire() == "535 5.7.8 Authentication credentials invalid\r\n");
    CHECK(protocol.authenticated_user().empty());
    CHECK(code_of(protocol, "MAIL FROM:<bob@example.com>") == "250 2.1.0");
    CHECK(code_of(protocol, "RCPT TO:<carol@example.org>") == "554 5.7.1");
}

TEST_CASE("protocol AUTH bad input", "[smtpd]") {
    auto s = settings();
    s.auth_available = true;
    Protocol protocol(s, remote_client);
    protocol.tls_started("TLSv1.3");
    protocol.handle("EHLO client.example");
    CHECK(code_of(protocol, "AUTH CRAM-MD5") == "504 5.5.4");
    CHECK(code_of(protocol, "AUTH PLAIN not-base64!") == "501 5.5.2");
    CHECK(code_of(protocol, "AUTH PLAIN Ym9i") == "501 5.5.2");
    CHECK(protocol.handle("AUTH PLAIN").reply.code == 334);
    CHECK(code_of(protocol, "*") == "501 5.7.0");
    // base64("alice\0bob\0secret"): acting as another user is not offered.
    CHECK(code_of(protocol, "AUTH PLAIN YWxpY2UAYm9iAHNlY3JldA==") == "535 5.7.8");
    CHECK(code_of(protocol, "NOOP") == "250 2.0.0");
}

TEST_CASE("protocol submission requires AUTH", "[smtpd]") {
    auto s = settings();
    s.auth_available = true;
    s.auth_required = true;
    Protocol protocol(s, local_client);
    protocol.tls_started("TLSv1.3");
    protocol.handle("EHLO client.example");
    CHECK(code_of(protocol, "MAIL FROM:<a@example.com>") == "530 5.7.0");
}

TEST_CASE("protocol BDAT needs a transaction", "[smtpd]") {
    auto s = settings();
    Protocol protocol(s, local_client);
    protocol.handle("EHLO client.example");
    auto response = protocol.handle("BDAT 100 LAST");
    CHECK(response.action == Action::read_chunk);
    CHECK(response.discard_chunk);
    CHECK(response.chunk_size == 100);
    CHECK(response.reply.code == 503);
    CHECK(protocol.handle("BDAT 1 MORE").action == Action::close);
}
