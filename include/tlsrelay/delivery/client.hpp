// The outbound SMTP client: one connection to one address of one host,
// with STARTTLS and the TLS policy verdict, carrying one transaction.
// It only reports what happened; the scheduler decides what to do next.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/ip/address.hpp>

#include "tlsrelay/policy/policy.hpp"
#include "tlsrelay/queue/spool.hpp"
#include "tlsrelay/tls/context.hpp"
#include "tlsrelay/tls/stream.hpp"

namespace tlsrelay::delivery {

enum class Outcome { sent, deferred, bounced };

const char* to_string(Outcome outcome);

// The SMTP phase an attempt reached; failures name it, as in
// "host said: ... (in reply to RCPT TO command)".
enum class Phase { connect, greeting, ehlo, starttls, tls_policy, auth, mail, rcpt, data, data_end };

// SMTP AUTH credentials for one next hop.
struct SaslCredentials {
    std::string user;
    std::string password;
};

class SaslPasswordError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The SMTP AUTH credentials table, in the source format of Postfix's
// smtp_sasl_password_maps: one "NEXTHOP USER:PASSWORD" line per next hop,
// where NEXTHOP is "[host]:port", "[host]", "host:port" or "host". The
// password is everything after the first colon, so it may contain colons
// but not white space. Lines starting with '#' and blank lines are skipped.
class SaslPasswords {
public:
    // Throws SaslPasswordError naming `origin` and the line number, never
    // the line itself, because the line contains a password.
    static SaslPasswords parse(std::string_view text, const std::string& origin);
    // Reads `file`, which must not be readable or writable by group or
    // others (mode 0600 or 0400), like an SSH private key.
    static SaslPasswords load(const std::filesystem::path& file);

    // Finds the credentials for a connection to `host` (lower case) on
    // `port`, trying "[host]:port", "[host]", "host:port", then "host".
    // NOTE: Postfix looks up the next hop as configured; this looks up the
    // host connected to, so for a relayhost written without brackets the
    // entry must name its MX host, not the relayhost domain.
    const SaslCredentials* find(std::string_view host, std::uint16_t port) const;
    std::size_t size() const { return entries_.size(); }

private:
    std::map<std::string, SaslCredentials, std::less<>> entries_;
};

// Returns true when connections to `port` start with the TLS handshake
// (implicit TLS) instead of STARTTLS: `wrappermode` when set, else true only
// for port 465, which RFC 8314 registers for implicit TLS submission.
bool uses_implicit_tls(std::optional<bool> wrappermode, std::uint16_t port);

struct RecipientResult {
    std::size_t index = 0;  // into the envelope's recipient list
    Outcome outcome = Outcome::deferred;
    std::string dsn;     // "2.0.0"
    std::string detail;  // remote reply or local reason, for status=... (detail)
};

struct ClientOptions {
    std::string helo_name;
    std::shared_ptr<tls::ClientContext> tls;
    std::chrono::seconds connect_timeout{30};
    std::chrono::seconds command_timeout{300};
    // [smtp] tls_wrappermode; unset: implicit TLS on port 465 only.
    std::optional<bool> tls_wrappermode;
    // Credentials from [smtp] sasl_password_file; null: no SMTP AUTH. They
    // are only sent over TLS.
    std::shared_ptr<const SaslPasswords> sasl_passwords;
};

struct Target {
    std::string host;  // MX host name (or relayhost), lower case
    asio::ip::address address;
    std::uint16_t port = 25;
};

struct AttemptResult {
    // True when the attempt failed before any recipient was tried: the
    // next host or address may still succeed.
    bool host_failed = false;
    // Set with host_failed when the policy allows delivery in clear after
    // TLS failed (level may): the same host should be tried again without
    // STARTTLS.
    bool retry_without_tls = false;
    bool connected = false;
    Phase phase = Phase::connect;
    std::string dsn;     // for host_failed
    std::string reason;  // for host_failed
    policy::Trust trust = policy::Trust::none;
    std::string trust_how;  // how the trust was reached, for the log
    std::vector<RecipientResult> recipients;
    // Set when a TLS handshake completed, also when the policy then rejected
    // the peer, so `tlsrelay check` can show the chain it judged.
    std::optional<tls::SessionInfo> tls_session;
    // The EHLO keywords of a session that stayed in plaintext and that the
    // policy then rejected, so `tlsrelay check` can show what the server
    // offered. Empty in every other case.
    std::vector<std::string> plaintext_extensions;
};

class ClientSession;

// An SMTP session with one address of one host, set up as a HostPlan
// demands: greeting, EHLO, STARTTLS and the policy verdict, SMTP AUTH. It
// can carry several mail transactions one after another, because RFC 5321
// section 4.1.4 lets a new MAIL follow a completed transaction.
class Connection {
public:
    ~Connection();
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    // Connects and sets up the session. With `use_tls` false, STARTTLS is
    // not tried; the caller passes false only for the plaintext retry that
    // the plan's verdict allowed. Returns null and fills `result` (with
    // host_failed set) when the host cannot be used; otherwise `result`
    // has the trust reached.
    static asio::awaitable<std::unique_ptr<Connection>> open(ClientOptions options, Target target,
                                                             policy::HostPlan plan, bool use_tls,
                                                             AttemptResult& result);

    // Runs one transaction for the recipients named by `indices`, from the
    // message's file (content from its content_offset on). The result has
    // a RecipientResult for each index.
    asio::awaitable<AttemptResult> send(const queue::StoredMessage& message, const std::vector<std::size_t>& indices);

    // True when the last transaction ended cleanly (every reply read, none
    // a 421) so another may follow on this session.
    bool reusable() const;
    // True when a reused session turned out closed or closing before the
    // server accepted MAIL: nothing was delivered, so the caller should
    // open a new connection and try again instead of deferring.
    bool stale() const;
    // Checks without blocking that the idle session is still open and that
    // the server sent nothing unsolicited (such as a 421 before closing).
    bool idle_and_open();
    // Sends QUIT (best effort) and closes the connection.
    asio::awaitable<void> quit();

    const Target& target() const;
    policy::Trust trust() const;
    // The TLS session, or null when the session runs in plaintext.
    const tls::SessionInfo* tls_session() const;
    // Whether the EHLO reply before STARTTLS listed STARTTLS.
    bool starttls_offered() const;
    // The extension keywords of the last EHLO reply, upper case.
    const std::vector<std::string>& extensions() const;
    std::size_t transactions() const;

private:
    explicit Connection(std::unique_ptr<ClientSession> session);
    std::unique_ptr<ClientSession> session_;
};

// Delivers one message on a new connection and closes it: Connection::open,
// send and quit in one call.
asio::awaitable<AttemptResult> attempt_delivery(const ClientOptions& options, const Target& target,
                                                const policy::HostPlan& plan, const queue::StoredMessage& message,
                                                const std::vector<std::size_t>& indices, bool use_tls);

}  // namespace tlsrelay::delivery
