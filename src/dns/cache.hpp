// A bounded cache of DNS replies, keyed by question. Positive replies live
// for the smallest TTL of their answer records, negative replies (NXDOMAIN,
// NODATA) for the SOA-derived TTL of RFC 2308 section 5. Temporary failures
// are never stored, so the next lookup asks the nameservers again.
#pragma once

#include <chrono>
#include <cstddef>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "wire.hpp"

namespace tlsrelay::dns {

class Cache {
public:
    using Clock = std::chrono::steady_clock;

    // Upper bounds on the time a reply stays cached, whatever its TTLs say.
    // A day is the usual cap of caching resolvers (Unbound's cache-max-ttl),
    // and RFC 2308 section 5 advises at most a few hours for negative replies.
    static constexpr std::chrono::seconds max_positive_ttl{86400};
    static constexpr std::chrono::seconds max_negative_ttl{3600};

    struct Entry {
        wire::Message reply;
        bool secure = false;
    };

    // `max_entries` 0 makes a cache that stores nothing.
    explicit Cache(std::size_t max_entries) : max_entries_(max_entries) {}

    // Returns the unexpired entry for `question`, and drops an expired one.
    std::optional<Entry> find(const wire::Question& question, Clock::time_point now);

    // Stores a NOERROR or NXDOMAIN reply for its lifetime (see lifetime()).
    // When the cache is full, the least recently used entry goes.
    void insert(const wire::Question& question, Entry entry, Clock::time_point now);

    std::size_t size() const;

    // Returns how long `reply` may be cached, or std::nullopt when it must
    // not be: an rcode other than NOERROR and NXDOMAIN, a TTL of 0, or a
    // negative reply without an SOA record in the authority section.
    static std::optional<std::chrono::seconds> lifetime(const wire::Message& reply);

private:
    struct Node {
        std::string key;
        Entry entry;
        Clock::time_point expires;
    };

    static std::string key_of(const wire::Question& question);

    std::size_t max_entries_;
    mutable std::mutex mutex_;
    std::list<Node> nodes_;  // most recently used first
    std::unordered_map<std::string, std::list<Node>::iterator> index_;
};

}  // namespace tlsrelay::dns
