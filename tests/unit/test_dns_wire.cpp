// Tests for the DNS message encoding and the AD trust check.

#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "tlsrelay/dns/trusted_networks.hpp"
#include "../../src/dns/wire.hpp"

namespace wire = tlsrelay::dns::wire;

TEST_CASE("normalize_name lowers case and drops the root dot", "[dns][wire]") {
    CHECK(wire::normalize_name("Example.TEST") == "example.test");
    CHECK(wire::normalize_name("example.test.") == "example.test");
    CHECK(wire::normalize_name(".") == "");
    CHECK_FALSE(wire::normalize_name("").has_value());
    CHECK_FALSE(wire::normalize_name("a..test").has_value());
    CHECK_FALSE(wire::normalize_name(std::string(64, 'a') + ".test").has_value());
    CHECK(wire::normalize_name(std::string(63, 'a') + ".test").has_value());
}

TEST_CASE("encode_query round trip", "[dns][wire]") {
    auto bytes = wire::encode_query({"mail.example.test", wire::type_mx, wire::class_in}, 0xbeef);
    REQUIRE(bytes.has_value());

    auto message = wire::decode_message(*bytes);

    REQUIRE(message.has_value());
    CHECK(message->id == 0xbeef);
    CHECK(wire::peek_id(*bytes) == 0xbeef);
    CHECK_FALSE(message->response);
    CHECK(message->opcode == 0);
    CHECK(message->recursion_desired);
    CHECK(message->has_edns);
    CHECK(message->edns_udp_size == wire::edns_udp_size);
    CHECK(message->dnssec_ok);
    REQUIRE(message->questions.size() == 1);
    CHECK(message->questions[0].name == "mail.example.test");
    CHECK(message->questions[0].type == wire::type_mx);
    CHECK(message->questions[0].rr_class == wire::class_in);
}

TEST_CASE("encode_message and decode_message round trip", "[dns][wire]") {
    wire::MessageDraft draft;
    draft.id = 7;
    draft.truncated = true;
    draft.authentic_data = true;
    draft.rcode = wire::rcode_nxdomain;
    draft.questions = {{"Example.Test", wire::type_mx, wire::class_in}};
    draft.answers = {
        "example.test. 300 IN MX 10 MX.Example.Test.",
        "example.test. 60 IN A 192.0.2.1",
        "example.test. 60 IN AAAA 2001:db8::1",
        "alias.example.test. 60 IN CNAME example.test.",
        "example.test. 60 IN TXT \"v=spf1 -all\"",
    };

    auto message = wire::decode_message(wire::encode_message(draft));

    REQUIRE(message.has_value());
    CHECK(message->id == 7);
    CHECK(message->response);
    CHECK(message->truncated);
    CHECK(message->authentic_data);
    CHECK(message->rcode == wire::rcode_nxdomain);
    REQUIRE(message->questions.size() == 1);
    CHECK(message->questions[0].name == "example.test");
    REQUIRE(message->answers.size() == 5);

    const auto& mx = std::get<tlsrelay::dns::MxRecord>(message->answers[0].data);
    CHECK(message->answers[0].ttl == 300);
    CHECK(mx.preference == 10);
    CHECK(mx.exchange == "mx.example.test");
    CHECK(std::get<asio::ip::address>(message->answers[1].data).to_string() == "192.0.2.1");
    CHECK(std::get<asio::ip::address>(message->answers[2].data).to_string() == "2001:db8::1");
    CHECK(message->answers[3].owner == "alias.example.test");
    CHECK(std::get<wire::CnameData>(message->answers[3].data).target == "example.test");
    CHECK(message->answers[4].type == wire::type_txt);
    CHECK(std::get<wire::TxtData>(message->answers[4].data).text == "v=spf1 -all");
}

TEST_CASE("encode_message rejects invalid record text", "[dns][wire]") {
    wire::MessageDraft draft;
    draft.answers = {"example.test. 300 IN MX ten mx.example.test."};

    CHECK_THROWS_AS(wire::encode_message(draft), std::invalid_argument);
}

TEST_CASE("decode_message rejects truncated input", "[dns][wire]") {
    wire::MessageDraft draft;
    draft.id = 1;
    draft.questions = {{"example.test", wire::type_a, wire::class_in}};
    draft.answers = {"example.test. 60 IN A 192.0.2.1"};
    auto bytes = wire::encode_message(draft);

    for (std::size_t size = 0; size < bytes.size(); ++size) {
        CAPTURE(size);
        CHECK_FALSE(wire::decode_message(std::span(bytes.data(), size)).has_value());
    }
    CHECK(wire::decode_message(bytes).has_value());
    CHECK_FALSE(wire::peek_id(std::span(bytes.data(), 11)).has_value());
}

TEST_CASE("rcode names", "[dns][wire]") {
    CHECK(wire::rcode_name(wire::rcode_servfail) == "SERVFAIL");
    CHECK(wire::rcode_name(wire::rcode_refused) == "REFUSED");
    CHECK(wire::rcode_name(16) == "BADVERS");
    CHECK(wire::rcode_name(42) == "RCODE42");
}

TEST_CASE("AD trusted only from loopback by default", "[dns][wire]") {
    tlsrelay::dns::TrustedNetworks trusted;

    CHECK(trusted.contains(asio::ip::make_address("127.0.0.1")));
    CHECK(trusted.contains(asio::ip::make_address("127.255.0.53")));
    CHECK(trusted.contains(asio::ip::make_address("::1")));
    CHECK(trusted.contains(asio::ip::make_address("::ffff:127.0.0.1")));
    CHECK_FALSE(trusted.contains(asio::ip::make_address("128.0.0.1")));
    CHECK_FALSE(trusted.contains(asio::ip::make_address("192.0.2.53")));
    CHECK_FALSE(trusted.contains(asio::ip::make_address("::2")));
    CHECK_FALSE(trusted.contains(asio::ip::make_address("2001:db8::53")));
    CHECK_FALSE(trusted.contains(asio::ip::make_address("::ffff:192.0.2.53")));
}

TEST_CASE("AD trust with a configured network list", "[dns][wire]") {
    tlsrelay::dns::TrustedNetworks trusted({asio::ip::make_network_v4("192.0.2.0/24")},
                                           {asio::ip::make_network_v6("2001:db8:1::/48")});

    CHECK(trusted.contains(asio::ip::make_address("192.0.2.200")));
    CHECK(trusted.contains(asio::ip::make_address("2001:db8:1:ffff::1")));
    CHECK_FALSE(trusted.contains(asio::ip::make_address("127.0.0.1")));
    CHECK_FALSE(trusted.contains(asio::ip::make_address("2001:db8:2::1")));
}

TEST_CASE("decode_message reads TLSA, TXT and SOA", "[dns][wire]") {
    wire::MessageDraft draft;
    draft.id = 9;
    draft.questions = {{"_25._tcp.mx.example.test", wire::type_tlsa, wire::class_in}};
    draft.answers = {
        "_25._tcp.mx.example.test. 300 IN TLSA 3 1 1 0123456789abcdef",
        "txt.example.test. 60 IN TXT \"v=STSv1; \" \"id=1\"",
        "empty.example.test. 60 IN TXT \"\"",
    };
    draft.authority = {"example.test. 900 IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 120"};

    auto message = wire::decode_message(wire::encode_message(draft));

    REQUIRE(message.has_value());
    REQUIRE(message->answers.size() == 3);
    const auto& tlsa = std::get<tlsrelay::dns::TlsaRecord>(message->answers[0].data);
    CHECK(tlsa.usage == 3);
    CHECK(tlsa.selector == 1);
    CHECK(tlsa.matching_type == 1);
    CHECK(tlsa.data == std::vector<unsigned char>{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef});
    CHECK(std::get<wire::TxtData>(message->answers[1].data).text == "v=STSv1; id=1");
    CHECK(std::get<wire::TxtData>(message->answers[2].data).text == "");
    REQUIRE(message->authority.size() == 1);
    CHECK(message->authority[0].ttl == 900);
    CHECK(std::get<wire::SoaData>(message->authority[0].data).minimum == 120);
}

TEST_CASE("decode_message rejects a TLSA record without data fields", "[dns][wire]") {
    // Header with one question and one answer, then the question
    // "x." TLSA IN and an answer "x." TLSA IN TTL 60 with 2 bytes of RDATA,
    // one byte short of usage, selector and matching type.
    wire::Bytes bytes{0x00, 0x01, 0x81, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
                      0x01, 'x',  0x00, 0x00, 0x34, 0x00, 0x01,
                      0x01, 'x',  0x00, 0x00, 0x34, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x02, 0x03, 0x01};

    CHECK_FALSE(wire::decode_message(bytes).has_value());
}

TEST_CASE("encode_query advertises the given EDNS0 size", "[dns][wire]") {
    auto bytes = wire::encode_query({"example.test", wire::type_a, wire::class_in}, 1, 512);
    REQUIRE(bytes.has_value());

    auto message = wire::decode_message(*bytes);

    REQUIRE(message.has_value());
    CHECK(message->edns_udp_size == 512);
    CHECK(message->dnssec_ok);
}
