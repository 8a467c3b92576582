// Asynchronous stub resolver: UDP queries with EDNS0 and the DO bit, TCP
// when a reply is truncated, one outcome per lookup. No ldns type is visible
// here, so callers compile without ldns headers.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/ip/address.hpp>

#include "tlsrelay/dns/nameserver.hpp"

namespace tlsrelay::dns {

enum class Status {
    ok,                 // records present
    nodata,             // name exists, no record of this type
    nxdomain,           // name does not exist
    temporary_failure,  // SERVFAIL, REFUSED, timeout, malformed or mismatched reply
};

const char* to_string(Status status);

struct MxRecord {
    std::uint16_t preference = 0;
    std::string exchange;  // lower case, no trailing dot; "" for the null MX "."
};

// A TLSA record (RFC 6698): certificate usage, selector, matching type and
// the association data (a digest or a whole certificate or key).
struct TlsaRecord {
    std::uint8_t usage = 0;
    std::uint8_t selector = 0;
    std::uint8_t matching_type = 0;
    std::vector<unsigned char> data;
};

template <typename Record>
struct Answer {
    Status status = Status::temporary_failure;
    bool secure = false;  // AD bit set by a trusted resolver
    // The name the records belong to after following CNAMEs; the queried
    // name when there was no CNAME. RFC 7672 section 2.2.2 needs it.
    std::string canonical_name;
    std::vector<Record> records;
    std::string reason;  // for temporary_failure: what went wrong, e.g. "timed out after 2 attempts"
};

struct ResolverOptions {
    std::vector<Nameserver> nameservers;
    std::chrono::milliseconds timeout{5000};  // per query and server
    int attempts = 2;                         // rounds over all servers
};

class Resolver {
public:
    Resolver(asio::any_io_executor executor, ResolverOptions options);
    ~Resolver();

    asio::awaitable<Answer<MxRecord>> query_mx(std::string name);
    asio::awaitable<Answer<asio::ip::address>> query_a(std::string name);
    asio::awaitable<Answer<asio::ip::address>> query_aaaa(std::string name);
    // `name` is the full owner name, e.g. "_25._tcp.mx.example.com".
    asio::awaitable<Answer<TlsaRecord>> query_tlsa(std::string name);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace tlsrelay::dns
