#pragma once

#include <string>
#include <vector>

namespace tlsrelay::cli {

// Runs the relay in the foreground until SIGINT or SIGTERM; returns the exit status.
int serve(const std::vector<std::string>& arguments);

// Submits a message from standard input to the local relay, with
// sendmail(1)'s options; returns a sysexits.h status.
int sendmail(const std::vector<std::string>& arguments);

// Exits 0 when the local relay sends a 220 greeting.
int healthcheck(const std::vector<std::string>& arguments);

// Adds or changes an SMTP AUTH user; returns the exit status.
int passwd(const std::vector<std::string>& arguments);

// Lists, shows, flushes, deletes, holds or releases queued mail, through
// the running server when there is one; returns the exit status.
int queue_command(const std::vector<std::string>& arguments);

// Prints the delivery counters per destination domain with the TLS levels
// they allow; returns the exit status.
int report_command(const std::vector<std::string>& arguments);

// Prints the TLSA records to publish for the relay's certificate chain,
// and for the next one when given; returns the exit status.
int tlsa(const std::vector<std::string>& arguments);

// Probes a destination's mail servers with delivery's own routing, TLS and
// policy code, quits before MAIL, and prints the verdict. Returns 0 when
// delivery would succeed, 1 when it would not, and 2 on a usage or
// configuration error.
int check(const std::vector<std::string>& arguments);

}  // namespace tlsrelay::cli
