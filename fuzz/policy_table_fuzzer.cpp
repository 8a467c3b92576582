// Arbitrary text as a Postfix policy table source file (smtp_tls_policy_maps),
// then lookups of names taken from the same input.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include "tlsrelay/policy/table.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    tlsrelay::policy::Table table;
    try {
        tlsrelay::policy::parse_postfix_table(text, "/fuzz/tls_policy", table);
    } catch (const std::runtime_error&) {
        // Invalid lines are reported as errors naming file and line.
        return 0;
    }
    // Look up every word of the input, as destinations could be.
    std::size_t start = 0;
    while (start < text.size()) {
        auto end = text.find_first_of(" \t\r\n", start);
        auto word = text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
        if (!word.empty()) {
            (void)table.lookup(std::string(word));
        }
        if (end == std::string_view::npos) {
            break;
        }
        start = end + 1;
    }
    return 0;
}
