#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <optional>

#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>

#include "commands.hpp"
#include "tlsrelay/config/config.hpp"
#include "tlsrelay/delivery/scheduler.hpp"
#include "tlsrelay/dns/resolver.hpp"
#include "tlsrelay/queue/spool.hpp"
#include "tlsrelay/smtpd/server.hpp"
#include "tlsrelay/tls/context.hpp"
#include "tlsrelay/util/log.hpp"

namespace tlsrelay::cli {
namespace {

namespace fs = std::filesystem;

// How long running deliveries may take to finish after a stop signal.
constexpr auto shutdown_grace = std::chrono::seconds(10);

std::optional<std::string> config_argument(const std::vector<std::string>& arguments) {
    for (std::size_t i = 0; i < arguments.size(); ++i) {
        if (arguments[i] == "--config" && i + 1 < arguments.size()) {
            return arguments[i + 1];
        }
        if (arguments[i].starts_with("--config=")) {
            return arguments[i].substr(9);
        }
    }
    return std::nullopt;
}

// Returns the server context, creating a self-signed certificate in the
// queue directory when none is configured.
std::shared_ptr<tls::ServerContext> inbound_tls(const config::Config& config) {
    if (config.smtpd.tls_security_level == config::InboundTlsLevel::none) {
        return nullptr;
    }
    fs::path cert = config.smtpd.tls_cert_file;
    fs::path key = config.smtpd.tls_key_file;
    if (cert.empty()) {
        fs::create_directories(config.queue_directory / "tls");
        cert = config.queue_directory / "tls" / "smtpd-cert.pem";
        key = config.queue_directory / "tls" / "smtpd-key.pem";
        if (!fs::exists(cert) || !fs::exists(key)) {
            tls::generate_self_signed(config.myhostname, cert.string(), key.string());
            log::info("generated a self-signed certificate for " + config.myhostname + " in " + cert.string());
        }
    }
    return tls::make_server_context(cert.string(), key.string());
}

std::vector<dns::Nameserver> nameservers(const config::Config& config) {
    if (!config.dns.nameservers.empty()) {
        return config.dns.nameservers;
    }
    auto servers = dns::read_resolv_conf();
    if (servers.empty()) {
        log::warning("no nameserver in /etc/resolv.conf and none in [dns] nameservers: every MX lookup will fail");
    }
    return servers;
}

// Ends the event loop once no delivery is running, or at `give_up`.
void wait_for_deliveries(asio::steady_timer& timer, const delivery::Scheduler& scheduler,
                         std::chrono::steady_clock::time_point give_up, asio::io_context& io) {
    if (scheduler.active_deliveries() == 0) {
        io.stop();
        return;
    }
    if (std::chrono::steady_clock::now() >= give_up) {
        log::warning(std::to_string(scheduler.active_deliveries()) +
                     " delivery attempt(s) cut short; they stay queued and are retried at the next start");
        io.stop();
        return;
    }
    timer.expires_after(std::chrono::milliseconds(100));
    timer.async_wait([&timer, &scheduler, give_up, &io](const std::error_code&) {
        wait_for_deliveries(timer, scheduler, give_up, io);
    });
}

int run(const config::Config& config) {
    asio::io_context io;

    queue::Spool spool(config.queue_directory);
    auto server_tls = inbound_tls(config);
    auto client_tls = tls::make_client_context({config.smtp.tls_CAfile.string(), config.smtp.tls_CApath.string()});

    dns::ResolverOptions resolver_options;
    resolver_options.nameservers = nameservers(config);
    resolver_options.timeout = config.dns.timeout;
    resolver_options.attempts = config.dns.attempts;
    dns::Resolver resolver(io.get_executor(), resolver_options);

    delivery::SchedulerSettings scheduler_settings;
    scheduler_settings.client.helo_name = config.myhostname;
    scheduler_settings.client.level = config.smtp.tls_security_level;
    scheduler_settings.client.tls = client_tls;
    scheduler_settings.client.connect_timeout = config.smtp.connect_timeout;
    scheduler_settings.client.command_timeout = config.smtp.command_timeout;
    scheduler_settings.relayhost = config.smtp.relayhost;
    scheduler_settings.port = config.smtp.port;
    scheduler_settings.minimal_backoff_time = config.queue.minimal_backoff_time;
    scheduler_settings.maximal_backoff_time = config.queue.maximal_backoff_time;
    delivery::Scheduler scheduler(io.get_executor(), spool, resolver, scheduler_settings);
    scheduler.recover();

    smtpd::ServerSettings server_settings;
    server_settings.protocol.myhostname = config.myhostname;
    server_settings.protocol.tls_level = config.smtpd.tls_security_level;
    server_settings.protocol.tls_available = server_tls != nullptr;
    server_settings.protocol.mynetworks = config.smtpd.mynetworks;
    server_settings.protocol.message_size_limit = config.message_size_limit;
    server_settings.timeout = config.smtpd.timeout;
    server_settings.tls = server_tls;
    server_settings.spool = &spool;
    server_settings.on_queued = [&scheduler](const queue::Envelope& envelope) { scheduler.enqueue(envelope); };
    smtpd::Server server(io.get_executor(), server_settings);
    server.listen(config.smtpd.listen);
    scheduler.start();
    log::info("tlsrelay " TLSRELAY_VERSION " started: myhostname=" + config.myhostname +
              ", queue_directory=" + config.queue_directory.string() +
              ", smtp_tls_security_level=" + policy::to_string(config.smtp.tls_security_level));

    // Stop in two steps: no new connections or deliveries at once, then a
    // bounded wait for running deliveries before the event loop ends.
    asio::signal_set signals(io, SIGINT, SIGTERM);
    asio::steady_timer grace(io);
    signals.async_wait([&](const std::error_code& error, int signal_number) {
        if (error) {
            return;
        }
        log::info(std::string("received ") + (signal_number == SIGINT ? "SIGINT" : "SIGTERM") + ", stopping");
        server.stop();
        scheduler.stop();
        auto give_up = std::chrono::steady_clock::now() + shutdown_grace;
        wait_for_deliveries(grace, scheduler, give_up, io);
    });

    io.run();
    log::info("stopped with " + std::to_string(scheduler.queued_messages()) + " message(s) in the queue");
    return 0;
}

}  // namespace

int serve(const std::vector<std::string>& arguments) {
    auto file = config_argument(arguments);
    if (!file) {
        std::fputs("tlsrelay: serve needs --config FILE\n", stderr);
        return 2;
    }

    // A peer closing the connection must not kill the process with SIGPIPE.
    ::signal(SIGPIPE, SIG_IGN);

    try {
        auto config = config::load(*file);
        return run(config);
    } catch (const config::ConfigError& error) {
        std::fprintf(stderr, "tlsrelay: %s\n", error.what());
        return 1;
    } catch (const std::exception& error) {
        log::error(std::string("cannot start: ") + error.what());
        return 1;
    }
}

}  // namespace tlsrelay::cli
