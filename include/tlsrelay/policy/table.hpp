// Per-destination TLS policy tables: entries from the TOML configuration
// and from a Postfix smtp_tls_policy_maps source file, looked up in
// Postfix's order. Pure code: the caller reads the file.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "tlsrelay/policy/policy.hpp"

namespace tlsrelay::policy {

// Raised for an invalid table entry; what() starts with "FILE:LINE: ".
class TableError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Validates the parts of one entry and builds the policy. Returns nullopt
// and sets `error` (without a location) on the first invalid part.
// `match` contains names or keywords, `fingerprints` SHA-256 digests.
std::optional<Policy> build_policy(std::string_view level, const std::vector<std::string>& match,
                                   const std::vector<std::string>& fingerprints, std::string_view protocols,
                                   std::string_view ciphers, std::string& error);

// Parses a Postfix policy value such as "secure match=.example.org:example.net
// protocols=!TLSv1". Returns nullopt and sets `error` on failure.
std::optional<Policy> parse_policy_value(std::string_view value, std::string& error);

// Checks a table key and returns it in lower case: "example.com",
// ".example.com" (subdomains), "[host]", "[host]:port" or "host:port".
std::optional<std::string> normalize_key(std::string_view key, std::string& error);

// The lookup key Postfix uses for a relayhost or transport next hop.
std::string next_hop_key(const std::string& host, std::uint16_t port, bool port_given, bool mx_lookup);

struct Entry {
    std::string key;
    Policy policy;
    std::string origin;  // "FILE:LINE", for messages
};

class Table {
public:
    // Adds an entry; raises TableError naming both places for a duplicate key.
    void add(Entry entry);

    // Looks up a next hop as Postfix does: the key exactly ("[host]:port"
    // for a relayhost, else the domain), then for a domain each parent
    // domain in leading-dot form (".example.com", ".com"). Returns nullopt
    // when no entry applies, so the caller uses the global default.
    const Entry* lookup(std::string_view next_hop) const;

    std::size_t size() const { return entries_.size(); }
    bool empty() const { return entries_.empty(); }

private:
    std::map<std::string, Entry, std::less<>> entries_;
};

// Adds every entry of a Postfix policy table source file (the text postmap
// reads): "key level attribute=value ..." per logical line, '#' comments,
// blank lines, and lines that start with whitespace continuing the previous
// line. `file` names the file in error messages.
void parse_postfix_table(std::string_view text, const std::string& file, Table& table);

}  // namespace tlsrelay::policy
