// Configuration loader. Each section is a table of key handlers: a handler
// validates one value and stores it, and any key without a handler stops
// start-up, so a typo never silently falls back to a default.
#include "tlsrelay/config/config.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include <unistd.h>

#include <toml++/toml.h>

namespace tlsrelay::config {
namespace {

namespace fs = std::filesystem;

std::string describe(const toml::node& node) {
    std::ostringstream out;
    if (auto text = node.as_string()) {
        // Shown as the administrator would have typed it, in double quotes.
        out << '"';
        for (char c : text->get()) {
            if (c == '"' || c == '\\') {
                out << '\\';
            }
            out << c;
        }
        out << '"';
    } else if (const auto* array = node.as_array()) {
        out << "[ ";
        bool first = true;
        for (const auto& item : *array) {
            out << (first ? "" : ", ") << describe(item);
            first = false;
        }
        out << " ]";
    } else if (node.is_table()) {
        out << "a table";
    } else {
        node.visit([&out](const auto& value) { out << value; });
    }
    return out.str();
}

class Reader {
public:
    Reader(Config& config, fs::path file) : config_(config), file_(std::move(file)) {}

    [[noreturn]] void fail_value(const toml::node& node, const std::string& key, const std::string& accepted) const {
        throw ConfigError(where(node) + ": invalid " + key + " " + describe(node) + ": expected " + accepted);
    }

    std::string where(const toml::node& node) const {
        std::string text = file_.string();
        const auto& source = node.source();
        if (source.begin.line > 0) {
            text += ":" + std::to_string(source.begin.line);
        }
        return text;
    }

    std::string string_value(const toml::node& node, const std::string& key, const std::string& accepted) const {
        auto value = node.value<std::string>();
        if (!node.is_string() || !value) {
            fail_value(node, key, accepted);
        }
        return *value;
    }

    std::int64_t integer_value(const toml::node& node, const std::string& key, std::int64_t min, std::int64_t max,
                               const std::string& accepted) const {
        if (!node.is_integer()) {
            fail_value(node, key, accepted);
        }
        auto value = *node.value<std::int64_t>();
        if (value < min || value > max) {
            fail_value(node, key, accepted);
        }
        return value;
    }

    std::vector<std::string> string_list(const toml::node& node, const std::string& key,
                                         const std::string& accepted) const {
        const auto* array = node.as_array();
        if (!array) {
            fail_value(node, key, accepted);
        }
        std::vector<std::string> items;
        for (const auto& item : *array) {
            if (!item.is_string()) {
                fail_value(item, key, accepted);
            }
            items.push_back(*item.value<std::string>());
        }
        return items;
    }

    // A path; relative paths are taken relative to the configuration file's folder.
    fs::path path_value(const toml::node& node, const std::string& key) const {
        auto text = string_value(node, key, "a file or folder path as a string");
        if (text.empty()) {
            return {};
        }
        fs::path path(text);
        if (path.is_relative()) {
            path = file_.parent_path() / path;
        }
        return path.lexically_normal();
    }

    // Durations in Postfix's notation: an integer in seconds, or a string
    // with one of the units s, m, h, d, w ("300s", "5d").
    std::chrono::seconds duration_value(const toml::node& node, const std::string& key) const {
        const std::string accepted = "a duration such as 300, \"300s\", \"10m\", \"1h\" or \"5d\"";
        if (node.is_integer()) {
            return std::chrono::seconds(integer_value(node, key, 0, 365LL * 86400, accepted));
        }
        auto text = string_value(node, key, accepted);
        std::size_t digits = 0;
        while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) {
            ++digits;
        }
        if (digits == 0 || digits > 8 || text.size() - digits > 1) {
            fail_value(node, key, accepted);
        }
        std::int64_t amount = std::stoll(text.substr(0, digits));
        char unit = digits < text.size() ? text[digits] : 's';
        static const std::map<char, std::int64_t> unit_seconds{{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}, {'w', 604800}};
        auto found = unit_seconds.find(unit);
        if (found == unit_seconds.end()) {
            fail_value(node, key, accepted);
        }
        return std::chrono::seconds(amount * found->second);
    }

    using Handler = std::function<void(const toml::node&, const std::string&)>;

    void read_table(const toml::table& table, const std::string& prefix, const std::map<std::string, Handler>& handlers) const {
        for (const auto& [name, node] : table) {
            std::string key = prefix.empty() ? std::string(name.str()) : prefix + "." + std::string(name.str());
            auto handler = handlers.find(std::string(name.str()));
            if (handler == handlers.end()) {
                throw ConfigError(where(node) + ": unknown key " + key + " = " + describe(node) + ": accepted " +
                                  accepted_keys(prefix, handlers));
            }
            handler->second(node, key);
        }
    }

    static std::string accepted_keys(const std::string& prefix, const std::map<std::string, Handler>& handlers) {
        std::string text = prefix.empty() ? "top-level keys are " : "keys in [" + prefix + "] are ";
        bool first = true;
        for (const auto& [name, handler] : handlers) {
            text += (first ? "" : ", ") + name;
            first = false;
        }
        return text;
    }

    template <typename Section>
    Handler section(const std::string& name, Section& target,
                    std::map<std::string, Handler> (Reader::*handlers)(Section&) const) const {
        return [this, name, &target, handlers](const toml::node& node, const std::string& key) {
            const auto* table = node.as_table();
            if (!table) {
                fail_value(node, key, "a table [" + name + "]");
            }
            read_table(*table, name, (this->*handlers)(target));
        };
    }

    std::map<std::string, Handler> top_level() const {
        return {
            {"myhostname",
             [this](const toml::node& node, const std::string& key) {
                 auto text = string_value(node, key, "a fully qualified host name");
                 if (text.find_first_of(" \t[]<>@") != std::string::npos) {
                     fail_value(node, key, "a fully qualified host name");
                 }
                 config_.myhostname = text;
             }},
            {"queue_directory", [this](const toml::node& node, const std::string& key) {
                 config_.queue_directory = path_value(node, key);
                 if (config_.queue_directory.empty()) {
                     fail_value(node, key, "a folder path the relay can write");
                 }
             }},
            {"message_size_limit",
             [this](const toml::node& node, const std::string& key) {
                 config_.message_size_limit = static_cast<std::size_t>(
                     integer_value(node, key, 1024, 1LL << 40, "a size in bytes from 1024 upward"));
             }},
            {"smtpd", section("smtpd", config_.smtpd, &Reader::smtpd_keys)},
            {"smtp", section("smtp", config_.smtp, &Reader::smtp_keys)},
            {"dns", section("dns", config_.dns, &Reader::dns_keys)},
            {"queue", section("queue", config_.queue, &Reader::queue_keys)},
        };
    }

    std::map<std::string, Handler> smtpd_keys(Smtpd& smtpd) const {
        return {
            {"listen",
             [this, &smtpd](const toml::node& node, const std::string& key) {
                 const std::string accepted = "a list of \"addr:port\" or \"[v6addr]:port\" strings";
                 smtpd.listen.clear();
                 for (const auto& text : string_list(node, key, accepted)) {
                     auto endpoint = parse_endpoint(text);
                     if (!endpoint) {
                         throw ConfigError(where(node) + ": invalid " + key + " entry \"" + text + "\": expected " +
                                           accepted);
                     }
                     smtpd.listen.push_back(*endpoint);
                 }
             }},
            {"tls_security_level",
             [this, &smtpd](const toml::node& node, const std::string& key) {
                 const std::string accepted = "one of none, may, encrypt";
                 auto text = string_value(node, key, accepted);
                 if (text == "none") smtpd.tls_security_level = InboundTlsLevel::none;
                 else if (text == "may") smtpd.tls_security_level = InboundTlsLevel::may;
                 else if (text == "encrypt") smtpd.tls_security_level = InboundTlsLevel::encrypt;
                 else fail_value(node, key, accepted);
             }},
            {"tls_cert_file", [this, &smtpd](const toml::node& node, const std::string& key) { smtpd.tls_cert_file = path_value(node, key); }},
            {"tls_key_file", [this, &smtpd](const toml::node& node, const std::string& key) { smtpd.tls_key_file = path_value(node, key); }},
            {"mynetworks",
             [this, &smtpd](const toml::node& node, const std::string& key) {
                 const std::string accepted = "a list of networks such as \"127.0.0.0/8\" or \"[::1]/128\"";
                 smtpd.mynetworks.clear();
                 for (const auto& text : string_list(node, key, accepted)) {
                     auto network = parse_network(text);
                     if (!network) {
                         throw ConfigError(where(node) + ": invalid " + key + " entry \"" + text + "\": expected " +
                                           accepted);
                     }
                     smtpd.mynetworks.push_back(*network);
                 }
             }},
            {"timeout", [this, &smtpd](const toml::node& node, const std::string& key) { smtpd.timeout = duration_value(node, key); }},
        };
    }

    std::map<std::string, Handler> smtp_keys(Smtp& smtp) const {
        return {
            {"tls_security_level",
             [this, &smtp](const toml::node& node, const std::string& key) {
                 const std::string accepted = "one of none, may, encrypt, verify";
                 auto level = policy::parse_level(string_value(node, key, accepted));
                 if (!level) {
                     fail_value(node, key, accepted);
                 }
                 smtp.tls_security_level = *level;
             }},
            {"tls_CAfile", [this, &smtp](const toml::node& node, const std::string& key) { smtp.tls_CAfile = path_value(node, key); }},
            {"tls_CApath", [this, &smtp](const toml::node& node, const std::string& key) { smtp.tls_CApath = path_value(node, key); }},
            {"port",
             [this, &smtp](const toml::node& node, const std::string& key) {
                 smtp.port = static_cast<std::uint16_t>(integer_value(node, key, 1, 65535, "an integer from 1 to 65535"));
             }},
            {"relayhost",
             [this, &smtp](const toml::node& node, const std::string& key) {
                 const std::string accepted = "\"[host]:port\", \"host:port\", \"host\" or \"\"";
                 auto text = string_value(node, key, accepted);
                 if (text.empty()) {
                     smtp.relayhost.reset();
                     return;
                 }
                 smtp.relayhost = parse_next_hop(text);
                 if (!smtp.relayhost) {
                     fail_value(node, key, accepted);
                 }
             }},
            {"connect_timeout", [this, &smtp](const toml::node& node, const std::string& key) { smtp.connect_timeout = duration_value(node, key); }},
            {"command_timeout", [this, &smtp](const toml::node& node, const std::string& key) { smtp.command_timeout = duration_value(node, key); }},
        };
    }

    std::map<std::string, Handler> dns_keys(Dns& dns) const {
        return {
            {"nameservers",
             [this, &dns](const toml::node& node, const std::string& key) {
                 const std::string accepted = "a list of \"addr\", \"addr:port\" or \"[v6addr]:port\" strings";
                 dns.nameservers.clear();
                 for (const auto& text : string_list(node, key, accepted)) {
                     auto server = dns::parse_nameserver(text);
                     if (!server) {
                         throw ConfigError(where(node) + ": invalid " + key + " entry \"" + text + "\": expected " +
                                           accepted);
                     }
                     dns.nameservers.push_back(*server);
                 }
             }},
            {"timeout", [this, &dns](const toml::node& node, const std::string& key) { dns.timeout = duration_value(node, key); }},
            {"attempts",
             [this, &dns](const toml::node& node, const std::string& key) {
                 dns.attempts = static_cast<int>(integer_value(node, key, 1, 10, "an integer from 1 to 10"));
             }},
        };
    }

    std::map<std::string, Handler> queue_keys(Queue& queue) const {
        return {
            {"minimal_backoff_time", [this, &queue](const toml::node& node, const std::string& key) { queue.minimal_backoff_time = duration_value(node, key); }},
            {"maximal_backoff_time", [this, &queue](const toml::node& node, const std::string& key) { queue.maximal_backoff_time = duration_value(node, key); }},
        };
    }

private:
    Config& config_;
    fs::path file_;
};

Config defaults(const fs::path& file) {
    Config config;
    config.config_file = file;
    config.queue_directory = (file.parent_path() / "var/queue").lexically_normal();
    config.smtpd.listen.emplace_back(asio::ip::make_address("127.0.0.1"), 2525);
    config.smtpd.mynetworks = {*parse_network("127.0.0.0/8"), *parse_network("[::1]/128")};
    config.smtp.tls_CApath = "/etc/ssl/certs";
    return config;
}

std::string system_host_name() {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') {
        return "localhost";
    }
    return name;
}

void check_consistency(const Config& config) {
    const auto& file = config.config_file.string();
    if (config.smtpd.listen.empty()) {
        throw ConfigError(file + ": invalid smtpd.listen []: expected at least one \"addr:port\"");
    }
    if (config.smtpd.tls_cert_file.empty() != config.smtpd.tls_key_file.empty()) {
        throw ConfigError(file + ": smtpd.tls_cert_file and smtpd.tls_key_file must be set together, or both left empty for a self-signed certificate");
    }
    if (config.queue.minimal_backoff_time > config.queue.maximal_backoff_time) {
        throw ConfigError(file + ": queue.minimal_backoff_time is longer than queue.maximal_backoff_time");
    }
}

}  // namespace

Config parse(std::string_view toml_text, const fs::path& file) {
    toml::table root;
    try {
        root = toml::parse(toml_text, file.string());
    } catch (const toml::parse_error& error) {
        const auto& begin = error.source().begin;
        throw ConfigError(file.string() + ":" + std::to_string(begin.line) + ":" + std::to_string(begin.column) +
                          ": TOML syntax error: " + std::string(error.description()));
    }

    Config config = defaults(file);
    Reader reader(config, file);
    reader.read_table(root, "", reader.top_level());
    if (config.myhostname.empty()) {
        config.myhostname = system_host_name();
    }
    check_consistency(config);
    return config;
}

Config load(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
        throw ConfigError(file.string() + ": cannot read configuration file: " + std::strerror(errno));
    }
    std::ostringstream text;
    text << in.rdbuf();
    return parse(text.str(), fs::absolute(file).lexically_normal());
}

}  // namespace tlsrelay::config
