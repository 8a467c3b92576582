// `tlsrelay check DOMAIN`: probes a destination as delivery would, with the
// relay's resolver, CA store and TLS policy, and explains the verdict.
// Routing (find_route), the host plan (plan_host), the TLS verdict and the
// SMTP session (Connection::open) are delivery's own code, so the verdict
// cannot drift from what delivery does. Each session ends with QUIT after
// EHLO, STARTTLS and the verdict; no MAIL command is ever sent.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/use_future.hpp>

#include "check.hpp"
#include "arguments.hpp"
#include "commands.hpp"
#include "delivery_settings.hpp"
#include "tlsrelay/config/config.hpp"
#include "tlsrelay/delivery/client.hpp"
#include "tlsrelay/delivery/routing.hpp"
#include "tlsrelay/delivery/scheduler.hpp"
#include "tlsrelay/policy/table.hpp"
#include "tlsrelay/smtp/command.hpp"
#include "tlsrelay/tls/hostname.hpp"
#include "tlsrelay/util/idna.hpp"
#include "tlsrelay/util/log.hpp"

namespace tlsrelay::cli {
namespace {

using namespace check_report;

const char* check_usage =
    "usage: tlsrelay check DOMAIN [--level L] [--json] [--port N] [--sender ADDRESS] [--verbose] [--config FILE]\n"
    "  --level L          probe with security level L instead of the configured one\n"
    "                     (none, may, encrypt, fingerprint, verify, secure, dane, dane-only)\n"
    "  --json             print one JSON object instead of the report\n"
    "  --port N           TCP port of the MX hosts (default: [smtp] port of --config)\n"
    "  --sender ADDRESS   envelope sender, for [[smtp.sender_relayhost]] (default: none)\n"
    "  --verbose          also print delivery's log lines to standard error\n"
    "  --config FILE      configuration file (default: /etc/tlsrelay/tlsrelay.toml)\n"
    "Exit status: 0 when delivery would succeed at the required level, 1 when it\n"
    "would defer or bounce, 2 on a usage or configuration error.\n";

struct CheckOptions {
    std::string domain;
    std::string config_file = "/etc/tlsrelay/tlsrelay.toml";
    std::optional<policy::Level> level;
    std::optional<std::uint16_t> port;
    std::string sender;
    bool json = false;
    bool verbose = false;
};

CheckOptions parse_options(const std::vector<std::string>& arguments) {
    CheckOptions options;
    for (std::size_t i = 0; i < arguments.size(); ++i) {
        std::string name = arguments[i];
        std::optional<std::string> value;
        if (auto equals = name.find('='); name.starts_with("--") && equals != std::string::npos) {
            value = name.substr(equals + 1);
            name.resize(equals);
        }
        auto take_value = [&]() -> std::string {
            if (value) {
                return *value;
            }
            if (i + 1 >= arguments.size()) {
                throw UsageError("missing value for " + name);
            }
            return arguments[++i];
        };

        if (name == "--json" || name == "--verbose") {
            if (value) {
                throw UsageError(name + " takes no value");
            }
            (name == "--json" ? options.json : options.verbose) = true;
        } else if (name == "--config") {
            options.config_file = take_value();
        } else if (name == "--level") {
            std::string text = take_value();
            options.level = policy::parse_level(text);
            if (!options.level) {
                throw UsageError("invalid --level \"" + text + "\": expected one of " + policy::level_names());
            }
        } else if (name == "--port") {
            options.port = parse_port(take_value());
        } else if (name == "--sender") {
            options.sender = take_value();
        } else if (name.starts_with("-")) {
            throw UsageError("unknown option " + name);
        } else if (options.domain.empty()) {
            options.domain = name;
        } else {
            throw UsageError("unexpected argument \"" + name + "\": give one DOMAIN");
        }
    }
    if (options.domain.empty()) {
        throw UsageError("missing DOMAIN");
    }
    // The same syntax RCPT TO accepts for a recipient's domain.
    std::string idna_error;
    auto a_label = to_a_label(options.domain, idna_error);
    if (!a_label || !smtp::is_valid_mailbox("postmaster@" + *a_label)) {
        throw UsageError("invalid DOMAIN \"" + options.domain +
                         "\": expected a domain name such as example.org or an address literal such as [192.0.2.1]");
    }
    if (!options.sender.empty() && !smtp::is_valid_mailbox(options.sender)) {
        throw UsageError("invalid --sender \"" + options.sender + "\": expected an address such as user@example.org");
    }
    return options;
}

// Looks up the MX records that routing looks up, to show preferences and a
// null or implicit MX. With the resolver's cache (on unless [dns]
// cache_size is 0) both lookups get the same reply.
asio::awaitable<MxReport> mx_report(dns::Resolver& resolver, const std::string& target) {
    MxReport report;
    auto answer = co_await resolver.query_mx(target);
    report.secure = answer.secure;
    report.records = answer.records;
    switch (answer.status) {
    case dns::Status::ok: {
        bool null_mx = answer.records.size() == 1 && answer.records.front().exchange.empty();
        report.status = null_mx ? "null" : "ok";
        break;
    }
    case dns::Status::nodata:
        report.status = "implicit";
        break;
    case dns::Status::nxdomain:
        report.status = "nxdomain";
        break;
    case dns::Status::temporary_failure:
        report.status = "failed";
        report.reason = answer.reason;
        break;
    }
    co_return report;
}

// Fills in what the TLS session showed: the chain's details, the name match
// against the plan's reference names and the DANE match, derived with the
// functions the policy's verdict uses.
void describe_session(ProbeReport& probe, const policy::HostPlan& plan) {
    const auto& session = *probe.session;
    for (const auto& der : session.peer_chain_der) {
        CertificateReport certificate;
        try {
            certificate.details = tls::describe_certificate(der);
        } catch (const std::exception& error) {
            certificate.error = error.what();
        }
        probe.chain.push_back(std::move(certificate));
    }

    // judge() matches the MX host name when the plan names no reference.
    probe.reference_names = plan.reference_names.empty() ? std::vector<std::string>{probe.host} : plan.reference_names;
    for (const auto& name : probe.reference_names) {
        if (policy::name_matches(session.peer_names, name)) {
            probe.matched_name = name;
            break;
        }
    }
    if (!plan.tlsa_records.empty()) {
        probe.dane = tls::match_tlsa(plan.tlsa_records, session.peer_chain_der, plan.reference_names);
    }
}

// Whether the server listed STARTTLS, from a session that failed: the
// policy's own verdict on "not offered" gives the exact reason the client
// records in that case.
std::optional<bool> starttls_offered_after_failure(const delivery::AttemptResult& result,
                                                   const policy::HostPlan& plan, const delivery::Target& target,
                                                   bool implicit_tls) {
    if (implicit_tls || !result.connected) {
        return std::nullopt;
    }
    if (result.tls_session) {
        return true;
    }
    if (result.phase != delivery::Phase::starttls) {
        return std::nullopt;
    }
    policy::TlsFacts not_offered;
    not_offered.stage = policy::TlsStage::not_offered;
    auto verdict = policy::judge(plan, not_offered, format_peer(target.host, target.address, target.port));
    return result.reason != verdict.reason;
}

// Opens one session as delivery does, records what it showed, and quits
// before MAIL.
asio::awaitable<ProbeReport> probe_address(const delivery::ClientOptions& client, delivery::Target target,
                                           const policy::HostPlan& plan, bool use_tls) {
    ProbeReport probe;
    probe.host = target.host;
    probe.address = target.address;
    probe.port = target.port;
    probe.plaintext_retry = !use_tls;
    const bool implicit_tls = delivery::uses_implicit_tls(client.tls_wrappermode, target.port);

    delivery::AttemptResult result;
    auto connection = co_await delivery::Connection::open(client, target, plan, use_tls, result);
    probe.connected = result.connected;
    probe.trust = result.trust;
    probe.trust_how = result.trust_how;
    if (connection) {
        probe.action = policy::Action::deliver;
        probe.trust = connection->trust();
        probe.extensions = connection->extensions();
        if (const auto* session = connection->tls_session()) {
            probe.session = *session;
        }

        // A session without TLS has only the one EHLO reply, which shows
        // STARTTLS also when the level or the retry did not use it.
        if (probe.session) {
            probe.starttls_offered = implicit_tls ? std::nullopt : std::optional<bool>(true);
        } else {
            const auto& keywords = probe.extensions;
            probe.starttls_offered = std::find(keywords.begin(), keywords.end(), "STARTTLS") != keywords.end();
        }
        co_await connection->quit();
    } else {
        probe.action = result.retry_without_tls ? policy::Action::deliver_in_clear : policy::Action::next_host;
        probe.dsn = result.dsn;
        probe.reason = result.reason;
        probe.extensions = result.plaintext_extensions;
        probe.session = result.tls_session;
        probe.starttls_offered = starttls_offered_after_failure(result, plan, target, implicit_tls);
    }
    if (probe.session) {
        describe_session(probe, plan);
    }
    co_return probe;
}

struct CheckContext {
    const delivery::SchedulerSettings& settings;
    dns::Resolver& resolver;
    const CheckOptions& options;
    std::string default_origin;
};

// Finds the policy for the next hop as deliver_domain does: the relayhost as
// "[host]:port", else the recipient domain and its parents, else the
// global default.
policy::Policy choose_policy(const CheckContext& context, const std::optional<NextHop>& hop, Report& report) {
    report.policy.lookup_key =
        hop ? policy::next_hop_key(hop->host, hop->port, hop->port_given, hop->mx_lookup) : report.domain;
    const policy::Entry* entry = context.settings.policy_table.lookup(report.policy.lookup_key);
    policy::Policy chosen = entry ? entry->policy : context.settings.default_policy;
    report.policy.origin = entry ? entry->origin : context.default_origin;
    report.policy.level = chosen.level;
    if (context.options.level && *context.options.level != chosen.level) {
        report.policy.configured_level = chosen.level;
        chosen.level = *context.options.level;
        report.policy.level = chosen.level;
    }
    return chosen;
}

// Plans one host as delivery does and probes each of its addresses. When
// the level does not use TLSA records, they are still looked up to be shown.
asio::awaitable<HostReport> check_host(const CheckContext& context, const policy::Policy& chosen,
                                       const delivery::Route& route, const delivery::RouteHost& host,
                                       const std::string& next_hop) {
    HostReport report;
    report.name = host.name;
    report.secure = host.secure;
    report.canonical_name = host.canonical_name;
    report.addresses = host.addresses;

    const auto& policy_settings = context.settings.policy_settings;
    report.tlsa.facts = co_await delivery::gather_dns_facts(context.resolver, policy_settings, chosen, route, host);
    report.tlsa.used = report.tlsa.facts.tlsa != policy::TlsaLookup::not_done;
    report.plan = policy::plan_host(chosen, policy::Destination{next_hop, host.name}, report.tlsa.facts,
                                    policy_settings);
    if (!report.tlsa.used) {
        policy::Policy display = chosen;
        display.level = policy::Level::dane;
        report.tlsa.facts = co_await delivery::gather_dns_facts(context.resolver, policy_settings, display, route, host);
    }
    if (report.plan.action == policy::Action::next_host) {
        co_return report;
    }

    for (const auto& address : host.addresses) {
        delivery::Target target{host.name, address, route.port};
        auto probe = co_await probe_address(context.settings.client, target, report.plan, true);
        bool retry = probe.action == policy::Action::deliver_in_clear;
        report.probes.push_back(std::move(probe));
        if (retry) {
            report.probes.push_back(co_await probe_address(context.settings.client, target, report.plan, false));
        }
    }
    co_return report;
}

// The verdict delivery would reach: the first session in host and address
// order that would carry the mail, else the last failure, as
// deliver_domain keeps it.
VerdictReport overall_verdict(const Report& report) {
    VerdictReport verdict;
    verdict.dsn = "4.4.1";
    verdict.reason = "no host of " + report.domain + " could be used";
    for (const auto& host : report.hosts) {
        if (host.plan.action == policy::Action::next_host) {
            verdict = VerdictReport{};
            verdict.dsn = "4.7.5";
            verdict.reason = host.plan.reason;
            continue;
        }
        for (const auto& probe : host.probes) {
            std::string relay = format_peer(probe.host, probe.address, probe.port);
            if (probe.action == policy::Action::deliver) {
                verdict = VerdictReport{};
                verdict.deliver = true;
                verdict.status = "sent";
                verdict.trust = probe.trust;
                verdict.relay = relay;
                verdict.reason = probe.trust_how;
                return verdict;
            }
            if (probe.action == policy::Action::deliver_in_clear) {
                continue;  // the plaintext retry that follows decides
            }
            verdict = VerdictReport{};
            verdict.trust = probe.trust;
            verdict.relay = probe.connected ? relay : "none";
            verdict.dsn = probe.dsn;
            verdict.reason = probe.reason;
        }
    }
    return verdict;
}

asio::awaitable<Report> run_check(const CheckContext& context) {
    Report report;
    std::string idna_error;
    auto domain = to_a_label(context.options.domain, idna_error);
    report.domain = domain.value_or(context.options.domain);
    if (!domain) {
        report.verdict.status = "bounced";
        report.verdict.dsn = "5.1.2";
        report.verdict.reason = "invalid domain name " + context.options.domain + ": " + idna_error;
        co_return report;
    }

    auto [hop, source] = delivery::choose_next_hop(context.settings, report.domain, context.options.sender);
    report.next_hop.host = hop ? hop->host : report.domain;
    report.next_hop.source = source;
    report.next_hop.mx_lookup = hop ? hop->mx_lookup : true;
    // Routing sends mail for an address literal to that address, as it is.
    std::string literal = report.domain;
    if (literal.size() >= 2 && literal.front() == '[' && literal.back() == ']') {
        literal = literal.substr(1, literal.size() - 2);
    }
    std::error_code not_an_address;
    asio::ip::make_address(literal, not_an_address);
    if (!hop && !not_an_address) {
        report.next_hop.source = "address literal";
        report.next_hop.mx_lookup = false;
    }
    report.next_hop.port = hop && hop->port_given ? hop->port : context.settings.port;
    auto chosen = choose_policy(context, hop, report);

    std::error_code literal_error;
    std::string target = report.next_hop.host;
    if (target.starts_with('[') && target.ends_with(']')) {
        target = target.substr(1, target.size() - 2);
    }
    asio::ip::make_address(target, literal_error);
    if (report.next_hop.mx_lookup && literal_error) {
        report.mx = co_await mx_report(context.resolver, report.next_hop.host);
    }

    auto route = co_await delivery::find_route(context.resolver, report.domain, hop, context.settings.port);
    if (route.status != delivery::Route::Status::ok) {
        report.verdict.status = route.status == delivery::Route::Status::permanent_failure ? "bounced" : "deferred";
        report.verdict.dsn = route.dsn;
        report.verdict.reason = route.reason;
        co_return report;
    }
    if (delivery::loops_back(context.settings, route)) {
        report.verdict.status = "bounced";
        report.verdict.dsn = "5.4.6";
        report.verdict.reason = "mail for " + report.domain + " loops back to myself";
        co_return report;
    }

    for (const auto& host : route.hosts) {
        auto host_report = co_await check_host(context, chosen, route, host, report.next_hop.host);
        for (const auto& record : report.mx.records) {
            if (record.exchange == host.name) {
                host_report.preference = record.preference;
            }
        }
        report.hosts.push_back(std::move(host_report));
    }
    report.verdict = overall_verdict(report);
    co_return report;
}

}  // namespace

int check(const std::vector<std::string>& arguments) {
    for (const auto& argument : arguments) {
        if (argument == "--help" || argument == "-h") {
            std::fputs(check_usage, stdout);
            return 0;
        }
    }
    CheckOptions options;
    try {
        options = parse_options(arguments);
    } catch (const UsageError& error) {
        std::fprintf(stderr, "tlsrelay check: %s\n%s", error.what(), check_usage);
        return 2;
    }
    log::set_min_level(options.verbose ? log::Level::info : log::Level::error);

    config::Config config;
    delivery::SchedulerSettings settings;
    auto environment = config::process_environment();
    try {
        config = config::load(options.config_file, environment);
        if (options.port) {
            config.smtp.port = *options.port;
        }
        auto client_tls =
            tls::make_client_context({config.smtp.tls_CAfile.string(), config.smtp.tls_CApath.string()});
        settings = scheduler_settings(config, client_tls);
    } catch (const std::exception& error) {
        std::fprintf(stderr, "tlsrelay: %s\n", error.what());
        return 2;
    }

    asio::io_context io;
    dns::Resolver resolver(io.get_executor(), resolver_options(config));
    std::string default_origin = "[smtp] tls_security_level in " + options.config_file + " (global default)";
    for (const auto& [name, value] : environment) {
        if (name == "TLSRELAY_SMTP__TLS_SECURITY_LEVEL") {
            default_origin = name + " in the environment (global default)";
        }
    }
    CheckContext context{settings, resolver, options, default_origin};
    auto future = asio::co_spawn(io, run_check(context), asio::use_future);
    io.run();

    Report report;
    try {
        report = future.get();
    } catch (const std::exception& error) {
        std::fprintf(stderr, "tlsrelay check: %s failed unexpectedly: %s\n", options.domain.c_str(), error.what());
        return 1;
    }
    if (options.json) {
        print_json(report);
    } else {
        print_text(report);
    }
    return report.verdict.deliver ? 0 : 1;
}

}  // namespace tlsrelay::cli
