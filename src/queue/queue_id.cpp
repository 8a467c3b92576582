#include <atomic>
#include <chrono>
#include <cstdio>

#include "tlsrelay/queue/spool.hpp"

namespace tlsrelay::queue {

std::string make_queue_id() {
    static std::atomic<unsigned> counter{0};
    auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
    char text[32];
    std::snprintf(text, sizeof text, "%013llX%02X", static_cast<unsigned long long>(micros), counter++ & 0xffu);
    return text;
}

}  // namespace tlsrelay::queue
