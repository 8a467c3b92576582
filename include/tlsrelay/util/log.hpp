// Logging to standard error, one line per event, in the layout mail log
// parsers expect: a timestamp, the program name, then the message. Mail-event
// lines (to=, relay=, status=) are an interface and keep their wording.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tlsrelay::log {

enum class Level { debug, info, warning, error };

// text: "2025-12-04T10:00:00.123Z tlsrelay[42]: warning: message".
// json: one JSON object per line with the same message and the fields
// parsed from it (see json_line).
enum class Format { text, json };

void set_min_level(Level level);
void set_format(Format format);
void write(Level level, std::string_view message);

inline void info(std::string_view message) { write(Level::info, message); }
inline void warning(std::string_view message) { write(Level::warning, message); }
inline void error(std::string_view message) { write(Level::error, message); }
inline void debug(std::string_view message) { write(Level::debug, message); }

// Lines written at level error since the process started.
std::uint64_t error_count();

// The fields of a mail-event message: a leading queue id ("661D5AB67E89400:
// ...") as "queue_id", then the "key=value" pairs separated by ", " that
// follow it, with angle brackets removed from addresses, and a final
// parenthesized text as "reason". Parsing stops at the first text that is
// not a pair, so other messages give at most a queue id.
std::vector<std::pair<std::string, std::string>> message_fields(std::string_view message);

// Returns `message` as the text format writes it. Each byte of a control
// character (C0, DEL, or a C1 control U+0080 to U+009F in UTF-8) and each
// byte that is not part of valid UTF-8 becomes "\xNN", with two upper-case
// hex digits. Everything else is kept, valid UTF-8 and backslashes
// included, so one message stays one line.
std::string escape_control_characters(std::string_view message);
// Appends `message` to `out` escaped as above, without a copy of its own.
void append_escaped(std::string& out, std::string_view message);

// One JSON log line without its newline: "time", "level", "program", "pid",
// "message", then message_fields(message), all values strings except pid.
std::string json_line(Level level, std::string_view message, std::string_view time, long pid);

}  // namespace tlsrelay::log
