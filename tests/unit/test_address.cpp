#include <catch2/catch.hpp>

#include "tlsrelay/util/address.hpp"

using namespace tlsrelay;

TEST_CASE("endpoint parsing") {
    auto v4 = parse_endpoint("127.0.0.1:2525");
    REQUIRE(v4);
    CHECK(v4->port() == 2525);
    auto v6 = parse_endpoint("[::1]:25");
    REQUIRE(v6);
    CHECK(v6->address().to_string() == "::1");
    CHECK_FALSE(parse_endpoint("127.0.0.1"));
    CHECK_FALSE(parse_endpoint("::1:25"));
    CHECK_FALSE(parse_endpoint("127.0.0.1:0"));
    CHECK_FALSE(parse_endpoint("127.0.0.1:65536"));
    CHECK_FALSE(parse_endpoint("localhost:25"));
    CHECK_FALSE(parse_endpoint("[::1]25"));
}

TEST_CASE("network membership") {
    auto loopback = parse_network("127.0.0.0/8");
    REQUIRE(loopback);
    CHECK(loopback->contains(asio::ip::make_address("127.1.2.3")));
    CHECK_FALSE(loopback->contains(asio::ip::make_address("128.0.0.1")));
    CHECK(loopback->contains(asio::ip::make_address("::ffff:127.0.0.1")));
    CHECK_FALSE(loopback->contains(asio::ip::make_address("::1")));

    auto odd = parse_network("192.0.2.128/25");
    REQUIRE(odd);
    CHECK(odd->contains(asio::ip::make_address("192.0.2.200")));
    CHECK_FALSE(odd->contains(asio::ip::make_address("192.0.2.127")));

    auto v6 = parse_network("[2001:db8::]/32");
    REQUIRE(v6);
    CHECK(v6->contains(asio::ip::make_address("2001:db8:1::5")));
    CHECK_FALSE(v6->contains(asio::ip::make_address("2001:db9::5")));

    auto host = parse_network("192.0.2.1");
    REQUIRE(host);
    CHECK(host->prefix_length == 32);
    CHECK_FALSE(parse_network("192.0.2.1/33"));
    CHECK_FALSE(parse_network("192.0.2.1/"));
    CHECK_FALSE(parse_network("example.com/8"));
}

TEST_CASE("next hop parsing follows Postfix") {
    auto bracketed = parse_next_hop("[smtp.example.com]:587");
    REQUIRE(bracketed);
    CHECK(bracketed->host == "smtp.example.com");
    CHECK(bracketed->port == 587);
    CHECK_FALSE(bracketed->mx_lookup);

    auto bare = parse_next_hop("example.com");
    REQUIRE(bare);
    CHECK(bare->mx_lookup);
    CHECK_FALSE(bare->port_given);

    auto literal = parse_next_hop("[192.0.2.1]");
    REQUIRE(literal);
    CHECK(literal->host == "192.0.2.1");

    CHECK_FALSE(parse_next_hop("[example.com"));
    CHECK_FALSE(parse_next_hop("[]:25"));
    CHECK_FALSE(parse_next_hop("example.com:"));
    CHECK_FALSE(parse_next_hop("example.com:x"));
}

TEST_CASE("peer formatting matches Postfix logs") {
    CHECK(format_peer("mx.example.com", asio::ip::make_address("192.0.2.1"), 25) == "mx.example.com[192.0.2.1]:25");
}
