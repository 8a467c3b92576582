// Arbitrary text as a configuration file: TOML parsing (toml++, not
// instrumented) and every key handler of the project's loader. Any
// outcome but a Config or a ConfigError is a finding.
#include <cstdint>
#include <string_view>

#include "tlsrelay/config/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        (void)tlsrelay::config::parse(text, "/fuzz/tlsrelay.toml");
    } catch (const tlsrelay::config::ConfigError&) {
        // The expected outcome for invalid input.
    }
    return 0;
}
