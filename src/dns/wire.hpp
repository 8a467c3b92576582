// DNS messages as plain C++ values. wire.cpp encodes and decodes them with
// ldns, so the resolver logic and the tests never see an ldns type. Names are
// stored in lower case without the trailing dot, so the root name is "".
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <asio/ip/address.hpp>

#include "tlsrelay/dns/resolver.hpp"

namespace tlsrelay::dns::wire {

using Bytes = std::vector<std::uint8_t>;

// Resource record types (RFC 1035, RFC 3596) and classes this module uses.
inline constexpr std::uint16_t type_a = 1;
inline constexpr std::uint16_t type_cname = 5;
inline constexpr std::uint16_t type_soa = 6;
inline constexpr std::uint16_t type_mx = 15;
inline constexpr std::uint16_t type_txt = 16;
inline constexpr std::uint16_t type_aaaa = 28;
inline constexpr std::uint16_t type_tlsa = 52;
inline constexpr std::uint16_t class_in = 1;

// Response codes (RFC 1035 section 4.1.1, RFC 6891 for values above 15).
inline constexpr int rcode_noerror = 0;
inline constexpr int rcode_formerr = 1;
inline constexpr int rcode_servfail = 2;
inline constexpr int rcode_nxdomain = 3;
inline constexpr int rcode_notimp = 4;
inline constexpr int rcode_refused = 5;

// EDNS0 UDP payload size that avoids IP fragmentation on common paths
// (the value agreed at DNS Flag Day 2020).
inline constexpr std::uint16_t edns_udp_size = 1232;

// Smallest EDNS0 UDP payload size; RFC 6891 section 6.2.5 says smaller
// values are treated as 512.
inline constexpr std::uint16_t min_edns_udp_size = 512;

struct Question {
    std::string name;
    std::uint16_t type = 0;
    std::uint16_t rr_class = class_in;
};

// CNAME target name.
struct CnameData {
    std::string target;
};

// The character-strings of one TXT record, concatenated as RFC 7208
// section 3.3 and RFC 8461 section 3.1 read them.
struct TxtData {
    std::string text;
};

// The SOA field that negative caching needs (RFC 2308 section 5).
struct SoaData {
    std::uint32_t minimum = 0;  // seconds
};

// A decoded resource record. Record types this module does not query keep
// only owner, type and TTL.
struct ResourceRecord {
    std::string owner;
    std::uint16_t type = 0;
    std::uint32_t ttl = 0;  // seconds
    std::variant<std::monostate, CnameData, MxRecord, asio::ip::address, TxtData, TlsaRecord, SoaData> data;
};

struct Message {
    std::uint16_t id = 0;
    bool response = false;             // QR
    int opcode = 0;
    bool truncated = false;            // TC
    bool recursion_desired = false;    // RD
    bool recursion_available = false;  // RA
    bool authentic_data = false;       // AD
    int rcode = rcode_noerror;         // including the EDNS extended bits
    bool has_edns = false;
    std::uint16_t edns_udp_size = 0;
    bool dnssec_ok = false;            // EDNS DO bit
    std::vector<Question> questions;
    std::vector<ResourceRecord> answers;
    std::vector<ResourceRecord> authority;
};

// A message to encode, with records in zone-file presentation format
// ("mail.example.test. 300 IN MX 10 mx.example.test."). Tests and fake
// servers build replies from it.
struct MessageDraft {
    std::uint16_t id = 0;
    bool response = true;
    bool truncated = false;
    bool recursion_desired = true;
    bool recursion_available = true;
    bool authentic_data = false;
    int rcode = rcode_noerror;
    std::vector<Question> questions;
    std::vector<std::string> answers;
    std::vector<std::string> authority;
};

// Normalizes a domain name to lower case without the trailing dot.
// Returns std::nullopt when the name is empty or not a valid DNS name.
std::optional<std::string> normalize_name(std::string_view name);

// Encodes a recursive query with EDNS0, advertising `udp_size` bytes, and the
// DO bit. Returns std::nullopt when the question name is invalid.
std::optional<Bytes> encode_query(const Question& question, std::uint16_t id,
                                  std::uint16_t udp_size = edns_udp_size);

// Encodes a draft. Throws std::invalid_argument naming the record text or
// name that ldns rejected.
Bytes encode_message(const MessageDraft& draft);

// Decodes a message. Returns std::nullopt when ldns rejects it or when a
// record of a type listed above has data of the wrong shape. Records of other
// types keep no data, and the additional section is skipped.
std::optional<Message> decode_message(std::span<const std::uint8_t> bytes);

// Returns the message id, or std::nullopt when `bytes` is shorter than a header.
std::optional<std::uint16_t> peek_id(std::span<const std::uint8_t> bytes);

// Returns the mnemonic of a response code, e.g. "SERVFAIL", or "RCODE42".
std::string rcode_name(int rcode);

}  // namespace tlsrelay::dns::wire
