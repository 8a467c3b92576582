#include "tlsrelay/util/idna.hpp"

#include <idn2.h>

#include <algorithm>
#include <cstdlib>

namespace tlsrelay {

std::optional<std::string> to_a_label(std::string_view domain, std::string& error) {
    std::string name(domain);
    bool ascii = std::all_of(name.begin(), name.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
    if (ascii) {
        std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        return name;
    }

    char* output = nullptr;
    // Non-transitional processing with NFC input, as IDNA2008 (RFC 5891) and
    // UTS #46 describe for lookups.
    int result = idn2_to_ascii_8z(name.c_str(), &output, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
    if (result != IDN2_OK) {
        error = idn2_strerror(result);
        return std::nullopt;
    }
    std::string converted(output);
    idn2_free(output);
    std::transform(converted.begin(), converted.end(), converted.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return converted;
}

}  // namespace tlsrelay
