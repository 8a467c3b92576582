// Certificate name matching (RFC 6125) and DANE TLSA matching on arbitrary
// names, records and certificate bytes. The DER parsing itself happens in
// wolfSSL, which is not instrumented; the target exercises the project's
// own matching and chain-walking code around it.
//
// Input layout: byte 0 selects how much goes to each part; then the TLSA
// record fields, then NUL-separated names, then certificate DER blobs
// separated by the four bytes "\xff\xfe\xfd\xfc".
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tlsrelay/tls/dane.hpp"
#include "tlsrelay/tls/hostname.hpp"

namespace {

std::vector<std::string> split(std::string_view text, std::string_view separator) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    while (start <= text.size()) {
        auto end = text.find(separator, start);
        parts.emplace_back(text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
        if (end == std::string_view::npos) {
            break;
        }
        start = end + separator.size();
    }
    return parts;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 5) {
        return 0;
    }
    std::string_view input(reinterpret_cast<const char*>(data), size);
    std::size_t names_length = static_cast<unsigned char>(input[0]) % (size - 4 + 1);

    tlsrelay::tls::TlsaRecord record;
    record.usage = static_cast<std::uint8_t>(input[1] % 4);
    record.selector = static_cast<std::uint8_t>(input[2] % 2);
    record.matching_type = static_cast<std::uint8_t>(input[3] % 3);
    auto rest = input.substr(4);
    auto names = split(rest.substr(0, names_length), std::string_view("\0", 1));
    auto blobs = split(rest.substr(names_length), "\xff\xfe\xfd\xfc");

    // Name matching: every name against every other.
    for (const auto& reference : names) {
        (void)tlsrelay::tls::match_hostname(names, reference);
    }

    std::vector<tlsrelay::tls::Der> chain;
    for (const auto& blob : blobs) {
        chain.emplace_back(blob.begin(), blob.end());
    }
    if (chain.empty()) {
        return 0;
    }
    // The first blob doubles as association data, so matches are reachable.
    record.data.assign(chain.front().begin(), chain.front().end());
    (void)tlsrelay::tls::tlsa_association_data(chain.front(), record.selector, record.matching_type);
    (void)tlsrelay::tls::certificate_digests(chain.front());
    (void)tlsrelay::tls::match_tlsa({record}, chain, names);
    return 0;
}
