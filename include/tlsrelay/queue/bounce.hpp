// Delivery status notifications (RFC 3464): the multipart/report message
// that tells a sender about failed or delayed recipients. Pure text work;
// the scheduler decides when one is due and queues it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tlsrelay::queue {

enum class DsnAction { failed, delayed };

struct DsnRecipient {
    std::string address;  // the envelope recipient, for Final-Recipient
    std::string orcpt;    // the ORCPT parameter as received ("rfc822;addr" in xtext); empty when not given
    std::string status;   // enhanced status code, "5.1.1"
    std::string relay;    // "host[addr]:port" that gave the reply; empty or "none" for local reasons
    std::string reason;   // the scheduler's detail: "host X said: ... (in reply to RCPT TO command)" or a local reason
};

struct DsnReport {
    DsnAction action = DsnAction::failed;
    std::string reporting_mta;  // this relay's host name
    std::string queue_id;       // of the original message
    std::string envid;          // ENVID in xtext; empty when not given
    std::int64_t arrival_unix_ms = 0;
    std::int64_t now_unix_ms = 0;
    std::int64_t retry_until_unix_ms = 0;  // for delayed reports: when the relay gives up
    std::string sender;                    // the original envelope sender, who receives the report
    std::vector<DsnRecipient> recipients;
    bool return_full = true;  // RET=FULL or no RET: return the whole message, else its headers
};

// A remote reply split out of a scheduler detail string.
struct RemoteReply {
    bool remote = false;  // false for a local reason (DNS, connection, policy)
    std::string reply;    // "550 5.1.1 <bob@example.org>: User unknown"
    std::string phase;    // "RCPT TO", "end of DATA"; empty when unknown
};

// Splits "host NAME said: REPLY (in reply to PHASE command)".
RemoteReply parse_detail(const std::string& detail);

// Formats Unix milliseconds as an RFC 5322 date in UTC.
std::string rfc5322_date(std::int64_t unix_ms);

// Decodes xtext (RFC 3461 section 4): "+2B" becomes "+".
std::string decode_xtext(std::string_view text);

// Returned content above this size is cut to its header, as Postfix's
// bounce_size_limit (50000 bytes) does.
constexpr std::size_t dsn_return_limit = 50000;

// Composes the report as message content with CRLF line ends. `original`
// is the returned message's content, CRLF line ends; `eight_bit` is set
// when the result contains octets above 127.
std::string compose_dsn(const DsnReport& report, std::string_view original, bool& eight_bit);

}  // namespace tlsrelay::queue
