// Feeds arbitrary lines to the reply parser that the outbound client uses
// on every server reply, and checks that a complete reply is well formed.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "tlsrelay/smtp/reply.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);
    tlsrelay::smtp::ReplyParser parser;
    while (!input.empty()) {
        auto newline = input.find('\n');
        auto line = input.substr(0, newline);
        input = newline == std::string_view::npos ? std::string_view{} : input.substr(newline + 1);
        if (!line.empty() && line.back() == '\r') {
            line.remove_suffix(1);
        }
        if (!parser.feed(line)) {
            parser.reset();
            continue;
        }
        if (parser.complete()) {
            const auto& reply = parser.reply();
            if (reply.code < 200 || reply.code > 599 || reply.lines.empty()) {
                std::abort();
            }
            // The status class must agree with the code, as the scheduler
            // decides deferred versus bounced on both: 2 for 2xx, 5 for
            // 5xx, 4 for everything else (an unexpected 3xx defers).
            char expected = '4';
            if (reply.code / 100 == 2) {
                expected = '2';
            } else if (reply.code / 100 == 5) {
                expected = '5';
            }
            if (reply.status()[0] != expected || reply.positive() != (expected == '2')) {
                std::abort();
            }
            (void)reply.summary();
            (void)reply.wire();
        }
    }
    return 0;
}
