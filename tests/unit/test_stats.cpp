#include <catch2/catch.hpp>

#include <stdlib.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include <asio/io_context.hpp>

#include "tlsrelay/config/config.hpp"
#include "tlsrelay/stats/metrics.hpp"
#include "tlsrelay/stats/recorder.hpp"
#include "tlsrelay/stats/report.hpp"

using tlsrelay::policy::Level;
using tlsrelay::policy::Trust;
using namespace tlsrelay::stats;

namespace {

namespace fs = std::filesystem;

constexpr std::int64_t day_seconds = 86400;
// 2025-12-04 12:00:00 UTC.
constexpr std::int64_t noon = 1764849600;

struct TempDir {
    TempDir() {
        std::string pattern = (fs::temp_directory_path() / "tlsrelay-stats-XXXXXX").string();
        REQUIRE(mkdtemp(pattern.data()) != nullptr);
        path = pattern;
    }
    ~TempDir() { fs::remove_all(path); }
    fs::path path;
};

std::uint64_t messages(const Counts& counts, Trust trust) { return counts.messages[static_cast<std::size_t>(trust)]; }
std::uint64_t sessions(const Counts& counts, Trust trust) { return counts.sessions[static_cast<std::size_t>(trust)]; }
std::uint64_t deferrals(const Counts& counts, Deferral reason) {
    return counts.deferrals[static_cast<std::size_t>(reason)];
}

Counts counts_with_messages(Trust trust, std::uint64_t count) {
    Counts counts;
    counts.messages[static_cast<std::size_t>(trust)] = count;
    counts.sessions[static_cast<std::size_t>(trust)] = 1;
    return counts;
}

DomainPolicy policy_at(Level level) { return DomainPolicy{level, "smtp.tls_security_level", "example.org"}; }

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// Sends `request` to 127.0.0.1:port and returns everything the server
// sends until it closes the connection.
std::string http_exchange(std::uint16_t port, const std::string& request) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    timeval timeout{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    std::size_t sent = 0;
    while (sent < request.size()) {
        auto written = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
        if (written <= 0) {
            break;  // the server may close early on an oversized request
        }
        sent += static_cast<std::size_t>(written);
    }
    std::string reply;
    char buffer[4096];
    for (;;) {
        auto got = ::recv(fd, buffer, sizeof buffer, 0);
        if (got <= 0) {
            break;
        }
        reply.append(buffer, static_cast<std::size_t>(got));
    }
    ::close(fd);
    return reply;
}

}  // namespace

TEST_CASE("stats deferral reasons from dsn and text", "[stats]") {
    CHECK(classify_deferral("4.7.5", "server certificate not trusted: unable to get local issuer certificate") ==
          Deferral::tls_required);
    CHECK(classify_deferral("4.7.4", "TLS is required, but was not offered by host mx.example.org[192.0.2.1]:25") ==
          Deferral::tls_required);
    CHECK(classify_deferral("4.4.1", "connect to mx.example.org[192.0.2.1]:25: Connection refused") ==
          Deferral::connect);
    CHECK(classify_deferral("4.4.2", "conversation with mx.example.org[192.0.2.1]:25 timed out while sending RCPT TO") ==
          Deferral::connect);
    CHECK(classify_deferral("4.4.3", "Host or domain name not found. Name service error for name=example.org type=MX") ==
          Deferral::dns);
    CHECK(classify_deferral("4.7.1", "host mx.example.org[192.0.2.1]:25 said: 450 4.7.1 Greylisted (in reply to RCPT TO command)") ==
          Deferral::remote_4xx);
    CHECK(classify_deferral("4.7.0", "SMTP AUTH PLAIN failed: host smtp.example.net[192.0.2.2]:587 said: 435 4.7.8 Error") ==
          Deferral::auth);
    CHECK(classify_deferral("4.4.5", "too many deliveries to example.org in progress") == Deferral::concurrency);
    CHECK(classify_deferral("4.3.0", "something else") == Deferral::other);
    // A suspended destination keeps the reason of the failure behind it.
    CHECK(classify_deferral("4.7.5", "delivery temporarily suspended: server certificate not trusted") ==
          Deferral::tls_required);

    for (auto reason : {Deferral::tls_required, Deferral::connect, Deferral::dns, Deferral::remote_4xx, Deferral::auth,
                        Deferral::concurrency, Deferral::other}) {
        CHECK(parse_deferral(to_string(reason)) == reason);
    }
    CHECK_FALSE(parse_deferral("timeout"));
}

TEST_CASE("stats days are UTC dates", "[stats]") {
    CHECK(format_day(0) == "1970-01-01");
    CHECK(format_day(day_of(noon)) == "2025-12-04");
    CHECK(day_of(noon - 12 * 3600) == day_of(noon));      // midnight starts the day
    CHECK(day_of(noon - 12 * 3600 - 1) == day_of(noon) - 1);
    CHECK(day_of(-1) == -1);
    CHECK(parse_day("2025-12-04") == day_of(noon));
    CHECK(parse_day("2024-02-29") == day_of(noon) - 644);
    CHECK_FALSE(parse_day("2025-02-29"));
    CHECK_FALSE(parse_day("2025-13-01"));
    CHECK_FALSE(parse_day("2025-1-01"));
    CHECK_FALSE(parse_day("20251204xx"));
}

TEST_CASE("stats domains are normalized", "[stats]") {
    CHECK(normalize_domain("Example.ORG.") == "example.org");
    CHECK(normalize_domain("bücher.example") == "xn--bcher-kva.example");
}

TEST_CASE("stats recorder counts results and sessions", "[stats]") {
    TempDir dir;
    Recorder recorder(dir.path / "stats" / "tls-outcomes", 30, 100);
    recorder.set_clock([] { return noon; });
    recorder.load();

    recorder.record_session("example.org", Trust::verified, Level::may);
    recorder.record_session("example.org", Trust::verified, Level::dane);
    recorder.record_result("alice@Example.org", "sent", Trust::verified, "2.0.0", "250 2.0.0 Ok");
    recorder.record_result("bob@example.org", "sent", Trust::verified, "2.0.0", "250 2.0.0 Ok");
    recorder.record_result("carol@example.org", "deferred", Trust::none, "4.7.5", "server certificate not trusted");
    recorder.record_result("dave@example.org", "bounced", Trust::verified, "5.1.1", "host said: 550 5.1.1 unknown");
    recorder.record_result("postmaster", "sent", Trust::none, "2.0.0", "no domain, not counted");

    auto totals = recorder.history().totals(day_of(noon), day_of(noon));
    REQUIRE(totals.size() == 1);
    const auto& counts = totals.at("example.org");
    CHECK(messages(counts, Trust::verified) == 2);
    CHECK(counts.total_messages() == 2);
    CHECK(sessions(counts, Trust::verified) == 2);
    CHECK(counts.dane_sessions == 1);
    CHECK(deferrals(counts, Deferral::tls_required) == 1);
    CHECK(counts.total_deferrals() == 1);
    CHECK(counts.bounces == 1);

    // The process totals for the metrics count the same.
    REQUIRE(recorder.domain_totals().count("example.org") == 1);
    CHECK(messages(recorder.domain_totals().at("example.org"), Trust::verified) == 2);
    CHECK(recorder.other_totals().empty());
}

TEST_CASE("stats recorder rolls day buckets out of the window", "[stats]") {
    TempDir dir;
    std::int64_t now = noon;
    Recorder recorder(dir.path / "tls-outcomes", 3, 100);
    recorder.set_clock([&now] { return now; });
    recorder.load();

    recorder.record_result("a@old.example", "sent", Trust::trusted, "2.0.0", "ok");
    now += day_seconds;
    recorder.record_result("a@new.example", "sent", Trust::verified, "2.0.0", "ok");
    recorder.record_result("b@new.example", "sent", Trust::verified, "2.0.0", "ok");
    CHECK(recorder.history().domains().size() == 2);
    CHECK(recorder.history().domains().at("new.example").size() == 1);

    // Day 3 of a 3-day window still contains the first day.
    now += day_seconds;
    recorder.record_result("c@new.example", "sent", Trust::verified, "2.0.0", "ok");
    CHECK(recorder.history().domains().count("old.example") == 1);
    CHECK(recorder.history().domains().at("new.example").size() == 2);

    // Day 4 drops it.
    now += day_seconds;
    recorder.record_result("d@new.example", "sent", Trust::verified, "2.0.0", "ok");
    CHECK(recorder.history().domains().count("old.example") == 0);
    auto totals = recorder.history().totals(day_of(now) - 2, day_of(now));
    CHECK(messages(totals.at("new.example"), Trust::verified) == 4);

    // The process totals never drop anything: they are Prometheus counters.
    CHECK(messages(recorder.domain_totals().at("old.example"), Trust::trusted) == 1);
}

TEST_CASE("stats history file round trip", "[stats]") {
    History history;
    auto day = day_of(noon);
    auto& first = history.at("example.org", day);
    first.messages[static_cast<std::size_t>(Trust::verified)] = 412;
    first.sessions[static_cast<std::size_t>(Trust::verified)] = 20;
    first.dane_sessions = 3;
    first.deferrals[static_cast<std::size_t>(Deferral::tls_required)] = 2;
    first.bounces = 1;
    history.at("plain.example", day - 1).messages[static_cast<std::size_t>(Trust::none)] = 7;

    auto text = history.serialize();
    CHECK(text ==
          "tlsrelay-tls-outcomes 1\n"
          "2025-12-04 example.org messages.verified=412 sessions.verified=20 dane_sessions=3 "
          "deferrals.tls_required=2 bounces=1\n"
          "2025-12-03 plain.example messages.none=7\n");

    std::vector<std::string> problems;
    auto parsed = History::parse(text, problems);
    CHECK(problems.empty());
    CHECK(parsed.serialize() == text);

    auto with_problems = History::parse(
        "tlsrelay-tls-outcomes 1\n"
        "2025-12-04 example.org messages.verified=1 messages.excellent=4 future_counter=9\n"
        "yesterday example.org messages.verified=1\n"
        "2025-12-04 example.org messages.verified=x\n",
        problems);
    REQUIRE(problems.size() == 4);
    CHECK(problems[0] == "line 2: unknown counter \"messages.excellent=4\" skipped");
    CHECK(problems[1] == "line 2: unknown counter \"future_counter=9\" skipped");
    CHECK(problems[2] == "line 3: expected a day (YYYY-MM-DD) and a domain; line skipped");
    CHECK(problems[3] == "line 4: unknown counter \"messages.verified=x\" skipped");
    CHECK(messages(with_problems.totals(day, day).at("example.org"), Trust::verified) == 1);

    problems.clear();
    auto other_format = History::parse("something else\n2025-12-04 example.org messages.verified=1\n", problems);
    CHECK(other_format.domains().empty());
    REQUIRE(problems.size() == 1);
    CHECK(problems[0] == "line 1: expected \"tlsrelay-tls-outcomes 1\"; the file is not read");
}

TEST_CASE("stats recorder saves and loads the file", "[stats]") {
    TempDir dir;
    auto file = outcomes_file(dir.path);
    CHECK(file == dir.path / "stats" / "tls-outcomes");
    std::int64_t now = noon;
    {
        Recorder recorder(file, 30, 100);
        recorder.set_clock([&now] { return now; });
        recorder.load();
        CHECK(recorder.save());
        CHECK_FALSE(fs::exists(file));  // nothing counted, nothing written

        recorder.record_session("example.org", Trust::verified, Level::may);
        recorder.record_result("a@example.org", "sent", Trust::verified, "2.0.0", "ok");
        recorder.record_result("b@plain.example", "sent", Trust::none, "2.0.0", "ok");
        REQUIRE(recorder.save());
    }
    REQUIRE(fs::exists(file));
    CHECK_FALSE(fs::exists(dir.path / "stats" / "tls-outcomes.tmp"));
    CHECK(read_file(file) ==
          "tlsrelay-tls-outcomes 1\n"
          "2025-12-04 example.org messages.verified=1 sessions.verified=1\n"
          "2025-12-04 plain.example messages.none=1\n");

    // A restart the next day adds to the same file.
    now += day_seconds;
    Recorder restarted(file, 30, 100);
    restarted.set_clock([&now] { return now; });
    restarted.load();
    restarted.record_result("c@example.org", "sent", Trust::verified, "2.0.0", "ok");
    REQUIRE(restarted.save());
    auto totals = restarted.history().totals(day_of(now) - 29, day_of(now));
    CHECK(messages(totals.at("example.org"), Trust::verified) == 2);
    CHECK(messages(totals.at("plain.example"), Trust::none) == 1);

    // A restart after the window has passed starts empty.
    now += 40 * day_seconds;
    Recorder late(file, 30, 100);
    late.set_clock([&now] { return now; });
    late.load();
    CHECK(late.history().domains().empty());
}

TEST_CASE("stats recorder caps metrics series", "[stats]") {
    TempDir dir;
    auto file = dir.path / "tls-outcomes";
    {
        std::ofstream out(file);
        out << "tlsrelay-tls-outcomes 1\n"
               "2025-12-04 busy.example messages.verified=50\n"
               "2025-12-04 quiet.example messages.verified=2\n";
    }
    Recorder recorder(file, 30, 1);
    recorder.set_clock([] { return noon; });
    recorder.load();
    // The busiest domain of the window owns the one series.
    REQUIRE(recorder.domain_totals().size() == 1);
    CHECK(recorder.domain_totals().count("busy.example") == 1);

    recorder.record_result("a@quiet.example", "sent", Trust::trusted, "2.0.0", "ok");
    recorder.record_result("a@busy.example", "sent", Trust::verified, "2.0.0", "ok");
    CHECK(messages(recorder.other_totals(), Trust::trusted) == 1);
    CHECK(messages(recorder.domain_totals().at("busy.example"), Trust::verified) == 1);
    CHECK(recorder.domain_totals().size() == 1);
}

TEST_CASE("stats report suggests verify when all verified", "[stats]") {
    auto report = assess("example.org", counts_with_messages(Trust::verified, 412), policy_at(Level::may), 30);
    CHECK(report.summary == "example.org: 412 messages over 30 days, all Verified → `verify` would have delivered all of them");
    CHECK(report.suggestion == Level::verify);
    CHECK(report.warnings.empty());

    // Already at verify: nothing to suggest.
    auto strict = assess("example.org", counts_with_messages(Trust::verified, 412), policy_at(Level::verify), 30);
    CHECK(strict.summary == "example.org: 412 messages over 30 days, all Verified");
    CHECK_FALSE(strict.suggestion);

    auto single = assess("example.org", counts_with_messages(Trust::verified, 1), policy_at(Level::none), 1);
    CHECK(single.summary == "example.org: 1 message over 1 day, Verified → `verify` would have delivered it");
}

TEST_CASE("stats report suggests encrypt for any TLS", "[stats]") {
    Counts counts = counts_with_messages(Trust::verified, 400);
    counts.messages[static_cast<std::size_t>(Trust::trusted)] = 12;
    auto report = assess("example.org", counts, policy_at(Level::may), 30);
    CHECK(report.summary ==
          "example.org: 412 messages over 30 days: 400 Verified, 12 Trusted → `encrypt` would have delivered all of them");
    CHECK(report.suggestion == Level::encrypt);

    auto anonymous = assess("example.org", counts_with_messages(Trust::anonymous, 3), policy_at(Level::may), 30);
    CHECK(anonymous.suggestion == Level::encrypt);
    CHECK_FALSE(assess("example.org", counts_with_messages(Trust::anonymous, 3), policy_at(Level::encrypt), 30).suggestion);
}

TEST_CASE("stats report suggests nothing after plaintext", "[stats]") {
    Counts counts = counts_with_messages(Trust::verified, 400);
    counts.messages[static_cast<std::size_t>(Trust::none)] = 1;
    auto report = assess("example.org", counts, policy_at(Level::may), 30);
    CHECK(report.summary == "example.org: 401 messages over 30 days: 400 Verified, 1 none (no TLS)");
    CHECK_FALSE(report.suggestion);

    auto empty = assess("example.org", Counts{}, policy_at(Level::may), 30);
    CHECK(empty.summary == "example.org: 0 messages over 30 days");
    CHECK_FALSE(empty.suggestion);
}

TEST_CASE("stats report tells DANE from CA verification", "[stats]") {
    Counts dane = counts_with_messages(Trust::verified, 10);
    dane.sessions[static_cast<std::size_t>(Trust::verified)] = 4;
    dane.dane_sessions = 4;
    CHECK(assess("example.org", dane, policy_at(Level::dane), 30).suggestion == Level::dane_only);

    // Some hosts by DANE, some by a CA: only encrypt holds for all.
    Counts mixed = dane;
    mixed.dane_sessions = 2;
    CHECK(assess("example.org", mixed, policy_at(Level::may), 30).suggestion == Level::encrypt);
}

TEST_CASE("stats report warns when a strict level defers", "[stats]") {
    Counts counts;
    counts.deferrals[static_cast<std::size_t>(Deferral::tls_required)] = 12;
    counts.deferrals[static_cast<std::size_t>(Deferral::connect)] = 3;
    DomainPolicy policy{Level::verify, "/etc/tlsrelay/tlsrelay.toml:40 [[smtp.tls_policy]] #1", "strict.example"};
    auto report = assess("strict.example", counts, policy, 30);
    REQUIRE(report.warnings.size() == 1);
    CHECK(report.warnings[0] ==
          "warning: strict.example: level `verify` (/etc/tlsrelay/tlsrelay.toml:40 [[smtp.tls_policy]] #1) caused "
          "12 deferrals because the TLS it requires could not be reached; see the status=deferred lines with "
          "dsn=4.7.4 or 4.7.5 in the log");

    // Connection failures alone are no reason to blame the policy.
    Counts connect_only;
    connect_only.deferrals[static_cast<std::size_t>(Deferral::connect)] = 3;
    CHECK(assess("strict.example", connect_only, policy, 30).warnings.empty());
}

TEST_CASE("stats report text and json", "[stats]") {
    History history;
    auto today = day_of(noon);
    history.at("example.org", today) = counts_with_messages(Trust::verified, 5);
    history.at("example.org", today - 40) = counts_with_messages(Trust::none, 9);  // outside the days shown
    auto& strict = history.at("strict.example", today - 1);
    strict.deferrals[static_cast<std::size_t>(Deferral::tls_required)] = 2;
    strict.sessions[static_cast<std::size_t>(Trust::untrusted)] = 2;

    auto report = build_report(history, 30, today, "/var/queue/stats/tls-outcomes", [](const std::string& domain) {
        return domain == "strict.example" ? DomainPolicy{Level::secure, "f.toml:3", domain} : policy_at(Level::may);
    });
    REQUIRE(report.domains.size() == 2);
    CHECK(report.domains[0].domain == "example.org");

    CHECK(render_text(report) ==
          "Delivery counters from /var/queue/stats/tls-outcomes, 2025-11-05 to 2025-12-04 UTC (30 days)\n"
          "\n"
          "example.org: 5 messages over 30 days, all Verified → `verify` would have delivered all of them\n"
          "  policy: may (smtp.tls_security_level)\n"
          "  sessions: 1 Verified\n"
          "\n"
          "strict.example: 0 messages over 30 days\n"
          "  policy: secure (f.toml:3)\n"
          "  sessions: 2 Untrusted\n"
          "  deferrals: tls_required 2\n"
          "  warning: strict.example: level `secure` (f.toml:3) caused 2 deferrals because the TLS it requires "
          "could not be reached; see the status=deferred lines with dsn=4.7.4 or 4.7.5 in the log\n");

    auto json = render_json(report);
    CHECK(json.starts_with("{\"file\":\"/var/queue/stats/tls-outcomes\",\"days\":30,\"first_day\":\"2025-11-05\","
                           "\"last_day\":\"2025-12-04\",\"domains\":[{\"domain\":\"example.org\","));
    CHECK(json.find("\"messages\":{\"none\":0,\"anonymous\":0,\"untrusted\":0,\"trusted\":0,\"verified\":5,"
                    "\"total\":5}") != std::string::npos);
    CHECK(json.find("\"suggestion\":\"verify\"") != std::string::npos);
    CHECK(json.find("\"suggestion\":null") != std::string::npos);
    CHECK(json.find("\"deferrals\":{\"tls_required\":2,") != std::string::npos);

    auto empty = build_report(History{}, 7, today, "f", [](const std::string&) { return policy_at(Level::may); });
    CHECK(render_text(empty) == "Delivery counters from f, 2025-11-28 to 2025-12-04 UTC (7 days)\n"
                                "No deliveries were counted in these days.\n");
}

TEST_CASE("stats report finds the policy of a domain", "[stats]") {
    auto config = tlsrelay::config::parse(R"(
[smtp]
tls_security_level = "may"
[[smtp.tls_policy]]
domain = ".example.org"
level = "verify"
[[smtp.tls_policy]]
domain = "[smarthost.example.net]:587"
level = "secure"
[[transport]]
domain = "routed.example"
nexthop = "[smarthost.example.net]:587"
)",
                                          "/etc/tlsrelay/test.toml");
    auto sub = policy_for(config, "mail.example.org");
    CHECK(sub.level == Level::verify);
    CHECK(sub.source.starts_with("/etc/tlsrelay/test.toml:4"));
    CHECK(policy_for(config, "other.example").level == Level::may);
    CHECK(policy_for(config, "other.example").source == "smtp.tls_security_level");
    auto routed = policy_for(config, "routed.example");
    CHECK(routed.level == Level::secure);
    CHECK(routed.next_hop == "[smarthost.example.net]:587");
}

TEST_CASE("stats prometheus exposition", "[stats]") {
    std::map<std::string, Counts> domains;
    domains["example.org"] = counts_with_messages(Trust::verified, 3);
    domains["example.org"].deferrals[static_cast<std::size_t>(Deferral::tls_required)] = 2;
    domains["example.org"].bounces = 1;
    domains["we\"ird\\dom\nain"] = counts_with_messages(Trust::none, 1);
    Counts other = counts_with_messages(Trust::trusted, 4);

    MetricsSnapshot snapshot;
    snapshot.domains = &domains;
    snapshot.other_domains = &other;
    snapshot.queue_messages = 7;
    snapshot.oldest_message_age_seconds = 12.5;
    snapshot.deliveries_in_progress = 2;
    snapshot.inbound_sessions = 1;
    snapshot.inbound_sessions_total = 42;
    snapshot.errors_total = 3;
    auto text = render_prometheus(snapshot);

    CHECK(text.find("# HELP tlsrelay_delivery_messages_total ") != std::string::npos);
    CHECK(text.find("# TYPE tlsrelay_delivery_messages_total counter\n") != std::string::npos);
    CHECK(text.find("\ntlsrelay_delivery_messages_total{domain=\"example.org\",tls=\"verified\"} 3\n") != std::string::npos);
    CHECK(text.find("\ntlsrelay_delivery_messages_total{domain=\"_other\",tls=\"trusted\"} 4\n") != std::string::npos);
    CHECK(text.find("\ntlsrelay_delivery_messages_total{domain=\"we\\\"ird\\\\dom\\nain\",tls=\"none\"} 1\n") !=
          std::string::npos);
    CHECK(text.find("tls=\"anonymous\"") == std::string::npos);  // zero series are left out
    CHECK(text.find("\ntlsrelay_delivery_sessions_total{domain=\"example.org\",tls=\"verified\"} 1\n") !=
          std::string::npos);
    CHECK(text.find("\ntlsrelay_delivery_deferrals_total{domain=\"example.org\",reason=\"tls_required\"} 2\n") !=
          std::string::npos);
    CHECK(text.find("\ntlsrelay_delivery_bounces_total{domain=\"example.org\"} 1\n") != std::string::npos);
    CHECK(text.find("# TYPE tlsrelay_queue_messages gauge\ntlsrelay_queue_messages 7\n") != std::string::npos);
    CHECK(text.find("\ntlsrelay_queue_oldest_message_age_seconds 12.500\n") != std::string::npos);
    CHECK(text.find("\ntlsrelay_deliveries_in_progress 2\n") != std::string::npos);
    CHECK(text.find("\ntlsrelay_smtpd_sessions 1\n") != std::string::npos);
    CHECK(text.find("# TYPE tlsrelay_smtpd_sessions_total counter\ntlsrelay_smtpd_sessions_total 42\n") !=
          std::string::npos);
    CHECK(text.find("# TYPE tlsrelay_errors_total counter\ntlsrelay_errors_total 3\n") != std::string::npos);

    // Every line is a comment or "name{labels} value", and ends the text with a newline.
    REQUIRE(text.back() == '\n');
    std::size_t start = 0;
    while (start < text.size()) {
        auto end = text.find('\n', start);
        auto line = text.substr(start, end - start);
        start = end + 1;
        INFO("line: " << line);
        CHECK((line.starts_with("# HELP tlsrelay_") || line.starts_with("# TYPE tlsrelay_") ||
               line.starts_with("tlsrelay_")));
    }
}

TEST_CASE("stats metrics server answers over HTTP", "[stats]") {
    asio::io_context io;
    int renders = 0;
    MetricsServer server(io.get_executor(), [&renders] {
        ++renders;
        return std::string("tlsrelay_queue_messages 0\n");
    });
    server.listen(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    auto port = server.local_endpoint().port();
    REQUIRE(port != 0);
    auto guard = asio::make_work_guard(io);
    std::thread runner([&io] { io.run(); });

    auto ok = http_exchange(port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    CHECK(ok == "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 26\r\n"
                "Connection: close\r\n\r\ntlsrelay_queue_messages 0\n");
    auto head = http_exchange(port, "HEAD /metrics HTTP/1.0\r\n\r\n");
    CHECK(head.starts_with("HTTP/1.0 200 OK\r\n"));
    CHECK(head.ends_with("\r\n\r\n"));
    CHECK(http_exchange(port, "GET / HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 404 Not Found\r\n"));
    CHECK(http_exchange(port, "POST /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 405 Method Not Allowed\r\n"));
    CHECK(http_exchange(port, "hello\r\n\r\n").starts_with("HTTP/1.0 400 Bad Request\r\n"));
    // One byte over the limit and no blank line: the server reads all of it
    // before it replies, so closing sends no reset that could drop the reply.
    std::string oversized = "GET /metrics HTTP/1.0\r\nX-Padding: ";
    oversized += std::string(8193 - oversized.size(), 'a');
    CHECK(http_exchange(port, oversized).starts_with("HTTP/1.0 400 Bad Request\r\n"));
    // A complete head over the limit is rejected too, even when it arrives
    // with its blank line in the same read.
    std::string long_head = "GET /metrics HTTP/1.0\r\nX-Padding: ";
    long_head += std::string(9000 - long_head.size(), 'a') + "\r\n\r\n";
    CHECK(http_exchange(port, long_head).starts_with("HTTP/1.0 400 Bad Request\r\n"));
    CHECK(renders == 2);

    asio::post(io, [&server, &guard] {
        server.stop();
        guard.reset();
    });
    runner.join();
}
