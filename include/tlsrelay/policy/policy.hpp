// Outbound TLS security levels and the verdict on a finished handshake.
// Pure code: no I/O, so every combination is testable in a table.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tlsrelay::policy {

// Postfix's smtp_tls_security_level values that tlsrelay implements so far.
enum class Level { none, may, encrypt, verify };

std::optional<Level> parse_level(std::string_view text);
const char* to_string(Level level);

// What the peer's TLS proved, in the words Postfix logs use.
enum class Trust { none, anonymous, untrusted, trusted, verified };

const char* to_string(Trust trust);

// Facts about one TLS session, gathered by the delivery code.
struct TlsFacts {
    bool tls = false;
    bool certificate_present = false;
    bool chain_trusted = false;
    std::string verify_error;
    std::vector<std::string> peer_names;
};

struct Verdict {
    bool acceptable = false;
    Trust trust = Trust::none;
    std::string reason;  // why the session is not acceptable; empty when it is
};

// Judges a session against the level. `mx_host` is the name the certificate
// must match under verify (Postfix's default match for verify is the MX host name).
Verdict judge(Level level, const TlsFacts& facts, std::string_view mx_host);

// True when the level requires TLS, so a server without STARTTLS or a failed
// handshake means no delivery to that host.
bool requires_tls(Level level);

}  // namespace tlsrelay::policy
