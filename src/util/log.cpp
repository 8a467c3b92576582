#include "tlsrelay/util/log.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

#include "tlsrelay/util/json.hpp"

namespace tlsrelay::log {
namespace {

std::atomic<Level> min_level{Level::info};
std::atomic<Format> output_format{Format::text};
std::atomic<std::uint64_t> errors_written{0};
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

const char* level_name(Level level) {
    switch (level) {
    case Level::warning: return "warning";
    case Level::error: return "error";
    case Level::debug: return "debug";
    case Level::info: break;
    }
    return "info";
}

// Names the JSON line sets itself; a message field with one of them is dropped.
constexpr std::string_view reserved_names[] = {"time", "level", "program", "pid", "message"};

bool is_queue_id_character(char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); }

// The length of a "key=" prefix at `at` (key: a lower-case letter, then
// letters, digits or '_'), or 0 when there is none.
std::size_t key_length(std::string_view text, std::size_t at) {
    std::size_t end = at;
    while (end < text.size() && ((text[end] >= 'a' && text[end] <= 'z') || text[end] == '_' ||
                                 (end > at && text[end] >= '0' && text[end] <= '9'))) {
        ++end;
    }
    if (end == at || end >= text.size() || text[end] != '=' || text[at] == '_') {
        return 0;
    }
    return end - at;
}

// True when a value may end at `at`: the end of the text, the ", " before
// the next pair, or the " (" of the closing reason.
bool at_value_end(std::string_view text, std::size_t at) {
    return at == text.size() || text.substr(at, 2) == ", " || text.substr(at, 2) == " (";
}

void add_field(std::vector<std::pair<std::string, std::string>>& fields, std::string_view key, std::string_view value) {
    if (std::find(std::begin(reserved_names), std::end(reserved_names), key) != std::end(reserved_names)) {
        return;
    }
    bool seen = std::any_of(fields.begin(), fields.end(), [&](const auto& field) { return field.first == key; });
    if (!seen) {
        fields.emplace_back(std::string(key), std::string(value));
    }
}

std::string current_timestamp() {
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
    return stamp;
}

}  // namespace

void set_min_level(Level level) { min_level = level; }

void set_format(Format format) { output_format = format; }

std::uint64_t error_count() { return errors_written.load(); }

std::vector<std::pair<std::string, std::string>> message_fields(std::string_view message) {
    std::vector<std::pair<std::string, std::string>> fields;

    // Queue ids are upper-case hex (tlsrelay's are 15 characters); NOQUEUE
    // and host names contain other letters, so they never match.
    std::size_t id_length = 0;
    while (id_length < message.size() && is_queue_id_character(message[id_length])) {
        ++id_length;
    }
    std::string_view rest = message;
    if (id_length >= 6 && id_length <= 32 && message.substr(id_length, 2) == ": ") {
        fields.emplace_back("queue_id", std::string(message.substr(0, id_length)));
        rest = message.substr(id_length + 2);
    }

    std::size_t at = 0;
    while (auto length = key_length(rest, at)) {
        auto key = rest.substr(at, length);
        auto value_start = at + length + 1;
        std::string_view value;
        if (value_start < rest.size() && rest[value_start] == '<') {
            // An address: up to the first '>' where the value may end.
            auto close = rest.find('>', value_start);
            while (close != std::string_view::npos && !at_value_end(rest, close + 1)) {
                close = rest.find('>', close + 1);
            }
            if (close == std::string_view::npos) {
                break;
            }
            value = rest.substr(value_start + 1, close - value_start - 1);
            at = close + 1;
        } else {
            auto end = std::min(rest.find(", ", value_start), rest.find(" (", value_start));
            end = std::min(end, rest.size());
            value = rest.substr(value_start, end - value_start);
            at = end;
        }
        add_field(fields, key, value);

        if (rest.substr(at, 2) == ", ") {
            at += 2;
            continue;
        }
        if (rest.substr(at, 2) == " (" && rest.back() == ')') {
            add_field(fields, "reason", rest.substr(at + 2, rest.size() - at - 3));
        }
        break;
    }
    return fields;
}

std::string escape_control_characters(std::string_view message) {
    std::string out;
    append_escaped(out, message);
    return out;
}

void append_escaped(std::string& out, std::string_view message) {
    auto needs_escape = [](char c) {
        auto byte = static_cast<unsigned char>(c);
        return byte < 0x20 || byte >= 0x7F;
    };
    if (std::none_of(message.begin(), message.end(), needs_escape)) {
        out += message;
        return;
    }

    out.reserve(out.size() + message.size() + 16);
    auto append_byte = [&out](unsigned char byte) {
        char escaped[8];
        std::snprintf(escaped, sizeof escaped, "\\x%02X", byte);
        out += escaped;
    };
    for (std::size_t i = 0; i < message.size();) {
        auto byte = static_cast<unsigned char>(message[i]);
        if (byte >= 0x20 && byte < 0x7F) {
            out += message[i];
            ++i;
            continue;
        }
        std::size_t length = byte < 0x80 ? 0 : json::utf8_sequence_length(message, i);
        // C1 controls, U+0080 to U+009F, are C2 80 to C2 9F in UTF-8.
        bool c1_control = length == 2 && byte == 0xC2 && static_cast<unsigned char>(message[i + 1]) < 0xA0;
        if (length == 0 || c1_control) {
            // A C0 control, DEL, a C1 control or a byte of invalid UTF-8,
            // which a terminal could also read as a C1 control.
            for (std::size_t end = i + std::max<std::size_t>(length, 1); i < end; ++i) {
                append_byte(static_cast<unsigned char>(message[i]));
            }
            continue;
        }
        out.append(message.substr(i, length));
        i += length;
    }
}

std::string json_line(Level level, std::string_view message, std::string_view time, long pid) {
    std::string line;
    line.reserve(message.size() * 2 + 96);
    line += "{\"time\":";
    json::append_string(line, time);
    line += ",\"level\":\"";
    line += level_name(level);
    line += "\",\"program\":\"tlsrelay\",\"pid\":";
    line += std::to_string(pid);
    line += ",\"message\":";
    json::append_string(line, message);
    for (const auto& [key, value] : message_fields(message)) {
        line += ',';
        json::append_string(line, key);
        line += ':';
        json::append_string(line, value);
    }
    line += '}';
    return line;
}

void write(Level level, std::string_view message) {
    if (level == Level::error) {
        ++errors_written;
    }
    if (level < min_level.load()) {
        return;
    }

    auto stamp = current_timestamp();
    // tlsrelay never forks, so the process id is read once (glibc makes a
    // system call for every getpid()).
    static const long pid = static_cast<long>(getpid());
    std::string line;
    if (output_format.load() == Format::json) {
        line = json_line(level, message, stamp, pid);
    } else {
        line.reserve(message.size() + 64);
        line += stamp;
        line += " tlsrelay[";
        line += std::to_string(pid);
        line += "]: ";
        line += level_prefix(level);
        // Clients choose much of what is logged (EHLO names, addresses), and
        // a raw control character could end the line or drive the terminal
        // that shows the log.
        append_escaped(line, message);
    }
    line += '\n';

    std::lock_guard lock(write_mutex);
    std::fwrite(line.data(), 1, line.size(), stderr);
    std::fflush(stderr);
}

}  // namespace tlsrelay::log
