// Command-line helpers shared by the tlsrelay commands.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace tlsrelay::cli {

// A command-line mistake: the command prints it with a pointer to --help
// and exits with status 2.
class UsageError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Parses the value of a --port option: a TCP port from 1 to 65535. Raises
// UsageError naming the value otherwise.
std::uint16_t parse_port(const std::string& text);

}  // namespace tlsrelay::cli
