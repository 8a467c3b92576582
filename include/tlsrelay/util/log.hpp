// Logging to standard error, one line per event, in the layout mail log
// parsers expect: a timestamp, the program name, then the message. Mail-event
// lines (to=, relay=, status=) are an interface and keep their wording.
#pragma once

#include <string>
#include <string_view>

namespace tlsrelay::log {

enum class Level { debug, info, warning, error };

void set_min_level(Level level);
void write(Level level, std::string_view message);

inline void info(std::string_view message) { write(Level::info, message); }
inline void warning(std::string_view message) { write(Level::warning, message); }
inline void error(std::string_view message) { write(Level::error, message); }
inline void debug(std::string_view message) { write(Level::debug, message); }

}  // namespace tlsrelay::log
