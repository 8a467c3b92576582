#include "tlsrelay/util/log.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace tlsrelay::log {
namespace {

std::atomic<Level> min_level{Level::info};
std::mutex write_mutex;

const char* level_prefix(Level level) {
    switch (level) {
    case Level::warning: return "warning: ";
    case Level::error: return "error: ";
    case Level::debug: return "debug: ";
    case Level::info: break;
    }
    return "";
}

}  // namespace

void set_min_level(Level level) { min_level = level; }

void write(Level level, std::string_view message) {
    if (level < min_level.load()) {
        return;
    }

    // RFC 3339 timestamp in UTC with milliseconds, so lines from several
    // hosts and containers sort and compare without a time zone table.
    auto now = std::chrono::system_clock::now();
    auto seconds = std::chrono::system_clock::to_time_t(now);
    auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm utc{};
    gmtime_r(&seconds, &utc);
    char stamp[64];
    std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900, utc.tm_mon + 1,
                  utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, static_cast<int>(millis));

    std::string line;
    line.reserve(message.size() + 64);
    line += stamp;
    line += " tlsrelay[";
    line += std::to_string(getpid());
    line += "]: ";
    line += level_prefix(level);
    line += message;
    line += '\n';

    std::lock_guard lock(write_mutex);
    std::fwrite(line.data(), 1, line.size(), stderr);
    std::fflush(stderr);
}

}  // namespace tlsrelay::log
