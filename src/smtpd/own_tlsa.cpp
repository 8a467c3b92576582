// TLSA records for the relay's own certificate, and the check after start
// and reload that the published ones match it.
#include "tlsrelay/smtpd/own_tlsa.hpp"

#include <algorithm>
#include <exception>
#include <memory>
#include <stdexcept>
#include <variant>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "tlsrelay/config/config.hpp"
#include "tlsrelay/dns/resolver.hpp"
#include "tlsrelay/tls/context.hpp"
#include "tlsrelay/tls/inspect.hpp"
#include "tlsrelay/util/idna.hpp"
#include "tlsrelay/util/log.hpp"

namespace tlsrelay::smtpd {

namespace {

using namespace asio::experimental::awaitable_operators;

constexpr std::uint8_t usage_dane_ta = 2;
constexpr std::uint8_t usage_dane_ee = 3;
constexpr std::uint8_t selector_spki = 1;
constexpr std::uint8_t matching_sha256 = 1;

// RFC 1035 section 2.3.4 limits a label to 63 octets and a name to 255
// octets on the wire, which is 253 characters in text form.
constexpr std::size_t max_label_length = 63;
constexpr std::size_t max_name_length = 253;

std::size_t label_start_of_last(const std::string& name) {
    auto dot = name.rfind('.');
    return dot == std::string::npos ? 0 : dot + 1;
}

bool is_host_name(const std::string& name) {
    if (name.empty() || name.size() > max_name_length) {
        return false;
    }
    std::size_t label_start = 0;
    for (std::size_t i = 0; i <= name.size(); ++i) {
        if (i == name.size() || name[i] == '.') {
            std::size_t length = i - label_start;
            // RFC 952 and 1123: a label neither starts nor ends with a hyphen.
            if (length == 0 || length > max_label_length || name[label_start] == '-' || name[i - 1] == '-') {
                return false;
            }
            label_start = i + 1;
            continue;
        }
        char c = name[i];
        bool allowed = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
        if (!allowed) {
            return false;
        }
    }
    // An address is not a host name, and TLSA records need one: the last
    // label of a domain name is never all digits.
    auto last_label = name.substr(label_start_of_last(name));
    return last_label.find_first_not_of("0123456789") != std::string::npos;
}

tls::TlsaRecord spki_sha256_record(std::uint8_t usage, const tls::Der& certificate) {
    auto data = tls::tlsa_association_data(certificate, selector_spki, matching_sha256);
    if (data.empty()) {
        throw tls::TlsSetupError("cannot read the SubjectPublicKeyInfo of a certificate");
    }
    return tls::TlsaRecord{usage, selector_spki, matching_sha256, std::move(data)};
}

// Loads a chain for the check. A file that cannot be loaded gives a logged
// warning and an empty chain. Start-up and the config loader reject such
// files first, so this happens only when a file changes in between.
std::vector<tls::Der> load_chain_for_check(const std::string& file) {
    if (file.empty()) {
        return {};
    }
    try {
        return tls::load_pem_certificates(file);
    } catch (const std::exception& error) {
        log::warning(std::string("TLSA check: ") + error.what());
        return {};
    }
}

// Returns the zone lines that authenticate `chain`, joined by "; ".
std::string records_to_publish(const std::string& owner, const std::vector<tls::Der>& chain,
                               const std::string& file) {
    std::string text;
    try {
        for (const auto& published : tlsa_records_for_chain(chain, file)) {
            text += (text.empty() ? "" : "; ") + tlsa_zone_line(owner, published.record);
        }
    } catch (const std::exception& error) {
        return std::string("(cannot compute: ") + error.what() + ")";
    }
    return text;
}

std::string describe_records(const std::vector<tls::TlsaRecord>& records) {
    std::string text;
    for (const auto& record : records) {
        if (!text.empty()) {
            text += ", ";
        }
        text += tls::describe_parameters(record) + " " + tls::hex_string(record.data);
    }
    return text;
}

struct CheckInput {
    OwnTlsaCheckSettings settings;
    std::vector<tls::Der> current_chain;
    std::vector<tls::Der> next_chain;
    // The [[smtpd.tls_sni]] entry that covers the host name, or an entry
    // without a name when none does.
    OwnTlsaSniCertificate sni;
    std::vector<tls::Der> sni_chain;
};

// Returns the first [[smtpd.tls_sni]] entry that covers `host`, or an entry
// without a name. Peers that use DANE send the host name by SNI (RFC 7672
// section 8.1). The server gives them the certificate of the first entry
// that matches it, so only that entry's certificate counts.
OwnTlsaSniCertificate covering_sni_entry(const std::vector<OwnTlsaSniCertificate>& entries,
                                         const std::string& host) {
    for (const auto& entry : entries) {
        if (tls::sni_name_matches(entry.name, host)) {
            return entry;
        }
    }
    return {};
}

// Describes the SNI entry's certificate for a log line.
std::string describe_sni(const OwnTlsaSniCertificate& sni) {
    return "the certificate in " + sni.cert_file + " of [[smtpd.tls_sni]] name \"" + sni.name + "\"";
}

// Logs the verdict on the records published at `owner` (without the root dot).
void report_records(const CheckInput& input, const std::string& owner, const std::vector<tls::TlsaRecord>& records,
                    bool secure) {
    const auto& settings = input.settings;
    const std::string where = "TLSA records at " + owner;
    // Peers that use DANE get the SNI entry's certificate when one covers
    // the host, so the records to publish are that certificate's.
    std::string publish = input.sni.name.empty()
                              ? records_to_publish(owner + ".", input.current_chain, settings.cert_file)
                              : records_to_publish(owner + ".", input.sni_chain, input.sni.cert_file);
    // Peers use TLSA records only from a DNSSEC-signed zone (RFC 7672
    // section 2.2), and only the AD bit from a trusted resolver shows that.
    std::string consequence = secure
                                  ? "peers that use DANE will defer mail to this host"
                                  : "the answer is not DNSSEC-validated by a trusted resolver ([dns] "
                                    "trusted_ad_networks), but if the zone is signed, peers that use DANE "
                                    "will defer mail to this host";

    if (input.current_chain.empty() && settings.cert_file.empty()) {
        log::warning(where + " (" + describe_records(records) + ") cannot match: this relay offers no "
                     "STARTTLS; " + consequence + ". Enable inbound TLS or remove the records");
        return;
    }

    OwnTlsaVerdict verdict =
        judge_own_tlsa(records, input.current_chain, input.next_chain, settings.hostname, input.sni_chain);
    std::string next_file = settings.next_cert_file.empty() ? "" : " (" + settings.next_cert_file + ")";
    switch (verdict.outcome) {
    case OwnTlsaOutcome::no_usable_records:
        log::info(where + " (" + describe_records(records) + ") have no DANE-TA(2) or DANE-EE(3) "
                  "record, so SMTP peers ignore them");
        return;
    case OwnTlsaOutcome::matches_current:
        // NOTE: when an SNI entry covers the host, peers that use DANE get
        // its certificate, so a match of tls_cert_file alone does not help
        // them. This case is still reported as a match.
        if (settings.next_cert_file.empty()) {
            log::info(where + " match the current certificate in " + settings.cert_file + ": " + verdict.how);
        } else if (verdict.next_matches) {
            log::info(where + " match the current certificate in " + settings.cert_file +
                      " and tls_next_cert_file" + next_file + ": " + verdict.how);
        } else {
            log::info(where + " match the current certificate in " + settings.cert_file + " (" + verdict.how +
                      ") but not tls_next_cert_file" + next_file + "; publish its records before switching: " +
                      records_to_publish(owner + ".", input.next_chain, settings.next_cert_file));
        }
        return;
    case OwnTlsaOutcome::matches_sni:
        log::info(where + " match " + describe_sni(input.sni) + ", which peers that send that name by SNI get: " +
                  verdict.how);
        return;
    case OwnTlsaOutcome::matches_next_only:
        log::warning(where + " match tls_next_cert_file" + next_file + " but not the certificate in " +
                     settings.cert_file + " that this relay serves (" + verdict.reason + "); " + consequence +
                     " until tls_cert_file is switched. Publish: " + publish);
        return;
    case OwnTlsaOutcome::matches_neither: {
        std::string certificates = settings.next_cert_file.empty()
                                       ? "do not match the certificate in " + settings.cert_file +
                                             ", and no tls_next_cert_file is set"
                                       : "match neither the certificate in " + settings.cert_file +
                                             " nor tls_next_cert_file" + next_file;
        if (!input.sni.name.empty()) {
            certificates += ", nor " + describe_sni(input.sni);
        }
        log::warning(where + " (" + describe_records(records) + ") " + certificates + " (" + verdict.reason +
                     "); " + consequence + ". Publish: " + publish);
        return;
    }
    }
}

void report(const CheckInput& input, const std::string& owner, const dns::Answer<dns::TlsaRecord>& answer) {
    if (answer.status == dns::Status::nodata || answer.status == dns::Status::nxdomain) {
        log::info("no TLSA records at " + owner + (answer.secure ? " (DNSSEC-validated)" : "") +
                  "; peers do not use DANE for this host");
        return;
    }
    if (answer.status == dns::Status::temporary_failure) {
        log::info("TLSA check for " + owner + " skipped: lookup failed: " + answer.reason);
        return;
    }

    std::vector<tls::TlsaRecord> records;
    for (const auto& record : answer.records) {
        records.push_back(tls::TlsaRecord{record.usage, record.selector, record.matching_type, record.data});
    }
    report_records(input, owner, records, answer.secure);
}

// Looks up the TLSA records at `owner` (without the root dot) with a
// deadline. The operation that loses the race is cancelled.
asio::awaitable<void> check_owner(dns::Resolver& resolver, std::shared_ptr<const CheckInput> input,
                                  std::string owner) {
    asio::steady_timer timer(co_await asio::this_coro::executor, input->settings.timeout);
    auto outcome = co_await (resolver.query_tlsa(owner) || timer.async_wait(asio::use_awaitable));
    if (outcome.index() == 1) {
        log::info("TLSA check for " + owner + " skipped: lookup timed out after " +
                  std::to_string(input->settings.timeout.count()) + " ms");
        co_return;
    }
    report(*input, owner, std::get<0>(outcome));
}

}  // namespace

std::string absolute_tlsa_owner(std::string_view host, std::uint16_t port) {
    std::string name(host);
    if (!name.empty() && name.back() == '.') {
        name.pop_back();
    }
    std::string error;
    auto a_label = to_a_label(name, error);
    if (!a_label) {
        throw std::invalid_argument("invalid host name \"" + std::string(host) + "\": " + error);
    }
    if (!is_host_name(*a_label)) {
        throw std::invalid_argument("invalid host name \"" + std::string(host) +
                                    "\": expected labels of letters, digits and hyphens, "
                                    "1 to 63 characters each");
    }
    return "_" + std::to_string(port) + "._tcp." + *a_label + ".";
}

std::vector<PublishedTlsa> tlsa_records_for_chain(const std::vector<tls::Der>& chain, const std::string& file) {
    std::vector<PublishedTlsa> published;
    if (chain.empty()) {
        return published;
    }
    tls::CertificateDetails leaf = tls::describe_certificate(chain.front());
    published.push_back({spki_sha256_record(usage_dane_ee, chain.front()),
                         "3 1 1: key of the certificate " + leaf.subject + " in " + file});
    if (chain.size() > 1) {
        tls::CertificateDetails issuer = tls::describe_certificate(chain.back());
        published.push_back({spki_sha256_record(usage_dane_ta, chain.back()),
                             "2 1 1: key of the issuer " + issuer.subject + ", the last certificate in " + file});
    }
    return published;
}

std::string tlsa_zone_line(const std::string& absolute_owner, const tls::TlsaRecord& record) {
    return absolute_owner + " IN TLSA " + tls::describe_parameters(record) + " " + tls::hex_string(record.data);
}

OwnTlsaVerdict judge_own_tlsa(const std::vector<tls::TlsaRecord>& records,
                              const std::vector<tls::Der>& current_chain, const std::vector<tls::Der>& next_chain,
                              const std::string& hostname, const std::vector<tls::Der>& sni_chain) {
    OwnTlsaVerdict verdict;
    bool usable = false;
    for (const auto& record : records) {
        usable |= tls::is_usable(record);
    }
    if (!usable) {
        verdict.outcome = OwnTlsaOutcome::no_usable_records;
        return verdict;
    }

    // Peers compare the name they looked up, without a trailing dot.
    std::string reference = hostname;
    if (!reference.empty() && reference.back() == '.') {
        reference.pop_back();
    }
    tls::DaneMatch current = tls::match_tlsa(records, current_chain, {reference});
    tls::DaneMatch next;
    if (!next_chain.empty()) {
        next = tls::match_tlsa(records, next_chain, {reference});
    }
    verdict.next_matches = next.matched;

    if (current.matched) {
        verdict.outcome = OwnTlsaOutcome::matches_current;
        verdict.how = current.how;
        return verdict;
    }
    verdict.reason = current.reason;
    if (!sni_chain.empty()) {
        tls::DaneMatch sni = tls::match_tlsa(records, sni_chain, {reference});
        if (sni.matched) {
            verdict.outcome = OwnTlsaOutcome::matches_sni;
            verdict.how = sni.how;
            return verdict;
        }
    }
    if (next.matched) {
        verdict.outcome = OwnTlsaOutcome::matches_next_only;
        verdict.how = next.how;
        return verdict;
    }
    verdict.outcome = OwnTlsaOutcome::matches_neither;
    return verdict;
}

OwnTlsaCheckSettings own_tlsa_check_settings(const config::Config& config, bool inbound_tls) {
    OwnTlsaCheckSettings settings;
    settings.hostname = config.myhostname;

    std::vector<std::uint16_t> ports = {25};
    auto add_port = [&ports](std::uint16_t port) {
        if (std::find(ports.begin(), ports.end(), port) == ports.end()) {
            ports.push_back(port);
        }
    };
    for (const auto& endpoint : config.smtpd.listen) {
        add_port(endpoint.port());
    }
    for (const auto& listener : config.smtpd.listeners) {
        add_port(listener.address.port());
    }
    settings.ports = std::move(ports);

    if (inbound_tls) {
        // serve creates this self-signed certificate when tls_cert_file is
        // empty; keep the path in step with inbound_tls() in src/cli/serve.cpp.
        settings.cert_file = config.smtpd.tls_cert_file.empty()
                                 ? (config.queue_directory / "tls" / "smtpd-cert.pem").string()
                                 : config.smtpd.tls_cert_file.string();
    }
    settings.next_cert_file = config.smtpd.tls_next_cert_file.string();
    if (inbound_tls) {
        for (const auto& entry : config.smtpd.tls_sni) {
            settings.sni_certificates.push_back({entry.name, entry.cert_file.string()});
        }
    }
    return settings;
}

void start_own_tlsa_check(asio::any_io_executor executor, dns::Resolver& resolver,
                          OwnTlsaCheckSettings settings) {
    // The host name as peers look it up: A-labels, lower case, no root dot.
    const std::string port_25_prefix = "_25._tcp.";
    std::string host;
    try {
        host = absolute_tlsa_owner(settings.hostname, 25).substr(port_25_prefix.size());
    } catch (const std::invalid_argument& error) {
        log::warning(std::string("TLSA check skipped: myhostname: ") + error.what());
        return;
    }
    host.pop_back();

    auto input = std::make_shared<CheckInput>();
    input->current_chain = load_chain_for_check(settings.cert_file);
    input->next_chain = load_chain_for_check(settings.next_cert_file);
    input->sni = covering_sni_entry(settings.sni_certificates, host);
    input->sni_chain = load_chain_for_check(input->sni.cert_file);
    input->settings = std::move(settings);

    for (std::uint16_t port : input->settings.ports) {
        std::string owner = "_" + std::to_string(port) + "._tcp." + host;

        asio::co_spawn(executor, check_owner(resolver, input, std::move(owner)), [](std::exception_ptr failure) {
            if (!failure) {
                return;
            }
            try {
                std::rethrow_exception(failure);
            } catch (const std::exception& error) {
                log::error(std::string("TLSA check failed: ") + error.what());
            }
        });
    }
}

}  // namespace tlsrelay::smtpd
