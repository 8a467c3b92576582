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

#include "tlsrelay/tls/context.hpp"
#include "tlsrelay/tls/inspect.hpp"

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

    // Nodes that came from environment variables, with the variable's
    // name, because toml++ keeps no source position for inserted nodes.
    void set_origins(const std::map<const toml::node*, std::string>* origins) { origins_ = origins; }

    [[noreturn]] void fail_value(const toml::node& node, const std::string& key, const std::string& accepted) const {
        throw ConfigError(where(node) + ": invalid " + key + " " + describe(node) + ": expected " + accepted);
    }

    std::string where(const toml::node& node) const {
        if (origins_) {
            if (auto origin = origins_->find(&node); origin != origins_->end()) {
                return "environment variable " + origin->second;
            }
        }
        const auto& source = node.source();
        if (source.path && *source.path != file_.string()) {
            std::string text = *source.path;
            if (source.begin.line > 0) {
                text += ":" + std::to_string(source.begin.line);
            }
            return text;
        }
        std::string text = file_.string();
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

    // A list of domains: lower-cased; a leading dot means "subdomains of".
    std::vector<std::string> domain_list(const toml::node& node, const std::string& key) const {
        const std::string accepted = "a list of domains such as \"example.com\" or \".example.com\"";
        std::vector<std::string> domains;
        for (auto text : string_list(node, key, accepted)) {
            std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
            if (text.empty() || text == "." || text.find_first_of(" @[]:/") != std::string::npos || text.back() == '.') {
                throw ConfigError(where(node) + ": invalid " + key + " entry \"" + text + "\": expected " + accepted);
            }
            domains.push_back(text);
        }
        return domains;
    }

    // An array of tables ([[name]]): each table is read with the handlers
    // that `make_handlers` returns for a fresh element, and then checked.
    template <typename Element>
    void table_list(const toml::node& node, const std::string& key, std::vector<Element>& target,
                    std::map<std::string, Handler> (Reader::*make_handlers)(Element&) const,
                    void (Reader::*check)(const toml::node&, const std::string&, const Element&) const) const {
        const auto* array = node.as_array();
        if (!array || !array->is_array_of_tables()) {
            fail_value(node, key, "a list of tables written as [[" + key + "]]");
        }
        target.clear();
        for (const auto& item : *array) {
            Element element;
            read_table(*item.as_table(), key, (this->*make_handlers)(element));
            (this->*check)(item, key, element);
            target.push_back(std::move(element));
        }
    }

    std::size_t count_value(const toml::node& node, const std::string& key, std::int64_t max) const {
        return static_cast<std::size_t>(integer_value(node, key, 1, max, "an integer from 1 to " + std::to_string(max)));
    }

    std::map<std::string, Handler> listener_keys(Listener& listener) const {
        return {
            {"address",
             [this, &listener](const toml::node& node, const std::string& key) {
                 auto endpoint = parse_endpoint(string_value(node, key, "\"addr:port\" or \"[v6addr]:port\""));
                 if (!endpoint) {
                     fail_value(node, key, "\"addr:port\" or \"[v6addr]:port\"");
                 }
                 listener.address = *endpoint;
             }},
            {"tls",
             [this, &listener](const toml::node& node, const std::string& key) {
                 auto text = string_value(node, key, "starttls or implicit");
                 if (text != "starttls" && text != "implicit") {
                     fail_value(node, key, "starttls or implicit");
                 }
                 listener.implicit_tls = text == "implicit";
             }},
            {"tls_security_level",
             [this, &listener](const toml::node& node, const std::string& key) {
                 listener.tls_security_level = inbound_level(node, key);
             }},
            {"auth_required", [this, &listener](const toml::node& node, const std::string& key) { listener.auth_required = bool_value(node, key); }},
            {"proxy_protocol", [this, &listener](const toml::node& node, const std::string& key) { listener.proxy_protocol = bool_value(node, key); }},
        };
    }

    void check_listener(const toml::node& node, const std::string& key, const Listener& listener) const {
        if (listener.address.port() == 0) {
            throw ConfigError(where(node) + ": " + key + " entry has no address: add address = \"addr:port\"");
        }
    }

    std::map<std::string, Handler> sni_keys(SniCertificate& sni) const {
        return {
            {"name",
             [this, &sni](const toml::node& node, const std::string& key) {
                 sni.name = string_value(node, key, "a host name such as \"mail.example.com\" or \"*.example.com\"");
                 std::transform(sni.name.begin(), sni.name.end(), sni.name.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
             }},
            {"cert_file", [this, &sni](const toml::node& node, const std::string& key) { sni.cert_file = path_value(node, key); }},
            {"key_file", [this, &sni](const toml::node& node, const std::string& key) { sni.key_file = path_value(node, key); }},
        };
    }

    void check_sni(const toml::node& node, const std::string& key, const SniCertificate& sni) const {
        if (sni.name.empty() || sni.cert_file.empty() || sni.key_file.empty()) {
            throw ConfigError(where(node) + ": " + key + " entry needs name, cert_file and key_file");
        }
    }

    std::map<std::string, Handler> transport_keys(Transport& transport) const {
        return {
            {"domain",
             [this, &transport](const toml::node& node, const std::string& key) {
                 transport.domain = string_value(node, key, "a domain such as \"example.com\" or \".example.com\"");
                 std::transform(transport.domain.begin(), transport.domain.end(), transport.domain.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
             }},
            {"nexthop",
             [this, &transport](const toml::node& node, const std::string& key) {
                 const std::string accepted = "\"[host]:port\", \"host:port\" or \"host\"";
                 auto hop = parse_next_hop(string_value(node, key, accepted));
                 if (!hop) {
                     fail_value(node, key, accepted);
                 }
                 transport.nexthop = *hop;
             }},
        };
    }

    void check_transport(const toml::node& node, const std::string& key, const Transport& transport) const {
        if (transport.domain.empty() || transport.nexthop.host.empty()) {
            throw ConfigError(where(node) + ": " + key + " entry needs domain and nexthop");
        }
    }

    bool bool_value(const toml::node& node, const std::string& key) const {
        if (!node.is_boolean()) {
            fail_value(node, key, "true or false");
        }
        return *node.value<bool>();
    }

    InboundTlsLevel inbound_level(const toml::node& node, const std::string& key) const {
        const std::string accepted = "one of none, may, encrypt";
        auto text = string_value(node, key, accepted);
        if (text == "none") return InboundTlsLevel::none;
        if (text == "may") return InboundTlsLevel::may;
        if (text != "encrypt") fail_value(node, key, accepted);
        return InboundTlsLevel::encrypt;
    }

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

    // Every key by section ("" for the top level), for environment
    // overrides and the documentation check.
    std::map<std::string, std::vector<std::string>> schema() const {
        Config scratch;
        Reader reader(scratch, file_);
        auto names = [](const std::map<std::string, Handler>& handlers) {
            std::vector<std::string> keys;
            for (const auto& [name, handler] : handlers) {
                keys.push_back(name);
            }
            return keys;
        };
        return {
            {"", names(reader.top_level())},
            {"smtpd", names(reader.smtpd_keys(scratch.smtpd))},
            {"smtp", names(reader.smtp_keys(scratch.smtp))},
            {"dns", names(reader.dns_keys(scratch.dns))},
            {"queue", names(reader.queue_keys(scratch.queue))},
            {"log", names(reader.log_keys(scratch.log))},
            {"metrics", names(reader.metrics_keys(scratch.metrics))},
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
            {"hopcount_limit",
             [this](const toml::node& node, const std::string& key) {
                 config_.hopcount_limit = static_cast<int>(integer_value(node, key, 1, 1000, "an integer from 1 to 1000"));
             }},
            {"relay_domains", [this](const toml::node& node, const std::string& key) { config_.relay_domains = domain_list(node, key); }},
            {"transport",
             [this](const toml::node& node, const std::string& key) {
                 table_list(node, key, config_.transports, &Reader::transport_keys, &Reader::check_transport);
             }},
            {"smtpd", section("smtpd", config_.smtpd, &Reader::smtpd_keys)},
            {"smtp", section("smtp", config_.smtp, &Reader::smtp_keys)},
            {"dns", section("dns", config_.dns, &Reader::dns_keys)},
            {"queue", section("queue", config_.queue, &Reader::queue_keys)},
            {"log", section("log", config_.log, &Reader::log_keys)},
            {"metrics", section("metrics", config_.metrics, &Reader::metrics_keys)},
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
             [this, &smtpd](const toml::node& node, const std::string& key) { smtpd.tls_security_level = inbound_level(node, key); }},
            {"listener",
             [this, &smtpd](const toml::node& node, const std::string& key) {
                 table_list(node, key, smtpd.listeners, &Reader::listener_keys, &Reader::check_listener);
             }},
            {"tls_sni",
             [this, &smtpd](const toml::node& node, const std::string& key) {
                 table_list(node, key, smtpd.tls_sni, &Reader::sni_keys, &Reader::check_sni);
             }},
            {"tls_protocols",
             [this, &smtpd](const toml::node& node, const std::string& key) {
                 auto text = string_value(node, key, "\">=TLSv1.2\" or \">=TLSv1.3\"");
                 if (text != ">=TLSv1.2" && text != ">=TLSv1.3") {
                     fail_value(node, key, "\">=TLSv1.2\" or \">=TLSv1.3\"");
                 }
                 smtpd.tls_require_tls13 = text == ">=TLSv1.3";
             }},
            {"auth_users_file", [this, &smtpd](const toml::node& node, const std::string& key) { smtpd.auth_users_file = path_value(node, key); }},
            {"forbid_bare_newline",
             [this, &smtpd](const toml::node& node, const std::string& key) {
                 auto text = string_value(node, key, "normalize or reject");
                 if (text != "normalize" && text != "reject") {
                     fail_value(node, key, "normalize or reject");
                 }
                 smtpd.forbid_bare_newline = text == "reject" ? BareNewlinePolicy::reject : BareNewlinePolicy::normalize;
             }},
            {"connection_limit", [this, &smtpd](const toml::node& node, const std::string& key) { smtpd.connection_limit = count_value(node, key, 100000); }},
            {"client_connection_count_limit", [this, &smtpd](const toml::node& node, const std::string& key) { smtpd.client_connection_count_limit = count_value(node, key, 100000); }},
            {"recipient_limit", [this, &smtpd](const toml::node& node, const std::string& key) { smtpd.recipient_limit = count_value(node, key, 100000); }},
            {"hard_error_limit", [this, &smtpd](const toml::node& node, const std::string& key) { smtpd.hard_error_limit = static_cast<int>(count_value(node, key, 1000)); }},
            {"tls_cert_file", [this, &smtpd](const toml::node& node, const std::string& key) { smtpd.tls_cert_file = path_value(node, key); }},
            {"tls_key_file", [this, &smtpd](const toml::node& node, const std::string& key) { smtpd.tls_key_file = path_value(node, key); }},
            {"tls_next_cert_file",
             [this, &smtpd](const toml::node& node, const std::string& key) {
                 smtpd.tls_next_cert_file = path_value(node, key);
                 check_certificate_file(node, key, smtpd.tls_next_cert_file);
             }},
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
                 const std::string accepted = std::string("one of ") + policy::level_names();
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
            {"connection_cache_time_limit", [this, &smtp](const toml::node& node, const std::string& key) { smtp.connection_cache_time_limit = duration_value(node, key); }},
            {"connection_reuse_time_limit", [this, &smtp](const toml::node& node, const std::string& key) { smtp.connection_reuse_time_limit = duration_value(node, key); }},
            {"tls_policy", [this, &smtp](const toml::node& node, const std::string& key) { read_tls_policies(node, key, smtp); }},
            {"tls_policy_maps",
             [this, &smtp](const toml::node& node, const std::string& key) {
                 smtp.tls_policy_maps = path_value(node, key);
                 load_policy_maps(node, smtp);
             }},
            {"tls_dane_insecure_mx_policy",
             [this, &smtp](const toml::node& node, const std::string& key) {
                 const std::string accepted = "one of dane, may";
                 auto text = string_value(node, key, accepted);
                 if (text != "dane" && text != "may") {
                     fail_value(node, key, accepted);
                 }
                 smtp.tls_dane_insecure_mx = text == "dane";
             }},
            {"tls_wrappermode", [this, &smtp](const toml::node& node, const std::string& key) { smtp.tls_wrappermode = bool_value(node, key); }},
            {"sasl_password_file", [this, &smtp](const toml::node& node, const std::string& key) { smtp.sasl_password_file = path_value(node, key); }},
            {"sender_relayhost",
             [this, &smtp](const toml::node& node, const std::string& key) {
                 const std::string accepted = "an array of tables [[smtp.sender_relayhost]] with sender and nexthop";
                 const std::string hop_accepted = "\"[host]:port\", \"host:port\" or \"host\"";
                 const auto* array = node.as_array();
                 if (!array) {
                     fail_value(node, key, accepted);
                 }
                 smtp.sender_relayhost.clear();
                 for (const auto& item : *array) {
                     const auto* table = item.as_table();
                     if (!table) {
                         fail_value(item, key, accepted);
                     }
                     Smtp::SenderRelayhost entry;
                     std::map<std::string, Handler> handlers = {
                         {"sender",
                          [&](const toml::node& n, const std::string& k) {
                              entry.sender = string_value(n, k, "\"user@example.com\" or \"@example.com\"");
                              std::transform(entry.sender.begin(), entry.sender.end(), entry.sender.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
                              if (entry.sender.find('@') == std::string::npos || entry.sender.back() == '@') {
                                  fail_value(n, k, "\"user@example.com\" or \"@example.com\"");
                              }
                          }},
                         {"nexthop",
                          [&](const toml::node& n, const std::string& k) {
                              auto hop = parse_next_hop(string_value(n, k, hop_accepted));
                              if (!hop) {
                                  fail_value(n, k, hop_accepted);
                              }
                              entry.nexthop = *hop;
                          }},
                     };
                     read_table(*table, key, handlers);
                     if (entry.sender.empty() || entry.nexthop.host.empty()) {
                         throw ConfigError(where(item) + ": " + key + " entry needs sender and nexthop");
                     }
                     smtp.sender_relayhost.push_back(std::move(entry));
                 }
             }},
        };
    }

    // Reads [[smtp.tls_policy]] entries: domain, level and Postfix's
    // attributes, each checked as the policy table file's entries are.
    void read_tls_policies(const toml::node& node, const std::string& key, Smtp& smtp) const {
        const std::string accepted = "an array of tables [[smtp.tls_policy]] with domain, level, match, "
                                     "fingerprints, protocols and ciphers";
        const auto* array = node.as_array();
        if (!array) {
            fail_value(node, key, accepted);
        }
        std::size_t number = 0;
        for (const auto& item : *array) {
            ++number;
            const auto* table = item.as_table();
            if (!table) {
                fail_value(item, key, accepted);
            }
            std::string domain;
            std::string level;
            std::vector<std::string> match;
            std::vector<std::string> fingerprints;
            std::string protocols;
            std::string ciphers;
            const std::string list = "a list of strings";
            std::map<std::string, Handler> handlers = {
                {"domain", [&](const toml::node& n, const std::string& k) { domain = string_value(n, k, "a domain, .domain or \"[host]:port\""); }},
                {"level", [&](const toml::node& n, const std::string& k) { level = string_value(n, k, std::string("one of ") + policy::level_names()); }},
                {"match", [&](const toml::node& n, const std::string& k) { match = string_list(n, k, list); }},
                {"fingerprints", [&](const toml::node& n, const std::string& k) { fingerprints = string_list(n, k, list); }},
                {"protocols", [&](const toml::node& n, const std::string& k) { protocols = string_value(n, k, "a string such as \">=TLSv1.2\""); }},
                {"ciphers", [&](const toml::node& n, const std::string& k) { ciphers = string_value(n, k, "one of export, low, medium, high, null"); }},
            };
            read_table(*table, key, handlers);

            std::string error;
            if (domain.empty() || level.empty()) {
                throw ConfigError(where(item) + ": invalid " + key + " entry: domain and level are required");
            }
            auto normalized = policy::normalize_key(domain, error);
            auto entry_policy = normalized ? policy::build_policy(level, match, fingerprints, protocols, ciphers, error)
                                           : std::nullopt;
            if (!entry_policy) {
                throw ConfigError(where(item) + ": invalid " + key + " entry for " + domain + ": " + error);
            }
            try {
                // The origin names the entry by its position too, because
                // `tlsrelay check` shows it and an entry from an environment
                // variable has no line.
                smtp.tls_policy.add(policy::Entry{*normalized, std::move(*entry_policy),
                                                  where(item) + " [[smtp.tls_policy]] #" + std::to_string(number)});
            } catch (const policy::TableError& duplicate) {
                throw ConfigError(duplicate.what());
            }
        }
    }

    // Checks that a PEM file contains at least one certificate and that each
    // parses, so start and SIGHUP reject a file that later reads would fail on.
    void check_certificate_file(const toml::node& node, const std::string& key, const fs::path& file) const {
        if (file.empty()) {
            return;
        }
        try {
            auto chain = tls::load_pem_certificates(file.string());
            if (chain.empty()) {
                throw tls::TlsSetupError(file.string() + ": no certificate found");
            }
            for (const auto& certificate : chain) {
                tls::describe_certificate(certificate);
            }
        } catch (const tls::TlsSetupError& error) {
            throw ConfigError(where(node) + ": invalid " + key + ": " + error.what());
        }
    }

    // Loads the Postfix policy table source file named by tls_policy_maps.
    void load_policy_maps(const toml::node& node, Smtp& smtp) const {
        if (smtp.tls_policy_maps.empty()) {
            return;
        }
        std::ifstream in(smtp.tls_policy_maps, std::ios::binary);
        if (!in) {
            throw ConfigError(where(node) + ": cannot read smtp.tls_policy_maps file " + smtp.tls_policy_maps.string() +
                              ": " + std::strerror(errno));
        }
        std::ostringstream text;
        text << in.rdbuf();
        try {
            policy::parse_postfix_table(text.str(), smtp.tls_policy_maps.string(), smtp.tls_policy);
        } catch (const policy::TableError& error) {
            throw ConfigError(error.what());
        }
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
            {"trusted_ad_networks",
             [this, &dns](const toml::node& node, const std::string& key) {
                 const std::string accepted = "a list of networks such as \"127.0.0.0/8\" or \"[::1]/128\"";
                 dns.trusted_ad_networks.clear();
                 for (const auto& text : string_list(node, key, accepted)) {
                     auto network = parse_network(text);
                     if (!network) {
                         throw ConfigError(where(node) + ": invalid " + key + " entry \"" + text + "\": expected " +
                                           accepted);
                     }
                     dns.trusted_ad_networks.push_back(*network);
                 }
             }},
            // RFC 6891 section 6.2.5 treats sizes below 512 as 512, and
            // 4096 is the largest size it recommends starting from.
            {"edns_buffer_size",
             [this, &dns](const toml::node& node, const std::string& key) {
                 dns.edns_buffer_size =
                     static_cast<std::uint16_t>(integer_value(node, key, 512, 4096, "an integer from 512 to 4096"));
             }},
            {"cache_size",
             [this, &dns](const toml::node& node, const std::string& key) {
                 dns.cache_size = static_cast<std::size_t>(
                     integer_value(node, key, 0, 1000000, "an integer from 0 to 1000000"));
             }},
        };
    }

    std::map<std::string, Handler> queue_keys(Queue& queue) const {
        return {
            {"minimal_backoff_time", [this, &queue](const toml::node& node, const std::string& key) { queue.minimal_backoff_time = duration_value(node, key); }},
            {"maximal_backoff_time", [this, &queue](const toml::node& node, const std::string& key) { queue.maximal_backoff_time = duration_value(node, key); }},
            {"queue_run_delay", [this, &queue](const toml::node& node, const std::string& key) { queue.queue_run_delay = duration_value(node, key); }},
            {"maximal_queue_lifetime", [this, &queue](const toml::node& node, const std::string& key) { queue.maximal_queue_lifetime = duration_value(node, key); }},
            {"bounce_queue_lifetime", [this, &queue](const toml::node& node, const std::string& key) { queue.bounce_queue_lifetime = duration_value(node, key); }},
            {"delay_warning_time", [this, &queue](const toml::node& node, const std::string& key) { queue.delay_warning_time = duration_value(node, key); }},
            {"default_destination_concurrency_limit",
             [this, &queue](const toml::node& node, const std::string& key) {
                 queue.default_destination_concurrency_limit =
                     static_cast<std::size_t>(integer_value(node, key, 1, 1000, "an integer from 1 to 1000"));
             }},
            {"default_process_limit",
             [this, &queue](const toml::node& node, const std::string& key) {
                 queue.default_process_limit =
                     static_cast<std::size_t>(integer_value(node, key, 1, 10000, "an integer from 1 to 10000"));
             }},
        };
    }

    std::map<std::string, Handler> log_keys(Log& log) const {
        return {
            {"format",
             [this, &log](const toml::node& node, const std::string& key) {
                 auto text = string_value(node, key, "text or json");
                 if (text != "text" && text != "json") {
                     fail_value(node, key, "text or json");
                 }
                 log.format = text == "json" ? LogFormat::json : LogFormat::text;
             }},
        };
    }

    std::map<std::string, Handler> metrics_keys(Metrics& metrics) const {
        return {
            {"listen",
             [this, &metrics](const toml::node& node, const std::string& key) {
                 const std::string accepted = "\"addr:port\", \"[v6addr]:port\" or \"\"";
                 auto text = string_value(node, key, accepted);
                 if (text.empty()) {
                     metrics.listen.reset();
                     return;
                 }
                 metrics.listen = parse_endpoint(text);
                 if (!metrics.listen) {
                     fail_value(node, key, accepted);
                 }
             }},
            {"window",
             [this, &metrics](const toml::node& node, const std::string& key) {
                 // Counters are kept per UTC day, so the window is whole days.
                 auto seconds = duration_value(node, key).count();
                 if (seconds % 86400 != 0 || seconds < 86400 || seconds > 366 * 86400) {
                     fail_value(node, key, "a number of days from \"1d\" to \"366d\"");
                 }
                 metrics.window_days = static_cast<int>(seconds / 86400);
             }},
            {"domain_limit",
             [this, &metrics](const toml::node& node, const std::string& key) {
                 metrics.domain_limit =
                     static_cast<std::size_t>(integer_value(node, key, 0, 10000, "an integer from 0 to 10000"));
             }},
        };
    }

private:
    Config& config_;
    fs::path file_;
    const std::map<const toml::node*, std::string>* origins_ = nullptr;
};

Config defaults(const fs::path& file) {
    Config config;
    config.config_file = file;
    config.queue_directory = (file.parent_path() / "var/queue").lexically_normal();
    config.smtpd.listen.emplace_back(asio::ip::make_address("127.0.0.1"), 2525);
    config.smtpd.mynetworks = {*parse_network("127.0.0.0/8"), *parse_network("[::1]/128")};
    config.dns.trusted_ad_networks = {*parse_network("127.0.0.0/8"), *parse_network("[::1]/128")};
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
    if (config.smtpd.listen.empty() && config.smtpd.listeners.empty()) {
        throw ConfigError(file + ": no listening address: set smtpd.listen or add an [[smtpd.listener]] table");
    }
    if (config.smtpd.tls_cert_file.empty() != config.smtpd.tls_key_file.empty()) {
        throw ConfigError(file + ": smtpd.tls_cert_file and smtpd.tls_key_file must be set together, or both left empty for a self-signed certificate");
    }
    if (config.queue.minimal_backoff_time > config.queue.maximal_backoff_time) {
        throw ConfigError(file + ": queue.minimal_backoff_time is longer than queue.maximal_backoff_time");
    }
}

toml::table parse_toml(std::string_view text, const std::string& source) {
    try {
        return toml::parse(text, source);
    } catch (const toml::parse_error& error) {
        const auto& begin = error.source().begin;
        throw ConfigError(source + ":" + std::to_string(begin.line) + ":" + std::to_string(begin.column) +
                          ": TOML syntax error: " + std::string(error.description()));
    }
}

std::string lower(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return text;
}

// Reads one variable's value as a TOML value; text that is not valid TOML
// (a host name, a level) is taken as a plain string.
toml::table value_table(const std::string& name, const std::string& value) {
    const std::string source = "environment variable " + name;
    try {
        return toml::parse("value = " + value, source);
    } catch (const toml::parse_error&) {
        toml::table table;
        table.insert("value", value);
        return table;
    }
}

// Records `node` and everything inside it as coming from `variable`.
void record_origin(const toml::node& node, const std::string& variable,
                   std::map<const toml::node*, std::string>& origins) {
    origins[&node] = variable;
    if (const auto* table = node.as_table()) {
        for (const auto& [key, child] : *table) {
            record_origin(child, variable, origins);
        }
    } else if (const auto* array = node.as_array()) {
        for (const auto& child : *array) {
            record_origin(child, variable, origins);
        }
    }
}

// Merges `overlay` into `base`: tables merge key by key, arrays of tables
// are appended (so a fragment adds policy or listener entries), and any
// other value replaces the one in `base`. Merged nodes are recorded as
// coming from `variable`.
void merge(toml::table& base, const toml::table& overlay, const std::string& variable,
           std::map<const toml::node*, std::string>& origins) {
    for (const auto& [key, node] : overlay) {
        auto* existing = base.get(key);
        if (existing && existing->is_table() && node.is_table()) {
            merge(*existing->as_table(), *node.as_table(), variable, origins);
        } else if (existing && existing->is_array_of_tables() && node.is_array_of_tables()) {
            for (const auto& item : *node.as_array()) {
                existing->as_array()->push_back(item);
                record_origin(existing->as_array()->back(), variable, origins);
            }
        } else {
            base.insert_or_assign(key, node);
            record_origin(*base.get(key), variable, origins);
        }
    }
}

void apply_environment(toml::table& root, const Environment& environment,
                       const std::map<std::string, std::vector<std::string>>& schema,
                       std::map<const toml::node*, std::string>& origins) {
    constexpr std::string_view prefix = "TLSRELAY_";
    for (const auto& [name, value] : environment) {
        if (name == fragment_variable) {
            merge(root, parse_toml(value, name), name, origins);
        }
    }
    for (const auto& [name, value] : environment) {
        if (name.rfind(prefix, 0) != 0 || name == fragment_variable) {
            continue;
        }

        // TLSRELAY_KEY or TLSRELAY_SECTION__KEY, matched case-insensitively.
        std::string rest = lower(name.substr(prefix.size()));
        auto separator = rest.find("__");
        std::string section = separator == std::string::npos ? "" : rest.substr(0, separator);
        std::string key = separator == std::string::npos ? rest : rest.substr(separator + 2);
        auto keys = schema.find(section);
        const std::string where = "environment variable " + name;
        if (keys == schema.end() || section.empty() != (separator == std::string::npos)) {
            throw ConfigError(where + ": unknown section \"" + section +
                              "\": use TLSRELAY_KEY for top-level keys or TLSRELAY_SECTION__KEY with a section of "
                              "smtpd, smtp, dns, queue, log, metrics");
        }
        auto match = std::find_if(keys->second.begin(), keys->second.end(),
                                  [&key](const std::string& candidate) { return lower(candidate) == key; });
        if (match == keys->second.end() || (section.empty() && schema.count(*match) > 0)) {
            throw ConfigError(where + ": unknown key " + (section.empty() ? key : section + "." + key));
        }

        auto parsed = value_table(name, value);
        toml::table* target = &root;
        if (!section.empty()) {
            if (!root.contains(section)) {
                root.insert(section, toml::table{});
            }
            target = root.get(section)->as_table();
            if (target == nullptr) {
                throw ConfigError(where + ": " + section + " is not a table in the configuration file");
            }
        }
        target->insert_or_assign(*match, *parsed.get("value"));
        record_origin(*target->get(*match), name, origins);
    }
}

}  // namespace

std::vector<std::string> known_keys() {
    Config scratch;
    Reader reader(scratch, "");
    std::vector<std::string> keys;
    for (const auto& [section, names] : reader.schema()) {
        for (const auto& name : names) {
            if (section.empty() && reader.schema().count(name) > 0) {
                continue;
            }
            keys.push_back(section.empty() ? name : section + "." + name);
        }
    }
    return keys;
}

Config parse(std::string_view toml_text, const fs::path& file, const Environment& environment) {
    toml::table root = parse_toml(toml_text, file.string());
    std::map<const toml::node*, std::string> origins;
    {
        Config scratch;
        apply_environment(root, environment, Reader(scratch, file).schema(), origins);
    }

    Config config = defaults(file);
    Reader reader(config, file);
    reader.set_origins(&origins);
    reader.read_table(root, "", reader.top_level());
    if (config.myhostname.empty()) {
        config.myhostname = system_host_name();
    }
    check_consistency(config);
    return config;
}

Config load(const fs::path& file, const Environment& environment) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
        throw ConfigError(file.string() + ": cannot read configuration file: " + std::strerror(errno));
    }
    std::ostringstream text;
    text << in.rdbuf();
    return parse(text.str(), fs::absolute(file).lexically_normal(), environment);
}

Environment process_environment() {
    Environment environment;
    for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
        std::string_view text(*entry);
        auto equals = text.find('=');
        if (text.rfind("TLSRELAY_", 0) == 0 && equals != std::string_view::npos) {
            environment.emplace_back(std::string(text.substr(0, equals)), std::string(text.substr(equals + 1)));
        }
    }
    return environment;
}

}  // namespace tlsrelay::config
