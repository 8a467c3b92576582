// Feeds arbitrary bytes to the DNS reply parser, as a UDP datagram or TCP
// message from any nameserver could, then runs what the resolver runs on a
// decoded reply: the cache lifetime rules and the rcode name.

#include <cstddef>
#include <cstdint>
#include <span>

#include "cache.hpp"
#include "wire.hpp"

namespace wire = tlsrelay::dns::wire;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::span<const std::uint8_t> bytes(data, size);
    wire::peek_id(bytes);

    auto message = wire::decode_message(bytes);
    if (!message) {
        return 0;
    }
    tlsrelay::dns::Cache::lifetime(*message);
    wire::rcode_name(message->rcode);

    // A question name that came out of the decoder must encode again, as
    // the resolver re-queries CNAME targets taken from replies.
    for (const auto& question : message->questions) {
        if (!question.name.empty() && !wire::encode_query(question, message->id)) {
            __builtin_trap();
        }
    }
    return 0;
}
