#include "arguments.hpp"

#include <charconv>

namespace tlsrelay::cli {

std::uint16_t parse_port(const std::string& text) {
    unsigned value = 0;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || error != std::errc() || end != text.data() + text.size() || value == 0 || value > 65535) {
        throw UsageError("invalid --port \"" + text + "\": expected a TCP port from 1 to 65535");
    }
    return static_cast<std::uint16_t>(value);
}

}  // namespace tlsrelay::cli
