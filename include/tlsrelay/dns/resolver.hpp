// Asynchronous stub resolver: UDP queries with EDNS0 and the DO bit, TCP
// when a reply is truncated, a cache, one outcome per lookup. No ldns type is
// visible here, so callers compile without ldns headers.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/ip/address.hpp>

#include "tlsrelay/dns/nameserver.hpp"
#include "tlsrelay/dns/trusted_networks.hpp"

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
    // Nameservers whose AD bit makes an answer secure.
    TrustedNetworks trusted_ad_networks;
    // EDNS0 UDP payload size advertised in queries, in bytes. Values below
    // 512 are sent as 512.
    std::uint16_t edns_buffer_size = 1232;
    // Maximum number of cached replies; 0 disables the cache.
    std::size_t cache_size = 10000;
};

// Takes the nameservers of `conf`, and its timeout and attempts options when
// present, for a relay that has no nameservers configured.
void apply_resolv_conf(ResolverOptions& options, const ResolvConf& conf);

class Resolver {
public:
    Resolver(asio::any_io_executor executor, ResolverOptions options);
    ~Resolver();

    asio::awaitable<Answer<MxRecord>> query_mx(std::string name);
    asio::awaitable<Answer<asio::ip::address>> query_a(std::string name);
    asio::awaitable<Answer<asio::ip::address>> query_aaaa(std::string name);
    // `name` is the full owner name, e.g. "_25._tcp.mx.example.com"; see
    // tlsa_owner_name.
    asio::awaitable<Answer<TlsaRecord>> query_tlsa(std::string name);
    // One string per TXT record, its character-strings concatenated.
    asio::awaitable<Answer<std::string>> query_txt(std::string name);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// Returns the owner name of the TLSA records for an SMTP server at `host` and
// TCP `port` (RFC 6698 section 3), e.g. "_25._tcp.mx.example.com". A
// trailing dot on `host` is dropped.
std::string tlsa_owner_name(std::string_view host, std::uint16_t port);

}  // namespace tlsrelay::dns
