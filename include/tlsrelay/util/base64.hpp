#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tlsrelay {

std::string base64_encode(std::string_view bytes);
// Strict RFC 4648 decoding with padding; std::nullopt on any invalid input.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace tlsrelay
