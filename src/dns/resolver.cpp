#include "tlsrelay/dns/resolver.hpp"

#include <algorithm>
#include <array>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <system_error>
#include <utility>
#include <variant>

#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/udp.hpp>
#include <asio/read.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "cache.hpp"
#include "wire.hpp"

namespace tlsrelay::dns {

namespace {

using namespace asio::experimental::awaitable_operators;

// Completion token that returns (error_code, ...) instead of throwing.
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

// Maximum number of CNAME links followed for one lookup, counted over the
// reply chains and the re-queries together.
constexpr int max_cname_links = 8;

// Maximum number of datagrams that fail the reply check while one UDP query
// waits, so a flood of forged replies ends the wait before the timeout does.
constexpr int max_ignored_datagrams = 64;

// Receive buffer for UDP replies. Servers may send more than the advertised
// EDNS0 size, and such a reply is still accepted.
constexpr std::size_t max_udp_payload = 65535;

// Result of the lookup of one name and type, before conversion to the public
// record type.
struct Lookup {
    Status status = Status::temporary_failure;
    bool secure = false;
    std::string canonical_name;
    std::vector<wire::ResourceRecord> records;
    std::string reason;
};

Lookup temporary_failure(std::string canonical_name, std::string reason) {
    return Lookup{Status::temporary_failure, false, std::move(canonical_name), {}, std::move(reason)};
}

// Outcome of one query to one nameserver.
struct ServerResult {
    enum class Kind { reply, timed_out, failed };

    Kind kind = Kind::failed;
    wire::Message reply;  // for Kind::reply: a NOERROR or NXDOMAIN reply
    std::string error;    // for Kind::failed, e.g. "SERVFAIL from 127.0.0.1:53"

    static ServerResult answered(wire::Message reply) { return {Kind::reply, std::move(reply), {}}; }
    static ServerResult timeout() { return {Kind::timed_out, {}, {}}; }
    static ServerResult failure(std::string error) { return {Kind::failed, {}, std::move(error)}; }
};

// A final reply from one of the nameservers, or why none came.
struct Exchange {
    std::optional<wire::Message> reply;
    bool secure = false;
    std::string error;
};

// Failures of one nameserver over all rounds of one query.
struct ServerFailures {
    int timeouts = 0;
    bool last_timed_out = false;
    std::string last_error;
};

std::string describe(const Nameserver& server) {
    std::string address = server.address.to_string();
    if (server.address.is_v6()) {
        address = "[" + address + "]";
    }
    return address + ":" + std::to_string(server.port);
}

std::string describe(const Nameserver& server, const ServerFailures& failures) {
    if (!failures.last_timed_out) {
        return failures.last_error;
    }
    std::string attempts = failures.timeouts == 1 ? " attempt" : " attempts";
    return "timed out after " + std::to_string(failures.timeouts) + attempts + " to " + describe(server);
}

// Joins the last failure of each nameserver into one reason.
std::string describe(const std::vector<Nameserver>& servers, const std::vector<ServerFailures>& failures) {
    std::string reason;
    for (std::size_t i = 0; i < servers.size(); ++i) {
        if (!reason.empty()) {
            reason += "; ";
        }
        reason += describe(servers[i], failures[i]);
    }
    return reason;
}

// Runs `operation` until it completes or `timeout` passes, and returns
// std::nullopt on timeout. The operation that loses is cancelled.
template <typename T>
asio::awaitable<std::optional<T>> with_timeout(asio::awaitable<T> operation, std::chrono::milliseconds timeout) {
    asio::steady_timer timer(co_await asio::this_coro::executor, timeout);
    auto outcome = co_await (std::move(operation) || timer.async_wait(asio::use_awaitable));
    if (outcome.index() == 1) {
        co_return std::nullopt;
    }
    co_return std::move(std::get<0>(outcome));
}

// Over TCP each message is preceded by its length as two bytes in network
// byte order (RFC 1035 section 4.2.2).
asio::awaitable<std::error_code> write_tcp_message(asio::ip::tcp::socket& socket, const wire::Bytes& message) {
    std::array<std::uint8_t, 2> length{static_cast<std::uint8_t>(message.size() >> 8),
                                       static_cast<std::uint8_t>(message.size() & 0xff)};
    std::array<asio::const_buffer, 2> buffers{asio::buffer(length), asio::buffer(message)};
    auto [error, written] = co_await asio::async_write(socket, buffers, use_tuple);
    co_return error;
}

asio::awaitable<std::pair<std::error_code, wire::Bytes>> read_tcp_message(asio::ip::tcp::socket& socket) {
    std::array<std::uint8_t, 2> length{};
    auto [length_error, length_read] = co_await asio::async_read(socket, asio::buffer(length), use_tuple);
    if (length_error) {
        co_return std::pair{length_error, wire::Bytes{}};
    }
    wire::Bytes message((length[0] << 8) | length[1]);
    auto [error, read] = co_await asio::async_read(socket, asio::buffer(message), use_tuple);
    co_return std::pair{error, std::move(message)};
}

enum class ReplyCheck { matches, ignored, malformed };

// Checks that a datagram is the reply to our query: same id, QR set, opcode QUERY and
// the same question (RFC 5452). Anything else may be forged or
// stale, so the caller ignores it. A datagram with our id that ldns cannot
// decode is malformed.
ReplyCheck check_reply(std::span<const std::uint8_t> bytes, const wire::Question& question, std::uint16_t id,
                       wire::Message& message) {
    auto reply_id = wire::peek_id(bytes);
    if (!reply_id || *reply_id != id) {
        return ReplyCheck::ignored;
    }
    auto decoded = wire::decode_message(bytes);
    if (!decoded) {
        return ReplyCheck::malformed;
    }
    if (!decoded->response || decoded->opcode != 0 || decoded->questions.size() != 1) {
        return ReplyCheck::ignored;
    }
    // Both names are normalized to lower case, so this comparison ignores case.
    const wire::Question& echoed = decoded->questions.front();
    if (echoed.name != question.name || echoed.type != question.type || echoed.rr_class != question.rr_class) {
        return ReplyCheck::ignored;
    }
    message = std::move(*decoded);
    return ReplyCheck::matches;
}

// NOTE: FORMERR from a server without EDNS support is not retried without
// EDNS, so such a server always fails.
ServerResult check_rcode(const Nameserver& server, wire::Message reply) {
    if (reply.rcode == wire::rcode_noerror || reply.rcode == wire::rcode_nxdomain) {
        return ServerResult::answered(std::move(reply));
    }
    return ServerResult::failure(wire::rcode_name(reply.rcode) + " from " + describe(server));
}

// End of a CNAME chain within one answer section.
struct ChainEnd {
    std::string name;
    std::vector<wire::ResourceRecord> records;  // records of the queried type at `name`
    bool too_long = false;
};

// Follows CNAME records from `name` through `answers`, using up `links_left`.
ChainEnd follow_cnames(const std::vector<wire::ResourceRecord>& answers, std::string name, std::uint16_t type,
                       int& links_left) {
    ChainEnd end{std::move(name), {}, false};

    // Each pass returns or uses one of links_left, so the loop ends.
    while (true) {
        for (const auto& record : answers) {
            if (record.owner == end.name && record.type == type) {
                end.records.push_back(record);
            }
        }
        if (!end.records.empty()) {
            return end;
        }

        auto cname = std::find_if(answers.begin(), answers.end(), [&](const wire::ResourceRecord& record) {
            return record.owner == end.name && record.type == wire::type_cname;
        });
        if (cname == answers.end()) {
            return end;
        }
        if (links_left == 0) {
            end.too_long = true;
            return end;
        }
        --links_left;
        end.name = std::get<wire::CnameData>(cname->data).target;
    }
}

// Extracts the record data of type `Data` from decoded records.
template <typename Data>
std::vector<Data> record_data(const std::vector<wire::ResourceRecord>& records) {
    std::vector<Data> values;
    for (const auto& record : records) {
        if (const auto* value = std::get_if<Data>(&record.data)) {
            values.push_back(*value);
        }
    }
    return values;
}

std::vector<std::string> to_texts(const std::vector<wire::ResourceRecord>& records) {
    std::vector<std::string> texts;
    for (auto& txt : record_data<wire::TxtData>(records)) {
        texts.push_back(std::move(txt.text));
    }
    return texts;
}

template <typename Record>
Answer<Record> make_answer(Lookup& lookup, std::vector<Record> records) {
    return Answer<Record>{lookup.status, lookup.secure, std::move(lookup.canonical_name), std::move(records),
                          std::move(lookup.reason)};
}

}  // namespace

const char* to_string(Status status) {
    switch (status) {
    case Status::ok: return "ok";
    case Status::nodata: return "nodata";
    case Status::nxdomain: return "nxdomain";
    case Status::temporary_failure: return "temporary_failure";
    }
    return "unknown";
}

struct Resolver::Impl {
    Impl(asio::any_io_executor executor, ResolverOptions options)
        : executor(std::move(executor)), options(std::move(options)), cache(this->options.cache_size) {}

    asio::awaitable<Lookup> resolve(std::string name, std::uint16_t type);
    asio::awaitable<Exchange> exchange(const wire::Question& question);
    asio::awaitable<Exchange> query_nameservers(const wire::Question& question);
    asio::awaitable<ServerResult> query_server(const Nameserver& server, const wire::Question& question);
    asio::awaitable<ServerResult> exchange_udp(const Nameserver& server, const wire::Question& question);
    asio::awaitable<ServerResult> receive_reply(asio::ip::udp::socket& socket, const Nameserver& server,
                                                const wire::Question& question, std::uint16_t id);
    asio::awaitable<ServerResult> exchange_tcp(const Nameserver& server, const wire::Question& question);

    std::uint16_t random_id();
    std::vector<MxRecord> to_mx_records(const std::vector<wire::ResourceRecord>& records);

    std::uint16_t edns_buffer_size() const { return std::max(options.edns_buffer_size, wire::min_edns_udp_size); }

    asio::any_io_executor executor;
    ResolverOptions options;
    Cache cache;

    // libstdc++'s std::random_device draws from RDRAND/RDSEED, getentropy or
    // /dev/urandom, so query ids cannot be predicted from earlier ones as the
    // output of a seeded engine such as std::mt19937 can.
    std::random_device random;
    std::mutex random_mutex;
};

std::uint16_t Resolver::Impl::random_id() {
    std::lock_guard lock(random_mutex);
    return static_cast<std::uint16_t>(random());
}

// Orders MX records by preference, with equal preferences in random order
// (RFC 5321 section 5.1).
std::vector<MxRecord> Resolver::Impl::to_mx_records(const std::vector<wire::ResourceRecord>& records) {
    std::vector<MxRecord> mx_records = record_data<MxRecord>(records);

    // Shuffling first makes the stable sort leave each preference's records
    // in random order.
    {
        std::lock_guard lock(random_mutex);
        std::shuffle(mx_records.begin(), mx_records.end(), random);
    }
    std::stable_sort(mx_records.begin(), mx_records.end(),
                     [](const MxRecord& a, const MxRecord& b) { return a.preference < b.preference; });
    return mx_records;
}

asio::awaitable<Lookup> Resolver::Impl::resolve(std::string name, std::uint16_t type) {
    // NOTE: the Status values have no permanent error, so an invalid name is
    // reported as a temporary failure, and callers should not retry it.
    auto normalized = wire::normalize_name(name);
    if (!normalized) {
        co_return temporary_failure(name, "invalid domain name \"" + name + "\"");
    }
    if (options.nameservers.empty()) {
        co_return temporary_failure(*normalized, "no nameservers configured");
    }

    wire::Question question{*normalized, type, wire::class_in};
    bool secure = true;
    int links_left = max_cname_links;

    // Each pass returns or follows at least one CNAME link, so at most
    // max_cname_links + 1 queries are sent.
    while (true) {
        Exchange result = co_await exchange(question);
        if (!result.reply) {
            co_return temporary_failure(question.name, std::move(result.error));
        }
        secure = secure && result.secure;

        ChainEnd end = follow_cnames(result.reply->answers, question.name, type, links_left);
        if (end.too_long) {
            co_return temporary_failure(end.name, "CNAME chain from " + *normalized + " has more than " +
                                                      std::to_string(max_cname_links) + " links");
        }

        // The rcode applies to the last name of a CNAME chain (RFC 6604).
        if (result.reply->rcode == wire::rcode_nxdomain) {
            co_return Lookup{Status::nxdomain, secure, std::move(end.name), {}, {}};
        }
        if (!end.records.empty()) {
            co_return Lookup{Status::ok, secure, std::move(end.name), std::move(end.records), {}};
        }
        if (end.name == question.name) {
            co_return Lookup{Status::nodata, secure, std::move(end.name), {}, {}};
        }

        // The reply stopped at a CNAME without the target's records, as an
        // authoritative server does for a target outside its zones.
        question.name = end.name;
    }
}

// Returns the cached reply to `question`, or queries the nameservers and
// caches what they return.
asio::awaitable<Exchange> Resolver::Impl::exchange(const wire::Question& question) {
    if (auto cached = cache.find(question, Cache::Clock::now())) {
        co_return Exchange{std::move(cached->reply), cached->secure, {}};
    }

    Exchange result = co_await query_nameservers(question);
    if (result.reply) {
        cache.insert(question, Cache::Entry{*result.reply, result.secure}, Cache::Clock::now());
    }
    co_return result;
}

// Sends rounds of queries over all nameservers until one returns NOERROR or
// NXDOMAIN.
asio::awaitable<Exchange> Resolver::Impl::query_nameservers(const wire::Question& question) {
    const auto& servers = options.nameservers;
    std::vector<ServerFailures> failures(servers.size());
    int rounds = std::max(options.attempts, 1);

    for (int round = 0; round < rounds; ++round) {
        for (std::size_t i = 0; i < servers.size(); ++i) {
            ServerResult result = co_await query_server(servers[i], question);
            if (result.kind == ServerResult::Kind::reply) {
                bool secure =
                    result.reply.authentic_data && options.trusted_ad_networks.contains(servers[i].address);
                co_return Exchange{std::move(result.reply), secure, {}};
            }

            failures[i].last_timed_out = result.kind == ServerResult::Kind::timed_out;
            failures[i].timeouts += failures[i].last_timed_out ? 1 : 0;
            failures[i].last_error = std::move(result.error);
        }
    }
    co_return Exchange{std::nullopt, false, describe(servers, failures)};
}

// Queries one nameserver over UDP, and again over TCP when the reply is
// truncated. Each transport gets the full timeout.
asio::awaitable<ServerResult> Resolver::Impl::query_server(const Nameserver& server, const wire::Question& question) {
    auto udp_result = co_await with_timeout(exchange_udp(server, question), options.timeout);
    if (!udp_result) {
        co_return ServerResult::timeout();
    }
    ServerResult result = std::move(*udp_result);

    if (result.kind == ServerResult::Kind::reply && result.reply.truncated) {
        auto tcp_result = co_await with_timeout(exchange_tcp(server, question), options.timeout);
        if (!tcp_result) {
            co_return ServerResult::failure("TCP query to " + describe(server) + " timed out");
        }
        result = std::move(*tcp_result);
    }

    if (result.kind == ServerResult::Kind::reply) {
        co_return check_rcode(server, std::move(result.reply));
    }
    co_return result;
}

asio::awaitable<ServerResult> Resolver::Impl::exchange_udp(const Nameserver& server, const wire::Question& question) {
    std::uint16_t id = random_id();
    auto query = wire::encode_query(question, id, edns_buffer_size());
    if (!query) {
        co_return ServerResult::failure("cannot encode a query for \"" + question.name + "\"");
    }

    // A fresh socket per query gets a new random source port from the kernel
    // (RFC 5452). Connecting it makes the kernel drop datagrams
    // from other addresses and report ICMP errors.
    asio::ip::udp::endpoint endpoint(server.address, server.port);
    asio::ip::udp::socket socket(executor);
    std::error_code error;
    socket.open(endpoint.protocol(), error);
    if (!error) {
        socket.connect(endpoint, error);
    }
    if (error) {
        co_return ServerResult::failure("UDP query to " + describe(server) + " failed: " + error.message());
    }

    auto [send_error, sent] = co_await socket.async_send(asio::buffer(*query), use_tuple);
    if (send_error) {
        co_return ServerResult::failure("UDP query to " + describe(server) + " failed: " + send_error.message());
    }

    co_return co_await receive_reply(socket, server, question, id);
}

// Waits for the reply to our query and ignores other datagrams.
asio::awaitable<ServerResult> Resolver::Impl::receive_reply(asio::ip::udp::socket& socket, const Nameserver& server,
                                                            const wire::Question& question, std::uint16_t id) {
    std::vector<std::uint8_t> buffer(max_udp_payload);
    for (int ignored = 0; ignored < max_ignored_datagrams; ++ignored) {
        auto [error, size] = co_await socket.async_receive(asio::buffer(buffer), use_tuple);
        if (error) {
            co_return ServerResult::failure("UDP query to " + describe(server) + " failed: " + error.message());
        }

        wire::Message reply;
        switch (check_reply(std::span(buffer.data(), size), question, id, reply)) {
        case ReplyCheck::matches: co_return ServerResult::answered(std::move(reply));
        case ReplyCheck::malformed: co_return ServerResult::failure("malformed reply from " + describe(server));
        case ReplyCheck::ignored: break;
        }
    }
    co_return ServerResult::failure("no matching reply from " + describe(server) + " among " +
                                    std::to_string(max_ignored_datagrams) + " datagrams");
}

asio::awaitable<ServerResult> Resolver::Impl::exchange_tcp(const Nameserver& server, const wire::Question& question) {
    std::uint16_t id = random_id();
    auto query = wire::encode_query(question, id, edns_buffer_size());
    if (!query) {
        co_return ServerResult::failure("cannot encode a query for \"" + question.name + "\"");
    }

    asio::ip::tcp::socket socket(executor);
    auto [connect_error] = co_await socket.async_connect({server.address, server.port}, use_tuple);
    if (connect_error) {
        co_return ServerResult::failure("TCP connection to " + describe(server) +
                                        " failed: " + connect_error.message());
    }

    auto write_error = co_await write_tcp_message(socket, *query);
    if (write_error) {
        co_return ServerResult::failure("TCP query to " + describe(server) + " failed: " + write_error.message());
    }

    auto [read_error, buffer] = co_await read_tcp_message(socket);
    if (read_error) {
        co_return ServerResult::failure("reading the TCP reply from " + describe(server) +
                                        " failed: " + read_error.message());
    }

    // An off-path attacker cannot inject data into a TCP connection, so a
    // reply that does not match is the server's fault.
    wire::Message reply;
    if (check_reply(buffer, question, id, reply) != ReplyCheck::matches) {
        co_return ServerResult::failure("malformed or mismatched TCP reply from " + describe(server));
    }
    co_return ServerResult::answered(std::move(reply));
}

Resolver::Resolver(asio::any_io_executor executor, ResolverOptions options)
    : impl_(std::make_unique<Impl>(std::move(executor), std::move(options))) {}

Resolver::~Resolver() = default;

asio::awaitable<Answer<MxRecord>> Resolver::query_mx(std::string name) {
    Lookup lookup = co_await impl_->resolve(std::move(name), wire::type_mx);
    co_return make_answer(lookup, impl_->to_mx_records(lookup.records));
}

asio::awaitable<Answer<asio::ip::address>> Resolver::query_a(std::string name) {
    Lookup lookup = co_await impl_->resolve(std::move(name), wire::type_a);
    co_return make_answer(lookup, record_data<asio::ip::address>(lookup.records));
}

asio::awaitable<Answer<asio::ip::address>> Resolver::query_aaaa(std::string name) {
    Lookup lookup = co_await impl_->resolve(std::move(name), wire::type_aaaa);
    co_return make_answer(lookup, record_data<asio::ip::address>(lookup.records));
}

asio::awaitable<Answer<TlsaRecord>> Resolver::query_tlsa(std::string name) {
    Lookup lookup = co_await impl_->resolve(std::move(name), wire::type_tlsa);
    co_return make_answer(lookup, record_data<TlsaRecord>(lookup.records));
}

asio::awaitable<Answer<std::string>> Resolver::query_txt(std::string name) {
    Lookup lookup = co_await impl_->resolve(std::move(name), wire::type_txt);
    co_return make_answer(lookup, to_texts(lookup.records));
}

void apply_resolv_conf(ResolverOptions& options, const ResolvConf& conf) {
    options.nameservers = conf.nameservers;
    if (conf.timeout) {
        options.timeout = *conf.timeout;
    }
    if (conf.attempts) {
        options.attempts = *conf.attempts;
    }
}

std::string tlsa_owner_name(std::string_view host, std::uint16_t port) {
    if (!host.empty() && host.back() == '.') {
        host.remove_suffix(1);
    }
    return "_" + std::to_string(port) + "._tcp." + std::string(host);
}

}  // namespace tlsrelay::dns
