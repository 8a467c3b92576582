// The outbound SMTP client: one connection to one address of one host,
// with STARTTLS and the TLS policy verdict, carrying one transaction.
// It only reports what happened; the scheduler decides what to do next.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/ip/address.hpp>

#include "tlsrelay/policy/policy.hpp"
#include "tlsrelay/queue/spool.hpp"
#include "tlsrelay/tls/context.hpp"

namespace tlsrelay::delivery {

enum class Outcome { sent, deferred, bounced };

const char* to_string(Outcome outcome);

// The SMTP phase an attempt reached; failures name it, as in
// "host said: ... (in reply to RCPT TO command)".
enum class Phase { connect, greeting, ehlo, starttls, tls_policy, mail, rcpt, data, data_end };

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
};

// Delivers the message in `file` (content from `content_offset` on) to the
// recipients named by `indices`, enforcing `plan` (see policy::plan_host).
// With `use_tls` false, STARTTLS is not tried; the caller passes false only
// for the plaintext retry that the plan's verdict allowed.
asio::awaitable<AttemptResult> attempt_delivery(const ClientOptions& options, const Target& target,
                                                const policy::HostPlan& plan, const queue::StoredMessage& message,
                                                const std::vector<std::size_t>& indices, bool use_tls);

}  // namespace tlsrelay::delivery
