// `tlsrelay report`: prints the delivery counters that the server keeps in
// <queue_directory>/stats/tls-outcomes, per destination domain, with the
// stricter TLS levels they allow. Reading is safe while the server runs
// because the server replaces the file by a rename.
#include <charconv>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "commands.hpp"
#include "tlsrelay/config/config.hpp"
#include "tlsrelay/stats/recorder.hpp"
#include "tlsrelay/stats/report.hpp"

namespace tlsrelay::cli {
namespace {

const char* report_usage =
    "usage: tlsrelay report [--config FILE] [--json] [--days N]\n"
    "  --days N   the last N days (UTC, today included); default and maximum: [metrics] window\n";

}  // namespace

int report_command(const std::vector<std::string>& arguments) {
    std::string config_file = "/etc/tlsrelay/tlsrelay.toml";
    bool json = false;
    std::optional<int> days;
    for (std::size_t i = 0; i < arguments.size(); ++i) {
        const auto& argument = arguments[i];
        if (argument == "--config" && i + 1 < arguments.size()) {
            config_file = arguments[++i];
        } else if (argument.starts_with("--config=")) {
            config_file = argument.substr(9);
        } else if (argument == "--json") {
            json = true;
        } else if (argument == "--days" && i + 1 < arguments.size()) {
            const auto& text = arguments[++i];
            int value = 0;
            auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
            if (error != std::errc() || end != text.data() + text.size() || value < 1) {
                std::fprintf(stderr, "tlsrelay report: invalid --days \"%s\": expected a whole number of days from 1\n",
                             text.c_str());
                return 2;
            }
            days = value;
        } else {
            std::fputs(report_usage, stderr);
            return 2;
        }
    }

    try {
        auto config = config::load(config_file, config::process_environment());
        int window = config.metrics.window_days;
        if (days && *days > window) {
            std::fprintf(stderr,
                         "tlsrelay report: --days %d is longer than [metrics] window (%d days), the days the server "
                         "keeps; showing %d days\n",
                         *days, window, window);
        }
        int days_shown = days ? std::min(*days, window) : window;

        auto file = stats::outcomes_file(config.queue_directory);
        std::vector<std::string> problems;
        auto history = stats::read_outcomes(file, problems);
        for (const auto& problem : problems) {
            std::fprintf(stderr, "tlsrelay report: %s: %s\n", file.string().c_str(), problem.c_str());
        }

        auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
        auto report = stats::build_report(history, days_shown, stats::day_of(now), file.string(),
                                          [&config](const std::string& domain) {
                                              return stats::policy_for(config, domain);
                                          });
        auto text = json ? stats::render_json(report) : stats::render_text(report);
        std::fwrite(text.data(), 1, text.size(), stdout);
        return 0;
    } catch (const config::ConfigError& error) {
        std::fprintf(stderr, "tlsrelay: %s\n", error.what());
        return 1;
    } catch (const std::exception& error) {
        std::fprintf(stderr, "tlsrelay report: %s\n", error.what());
        return 1;
    }
}

}  // namespace tlsrelay::cli
