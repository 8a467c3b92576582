// Retry schedule arithmetic, kept free of clocks so it can be tested.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace tlsrelay::queue {

// The wait before the next attempt after `attempts` failed ones: the
// minimal backoff, doubled per further attempt, capped at the maximal one.
inline std::chrono::seconds retry_delay(int attempts, std::chrono::seconds minimal, std::chrono::seconds maximal) {
    auto delay = minimal;
    for (int i = 1; i < attempts && delay < maximal; ++i) {
        delay *= 2;
    }
    return std::max(std::min(delay, maximal), std::chrono::seconds(1));
}

// True once a message that arrived at `arrival_unix_ms` has been queued for
// `lifetime` or longer. A lifetime of zero expires at the first failure,
// as Postfix's maximal_queue_lifetime = 0 does.
inline bool lifetime_exceeded(std::int64_t arrival_unix_ms, std::int64_t now_unix_ms, std::chrono::seconds lifetime) {
    return now_unix_ms - arrival_unix_ms >= std::chrono::duration_cast<std::chrono::milliseconds>(lifetime).count();
}

// True when a delay warning is due: warnings are on (a non-zero
// `warning_time`) and the message has waited that long.
inline bool delay_warning_due(std::int64_t arrival_unix_ms, std::int64_t now_unix_ms, std::chrono::seconds warning_time) {
    return warning_time.count() > 0 && lifetime_exceeded(arrival_unix_ms, now_unix_ms, warning_time);
}

}  // namespace tlsrelay::queue
