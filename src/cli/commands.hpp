#pragma once

#include <string>
#include <vector>

namespace tlsrelay::cli {

// Runs the relay in the foreground until SIGINT or SIGTERM; returns the exit status.
int serve(const std::vector<std::string>& arguments);

// Adds or changes an SMTP AUTH user; returns the exit status.
int passwd(const std::vector<std::string>& arguments);

}  // namespace tlsrelay::cli
