// The serve command's observability parts: the delivery counters (kept
// across SIGHUP reloads), their periodic save, the Prometheus endpoint and
// the log format.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

#include "tlsrelay/config/config.hpp"
#include "tlsrelay/delivery/scheduler.hpp"
#include "tlsrelay/smtpd/server.hpp"
#include "tlsrelay/stats/metrics.hpp"
#include "tlsrelay/stats/recorder.hpp"

namespace tlsrelay::cli {

// State that outlives one run of the server, so counters continue across
// a reload.
struct Observability {
    std::shared_ptr<stats::Recorder> recorder;
    std::uint64_t inbound_sessions_before = 0;  // accepted in runs before the last reload
};

// Applies [log] format, and creates the recorder, or keeps it when the
// counters file and window stay the same. A replaced recorder is saved
// first.
void prepare_observability(Observability& state, const config::Config& config);

// The parts that live for one run: the save every minute, and the metrics
// endpoint when [metrics] listen is set. The destructor saves the counters.
class RunObservability {
public:
    // Raises std::runtime_error when the metrics endpoint cannot listen.
    RunObservability(asio::io_context& io, Observability& state, const config::Config& config,
                     const delivery::Scheduler& scheduler, const std::vector<std::unique_ptr<smtpd::Server>>& servers);
    ~RunObservability();
    RunObservability(const RunObservability&) = delete;
    RunObservability& operator=(const RunObservability&) = delete;

    // Stops the endpoint and the periodic save, so the event loop can end.
    void stop();

private:
    void schedule_save();
    std::string render_metrics() const;

    Observability& state_;
    const delivery::Scheduler& scheduler_;
    std::shared_ptr<const smtpd::ConnectionCounter> connections_;
    asio::steady_timer save_timer_;
    std::unique_ptr<stats::MetricsServer> metrics_server_;
    bool stopped_ = false;
};

}  // namespace tlsrelay::cli
