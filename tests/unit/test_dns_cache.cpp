// Tests for the reply cache: lifetimes from TTLs and SOA records (RFC 2308),
// expiry, and the size bound.

#include <chrono>
#include <optional>
#include <string>

#include <catch2/catch.hpp>

#include "../../src/dns/cache.hpp"
#include "../../src/dns/wire.hpp"

using tlsrelay::dns::Cache;
using namespace std::chrono_literals;
namespace wire = tlsrelay::dns::wire;

namespace {

wire::ResourceRecord record(std::string owner, std::uint16_t type, std::uint32_t ttl) {
    wire::ResourceRecord result;
    result.owner = std::move(owner);
    result.type = type;
    result.ttl = ttl;
    return result;
}

wire::ResourceRecord soa(std::uint32_t ttl, std::uint32_t minimum) {
    auto result = record("example.test", wire::type_soa, ttl);
    result.data = wire::SoaData{minimum};
    return result;
}

wire::Question question(std::string name, std::uint16_t type = wire::type_a) {
    return wire::Question{std::move(name), type, wire::class_in};
}

// A positive reply with one A record of the given TTL.
Cache::Entry positive(std::uint32_t ttl) {
    Cache::Entry entry;
    entry.reply.answers = {record("example.test", wire::type_a, ttl)};
    return entry;
}

}  // namespace

TEST_CASE("cache lifetime of positive replies", "[dns][cache]") {
    wire::Message reply;
    reply.answers = {record("alias.example.test", wire::type_cname, 600), record("example.test", wire::type_a, 120),
                     record("example.test", wire::type_a, 300)};
    CHECK(Cache::lifetime(reply) == 120s);

    reply.answers = {record("example.test", wire::type_a, 7 * 86400)};
    CHECK(Cache::lifetime(reply) == Cache::max_positive_ttl);

    reply.answers = {record("example.test", wire::type_a, 0)};
    CHECK_FALSE(Cache::lifetime(reply).has_value());
}

TEST_CASE("cache lifetime of negative replies", "[dns][cache]") {
    wire::Message nxdomain;
    nxdomain.rcode = wire::rcode_nxdomain;
    nxdomain.authority = {soa(300, 60)};
    CHECK(Cache::lifetime(nxdomain) == 60s);

    // The SOA record's own TTL counts when it is smaller than MINIMUM.
    wire::Message nodata;
    nodata.authority = {soa(30, 600)};
    CHECK(Cache::lifetime(nodata) == 30s);

    nodata.authority = {soa(86400, 86400)};
    CHECK(Cache::lifetime(nodata) == Cache::max_negative_ttl);

    // A CNAME followed by NXDOMAIN lives no longer than either.
    wire::Message chain;
    chain.rcode = wire::rcode_nxdomain;
    chain.answers = {record("alias.example.test", wire::type_cname, 20)};
    chain.authority = {soa(300, 300)};
    CHECK(Cache::lifetime(chain) == 20s);
}

TEST_CASE("negative reply without SOA not cached", "[dns][cache]") {
    wire::Message nxdomain;
    nxdomain.rcode = wire::rcode_nxdomain;
    CHECK_FALSE(Cache::lifetime(nxdomain).has_value());

    wire::Message nodata;
    nodata.authority = {record("example.test", 2, 300)};  // NS
    CHECK_FALSE(Cache::lifetime(nodata).has_value());
}

TEST_CASE("failure rcodes not cached", "[dns][cache]") {
    auto rcode = GENERATE(wire::rcode_servfail, wire::rcode_refused, wire::rcode_formerr);
    wire::Message reply;
    reply.rcode = rcode;
    reply.authority = {soa(300, 300)};

    CHECK_FALSE(Cache::lifetime(reply).has_value());

    Cache cache(10);
    cache.insert(question("example.test"), Cache::Entry{reply, false}, Cache::Clock::now());
    CHECK(cache.size() == 0);
}

TEST_CASE("cache entry expires after its TTL", "[dns][cache]") {
    Cache cache(10);
    auto start = Cache::Clock::now();
    cache.insert(question("example.test"), positive(60), start);

    auto found = cache.find(question("example.test"), start + 59s);
    REQUIRE(found.has_value());
    CHECK(found->reply.answers.size() == 1);
    CHECK_FALSE(cache.find(question("example.test"), start + 60s).has_value());
    CHECK(cache.size() == 0);
}

TEST_CASE("cache keys on name and type", "[dns][cache]") {
    Cache cache(10);
    auto now = Cache::Clock::now();
    auto entry = positive(60);
    entry.secure = true;
    cache.insert(question("example.test", wire::type_a), entry, now);

    CHECK_FALSE(cache.find(question("example.test", wire::type_aaaa), now).has_value());
    CHECK_FALSE(cache.find(question("other.example.test", wire::type_a), now).has_value());
    auto found = cache.find(question("example.test", wire::type_a), now);
    REQUIRE(found.has_value());
    CHECK(found->secure);
}

TEST_CASE("cache evicts least recently used entry", "[dns][cache]") {
    Cache cache(2);
    auto now = Cache::Clock::now();
    cache.insert(question("a.test"), positive(60), now);
    cache.insert(question("b.test"), positive(60), now);

    // Using a.test makes b.test the least recently used.
    CHECK(cache.find(question("a.test"), now).has_value());
    cache.insert(question("c.test"), positive(60), now);

    CHECK(cache.size() == 2);
    CHECK(cache.find(question("a.test"), now).has_value());
    CHECK_FALSE(cache.find(question("b.test"), now).has_value());
    CHECK(cache.find(question("c.test"), now).has_value());
}

TEST_CASE("cache insert replaces an entry", "[dns][cache]") {
    Cache cache(2);
    auto now = Cache::Clock::now();
    cache.insert(question("a.test"), positive(60), now);
    cache.insert(question("a.test"), positive(10), now);

    CHECK(cache.size() == 1);
    CHECK_FALSE(cache.find(question("a.test"), now + 10s).has_value());
}

TEST_CASE("cache of size 0 stores nothing", "[dns][cache]") {
    Cache cache(0);
    cache.insert(question("a.test"), positive(60), Cache::Clock::now());

    CHECK(cache.size() == 0);
    CHECK_FALSE(cache.find(question("a.test"), Cache::Clock::now()).has_value());
}
