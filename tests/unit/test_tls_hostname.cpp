// match_hostname: RFC 6125 DNS-ID matching, as a table of cases.
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "tlsrelay/tls/hostname.hpp"

using tlsrelay::tls::match_hostname;

namespace {

struct HostnameCase {
    std::vector<std::string> presented;
    std::string reference;
    bool expected;
};

}  // namespace

TEST_CASE("match_hostname follows RFC 6125", "[tls][hostname]") {
    const std::vector<HostnameCase> cases = {
        // Exact names, case and trailing dots.
        {{"mx.example.com"}, "mx.example.com", true},
        {{"MX.Example.COM"}, "mx.example.com", true},
        {{"mx.example.com"}, "MX.EXAMPLE.COM", true},
        {{"mx.example.com."}, "mx.example.com", true},
        {{"mx.example.com"}, "mx.example.com.", true},
        {{"mx.example.com."}, "mx.example.com.", true},
        {{"mx.example.com"}, "mx2.example.com", false},
        {{"mx.example.com"}, "example.com", false},
        {{"example.com"}, "mx.example.com", false},
        {{"mx.example.com"}, "mx.example.co", false},
        // Several presented names: any one may match.
        {{"a.example.com", "b.example.com"}, "b.example.com", true},
        {{"a.example.com", "b.example.com"}, "c.example.com", false},
        {{}, "mx.example.com", false},
        {{""}, "mx.example.com", false},
        // Wildcard: whole left-most label, exactly one label.
        {{"*.example.com"}, "mx.example.com", true},
        {{"*.EXAMPLE.com"}, "Mx.example.COM", true},
        {{"*.example.com."}, "mx.example.com", true},
        {{"*.example.com"}, "mx.example.com.", true},
        {{"*.example.com"}, "example.com", false},
        {{"*.example.com"}, "a.b.example.com", false},
        {{"*.example.com"}, ".example.com", false},
        {{"*.com"}, "com", false},
        {{"*.com"}, "example.com", false},
        {{"*"}, "com", false},
        {{"*."}, "com", false},
        // Partial and misplaced wildcards never match.
        {{"mx*.example.com"}, "mx1.example.com", false},
        {{"*x.example.com"}, "mx.example.com", false},
        {{"m*x.example.com"}, "mx.example.com", false},
        {{"mx.*.example.com"}, "mx.a.example.com", false},
        {{"*.*.example.com"}, "a.b.example.com", false},
        {{"mx.example.*"}, "mx.example.com", false},
        // A wildcard in the reference identity is not a pattern.
        {{"*.example.com"}, "*.example.com", false},
        {{"mx.example.com"}, "*.example.com", false},
        // Malformed reference identities.
        {{"mx.example.com"}, "", false},
        {{""}, "", false},
        {{"mx..example.com"}, "mx..example.com", false},
        {{"*.example.com"}, "mx..example.com", false},
        // IDNA A-labels are compared as ASCII strings.
        {{"xn--bcher-kva.example"}, "xn--bcher-kva.example", true},
        {{"XN--BCHER-KVA.example"}, "xn--bcher-kva.example", true},
        {{"*.xn--bcher-kva.example"}, "mx.xn--bcher-kva.example", true},
        {{"xn--bcher-kva.example"}, "bucher.example", false},
        // Only ASCII letters fold: a U-label is not equal to its A-label.
        {{"b\xc3\xbc" "cher.example"}, "xn--bcher-kva.example", false},
    };

    for (const HostnameCase& c : cases) {
        std::string presented;
        for (const std::string& name : c.presented) {
            presented += "[" + name + "]";
        }
        INFO("presented " << presented << ", reference [" << c.reference << "]");
        CHECK(match_hostname(c.presented, c.reference) == c.expected);
    }
}
