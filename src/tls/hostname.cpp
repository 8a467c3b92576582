// RFC 6125 section 6.4 DNS-ID matching.
#include "tlsrelay/tls/hostname.hpp"

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tlsrelay::tls {

namespace {

// Lowercases ASCII letters only: IDNs are compared in their A-label form,
// which is ASCII, so no Unicode case folding applies (RFC 6125 section 6.4.2).
std::string normalize(std::string_view name) {
    if (!name.empty() && name.back() == '.') {
        name.remove_suffix(1);
    }
    std::string result(name);
    for (char& c : result) {
        if (c >= 'A' && c <= 'Z') {
            c = static_cast<char>(c - 'A' + 'a');
        }
    }
    return result;
}

// A usable reference identity has no wildcard and no empty label.
bool is_valid_reference(std::string_view name) {
    if (name.empty() || name.find('*') != std::string_view::npos) {
        return false;
    }
    if (name.front() == '.' || name.back() == '.') {
        return false;
    }
    return name.find("..") == std::string_view::npos;
}

// Matches "*.rest" against a reference: the wildcard stands for exactly one
// non-empty left-most label (RFC 6125 section 6.4.3). A wildcard over a
// single label such as "*.com" is rejected because it would cover a whole
// top-level domain.
bool matches_wildcard(std::string_view presented, std::string_view reference) {
    if (presented.size() < 2 || presented[0] != '*' || presented[1] != '.') {
        return false;
    }
    std::string_view rest = presented.substr(2);
    if (rest.empty() || rest.find('*') != std::string_view::npos ||
        rest.find('.') == std::string_view::npos) {
        return false;
    }

    std::size_t first_dot = reference.find('.');
    if (first_dot == std::string_view::npos || first_dot == 0) {
        return false;
    }
    return reference.substr(first_dot + 1) == rest;
}

}  // namespace

bool match_hostname(const std::vector<std::string>& presented, std::string_view reference) {
    std::string reference_name = normalize(reference);
    if (!is_valid_reference(reference_name)) {
        return false;
    }

    for (const std::string& candidate : presented) {
        std::string name = normalize(candidate);
        if (name.empty()) {
            continue;
        }
        if (name.find('*') == std::string::npos) {
            if (name == reference_name) {
                return true;
            }
            continue;
        }
        // Any other wildcard form ("f*.example.com", "www.*.example.com")
        // never matches.
        if (matches_wildcard(name, reference_name)) {
            return true;
        }
    }
    return false;
}

}  // namespace tlsrelay::tls
