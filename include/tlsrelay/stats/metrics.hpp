// The Prometheus endpoint: the delivery counters, queue, inbound session
// and error figures in the text exposition format 0.0.4, served over
// HTTP/1.0 at GET /metrics.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include <asio/any_io_executor.hpp>
#include <asio/ip/tcp.hpp>

#include "tlsrelay/stats/recorder.hpp"

namespace tlsrelay::stats {

// The domain label of the counts of every domain past the series limit.
inline constexpr std::string_view other_domains_label = "_other";

struct MetricsSnapshot {
    const std::map<std::string, Counts>* domains = nullptr;  // counts since the process started
    const Counts* other_domains = nullptr;
    std::size_t queue_messages = 0;
    double oldest_message_age_seconds = 0;  // 0 when the queue is empty
    std::size_t deliveries_in_progress = 0;
    std::size_t inbound_sessions = 0;          // open now
    std::uint64_t inbound_sessions_total = 0;  // accepted since the process started
    std::uint64_t errors_total = 0;            // log lines at level error
};

// Escapes a label value: backslash, double quote and line feed.
std::string escape_label_value(std::string_view value);

// Renders the snapshot in the text exposition format 0.0.4. Counter
// series with a count of zero are left out, except the totals that have
// no labels.
std::string render_prometheus(const MetricsSnapshot& snapshot);

// A minimal HTTP/1.0 server for GET (and HEAD) /metrics on the event
// loop. Each connection gets one response and is closed. Requests larger
// than 8 KiB get 400, other paths 404, other methods 405, and a client
// that does not finish its request within 10 s is disconnected.
class MetricsServer {
public:
    MetricsServer(asio::any_io_executor executor, std::function<std::string()> render);
    ~MetricsServer();

    // Binds the endpoint; raises std::runtime_error naming it on failure.
    void listen(const asio::ip::tcp::endpoint& endpoint);
    void stop();
    asio::ip::tcp::endpoint local_endpoint() const;

    struct Shared;

private:
    asio::any_io_executor executor_;
    std::shared_ptr<Shared> shared_;
};

}  // namespace tlsrelay::stats
