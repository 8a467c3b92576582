// The resolver and delivery settings built from the configuration. `serve`
// and `check` both build them here, so a probe uses the same settings as
// delivery.
#pragma once

#include <memory>

#include "tlsrelay/config/config.hpp"
#include "tlsrelay/delivery/scheduler.hpp"
#include "tlsrelay/dns/resolver.hpp"
#include "tlsrelay/tls/context.hpp"

namespace tlsrelay::cli {

// Builds the resolver settings. [dns] timeout and attempts, when set, win
// over the options of /etc/resolv.conf, which apply only when the
// nameservers come from there too.
dns::ResolverOptions resolver_options(const config::Config& config);

// Builds the scheduler's settings: client options, TLS policies, next hops,
// retry times and limits. Reads sasl_password_file when one is configured,
// and raises what SaslPasswords::load raises.
delivery::SchedulerSettings scheduler_settings(const config::Config& config,
                                               std::shared_ptr<tls::ClientContext> client_tls);

}  // namespace tlsrelay::cli
