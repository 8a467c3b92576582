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

}  // namespace tlsrelay::cli
