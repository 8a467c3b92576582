// `tlsrelay queue`: list, show and change queued mail. Reading is safe at
// any time because every spool change is a rename. Changes go through the
// running server when there is one (see tlsrelay/queue/control.hpp), else
// straight to the spool under the queue lock.
#include <cstdio>
#include <ctime>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "commands.hpp"
#include "tlsrelay/config/config.hpp"
#include "tlsrelay/queue/control.hpp"
#include "tlsrelay/queue/spool.hpp"
#include "tlsrelay/util/json.hpp"

namespace tlsrelay::cli {
namespace {

namespace fs = std::filesystem;

// How long a command waits for the running server to apply its request;
// the server polls the control folder every half second.
constexpr auto server_reply_timeout = std::chrono::seconds(10);
constexpr auto server_poll_interval = std::chrono::milliseconds(50);

const char* queue_usage =
    "usage: tlsrelay queue [--config FILE] list [--json]\n"
    "       tlsrelay queue [--config FILE] show ID\n"
    "       tlsrelay queue [--config FILE] flush\n"
    "       tlsrelay queue [--config FILE] delete ID|ALL\n"
    "       tlsrelay queue [--config FILE] hold ID|ALL\n"
    "       tlsrelay queue [--config FILE] release ID|ALL\n";

std::string iso_time(std::int64_t unix_ms) {
    std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
    std::tm utc{};
    ::gmtime_r(&seconds, &utc);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
    return text;
}

std::string describe_recipient(const queue::StoredMessage& message, std::size_t index) {
    const auto& state = message.state.recipients[index];
    std::string text = "<" + message.envelope.recipients[index] + "> " + queue::to_string(state.status);
    if (state.attempts > 0) {
        text += ", " + std::to_string(state.attempts) + " attempt(s)";
    }
    if (state.status == queue::RecipientStatus::deferred && state.next_try_unix_ms > 0) {
        text += ", next try " + iso_time(state.next_try_unix_ms);
    }
    if (!state.reason.empty()) {
        text += ": " + state.reason;
    }
    return text;
}

int list_text(const std::vector<queue::StoredMessage>& messages) {
    for (const auto& message : messages) {
        const auto& envelope = message.envelope;
        std::printf("%s  %llu bytes  %s  from <%s>%s\n", envelope.id.c_str(),
                    static_cast<unsigned long long>(message.content_size), iso_time(envelope.arrival_unix_ms).c_str(),
                    envelope.sender.c_str(), message.state.held ? "  (held)" : "");
        for (std::size_t index = 0; index < envelope.recipients.size(); ++index) {
            std::printf("    %s\n", describe_recipient(message, index).c_str());
        }
    }
    std::printf("%zu message(s) in the queue\n", messages.size());
    return 0;
}

int list_json(const std::vector<queue::StoredMessage>& messages) {
    std::string text = "[";
    for (std::size_t m = 0; m < messages.size(); ++m) {
        const auto& message = messages[m];
        const auto& envelope = message.envelope;
        text += m == 0 ? "\n" : ",\n";
        text += "  {\"id\": " + json::quote(envelope.id) + ", \"size\": " + std::to_string(message.content_size) +
                ", \"arrival\": " + json::quote(iso_time(envelope.arrival_unix_ms)) +
                ", \"sender\": " + json::quote(envelope.sender) + ", \"held\": " +
                (message.state.held ? "true" : "false") + ", \"recipients\": [";
        for (std::size_t index = 0; index < envelope.recipients.size(); ++index) {
            const auto& state = message.state.recipients[index];
            text += index == 0 ? "" : ", ";
            text += "{\"address\": " + json::quote(envelope.recipients[index]) +
                    ", \"status\": " + json::quote(queue::to_string(state.status)) +
                    ", \"attempts\": " + std::to_string(state.attempts) + ", \"next_try\": " +
                    (state.next_try_unix_ms > 0 ? json::quote(iso_time(state.next_try_unix_ms)) : "null") +
                    ", \"dsn\": " + json::quote(state.dsn) + ", \"reason\": " + json::quote(state.reason) + "}";
        }
        text += "]}";
    }
    text += messages.empty() ? "]\n" : "\n]\n";
    std::fputs(text.c_str(), stdout);
    return 0;
}

int show(const queue::Spool& spool, const std::string& id) {
    auto message = spool.load(id);
    if (!message) {
        std::fprintf(stderr, "tlsrelay queue show: no queued message %s\n", id.c_str());
        return 1;
    }
    const auto& envelope = message->envelope;
    std::printf("id: %s\narrival: %s\nclient: %s\nsender: <%s>\nsize: %llu bytes\nheld: %s\n", envelope.id.c_str(),
                iso_time(envelope.arrival_unix_ms).c_str(), envelope.client.c_str(), envelope.sender.c_str(),
                static_cast<unsigned long long>(message->content_size), message->state.held ? "yes" : "no");
    if (!envelope.dsn_ret.empty()) std::printf("ret: %s\n", envelope.dsn_ret.c_str());
    if (!envelope.dsn_envid.empty()) std::printf("envid: %s\n", envelope.dsn_envid.c_str());
    for (std::size_t index = 0; index < envelope.recipients.size(); ++index) {
        std::printf("recipient: %s\n", describe_recipient(*message, index).c_str());
    }

    // The header, up to the first empty line.
    std::printf("\n");
    std::ifstream in(message->file, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(message->content_offset));
    std::string line;
    for (int count = 0; count < 10000 && std::getline(in, line); ++count) {
        if (!line.empty() && line.back() == '\r') {
            line.pop_back();
        }
        if (line.empty()) {
            break;
        }
        std::printf("%s\n", line.c_str());
    }
    return 0;
}

// Applies a change to the spool directly; only called under the queue lock.
int change_offline(queue::Spool& spool, const std::string& verb, const std::string& argument) {
    std::vector<queue::StoredMessage> targets;
    if (verb == "flush" || argument == "ALL") {
        targets = spool.scan();
    } else if (auto message = spool.load(argument)) {
        targets.push_back(std::move(*message));
    } else {
        std::fprintf(stderr, "tlsrelay queue %s: no queued message %s\n", verb.c_str(), argument.c_str());
        return 1;
    }

    for (auto& message : targets) {
        const auto& id = message.envelope.id;
        if (verb == "delete") {
            spool.remove(id);
            std::printf("%s: deleted\n", id.c_str());
            continue;
        }
        if (verb == "hold" || verb == "release") {
            message.state.held = verb == "hold";
        } else {
            // flush: every deferred recipient is due at the next start.
            for (auto& state : message.state.recipients) {
                if (state.status == queue::RecipientStatus::deferred) {
                    state.next_try_unix_ms = 0;
                }
            }
        }
        spool.record_state(id, message.state);
        std::string done = "flushed";
        if (verb == "hold") {
            done = "held";
        } else if (verb == "release") {
            done = "released";
        }
        std::printf("%s: %s\n", id.c_str(), done.c_str());
    }
    return 0;
}

// Hands a change to the running server and waits for it to be applied.
int change_online(const queue::Spool& spool, const std::string& verb, const std::string& argument) {
    if (verb != "flush" && argument != "ALL" && !spool.load(argument)) {
        std::fprintf(stderr, "tlsrelay queue %s: no queued message %s\n", verb.c_str(), argument.c_str());
        return 1;
    }
    auto request = queue::submit_request(spool.directory(), argument.empty() ? verb : verb + " " + argument);
    auto give_up = std::chrono::steady_clock::now() + server_reply_timeout;
    while (fs::exists(request)) {
        if (std::chrono::steady_clock::now() >= give_up) {
            std::fprintf(stderr,
                         "tlsrelay queue %s: the running server did not apply the request within %lld s; it stays "
                         "in %s and is applied when the server reads it\n",
                         verb.c_str(), static_cast<long long>(server_reply_timeout.count()), request.c_str());
            return 75;
        }
        std::this_thread::sleep_for(server_poll_interval);
    }
    std::printf("%s%s%s: done by the running server\n", verb.c_str(), argument.empty() ? "" : " ", argument.c_str());
    return 0;
}

}  // namespace

int queue_command(const std::vector<std::string>& arguments) {
    std::string config_file = "/etc/tlsrelay/tlsrelay.toml";
    bool json = false;
    std::vector<std::string> words;
    for (std::size_t i = 0; i < arguments.size(); ++i) {
        if (arguments[i] == "--config" && i + 1 < arguments.size()) {
            config_file = arguments[++i];
        } else if (arguments[i].starts_with("--config=")) {
            config_file = arguments[i].substr(9);
        } else if (arguments[i] == "--json") {
            json = true;
        } else {
            words.push_back(arguments[i]);
        }
    }
    if (words.empty()) {
        std::fputs(queue_usage, stderr);
        return 2;
    }
    const std::string verb = words[0];
    const bool takes_id = verb == "show" || verb == "delete" || verb == "hold" || verb == "release";
    const bool known = takes_id || verb == "list" || verb == "flush";
    if (!known || words.size() != (takes_id ? 2u : 1u) || (json && verb != "list") ||
        (verb == "show" && words[1] == "ALL")) {
        std::fputs(queue_usage, stderr);
        return 2;
    }
    const std::string argument = takes_id ? words[1] : "";

    try {
        auto config = config::load(config_file, config::process_environment());
        queue::Spool spool(config.queue_directory);
        if (verb == "list") {
            auto messages = spool.scan();
            return json ? list_json(messages) : list_text(messages);
        }
        if (verb == "show") {
            return show(spool, argument);
        }
        if (auto lock = queue::SpoolLock::try_acquire(config.queue_directory)) {
            return change_offline(spool, verb, argument);
        }
        return change_online(spool, verb, argument);
    } catch (const config::ConfigError& error) {
        std::fprintf(stderr, "tlsrelay: %s\n", error.what());
        return 1;
    } catch (const std::exception& error) {
        std::fprintf(stderr, "tlsrelay queue %s: %s\n", verb.c_str(), error.what());
        return 1;
    }
}

}  // namespace tlsrelay::cli
