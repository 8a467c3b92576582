// Parses arbitrary bytes as a PROXY protocol v1 or v2 header.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "tlsrelay/smtpd/proxy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view bytes(reinterpret_cast<const char*>(data), size);
    tlsrelay::smtpd::ProxyHeader header;
    std::size_t consumed = 0;
    std::string error;
    auto result = tlsrelay::smtpd::parse_proxy_header(bytes, header, consumed, error);
    if (result == tlsrelay::smtpd::ProxyParse::ok && (consumed == 0 || consumed > size)) {
        std::abort();
    }
    return 0;
}
