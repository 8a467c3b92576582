#include "observability.hpp"

#include "tlsrelay/util/log.hpp"

namespace tlsrelay::cli {
namespace {

// How often the counters are written while the server runs. They are
// advisory, so a crash may lose this much; a stop or reload saves them too.
constexpr auto save_interval = std::chrono::seconds(60);

std::int64_t unix_now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

}  // namespace

void prepare_observability(Observability& state, const config::Config& config) {
    log::set_format(config.log.format == config::LogFormat::json ? log::Format::json : log::Format::text);

    auto file = stats::outcomes_file(config.queue_directory);
    if (state.recorder && state.recorder->file() == file && state.recorder->window_days() == config.metrics.window_days) {
        return;
    }
    if (state.recorder) {
        state.recorder->save();
    }
    state.recorder = std::make_shared<stats::Recorder>(file, config.metrics.window_days, config.metrics.domain_limit);
    state.recorder->load();
}

RunObservability::RunObservability(asio::io_context& io, Observability& state, const config::Config& config,
                                   const delivery::Scheduler& scheduler,
                                   const std::vector<std::unique_ptr<smtpd::Server>>& servers)
    : state_(state), scheduler_(scheduler), save_timer_(io) {
    if (!servers.empty()) {
        connections_ = servers.front()->connections();
    }
    schedule_save();
    if (config.metrics.listen) {
        metrics_server_ = std::make_unique<stats::MetricsServer>(io.get_executor(), [this] { return render_metrics(); });
        metrics_server_->listen(*config.metrics.listen);
    }
}

RunObservability::~RunObservability() {
    stop();
    if (connections_) {
        state_.inbound_sessions_before += connections_->accepted;
    }
    state_.recorder->save();
}

void RunObservability::stop() {
    if (stopped_) {
        return;
    }
    stopped_ = true;
    save_timer_.cancel();
    if (metrics_server_) {
        metrics_server_->stop();
    }
}

void RunObservability::schedule_save() {
    save_timer_.expires_after(save_interval);
    save_timer_.async_wait([this](const std::error_code& error) {
        if (error || stopped_) {
            return;
        }
        state_.recorder->save();
        schedule_save();
    });
}

std::string RunObservability::render_metrics() const {
    stats::MetricsSnapshot snapshot;
    snapshot.domains = &state_.recorder->domain_totals();
    snapshot.other_domains = &state_.recorder->other_totals();
    snapshot.queue_messages = scheduler_.queued_messages();
    if (auto oldest = scheduler_.oldest_arrival_unix_ms(); oldest > 0) {
        snapshot.oldest_message_age_seconds = static_cast<double>(std::max<std::int64_t>(0, unix_now_ms() - oldest)) / 1000.0;
    }
    snapshot.deliveries_in_progress = scheduler_.active_deliveries();
    snapshot.inbound_sessions = connections_ ? connections_->total : 0;
    snapshot.inbound_sessions_total = state_.inbound_sessions_before + (connections_ ? connections_->accepted : 0);
    snapshot.errors_total = log::error_count();
    return stats::render_prometheus(snapshot);
}

}  // namespace tlsrelay::cli
