#include "tlsrelay/policy/policy.hpp"

#include "tlsrelay/tls/hostname.hpp"

namespace tlsrelay::policy {

std::optional<Level> parse_level(std::string_view text) {
    if (text == "none") return Level::none;
    if (text == "may") return Level::may;
    if (text == "encrypt") return Level::encrypt;
    if (text == "verify") return Level::verify;
    return std::nullopt;
}

const char* to_string(Level level) {
    switch (level) {
    case Level::none: return "none";
    case Level::may: return "may";
    case Level::encrypt: return "encrypt";
    case Level::verify: return "verify";
    }
    return "?";
}

const char* to_string(Trust trust) {
    switch (trust) {
    case Trust::none: return "none";
    case Trust::anonymous: return "anonymous";
    case Trust::untrusted: return "untrusted";
    case Trust::trusted: return "trusted";
    case Trust::verified: return "verified";
    }
    return "?";
}

bool requires_tls(Level level) { return level == Level::encrypt || level == Level::verify; }

namespace {

// The trust a session reached, whatever the level demanded.
Trust classify(const TlsFacts& facts, std::string_view mx_host) {
    if (!facts.tls) {
        return Trust::none;
    }
    if (!facts.certificate_present) {
        return Trust::anonymous;
    }
    if (!facts.chain_trusted) {
        return Trust::untrusted;
    }
    if (tls::match_hostname(facts.peer_names, mx_host)) {
        return Trust::verified;
    }
    return Trust::trusted;
}

std::string join_names(const std::vector<std::string>& names) {
    if (names.empty()) {
        return "no DNS names";
    }
    std::string text;
    for (const auto& name : names) {
        if (!text.empty()) {
            text += ", ";
        }
        text += name;
    }
    return text;
}

}  // namespace

Verdict judge(Level level, const TlsFacts& facts, std::string_view mx_host) {
    Verdict verdict;
    verdict.trust = classify(facts, mx_host);

    if (!requires_tls(level)) {
        verdict.acceptable = true;
        return verdict;
    }
    if (!facts.tls) {
        verdict.reason = "TLS is required but was not established";
        return verdict;
    }
    if (level == Level::encrypt) {
        verdict.acceptable = true;
        return verdict;
    }

    // Level::verify from here on.
    if (!facts.certificate_present) {
        verdict.reason = "server certificate not verified: the server presented no certificate";
    } else if (!facts.chain_trusted) {
        verdict.reason = "server certificate not trusted: " +
                         (facts.verify_error.empty() ? std::string("chain validation failed") : facts.verify_error);
    } else if (verdict.trust != Trust::verified) {
        verdict.reason = "server certificate name mismatch: " + std::string(mx_host) +
                         " is not among the certificate's names (" + join_names(facts.peer_names) + ")";
    } else {
        verdict.acceptable = true;
    }
    return verdict;
}

}  // namespace tlsrelay::policy
