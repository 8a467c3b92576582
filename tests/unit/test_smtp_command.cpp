#include <catch2/catch.hpp>

#include "tlsrelay/smtp/command.hpp"
#include "tlsrelay/smtp/reply.hpp"

using namespace tlsrelay::smtp;

TEST_CASE("command verbs are case-insensitive") {
    auto command = parse_command("ehlo client.example");
    CHECK(command.verb == Verb::ehlo);
    CHECK(command.argument == "client.example");
    CHECK(parse_command("Mail FROM:<a@b.example>").verb == Verb::mail);
    CHECK(parse_command("STARTTLS").verb == Verb::starttls);
    CHECK(parse_command("STARTTLS").argument.empty());
    CHECK(parse_command("XYZZY").verb == Verb::unknown);
    CHECK(parse_command("").verb == Verb::unknown);
    CHECK(parse_command("DATAX").verb == Verb::unknown);
}

TEST_CASE("path argument accepts valid addresses") {
    struct Case {
        const char* argument;
        const char* prefix;
        const char* address;
    };
    const Case cases[] = {
        {"FROM:<alice@example.com>", "FROM", "alice@example.com"},
        {"from:<alice@example.com>", "FROM", "alice@example.com"},
        {"FROM: <alice@example.com>", "FROM", "alice@example.com"},
        {"FROM:<>", "FROM", ""},
        {"TO:<bob@[192.0.2.1]>", "TO", "bob@[192.0.2.1]"},
        {"TO:<\"john doe\"@example.com>", "TO", "\"john doe\"@example.com"},
        {"TO:<@relay.example:bob@example.com>", "TO", "bob@example.com"},
        {"TO:<Postmaster>", "TO", "postmaster"},
        {"TO:<j\xc3\xb6rg@b\xc3\xbc" "cher.example>", "TO", "j\xc3\xb6rg@b\xc3\xbc" "cher.example"},
        {"TO:<a.b+tag@sub.example.co.uk>", "TO", "a.b+tag@sub.example.co.uk"},
    };
    for (const auto& c : cases) {
        INFO(c.argument);
        auto [path, error] = parse_path_argument(c.argument, c.prefix);
        REQUIRE(path);
        CHECK_FALSE(error);
        CHECK(path->address == c.address);
    }
}

TEST_CASE("path argument rejects bad syntax") {
    struct Case {
        const char* argument;
        const char* prefix;
        int code;
        const char* enhanced;
    };
    const Case cases[] = {
        {"FROM:alice@example.com", "FROM", 501, "5.5.4"},
        {"FROM<alice@example.com>", "FROM", 501, "5.5.4"},
        {"TO:<>", "TO", 501, "5.5.4"},
        {"TO:<bob@example.com", "TO", 501, "5.5.4"},
        {"TO:<bob>", "TO", 501, "5.1.3"},
        {"TO:<bob@>", "TO", 501, "5.1.3"},
        {"TO:<.bob@example.com>", "TO", 501, "5.1.3"},
        {"TO:<bo..b@example.com>", "TO", 501, "5.1.3"},
        {"TO:<bob@-example.com>", "TO", 501, "5.1.3"},
        {"TO:<bob@exa mple.com>", "TO", 501, "5.1.3"},
        {"TO:<bob@example..com>", "TO", 501, "5.1.3"},
        {"FROM:<a@b.example>SIZE=10", "FROM", 501, "5.5.4"},
        {"FROM:<a@b.example> SIZE=", "FROM", 501, "5.5.4"},
        {"FROM:<a@b.example> =10", "FROM", 501, "5.5.4"},
    };
    for (const auto& c : cases) {
        INFO(c.argument);
        auto [path, error] = parse_path_argument(c.argument, c.prefix);
        CHECK_FALSE(path);
        REQUIRE(error);
        CHECK(error->code == c.code);
        CHECK(error->enhanced == c.enhanced);
    }
}

TEST_CASE("path argument with '>' in a quoted local part") {
    // RFC 5321 section 4.1.2: a quoted string may contain any printable
    // character, so the '>' inside the quotes does not end the path.
    auto [path, error] = parse_path_argument("FROM:<\"a>b\"@example.org> SIZE=10", "FROM");
    REQUIRE(path);
    CHECK_FALSE(error);
    CHECK(path->address == "\"a>b\"@example.org");
    REQUIRE(path->parameters.size() == 1);
    CHECK(path->parameters[0].keyword == "SIZE");

    auto [escaped, escaped_error] = parse_path_argument("TO:<\"x\\\">y<\"@example.org>", "TO");
    REQUIRE(escaped);
    CHECK_FALSE(escaped_error);
    CHECK(escaped->address == "\"x\\\">y<\"@example.org");

    // A quote left open ends the path at the first '>', and the reply
    // names what was read as the address.
    auto [unbalanced, unbalanced_error] = parse_path_argument("FROM:<\"a>b@example.org>", "FROM");
    CHECK_FALSE(unbalanced);
    REQUIRE(unbalanced_error);
    CHECK(unbalanced_error->code == 501);
    CHECK(unbalanced_error->enhanced == "5.1.3");
    CHECK(unbalanced_error->text == "Bad address syntax <\"a>");

    // Without quotes, the first '>' ends the path.
    auto [outside, outside_error] = parse_path_argument("FROM:<a>b@example.org>", "FROM");
    CHECK_FALSE(outside);
    REQUIRE(outside_error);
    CHECK(outside_error->code == 501);
    CHECK(outside_error->text == "Bad address syntax <a>");

    // A path whose only '>' is inside the quotes is not closed.
    auto [unclosed, unclosed_error] = parse_path_argument("TO:<\"a>b\"@example.org", "TO");
    CHECK_FALSE(unclosed);
    REQUIRE(unclosed_error);
    CHECK(unclosed_error->code == 501);
    CHECK(unclosed_error->text == "Syntax: RCPT TO:<address>");
}

TEST_CASE("path argument parameters are parsed") {
    auto [path, error] = parse_path_argument("FROM:<a@b.example> size=1000  BODY=8BITMIME", "FROM");
    REQUIRE(path);
    REQUIRE(path->parameters.size() == 2);
    CHECK(path->parameters[0].keyword == "SIZE");
    CHECK(path->parameters[0].value == "1000");
    CHECK(path->parameters[1].keyword == "BODY");
    CHECK(path->parameters[1].value == "8BITMIME");
}

TEST_CASE("domain_of lower-cases the domain") {
    CHECK(domain_of("Bob@Example.COM") == "example.com");
    CHECK(domain_of("") == "");
    CHECK(domain_of("\"a@b\"@c.example") == "c.example");
}

TEST_CASE("reply parser joins multi-line replies") {
    ReplyParser parser;
    REQUIRE(parser.feed("250-mx.example.com Hello"));
    CHECK_FALSE(parser.complete());
    REQUIRE(parser.feed("250-PIPELINING"));
    REQUIRE(parser.feed("250 STARTTLS"));
    REQUIRE(parser.complete());
    const auto& reply = parser.reply();
    CHECK(reply.code == 250);
    REQUIRE(reply.lines.size() == 3);
    CHECK(reply.lines[2] == "STARTTLS");
    CHECK(reply.enhanced.empty());
}

TEST_CASE("reply parser takes the enhanced status code") {
    ReplyParser parser;
    REQUIRE(parser.feed("550 5.1.1 <bad@example.com>: Recipient address rejected"));
    REQUIRE(parser.complete());
    CHECK(parser.reply().enhanced == "5.1.1");
    CHECK(parser.reply().lines[0] == "<bad@example.com>: Recipient address rejected");
    CHECK(parser.reply().summary() == "550 5.1.1 <bad@example.com>: Recipient address rejected");
    CHECK(parser.reply().permanent());
}

TEST_CASE("reply parser rejects malformed lines") {
    ReplyParser parser;
    CHECK_FALSE(parser.feed("25"));
    CHECK_FALSE(parser.feed("abc hello"));
    CHECK_FALSE(parser.feed("250_hello"));
    CHECK_FALSE(parser.feed("999 no such class"));
    REQUIRE(parser.feed("250-first"));
    CHECK_FALSE(parser.feed("251 other code"));
}

TEST_CASE("reply status falls back to the class default") {
    CHECK(make_reply(451, "", "try later").status() == "4.0.0");
    CHECK(make_reply(250, "2.1.5", "Ok").status() == "2.1.5");
    CHECK(make_reply(554, "", "no").status() == "5.0.0");
}

TEST_CASE("reply wire form uses continuation dashes") {
    Reply reply;
    reply.code = 250;
    reply.lines = {"relay.example", "PIPELINING", "8BITMIME"};
    CHECK(reply.wire() == "250-relay.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
    CHECK(make_reply(221, "2.0.0", "Bye").wire() == "221 2.0.0 Bye\r\n");
}

// Found by smtp_reply_fuzzer: a 3xx reply counted as success and as 2.0.0.
TEST_CASE("reply 3xx is neither success nor a bounce") {
    ReplyParser parser;
    REQUIRE(parser.feed("368"));
    REQUIRE(parser.complete());
    CHECK_FALSE(parser.reply().positive());
    CHECK_FALSE(parser.reply().permanent());
    CHECK(parser.reply().status() == "4.0.0");
    CHECK(make_reply(354, "", "go ahead").status() == "4.0.0");
}
