// Policy tables in Postfix's smtp_tls_policy_maps format.
#include "tlsrelay/policy/table.hpp"

#include <algorithm>
#include <cctype>

namespace tlsrelay::policy {

namespace {

std::string lower(std::string_view text) {
    std::string result(text);
    for (char& c : result) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return result;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

std::vector<std::string_view> split_words(std::string_view text) {
    std::vector<std::string_view> words;
    std::size_t position = 0;
    while (position < text.size()) {
        while (position < text.size() && is_space(text[position])) {
            ++position;
        }
        std::size_t start = position;
        while (position < text.size() && !is_space(text[position])) {
            ++position;
        }
        if (position > start) {
            words.push_back(text.substr(start, position - start));
        }
    }
    return words;
}

std::vector<std::string> split_on(std::string_view text, char separator) {
    std::vector<std::string> items;
    std::size_t position = 0;
    while (position <= text.size()) {
        std::size_t end = text.find(separator, position);
        if (end == std::string_view::npos) {
            end = text.size();
        }
        if (end > position) {
            items.emplace_back(text.substr(position, end - position));
        }
        position = end + 1;
    }
    return items;
}

// A DNS name as a table key may hold: letters, digits, hyphens,
// underscores and dots, without empty labels.
bool valid_domain(std::string_view name) {
    if (name.empty() || name.size() > 253 || name.front() == '.' || name.back() == '.' ||
        name.find("..") != std::string_view::npos) {
        return false;
    }
    return std::all_of(name.begin(), name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
    });
}

bool valid_port(std::string_view text) {
    if (text.empty() || text.size() > 5 ||
        !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return false;
    }
    int port = std::stoi(std::string(text));
    return port >= 1 && port <= 65535;
}

// A bracketed host may also be an address literal such as [192.0.2.1] or
// [ipv6:2001:db8::1].
bool valid_bracketed_host(std::string_view host) {
    if (valid_domain(host)) {
        return true;
    }
    return !host.empty() && std::all_of(host.begin(), host.end(), [](char c) {
        return std::isxdigit(static_cast<unsigned char>(c)) || c == '.' || c == ':' || c == 'v' || c == 'V' ||
               c == 'p' || c == 'P' || c == 'i' || c == 'I';
    });
}

const char* const cipher_grades[] = {"export", "low", "medium", "high", "null"};

}  // namespace

std::optional<Policy> build_policy(std::string_view level_text, const std::vector<std::string>& match,
                                   const std::vector<std::string>& fingerprints, std::string_view protocols,
                                   std::string_view ciphers, std::string& error) {
    Policy policy;
    auto level = parse_level(level_text);
    if (!level) {
        error = "invalid security level \"" + std::string(level_text) + "\": expected one of " + level_names();
        return std::nullopt;
    }
    policy.level = *level;

    bool names_apply = policy.level == Level::verify || policy.level == Level::secure ||
                       policy.level == Level::dane || policy.level == Level::dane_only;
    if (!match.empty() && !names_apply) {
        error = "match names apply only to levels verify, secure, dane and dane-only, not " +
                std::string(to_string(policy.level));
        return std::nullopt;
    }
    for (const auto& name : match) {
        std::string item = lower(name);
        bool keyword = item == "hostname" || item == "nexthop" || item == "dot-nexthop";
        std::string_view domain = item;
        if (!domain.empty() && domain.front() == '.') {
            domain.remove_prefix(1);
        }
        if (!keyword && !valid_domain(domain)) {
            error = "invalid match name \"" + name +
                    "\": expected hostname, nexthop, dot-nexthop, a domain name or .domain";
            return std::nullopt;
        }
        policy.match.push_back(item);
    }

    if (!fingerprints.empty() && policy.level != Level::fingerprint) {
        error = "fingerprints apply only to level fingerprint, not " + std::string(to_string(policy.level));
        return std::nullopt;
    }
    for (const auto& text : fingerprints) {
        auto digest = normalize_fingerprint(text);
        if (!digest) {
            error = "invalid fingerprint \"" + text +
                    "\": expected a SHA-256 digest as 32 hex bytes, optionally separated by colons";
            return std::nullopt;
        }
        policy.fingerprints.push_back(*digest);
    }
    if (policy.level == Level::fingerprint && policy.fingerprints.empty()) {
        error = "level fingerprint needs at least one SHA-256 fingerprint";
        return std::nullopt;
    }

    if (!protocols.empty()) {
        auto allowed = parse_protocols(protocols, error);
        if (!allowed) {
            return std::nullopt;
        }
        policy.protocols = *allowed;
        policy.protocols_text = std::string(protocols);
    }

    if (!ciphers.empty()) {
        std::string grade = lower(ciphers);
        if (std::find(std::begin(cipher_grades), std::end(cipher_grades), grade) == std::end(cipher_grades)) {
            error = "invalid cipher grade \"" + std::string(ciphers) + "\": expected one of export, low, medium, high, null";
            return std::nullopt;
        }
        policy.ciphers = grade;
    }
    return policy;
}

std::optional<Policy> parse_policy_value(std::string_view value, std::string& error) {
    auto words = split_words(value);
    if (words.empty()) {
        error = "missing security level";
        return std::nullopt;
    }

    std::vector<std::string> match;
    std::vector<std::string> fingerprints;
    std::string protocols;
    std::string ciphers;
    bool fingerprint_level = words.front() == "fingerprint";
    for (std::size_t i = 1; i < words.size(); ++i) {
        auto word = words[i];
        auto equals = word.find('=');
        if (equals == std::string_view::npos || equals == 0) {
            error = "invalid attribute \"" + std::string(word) + "\": expected name=value";
            return std::nullopt;
        }
        std::string name = lower(word.substr(0, equals));
        std::string_view text = word.substr(equals + 1);
        if (name == "match") {
            // Postfix separates fingerprints with '|' because they contain
            // colons, and names with ':'.
            auto items = split_on(text, fingerprint_level ? '|' : ':');
            auto& target = fingerprint_level ? fingerprints : match;
            target.insert(target.end(), items.begin(), items.end());
        } else if (name == "protocols") {
            protocols = std::string(text);
        } else if (name == "ciphers") {
            ciphers = std::string(text);
        } else {
            error = "unsupported attribute \"" + name + "\": expected match, protocols or ciphers";
            return std::nullopt;
        }
    }
    return build_policy(words.front(), match, fingerprints, protocols, ciphers, error);
}

std::optional<std::string> normalize_key(std::string_view key, std::string& error) {
    std::string text = lower(key);
    auto invalid = [&]() -> std::optional<std::string> {
        error = "invalid key \"" + std::string(key) + "\": expected a domain, .domain, [host], [host]:port or host:port";
        return std::nullopt;
    };

    if (text.starts_with("[")) {
        auto close = text.find(']');
        if (close == std::string::npos || !valid_bracketed_host(std::string_view(text).substr(1, close - 1))) {
            return invalid();
        }
        std::string_view rest = std::string_view(text).substr(close + 1);
        if (!rest.empty() && (rest.front() != ':' || !valid_port(rest.substr(1)))) {
            return invalid();
        }
        return text;
    }
    std::string_view domain = text;
    if (auto colon = domain.rfind(':'); colon != std::string_view::npos) {
        if (!valid_port(domain.substr(colon + 1))) {
            return invalid();
        }
        domain = domain.substr(0, colon);
    }
    if (!domain.empty() && domain.front() == '.') {
        domain.remove_prefix(1);
    }
    if (!valid_domain(domain)) {
        return invalid();
    }
    return text;
}

std::string next_hop_key(const std::string& host, std::uint16_t port, bool port_given, bool mx_lookup) {
    std::string key = mx_lookup ? lower(host) : "[" + lower(host) + "]";
    if (port_given) {
        key += ":" + std::to_string(port);
    }
    return key;
}

void Table::add(Entry entry) {
    auto found = entries_.find(entry.key);
    if (found != entries_.end()) {
        throw TableError(entry.origin + ": duplicate policy for " + entry.key + ", first defined at " +
                         found->second.origin);
    }
    std::string key = entry.key;
    entries_.emplace(std::move(key), std::move(entry));
}

const Entry* Table::lookup(std::string_view next_hop) const {
    std::string key = lower(next_hop);
    if (!key.empty() && key.back() == '.') {
        key.pop_back();
    }
    if (auto found = entries_.find(key); found != entries_.end()) {
        return &found->second;
    }
    // A relayhost key is never widened to a parent domain.
    if (key.starts_with("[") || key.find(':') != std::string::npos) {
        return nullptr;
    }
    // Parent domains in leading-dot form, nearest first. A name has at
    // most 127 labels, so the loop is short.
    std::size_t dot = key.find('.');
    while (dot != std::string::npos) {
        if (auto found = entries_.find(std::string_view(key).substr(dot)); found != entries_.end()) {
            return &found->second;
        }
        dot = key.find('.', dot + 1);
    }
    return nullptr;
}

void parse_postfix_table(std::string_view text, const std::string& file, Table& table) {
    // Joins physical lines into logical lines first: postmap treats a line
    // that starts with whitespace as the continuation of the one before.
    struct Logical {
        std::size_t line = 0;
        std::string text;
    };
    std::vector<Logical> logical;
    std::size_t line_number = 0;
    std::size_t position = 0;
    while (position < text.size()) {
        std::size_t end = text.find('\n', position);
        if (end == std::string_view::npos) {
            end = text.size();
        }
        std::string_view line = text.substr(position, end - position);
        position = end + 1;
        ++line_number;

        auto first = std::find_if(line.begin(), line.end(), [](char c) { return !is_space(c); });
        if (first == line.end() || *first == '#') {
            continue;
        }
        if (is_space(line.front())) {
            if (logical.empty()) {
                throw TableError(file + ":" + std::to_string(line_number) +
                                 ": continuation line (starting with whitespace) without a key line before it");
            }
            logical.back().text += " ";
            logical.back().text += line;
            continue;
        }
        logical.push_back(Logical{line_number, std::string(line)});
    }

    for (const auto& entry : logical) {
        std::string origin = file + ":" + std::to_string(entry.line);
        auto words = split_words(entry.text);
        std::string error;
        auto key = normalize_key(words.front(), error);
        if (!key) {
            throw TableError(origin + ": " + error);
        }
        std::string_view value(entry.text);
        value.remove_prefix(value.find(words.front()) + words.front().size());
        if (words.size() < 2) {
            throw TableError(origin + ": missing security level for " + *key + ": expected one of " + level_names());
        }
        auto policy = parse_policy_value(value, error);
        if (!policy) {
            throw TableError(origin + ": " + error + " (for " + *key + ")");
        }
        table.add(Entry{*key, std::move(*policy), origin});
    }
}

}  // namespace tlsrelay::policy
