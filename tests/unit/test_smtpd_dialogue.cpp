// SMTP dialogues against a real inbound server on loopback: bytes sent,
// replies expected, and what the queue then holds.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/resource.h>

#include "smtpd_test_server.hpp"

using test::Client;
using test::TestServer;

namespace {

const std::string envelope_commands =
    "EHLO client.test\r\nMAIL FROM:<alice@client.test>\r\nRCPT TO:<bob@remote.test>\r\nDATA\r\n";

// Sends EHLO, MAIL, RCPT and DATA and reads their replies.
void begin_message(Client& client) {
    REQUIRE(client.code() == "220");
    client.send(envelope_commands);
    REQUIRE(client.code() == "250");
    REQUIRE(client.code() == "250");
    REQUIRE(client.code() == "250");
    REQUIRE(client.code() == "354");
}

std::string stored_body(TestServer& server, std::size_t index = 0) {
    auto queued = server.queued();
    REQUIRE(queued.size() > index);
    auto content = server.content(queued[index].id);
    // Skip the Received: header the relay adds: it ends at the first line
    // that does not start with white space.
    auto end = content.find("\r\n", 0);
    while (end != std::string::npos && end + 2 < content.size() && (content[end + 2] == '\t' || content[end + 2] == ' ')) {
        end = content.find("\r\n", end + 2);
    }
    return content.substr(end + 2);
}

}  // namespace

TEST_CASE("dialogue plain transaction is queued", "[smtpd]") {
    TestServer server;
    Client client(server.port());
    begin_message(client);
    client.send("Subject: hi\r\n\r\nline one\r\n..leading dot\r\n.\r\n");
    auto reply = client.reply();
    CHECK(reply.rfind("250 2.0.0 Ok: queued as ", 0) == 0);

    auto queued = server.queued();
    REQUIRE(queued.size() == 1);
    CHECK(reply.substr(reply.rfind(' ') + 1) == queued[0].id);
    CHECK(queued[0].sender == "alice@client.test");
    CHECK(queued[0].recipients == std::vector<std::string>{"bob@remote.test"});
    CHECK(stored_body(server) == "Subject: hi\r\n\r\nline one\r\n.leading dot\r\n");
    CHECK(server.content(queued[0].id).rfind("Received: from client.test (unknown[127.0.0.1])\r\n", 0) == 0);
    CHECK(client.command("QUIT").rfind("221", 0) == 0);
}

TEST_CASE("dialogue pipelined commands answered in order", "[smtpd]") {
    TestServer server;
    Client client(server.port());
    REQUIRE(client.code() == "220");
    client.send("EHLO client.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<b@remote.test>\r\n"
                "RCPT TO:<bad address>\r\nRCPT TO:<c@remote.test>\r\nDATA\r\n");
    CHECK(client.code() == "250");
    CHECK(client.reply() == "250 2.1.0 Ok");
    CHECK(client.reply() == "250 2.1.5 Ok");
    CHECK(client.code() == "501");
    CHECK(client.reply() == "250 2.1.5 Ok");
    CHECK(client.code() == "354");
    client.send("x\r\n.\r\nQUIT\r\n");
    CHECK(client.code() == "250");
    CHECK(client.code() == "221");
    REQUIRE(server.queued().size() == 1);
    CHECK(server.queued()[0].recipients.size() == 2);
}

// The 2023 SMTP smuggling class: a bare CR or LF before the dot must not
// end the data, so the "second transaction" stays text inside the first.
TEST_CASE("dialogue smuggling variants stay inside the message", "[smtpd]") {
    const char* variants[] = {"\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r", "\r.\r\n", "\r\n.\r", "\n.\r\r\n"};
    for (const char* end_of_data : variants) {
        INFO("smuggled end of data, escaped: " << std::string(end_of_data).size() << " bytes");
        TestServer server;
        Client client(server.port());
        begin_message(client);
        client.send(std::string("Subject: first\r\n\r\nbody") + end_of_data +
                    "MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@remote.test>\r\nDATA\r\nsmuggled\r\n.\r\n");
        auto reply = client.reply();
        CHECK(reply.rfind("250 2.0.0 Ok: queued as", 0) == 0);
        client.send("QUIT\r\n");
        CHECK(client.code() == "221");

        auto queued = server.queued();
        REQUIRE(queued.size() == 1);
        CHECK(queued[0].sender == "alice@client.test");
        auto body = stored_body(server);
        CHECK(body.find("MAIL FROM:<evil@attacker.test>\r\n") != std::string::npos);
        // Only CRLF line ends are stored.
        for (std::size_t i = 0; i < body.size(); ++i) {
            if (body[i] == '\n') {
                REQUIRE(i > 0);
                CHECK(body[i - 1] == '\r');
            }
            if (body[i] == '\r') {
                REQUIRE(i + 1 < body.size());
                CHECK(body[i + 1] == '\n');
            }
        }
    }
}

TEST_CASE("dialogue bare newline rejected in reject mode", "[smtpd]") {
    TestServer server([](auto& settings) { settings.bare_newline = tlsrelay::smtp::BareNewline::reject; });
    Client client(server.port());
    begin_message(client);
    client.send("Subject: x\r\n\r\nbody\n.\nMAIL FROM:<e@attacker.test>\r\n.\r\n");
    CHECK(client.reply() == "554 5.5.2 Error: bare <CR> or <LF> received, lines must end with <CR><LF>");
    CHECK(server.queued().empty());
    CHECK(server.files_in("active") == 0);
    CHECK(server.files_in("tmp") == 0);
    // The session goes on.
    CHECK(client.command("NOOP") == "250 2.0.0 Ok");
}

TEST_CASE("dialogue bare LF in a command is refused", "[smtpd]") {
    TestServer server;
    Client client(server.port());
    REQUIRE(client.code() == "220");
    client.send("EHLO client.test\nMAIL FROM:<a@client.test>\r\n");
    CHECK(client.reply() == "500 5.5.2 Error: bare <LF> received, lines must end with <CR><LF>");
    CHECK(client.code() == "503");
}

TEST_CASE("dialogue over-long command gets 500", "[smtpd]") {
    TestServer server;
    Client client(server.port());
    REQUIRE(client.code() == "220");
    CHECK(client.command("NOOP " + std::string(1100, 'x')) == "500 5.5.2 Error: line too long");
    CHECK(client.command("NOOP") == "250 2.0.0 Ok");
    // A command that never ends is cut off and the session closed.
    client.send(std::string(70000, 'y'));
    CHECK(client.reply() == "500 5.5.2 Error: line too long, closing connection");
    CHECK(client.closed());
}

TEST_CASE("dialogue long content lines are stored whole", "[smtpd]") {
    TestServer server;
    Client client(server.port());
    begin_message(client);
    std::string long_line(20000, 'L');
    client.send("Subject: long\r\n\r\n" + long_line + "\r\n.\r\n");
    CHECK(client.code() == "250");
    CHECK(stored_body(server) == "Subject: long\r\n\r\n" + long_line + "\r\n");
}

TEST_CASE("dialogue size limit reported after end of data", "[smtpd]") {
    TestServer server;
    Client client(server.port());
    REQUIRE(client.code() == "220");
    client.command("EHLO client.test");
    CHECK(client.command("MAIL FROM:<a@client.test> SIZE=200000") == "552 5.3.4 Message size exceeds fixed limit");
    CHECK(client.command("MAIL FROM:<a@client.test>").rfind("250", 0) == 0);
    CHECK(client.command("RCPT TO:<b@remote.test>").rfind("250", 0) == 0);
    CHECK(client.command("DATA").rfind("354", 0) == 0);
    std::string line(998, 'z');
    for (int i = 0; i < 150; ++i) {
        client.send(line + "\r\n");
    }
    client.send(".\r\n");
    CHECK(client.reply() == "552 5.3.4 Error: message size exceeds fixed limit");
    CHECK(server.queued().empty());
    CHECK(server.files_in("tmp") == 0);
    CHECK(client.command("RSET") == "250 2.0.0 Ok");
}

TEST_CASE("dialogue idle client gets 421 timeout", "[smtpd]") {
    TestServer server([](auto& settings) { settings.timeout = std::chrono::seconds(1); });
    Client client(server.port());
    begin_message(client);
    client.send("Subject: slow\r\n");
    CHECK(client.reply() == "421 4.4.2 relay.test Error: timeout exceeded");
    CHECK(client.closed());
    CHECK(server.queued().empty());
}

TEST_CASE("dialogue relay denied outside mynetworks", "[smtpd]") {
    TestServer server([](auto& settings) { settings.protocol.relay_domains = {"relay-domain.test"}; });
    Client client(server.port(), "127.0.0.2");
    REQUIRE(client.code() == "220");
    client.command("EHLO client.test");
    client.command("MAIL FROM:<a@client.test>");
    CHECK(client.command("RCPT TO:<b@remote.test>") == "554 5.7.1 <b@remote.test>: Relay access denied");
    CHECK(client.command("RCPT TO:<b@relay-domain.test>") == "250 2.1.5 Ok");
    // Routing hidden in the local part never opens the relay.
    CHECK(client.command("RCPT TO:<b%remote.test@relay-domain.test>").rfind("554 5.7.1", 0) == 0);
    CHECK(client.command("RCPT TO:<remote.test!b@relay-domain.test>").rfind("554 5.7.1", 0) == 0);
    CHECK(client.command("RCPT TO:<\"b@remote.test\"@relay-domain.test>").rfind("554 5.7.1", 0) == 0);
    CHECK(client.command("RCPT TO:<@relay-domain.test:b@remote.test>").rfind("554 5.7.1", 0) == 0);
    CHECK(client.command("RCPT TO:<b@relay-domain.test.>").rfind("501", 0) == 0);
}

TEST_CASE("dialogue BDAT chunks are joined", "[smtpd]") {
    TestServer server;
    Client client(server.port());
    REQUIRE(client.code() == "220");
    auto ehlo = client.command("EHLO client.test");
    CHECK(ehlo.find("CHUNKING") != std::string::npos);
    client.command("MAIL FROM:<a@client.test>");
    client.command("RCPT TO:<b@remote.test>");
    std::string first = "Subject: chunks\r\n\r\n.not stuffed\r\n";
    std::string second = "bare\nline\r\n";
    client.send("BDAT " + std::to_string(first.size()) + "\r\n" + first);
    CHECK(client.reply() == "250 2.0.0 Ok: " + std::to_string(first.size()) + " bytes");
    CHECK(client.command("DATA") == "503 5.5.1 Error: DATA after BDAT");
    client.send("BDAT " + std::to_string(second.size()) + " LAST\r\n" + second);
    CHECK(client.reply().rfind("250 2.0.0 Ok: queued as", 0) == 0);
    CHECK(stored_body(server) == "Subject: chunks\r\n\r\n.not stuffed\r\nbare\r\nline\r\n");
}

TEST_CASE("dialogue BDAT without MAIL consumes the chunk", "[smtpd]") {
    TestServer server;
    Client client(server.port());
    REQUIRE(client.code() == "220");
    client.command("EHLO client.test");
    client.send("BDAT 12 LAST\r\nNOOP\r\nNOOP\r\n");
    CHECK(client.reply() == "503 5.5.1 Error: need MAIL command");
    CHECK(client.command("NOOP") == "250 2.0.0 Ok");
    CHECK(client.command("BDAT ten") == "501 5.5.4 Syntax: BDAT size [LAST]");
    CHECK(client.closed());
}

TEST_CASE("dialogue too many hops rejected", "[smtpd]") {
    TestServer server;
    Client client(server.port());
    begin_message(client);
    std::string headers;
    for (int i = 0; i < 51; ++i) {
        headers += "Received: from hop" + std::to_string(i) + ".test by relay.test\r\n";
    }
    client.send(headers + "Subject: loop\r\n\r\nbody\r\n.\r\n");
    CHECK(client.reply() == "554 5.4.6 Error: too many hops");
    CHECK(server.queued().empty());
}

TEST_CASE("dialogue SMTPUTF8 addresses need the parameter", "[smtpd]") {
    TestServer server;
    Client client(server.port());
    REQUIRE(client.code() == "220");
    CHECK(client.command("EHLO client.test").find("SMTPUTF8") != std::string::npos);
    CHECK(client.command("MAIL FROM:<j\xc3\xb6rg@client.test>") ==
          "553 5.6.7 Must declare SMTPUTF8 to send a UTF-8 address");
    CHECK(client.command("MAIL FROM:<j\xc3\xb6rg@client.test> SMTPUTF8") == "250 2.1.0 Ok");
    CHECK(client.command("RCPT TO:<m\xc3\xbcller@b\xc3\xbc" "cher.test>") == "250 2.1.5 Ok");
    CHECK(client.command("DATA").rfind("354", 0) == 0);
    client.send("Subject: utf8\r\n\r\nx\r\n.\r\n");
    CHECK(client.code() == "250");
    auto queued = server.queued();
    REQUIRE(queued.size() == 1);
    CHECK(queued[0].smtputf8);
    CHECK(queued[0].sender == "j\xc3\xb6rg@client.test");
    CHECK(queued[0].recipients[0] == "m\xc3\xbcller@b\xc3\xbc" "cher.test");
}

TEST_CASE("dialogue DSN parameters are kept", "[smtpd]") {
    TestServer server;
    Client client(server.port());
    REQUIRE(client.code() == "220");
    client.command("EHLO client.test");
    CHECK(client.command("MAIL FROM:<a@client.test> RET=HDRS ENVID=abc+2B123") == "250 2.1.0 Ok");
    CHECK(client.command("RCPT TO:<b@remote.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@remote.test") == "250 2.1.5 Ok");
    CHECK(client.command("RCPT TO:<c@remote.test> NOTIFY=NEVER,SUCCESS").rfind("501 5.5.4", 0) == 0);
    CHECK(client.command("DATA").rfind("354", 0) == 0);
    client.send("x\r\n.\r\n");
    CHECK(client.code() == "250");
    auto queued = server.queued();
    REQUIRE(queued.size() == 1);
    CHECK(queued[0].dsn_ret == "HDRS");
    CHECK(queued[0].dsn_envid == "abc+2B123");
    REQUIRE(queued[0].recipient_dsn.size() == 1);
    CHECK(queued[0].recipient_dsn[0].notify == "SUCCESS,FAILURE");
    CHECK(queued[0].recipient_dsn[0].orcpt == "rfc822;b@remote.test");
}

TEST_CASE("dialogue per-client connection limit", "[smtpd]") {
    TestServer server([](auto& settings) { settings.connections->per_client_limit = 1; });
    Client first(server.port());
    REQUIRE(first.code() == "220");
    Client second(server.port());
    CHECK(second.reply() == "421 4.7.0 relay.test Error: too many connections from 127.0.0.1");
    CHECK(second.closed());
    CHECK(first.command("NOOP") == "250 2.0.0 Ok");
}

TEST_CASE("dialogue error limit closes the session", "[smtpd]") {
    TestServer server([](auto& settings) { settings.protocol.hard_error_limit = 3; });
    Client client(server.port());
    REQUIRE(client.code() == "220");
    client.send("FOO\r\nBAR\r\nBAZ\r\n");
    CHECK(client.code() == "500");
    CHECK(client.code() == "500");
    CHECK(client.code() == "500");
    CHECK(client.reply() == "421 4.7.0 relay.test Error: too many errors");
    CHECK(client.closed());
}

TEST_CASE("dialogue PROXY header sets the client address", "[smtpd]") {
    TestServer server([](auto& settings) { settings.proxy_protocol = true; });
    {
        Client client(server.port());
        client.send("PROXY TCP4 192.0.2.9 127.0.0.1 40000 25\r\n");
        REQUIRE(client.code() == "220");
        client.command("EHLO client.test");
        client.command("MAIL FROM:<a@client.test>");
        // 192.0.2.9 is outside mynetworks, so relaying is refused.
        CHECK(client.command("RCPT TO:<b@remote.test>").rfind("554 5.7.1", 0) == 0);
    }
    {
        Client client(server.port());
        std::string v2("\r\n\r\n\0\r\nQUIT\n", 12);
        v2 += std::string("\x21\x11\x00\x0c", 4);
        v2 += std::string("\x7f\x00\x00\x01\x7f\x00\x00\x01\x9c\x40\x00\x19", 12);
        client.send(v2);
        REQUIRE(client.code() == "220");
        client.command("EHLO client.test");
        client.command("MAIL FROM:<a@client.test>");
        CHECK(client.command("RCPT TO:<b@remote.test>") == "250 2.1.5 Ok");
    }
    {
        Client client(server.port());
        client.send("EHLO client.test\r\n");
        CHECK(client.code().empty());
        CHECK(client.closed());
    }
}

TEST_CASE("dialogue queue write error gives 451", "[smtpd]") {
    TestServer server;
    Client client(server.port());
    begin_message(client);

    // A file size limit makes the spool's write fail with EFBIG, as a full
    // disk would fail it with ENOSPC.
    rlimit previous{};
    ::getrlimit(RLIMIT_FSIZE, &previous);
    auto previous_handler = ::signal(SIGXFSZ, SIG_IGN);
    rlimit small{32 * 1024, previous.rlim_max};
    ::setrlimit(RLIMIT_FSIZE, &small);

    std::string line(900, 'w');
    for (int i = 0; i < 90; ++i) {
        client.send(line + "\r\n");
    }
    client.send(".\r\n");
    auto reply = client.reply();
    ::setrlimit(RLIMIT_FSIZE, &previous);
    ::signal(SIGXFSZ, previous_handler);

    CHECK(reply == "451 4.3.0 Error: queue file write error");
    CHECK(server.queued().empty());
    CHECK(server.files_in("active") == 0);
    CHECK(server.files_in("tmp") == 0);
}

TEST_CASE("dialogue missing queue folder gives 451 at DATA", "[smtpd]") {
    TestServer server;
    std::filesystem::remove_all(server.directory() / "tmp");
    Client client(server.port());
    REQUIRE(client.code() == "220");
    client.send(envelope_commands);
    CHECK(client.code() == "250");
    CHECK(client.code() == "250");
    CHECK(client.code() == "250");
    CHECK(client.reply() == "451 4.3.0 Error: queue file write error");
    CHECK(client.command("NOOP") == "250 2.0.0 Ok");
}

TEST_CASE("dialogue Received header folds for several recipients", "[smtpd]") {
    TestServer server;
    Client client(server.port());
    REQUIRE(client.code() == "220");
    client.send("EHLO client.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<b@remote.test>\r\nRCPT TO:<c@remote.test>\r\nDATA\r\n");
    for (int i = 0; i < 5; ++i) {
        client.reply();
    }
    client.send("Subject: two\r\n\r\nx\r\n.\r\n");
    CHECK(client.code() == "250");
    auto queued = server.queued();
    REQUIRE(queued.size() == 1);
    auto content = server.content(queued[0].id);
    auto header_end = content.find("\r\nSubject: two\r\n");
    REQUIRE(header_end != std::string::npos);
    // Every line of the Received field after the first is a continuation.
    auto received = content.substr(0, header_end);
    std::size_t position = received.find("\r\n");
    while (position != std::string::npos) {
        CHECK((received[position + 2] == '\t' || received[position + 2] == ' '));
        position = received.find("\r\n", position + 2);
    }
    CHECK(received.find("id " + queued[0].id + ";\r\n\t") != std::string::npos);
}
