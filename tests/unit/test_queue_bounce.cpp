// Delivery status notifications (RFC 3464) built by the queue manager.
#include <catch2/catch.hpp>

#include <string>

#include "tlsrelay/queue/bounce.hpp"

using namespace tlsrelay::queue;

namespace {

const std::string original =
    "Received: from client\r\n"
    "Subject: hello\r\n"
    "\r\n"
    "body line\r\n";

DsnReport failed_report() {
    DsnReport report;
    report.action = DsnAction::failed;
    report.reporting_mta = "relay.example.net";
    report.queue_id = "661D5AB67E89400";
    report.envid = "QQ314159";
    report.arrival_unix_ms = 1764883200000;  // Thu, 04 Dec 2025 21:20:00 +0000
    report.now_unix_ms = 1764883260000;
    report.sender = "alice@example.com";
    DsnRecipient recipient;
    recipient.address = "bad@example.org";
    recipient.orcpt = "rfc822;bad+2Bx@example.org";
    recipient.status = "5.1.1";
    recipient.relay = "mx.example.org[192.0.2.1]:25";
    recipient.reason =
        "host mx.example.org[192.0.2.1]:25 said: 550 5.1.1 <bad@example.org>: User unknown (in reply to RCPT TO command)";
    report.recipients.push_back(recipient);
    return report;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("remote reply and phase split from a detail") {
    auto reply = parse_detail("host mx[192.0.2.1]:25 said: 451 4.3.0 try later (in reply to end of DATA command)");
    CHECK(reply.remote);
    CHECK(reply.reply == "451 4.3.0 try later");
    CHECK(reply.phase == "end of DATA");

    auto expired = parse_detail(
        "host mx[192.0.2.1]:25 said: 452 4.2.2 full (in reply to RCPT TO command); message expired: queued longer than 5d");
    CHECK(expired.reply == "452 4.2.2 full");
    CHECK(expired.phase == "RCPT TO");

    auto local = parse_detail("connect to mx[192.0.2.1]:25: Connection refused");
    CHECK_FALSE(local.remote);
    CHECK(local.phase.empty());
}

TEST_CASE("rfc5322 date in UTC") {
    CHECK(rfc5322_date(1764883200000) == "Thu, 04 Dec 2025 21:20:00 +0000");
}

TEST_CASE("xtext decodes plus escapes") {
    CHECK(decode_xtext("rfc822;a+2Bb@example.org") == "rfc822;a+b@example.org");
    CHECK(decode_xtext("plain") == "plain");
    CHECK(decode_xtext("end+2") == "end+2");
}

TEST_CASE("failure DSN has the RFC 3464 structure") {
    bool eight_bit = true;
    auto text = compose_dsn(failed_report(), original, eight_bit);
    CHECK_FALSE(eight_bit);

    CHECK(contains(text, "From: MAILER-DAEMON@relay.example.net"));
    CHECK(contains(text, "To: <alice@example.com>\r\n"));
    CHECK(contains(text, "Auto-Submitted: auto-replied\r\n"));
    CHECK(contains(text, "Content-Type: multipart/report; report-type=delivery-status;"));
    CHECK(contains(text, "Content-Type: text/plain"));
    CHECK(contains(text, "Content-Type: message/delivery-status\r\n"));
    CHECK(contains(text, "Reporting-MTA: dns; relay.example.net\r\n"));
    CHECK(contains(text, "Original-Envelope-Id: QQ314159\r\n"));
    CHECK(contains(text, "Arrival-Date: Thu, 04 Dec 2025 21:20:00 +0000\r\n"));
    CHECK(contains(text, "Original-Recipient: rfc822; bad+x@example.org\r\n"));
    CHECK(contains(text, "Final-Recipient: rfc822; bad@example.org\r\n"));
    CHECK(contains(text, "Action: failed\r\n"));
    CHECK(contains(text, "Status: 5.1.1\r\n"));
    CHECK(contains(text, "Remote-MTA: dns; mx.example.org\r\n"));
    CHECK(contains(text, "Diagnostic-Code: smtp; 550 5.1.1 <bad@example.org>: User unknown\r\n"));
    CHECK(contains(text, "X-Tlsrelay-Phase: RCPT TO\r\n"));
    CHECK(contains(text, "Content-Type: message/rfc822\r\n\r\nReceived: from client\r\nSubject: hello\r\n\r\nbody line\r\n"));
    CHECK(text.ends_with("--\r\n"));
}

TEST_CASE("DSN with RET=HDRS returns the header only") {
    auto report = failed_report();
    report.return_full = false;
    bool eight_bit = false;
    auto text = compose_dsn(report, original, eight_bit);
    CHECK(contains(text, "Content-Type: text/rfc822-headers\r\n\r\nReceived: from client\r\nSubject: hello\r\n"));
    CHECK_FALSE(contains(text, "body line"));
}

TEST_CASE("DSN of a large message returns the header only") {
    std::string large = original + std::string(dsn_return_limit, 'x') + "\r\n";
    bool eight_bit = false;
    auto text = compose_dsn(failed_report(), large, eight_bit);
    CHECK(contains(text, "text/rfc822-headers"));
    CHECK(text.size() < 10000);
}

TEST_CASE("DSN of an 8-bit message is marked 8bit") {
    bool eight_bit = false;
    auto text = compose_dsn(failed_report(), "Subject: caf\xc3\xa9\r\n\r\nbody\r\n", eight_bit);
    CHECK(eight_bit);
    CHECK(contains(text, "Content-Transfer-Encoding: 8bit\r\n"));
}

TEST_CASE("delay DSN says delayed and until when") {
    auto report = failed_report();
    report.action = DsnAction::delayed;
    report.retry_until_unix_ms = report.arrival_unix_ms + 5 * 86400 * 1000LL;
    report.recipients[0].status = "4.4.1";
    report.recipients[0].relay = "none";
    report.recipients[0].reason = "connect to mx.example.org[192.0.2.1]:25: Connection refused";
    bool eight_bit = false;
    auto text = compose_dsn(report, original, eight_bit);
    CHECK(contains(text, "Action: delayed\r\n"));
    CHECK(contains(text, "Status: 4.4.1\r\n"));
    CHECK(contains(text, "Will-Retry-Until: Tue, 09 Dec 2025 21:20:00 +0000\r\n"));
    CHECK(contains(text, "Diagnostic-Code: X-tlsrelay; connect to mx.example.org[192.0.2.1]:25: Connection refused\r\n"));
    CHECK_FALSE(contains(text, "Remote-MTA:"));
}
