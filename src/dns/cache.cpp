#include "cache.hpp"

#include <algorithm>
#include <utility>

namespace tlsrelay::dns {

std::string Cache::key_of(const wire::Question& question) {
    // Names are already in lower case, and '/' cannot end a valid name, so
    // the key is unique per name and type.
    return question.name + "/" + std::to_string(question.type) + "/" + std::to_string(question.rr_class);
}

std::optional<Cache::Entry> Cache::find(const wire::Question& question, Clock::time_point now) {
    std::lock_guard lock(mutex_);
    auto found = index_.find(key_of(question));
    if (found == index_.end()) {
        return std::nullopt;
    }
    auto node = found->second;
    if (node->expires <= now) {
        index_.erase(found);
        nodes_.erase(node);
        return std::nullopt;
    }
    nodes_.splice(nodes_.begin(), nodes_, node);
    return node->entry;
}

void Cache::insert(const wire::Question& question, Entry entry, Clock::time_point now) {
    auto ttl = lifetime(entry.reply);
    if (max_entries_ == 0 || !ttl) {
        return;
    }

    std::lock_guard lock(mutex_);
    std::string key = key_of(question);
    if (auto found = index_.find(key); found != index_.end()) {
        nodes_.erase(found->second);
        index_.erase(found);
    }
    while (nodes_.size() >= max_entries_) {
        index_.erase(nodes_.back().key);
        nodes_.pop_back();
    }
    nodes_.push_front(Node{key, std::move(entry), now + *ttl});
    index_.emplace(std::move(key), nodes_.begin());
}

std::size_t Cache::size() const {
    std::lock_guard lock(mutex_);
    return nodes_.size();
}

std::optional<std::chrono::seconds> Cache::lifetime(const wire::Message& reply) {
    if (reply.rcode != wire::rcode_noerror && reply.rcode != wire::rcode_nxdomain) {
        return std::nullopt;
    }

    // A reply that ends in a CNAME chain is only as fresh as its shortest link.
    std::optional<std::uint32_t> ttl;
    for (const auto& record : reply.answers) {
        ttl = std::min(ttl.value_or(record.ttl), record.ttl);
    }

    // RFC 2308 section 5: the TTL of a negative reply is the smaller of the
    // SOA record's own TTL and its MINIMUM field, and a negative reply without
    // an SOA is not cached. An SOA in the authority section after a CNAME
    // chain means that the chain ends in NXDOMAIN or NODATA.
    std::optional<std::uint32_t> negative_ttl;
    for (const auto& record : reply.authority) {
        if (const auto* soa = std::get_if<wire::SoaData>(&record.data)) {
            negative_ttl = std::min(record.ttl, soa->minimum);
            break;
        }
    }
    bool negative = reply.rcode == wire::rcode_nxdomain || reply.answers.empty() || negative_ttl.has_value();
    if (negative) {
        if (!negative_ttl) {
            return std::nullopt;
        }
        ttl = std::min(ttl.value_or(*negative_ttl), *negative_ttl);
    }

    if (!ttl || *ttl == 0) {
        return std::nullopt;
    }
    auto cap = negative ? max_negative_ttl : max_positive_ttl;
    return std::min(std::chrono::seconds(*ttl), cap);
}

}  // namespace tlsrelay::dns
