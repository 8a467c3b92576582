#include "delivery_settings.hpp"

#include "tlsrelay/util/log.hpp"

namespace tlsrelay::cli {

dns::ResolverOptions resolver_options(const config::Config& config) {
    dns::ResolverOptions options;
    if (config.dns.nameservers.empty()) {
        dns::apply_resolv_conf(options, dns::read_resolv_conf_file());
        if (options.nameservers.empty()) {
            log::warning("no nameserver in /etc/resolv.conf and none in [dns] nameservers: every MX lookup will fail");
        }
    } else {
        options.nameservers = config.dns.nameservers;
    }
    if (config.dns.timeout) {
        options.timeout = *config.dns.timeout;
    }
    if (config.dns.attempts) {
        options.attempts = *config.dns.attempts;
    }

    std::vector<asio::ip::network_v4> trusted_v4;
    std::vector<asio::ip::network_v6> trusted_v6;
    for (const auto& network : config.dns.trusted_ad_networks) {
        if (network.address.is_v4()) {
            trusted_v4.emplace_back(network.address.to_v4(), network.prefix_length);
        } else {
            trusted_v6.emplace_back(network.address.to_v6(), network.prefix_length);
        }
    }
    options.trusted_ad_networks = dns::TrustedNetworks(std::move(trusted_v4), std::move(trusted_v6));
    options.edns_buffer_size = config.dns.edns_buffer_size;
    options.cache_size = config.dns.cache_size;
    return options;
}

delivery::SchedulerSettings scheduler_settings(const config::Config& config,
                                               std::shared_ptr<tls::ClientContext> client_tls) {
    delivery::SchedulerSettings settings;
    settings.client.helo_name = config.myhostname;
    settings.default_policy.level = config.smtp.tls_security_level;
    settings.policy_table = config.smtp.tls_policy;
    settings.policy_settings.dane_insecure_mx = config.smtp.tls_dane_insecure_mx;
    settings.own_names = {config.myhostname};
    settings.own_endpoints = config.smtpd.listen;
    for (const auto& listener : config.smtpd.listeners) {
        settings.own_endpoints.push_back(listener.address);
    }
    settings.client.tls = std::move(client_tls);
    settings.client.connect_timeout = config.smtp.connect_timeout;
    settings.client.command_timeout = config.smtp.command_timeout;
    settings.connection_cache_time_limit = config.smtp.connection_cache_time_limit;
    settings.connection_reuse_time_limit = config.smtp.connection_reuse_time_limit;
    settings.relayhost = config.smtp.relayhost;
    for (const auto& entry : config.smtp.sender_relayhost) {
        settings.sender_relayhosts.emplace_back(entry.sender, entry.nexthop);
    }
    settings.client.tls_wrappermode = config.smtp.tls_wrappermode;
    if (!config.smtp.sasl_password_file.empty()) {
        auto passwords = delivery::SaslPasswords::load(config.smtp.sasl_password_file);
        log::info("SMTP AUTH credentials for " + std::to_string(passwords.size()) + " next hop(s) from " +
                  config.smtp.sasl_password_file.string());
        settings.client.sasl_passwords = std::make_shared<const delivery::SaslPasswords>(std::move(passwords));
    }
    for (const auto& transport : config.transports) {
        settings.transports.emplace_back(transport.domain, transport.nexthop);
    }
    settings.port = config.smtp.port;
    settings.minimal_backoff_time = config.queue.minimal_backoff_time;
    settings.maximal_backoff_time = config.queue.maximal_backoff_time;
    settings.queue_run_delay = config.queue.queue_run_delay;
    settings.maximal_queue_lifetime = config.queue.maximal_queue_lifetime;
    settings.bounce_queue_lifetime = config.queue.bounce_queue_lifetime;
    settings.delay_warning_time = config.queue.delay_warning_time;
    settings.destination_concurrency_limit = config.queue.default_destination_concurrency_limit;
    settings.max_parallel_deliveries = config.queue.default_process_limit;
    return settings;
}

}  // namespace tlsrelay::cli
