#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>

#include <asio/io_context.hpp>
#include <asio/thread_pool.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>

#include "commands.hpp"
#include "observability.hpp"
#include "delivery_settings.hpp"
#include "tlsrelay/config/config.hpp"
#include "tlsrelay/delivery/scheduler.hpp"
#include "tlsrelay/dns/resolver.hpp"
#include "tlsrelay/queue/control.hpp"
#include "tlsrelay/queue/committer.hpp"
#include "tlsrelay/queue/spool.hpp"
#include "tlsrelay/smtpd/own_tlsa.hpp"
#include "tlsrelay/smtpd/server.hpp"
#include "tlsrelay/tls/context.hpp"
#include "tlsrelay/util/log.hpp"

namespace tlsrelay::cli {
namespace {

namespace fs = std::filesystem;

// How long running deliveries may take to finish after a stop signal. It
// stays well under the 10 s after which `docker stop` sends SIGKILL; an
// attempt cut short leaves its recipients as they were and is retried.
constexpr auto shutdown_grace = std::chrono::seconds(5);

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
    bool needed = config.smtpd.tls_security_level != config::InboundTlsLevel::none;
    for (const auto& listener : config.smtpd.listeners) {
        needed |= listener.implicit_tls ||
                  listener.tls_security_level.value_or(config.smtpd.tls_security_level) != config::InboundTlsLevel::none;
    }
    if (!needed) {
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
    tls::ServerContextOptions options;
    options.cert_file = cert.string();
    options.key_file = key.string();
    options.require_tls13 = config.smtpd.tls_require_tls13;
    for (const auto& entry : config.smtpd.tls_sni) {
        options.sni.push_back({entry.name, entry.cert_file.string(), entry.key_file.string()});
    }
    return tls::make_server_context(options);
}

// Creates one server per listener: the simple [smtpd] listen addresses
// share one set of settings, and each [[smtpd.listener]] table has its own.
std::vector<std::unique_ptr<smtpd::Server>> inbound_servers(
    const config::Config& config, asio::any_io_executor executor, asio::any_io_executor auth_executor,
    asio::any_io_executor disk_executor,
    std::shared_ptr<tls::ServerContext> server_tls, queue::Spool& spool, queue::Committer& committer,
    std::function<void(queue::StoredMessage)> on_queued) {
    std::shared_ptr<const smtpd::UserDatabase> users;
    if (!config.smtpd.auth_users_file.empty()) {
        users = std::make_shared<const smtpd::UserDatabase>(smtpd::UserDatabase::load(config.smtpd.auth_users_file));
        log::info("SMTP AUTH enabled with " + std::to_string(users->size()) + " user(s) from " +
                  config.smtpd.auth_users_file.string());
    }
    auto connections = std::make_shared<smtpd::ConnectionCounter>();
    connections->limit = config.smtpd.connection_limit;
    connections->per_client_limit = config.smtpd.client_connection_count_limit;

    smtpd::ServerSettings base;
    base.protocol.myhostname = config.myhostname;
    base.protocol.tls_level = config.smtpd.tls_security_level;
    base.protocol.tls_available = server_tls != nullptr;
    base.protocol.auth_available = users != nullptr;
    base.protocol.mynetworks = config.smtpd.mynetworks;
    base.protocol.relay_domains = config.relay_domains;
    base.protocol.message_size_limit = config.message_size_limit;
    base.protocol.recipient_limit = config.smtpd.recipient_limit;
    base.protocol.hard_error_limit = config.smtpd.hard_error_limit;
    base.timeout = config.smtpd.timeout;
    base.bare_newline = config.smtpd.forbid_bare_newline == config::BareNewlinePolicy::reject
                            ? smtp::BareNewline::reject
                            : smtp::BareNewline::normalize;
    base.hopcount_limit = config.hopcount_limit;
    base.tls = server_tls;
    base.users = users;
    base.auth_executor = auth_executor;
    base.disk_executor = disk_executor;
    base.connections = connections;
    base.spool = &spool;
    base.committer = &committer;
    base.on_queued = std::move(on_queued);

    std::vector<std::unique_ptr<smtpd::Server>> servers;
    if (!config.smtpd.listen.empty()) {
        servers.push_back(std::make_unique<smtpd::Server>(executor, base));
        servers.back()->listen(config.smtpd.listen);
    }
    for (const auto& listener : config.smtpd.listeners) {
        auto settings = base;
        settings.implicit_tls = listener.implicit_tls;
        settings.proxy_protocol = listener.proxy_protocol;
        settings.protocol.tls_level = listener.tls_security_level.value_or(config.smtpd.tls_security_level);
        settings.protocol.auth_required = listener.auth_required;
        if (listener.implicit_tls) {
            // The session is encrypted before the greeting: no STARTTLS.
            settings.protocol.tls_level = config::InboundTlsLevel::none;
        }
        servers.push_back(std::make_unique<smtpd::Server>(executor, settings));
        servers.back()->listen({listener.address});
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

// Runs the relay until SIGINT or SIGTERM, or until SIGHUP brings a valid
// new configuration, which is returned in `reloaded` so the caller runs
// again with it. Queued mail stays on disk across a reload; sessions still
// open when the grace period ends are closed, and their clients retry.
int run(const config::Config& config, const std::function<config::Config()>& read_config,
        std::optional<config::Config>& reloaded, Observability& observability) {
    asio::io_context io;

    queue::Spool spool(config.queue_directory);
    // One server per queue: `tlsrelay queue` commands rely on this lock to
    // know whether to ask a running server or change the spool themselves.
    auto spool_lock = queue::SpoolLock::try_acquire(config.queue_directory);
    if (!spool_lock) {
        log::error("cannot start: another tlsrelay serve is using queue_directory " + config.queue_directory.string());
        return 1;
    }
    auto server_tls = inbound_tls(config);
    auto client_tls = tls::make_client_context({config.smtp.tls_CAfile.string(), config.smtp.tls_CApath.string()});

    dns::Resolver resolver(io.get_executor(), resolver_options(config));

    asio::thread_pool auth_pool(1);
    // fsync waits on the disk, not the CPU, so several run at once. New
    // messages and removals go through the committer's batches, and the
    // disk pool runs the state writes after a deferral.
    asio::thread_pool disk_pool(4);
    queue::Committer committer(spool, 4);

    auto settings = scheduler_settings(config, client_tls);
    settings.recorder = observability.recorder;
    settings.disk_executor = disk_pool.get_executor();
    settings.committer = &committer;
    delivery::Scheduler scheduler(io.get_executor(), spool, resolver, std::move(settings));
    scheduler.recover();
    auto servers = inbound_servers(config, io.get_executor(), auth_pool.get_executor(), disk_pool.get_executor(),
                                   server_tls, spool, committer,
                                   [&scheduler](queue::StoredMessage message) { scheduler.enqueue(std::move(message)); });
    // The metrics listener comes before the "started" line, because failing
    // to bind it stops the start.
    RunObservability run_observability(io, observability, config, scheduler, servers);
    scheduler.start();
    log::info("tlsrelay " TLSRELAY_VERSION " started: myhostname=" + config.myhostname +
              ", queue_directory=" + config.queue_directory.string() +
              ", smtp_tls_security_level=" + policy::to_string(config.smtp.tls_security_level));
    // Compares the TLSA records published for myhostname with the served
    // certificate, in the background: a slow DNS never delays start-up.
    smtpd::start_own_tlsa_check(io.get_executor(), resolver,
                                smtpd::own_tlsa_check_settings(config, server_tls != nullptr));

    // Stop in two steps: no new connections or deliveries at once, then a
    // bounded wait for running deliveries before the event loop ends.
    asio::signal_set signals(io, SIGINT, SIGTERM, SIGHUP);
    asio::steady_timer grace(io);
    auto stop = [&] {
        for (auto& server : servers) {
            server->stop();
        }
        scheduler.stop();
        run_observability.stop();
        auto give_up = std::chrono::steady_clock::now() + shutdown_grace;
        wait_for_deliveries(grace, scheduler, give_up, io);
    };
    std::function<void(const std::error_code&, int)> on_signal = [&](const std::error_code& error, int number) {
        if (error) {
            return;
        }
        if (number != SIGHUP) {
            log::info(std::string("received ") + (number == SIGINT ? "SIGINT" : "SIGTERM") + ", stopping");
            stop();
            return;
        }

        // A new configuration replaces the running one only when it loads
        // and its certificates and CA store load too; otherwise the relay
        // goes on as it was.
        try {
            auto next = read_config();
            inbound_tls(next);
            tls::make_client_context({next.smtp.tls_CAfile.string(), next.smtp.tls_CApath.string()});
            log::info("received SIGHUP, reloading the configuration");
            reloaded = std::move(next);
            stop();
            return;
        } catch (const std::exception& failure) {
            log::error(std::string("reload failed, keeping the running configuration: ") + failure.what());
        }
        signals.async_wait(on_signal);
    };
    signals.async_wait(on_signal);

    io.run();
    auth_pool.join();
    disk_pool.join();
    log::info("stopped with " + std::to_string(scheduler.queued_messages()) + " message(s) in the queue");
    return 0;
}

}  // namespace

int serve(const std::vector<std::string>& arguments) {
    auto file = config_argument(arguments);

    // A peer closing the connection must not kill the process with SIGPIPE.
    ::signal(SIGPIPE, SIG_IGN);

    try {
        auto environment = config::process_environment();
        // A container sidecar may run from TLSRELAY_* variables alone;
        // relative paths then start at the working directory.
        auto read_config = [&file, &environment] {
            return file ? config::load(*file, environment)
                        : config::parse("", fs::current_path() / "tlsrelay.toml", environment);
        };
        auto config = read_config();
        Observability observability;
        prepare_observability(observability, config);
        if (!file) {
            log::info("no --config given: using the built-in defaults and TLSRELAY_* variables");
        }
        for (;;) {
            std::optional<config::Config> reloaded;
            int status = run(config, read_config, reloaded, observability);
            if (!reloaded) {
                return status;
            }
            config = std::move(*reloaded);
            prepare_observability(observability, config);
        }
    } catch (const config::ConfigError& error) {
        std::fprintf(stderr, "tlsrelay: %s\n", error.what());
        return 1;
    } catch (const std::exception& error) {
        log::error(std::string("cannot start: ") + error.what());
        return 1;
    }
}

}  // namespace tlsrelay::cli
