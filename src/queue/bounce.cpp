#include "tlsrelay/queue/bounce.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>

namespace tlsrelay::queue {
namespace {

constexpr std::string_view crlf = "\r\n";

bool has_eight_bit(std::string_view text) {
    return std::any_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) > 127; });
}

// The header block of a message: everything before the first empty line,
// with its final CRLF.
std::string_view header_block(std::string_view content) {
    if (content.starts_with(crlf)) {
        return {};
    }
    auto end = content.find("\r\n\r\n");
    return end == std::string_view::npos ? content : content.substr(0, end + 2);
}

// Host name of a relay written as "host[addr]:port".
std::string relay_host(const std::string& relay) {
    if (relay.empty() || relay == "none") {
        return {};
    }
    return relay.substr(0, relay.find('['));
}

std::string human_part(const DsnReport& report) {
    std::string text;
    if (report.action == DsnAction::failed) {
        text += "This is the mail relay at " + report.reporting_mta + ".\r\n\r\n";
        text += "Your message could not be delivered to one or more recipients and is\r\n";
        text += "returned below. The recipients and the reasons:\r\n\r\n";
    } else {
        text += "This is the mail relay at " + report.reporting_mta + ".\r\n\r\n";
        text += "Your message has not yet been delivered to one or more recipients.\r\n";
        text += "The relay keeps trying until " + rfc5322_date(report.retry_until_unix_ms) + ";\r\n";
        text += "you do not need to send it again. The recipients and the last reasons:\r\n\r\n";
    }
    for (const auto& recipient : report.recipients) {
        text += "<" + recipient.address + ">: " + recipient.reason + "\r\n";
    }
    return text;
}

std::string status_part(const DsnReport& report) {
    std::string text = "Reporting-MTA: dns; " + report.reporting_mta + "\r\n";
    text += "X-Tlsrelay-Queue-ID: " + report.queue_id + "\r\n";
    if (!report.envid.empty()) {
        text += "Original-Envelope-Id: " + report.envid + "\r\n";
    }
    text += "Arrival-Date: " + rfc5322_date(report.arrival_unix_ms) + "\r\n";

    for (const auto& recipient : report.recipients) {
        text += "\r\n";
        if (!recipient.orcpt.empty()) {
            // ORCPT is "addr-type;xtext"; RFC 3464 section 2.3.1 wants a space-free type then the address.
            auto orcpt = decode_xtext(recipient.orcpt);
            auto semicolon = orcpt.find(';');
            if (semicolon != std::string::npos) {
                text += "Original-Recipient: " + orcpt.substr(0, semicolon) + "; " + orcpt.substr(semicolon + 1) + "\r\n";
            }
        }
        text += "Final-Recipient: rfc822; " + recipient.address + "\r\n";
        text += std::string("Action: ") + (report.action == DsnAction::failed ? "failed" : "delayed") + "\r\n";
        std::string status = recipient.status;
        if (status.empty() || (status[0] != '4' && status[0] != '5')) {
            status = report.action == DsnAction::failed ? "5.0.0" : "4.0.0";
        }
        text += "Status: " + status + "\r\n";

        auto host = relay_host(recipient.relay);
        if (!host.empty()) {
            text += "Remote-MTA: dns; " + host + "\r\n";
        }
        auto reply = parse_detail(recipient.reason);
        if (reply.remote) {
            text += "Diagnostic-Code: smtp; " + reply.reply + "\r\n";
        } else {
            text += "Diagnostic-Code: X-tlsrelay; " + recipient.reason + "\r\n";
        }
        if (!reply.phase.empty()) {
            text += "X-Tlsrelay-Phase: " + reply.phase + "\r\n";
        }
        text += "Last-Attempt-Date: " + rfc5322_date(report.now_unix_ms) + "\r\n";
        if (report.action == DsnAction::delayed) {
            text += "Will-Retry-Until: " + rfc5322_date(report.retry_until_unix_ms) + "\r\n";
        }
    }
    return text;
}

}  // namespace

RemoteReply parse_detail(const std::string& detail) {
    RemoteReply result;
    constexpr std::string_view said = " said: ";
    constexpr std::string_view in_reply = " (in reply to ";
    constexpr std::string_view command_end = " command)";
    auto start = detail.find(said);
    if (!detail.starts_with("host ") || start == std::string::npos) {
        return result;
    }
    result.remote = true;
    result.reply = detail.substr(start + said.size());

    // The scheduler may append its own words after the phase, as it does
    // for an expired message.
    auto phase_start = result.reply.rfind(in_reply);
    if (phase_start == std::string::npos) {
        return result;
    }
    auto begin = phase_start + in_reply.size();
    auto end = result.reply.find(command_end, begin);
    if (end != std::string::npos) {
        result.phase = result.reply.substr(begin, end - begin);
        result.reply.erase(phase_start);
    }
    return result;
}

std::string rfc5322_date(std::int64_t unix_ms) {
    std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
    std::tm utc{};
    ::gmtime_r(&seconds, &utc);
    static const char* const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char* const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    char text[64];
    std::snprintf(text, sizeof text, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[utc.tm_wday], utc.tm_mday,
                  months[utc.tm_mon], utc.tm_year + 1900, utc.tm_hour, utc.tm_min, utc.tm_sec);
    return text;
}

std::string decode_xtext(std::string_view text) {
    std::string decoded;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '+' && i + 2 < text.size() && std::isxdigit(static_cast<unsigned char>(text[i + 1])) &&
            std::isxdigit(static_cast<unsigned char>(text[i + 2]))) {
            decoded += static_cast<char>(std::stoi(std::string(text.substr(i + 1, 2)), nullptr, 16));
            i += 2;
        } else {
            decoded += text[i];
        }
    }
    return decoded;
}

std::string compose_dsn(const DsnReport& report, std::string_view original, bool& eight_bit) {
    // The queue id is unique and its hex digits and the "=_" prefix cannot
    // start a line of base64 or quoted-printable text.
    const std::string boundary = "=_tlsrelay_" + report.queue_id + "_" + std::to_string(report.now_unix_ms);
    bool headers_only = !report.return_full || original.size() > dsn_return_limit;
    std::string_view returned = headers_only ? header_block(original) : original;
    eight_bit = has_eight_bit(returned);
    bool failed = report.action == DsnAction::failed;

    std::string text;
    text += "Date: " + rfc5322_date(report.now_unix_ms) + "\r\n";
    text += "From: MAILER-DAEMON@" + report.reporting_mta + " (Mail Delivery System)\r\n";
    text += "To: <" + report.sender + ">\r\n";
    text += std::string("Subject: ") +
            (failed ? "Undeliverable: returned mail" : "Delivery delayed: message still queued") + "\r\n";
    text += "Message-ID: <" + report.queue_id + "." + std::to_string(report.now_unix_ms) + ".dsn@" +
            report.reporting_mta + ">\r\n";
    // RFC 3834 section 5: automatic messages say so, and autoresponders skip them.
    text += "Auto-Submitted: auto-replied\r\n";
    text += "MIME-Version: 1.0\r\n";
    text += "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"" + boundary + "\"\r\n";
    text += std::string("Content-Transfer-Encoding: ") + (eight_bit ? "8bit" : "7bit") + "\r\n";
    text += "\r\n";
    text += "This is a MIME-encapsulated delivery status notification.\r\n\r\n";

    text += "--" + boundary + "\r\n";
    text += "Content-Description: Notification\r\n";
    text += "Content-Type: text/plain; charset=utf-8\r\n\r\n";
    text += human_part(report);
    text += "\r\n--" + boundary + "\r\n";
    text += "Content-Description: Delivery report\r\n";
    text += "Content-Type: message/delivery-status\r\n\r\n";
    text += status_part(report);

    text += "\r\n--" + boundary + "\r\n";
    text += std::string("Content-Description: ") + (headers_only ? "Undelivered message headers" : "Undelivered message") +
            "\r\n";
    text += std::string("Content-Type: ") + (headers_only ? "text/rfc822-headers" : "message/rfc822") + "\r\n";
    if (eight_bit) {
        text += "Content-Transfer-Encoding: 8bit\r\n";
    }
    text += "\r\n";
    text += returned;
    if (!returned.empty() && !returned.ends_with(crlf)) {
        text += "\r\n";
    }
    text += "\r\n--" + boundary + "--\r\n";
    return text;
}

}  // namespace tlsrelay::queue
