// Per-recipient queue state in the spool, queue commands' control files,
// and the retry schedule.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <random>

#include "tlsrelay/queue/control.hpp"
#include "tlsrelay/queue/schedule.hpp"
#include "tlsrelay/queue/spool.hpp"

using namespace tlsrelay::queue;
namespace fs = std::filesystem;
using std::chrono::seconds;

namespace {

struct StateTempDir {
    fs::path path;
    StateTempDir() {
        path = fs::temp_directory_path() / ("tlsrelay-state-" + std::to_string(std::random_device{}()));
        fs::create_directories(path);
    }
    ~StateTempDir() { fs::remove_all(path); }
};

Envelope three_recipients() {
    Envelope envelope;
    envelope.id = make_queue_id();
    envelope.sender = "alice@example.com";
    envelope.recipients = {"bob@example.org", "carol@example.net", "dave@example.net"};
    envelope.recipient_dsn.resize(3);
    envelope.arrival_unix_ms = 1700000000123;
    envelope.client = "unknown[127.0.0.1]";
    return envelope;
}

void commit(Spool& spool, const Envelope& envelope) {
    auto writer = spool.create(envelope);
    writer.append("Subject: state\r\n\r\nbody\r\n");
    writer.commit();
}

}  // namespace

TEST_CASE("recipient state survives a spool reload") {
    StateTempDir dir;
    auto envelope = three_recipients();
    {
        Spool spool(dir.path);
        commit(spool, envelope);
        MessageState state;
        state.recipients.resize(3);
        state.held = true;
        state.recipients[0] = RecipientState{RecipientStatus::sent, 1, 0, "2.0.0", "mx.example.org[192.0.2.1]:25",
                                             "250 2.0.0 OK", true, false};
        state.recipients[1] = RecipientState{RecipientStatus::deferred, 3, 1700000900000, "4.4.1", "none",
                                             "connect to mx.example.net[192.0.2.2]:25: Connection refused", false, true};
        spool.record_state(envelope.id, state);
    }

    Spool spool(dir.path);
    auto messages = spool.recover();
    REQUIRE(messages.size() == 1);
    const auto& state = messages[0].state;
    CHECK(state.held);
    REQUIRE(state.recipients.size() == 3);
    CHECK(state.recipients[0].status == RecipientStatus::sent);
    CHECK(state.recipients[0].relay == "mx.example.org[192.0.2.1]:25");
    CHECK(state.recipients[0].reason == "250 2.0.0 OK");
    CHECK(state.recipients[1].status == RecipientStatus::deferred);
    CHECK(state.recipients[1].attempts == 3);
    CHECK(state.recipients[1].next_try_unix_ms == 1700000900000);
    CHECK(state.recipients[1].dsn == "4.4.1");
    CHECK(state.recipients[1].reason == "connect to mx.example.net[192.0.2.2]:25: Connection refused");
    CHECK(state.recipients[1].delay_warned);
    CHECK_FALSE(state.recipients[1].notified);
    CHECK(state.recipients[2].status == RecipientStatus::pending);
    CHECK(state.recipients[2].attempts == 0);
    CHECK(messages[0].finished == std::set<std::size_t>{0});
    CHECK(messages[0].content_size == 24);
}

TEST_CASE("state file keeps a reason on one line") {
    MessageState state;
    state.recipients.resize(1);
    state.recipients[0] = RecipientState{RecipientStatus::bounced, 1, 0, "5.1.1", "", "550 first\r\nsecond", false, false};
    auto parsed = parse_state(serialise_state(state), 1);
    REQUIRE(parsed);
    CHECK(parsed->recipients[0].status == RecipientStatus::bounced);
    CHECK(parsed->recipients[0].reason == "550 first  second");
    CHECK(parsed->recipients[0].relay.empty());
    CHECK_FALSE(parsed->recipients[0].notified);
}

TEST_CASE("state file of the first format still reads") {
    auto parsed = parse_state("1\n", 2);
    REQUIRE(parsed);
    CHECK(parsed->recipients[0].status == RecipientStatus::pending);
    CHECK(parsed->recipients[1].status == RecipientStatus::sent);
}

TEST_CASE("state file with an unknown status is rejected") {
    CHECK_FALSE(parse_state("tlsrelay-state 2\nrecipient 0 lost 1 0 - - - why\n", 1));
    CHECK_FALSE(parse_state("garbage\n", 1));
}

TEST_CASE("unreadable state file keeps the message") {
    StateTempDir dir;
    auto envelope = three_recipients();
    Spool spool(dir.path);
    commit(spool, envelope);
    std::ofstream(dir.path / "state" / envelope.id) << "tlsrelay-state 2\nnonsense\n";
    auto messages = spool.recover();
    REQUIRE(messages.size() == 1);
    CHECK(messages[0].finished.empty());
    CHECK(messages[0].state.recipients[0].status == RecipientStatus::pending);
}

TEST_CASE("scan lists messages without touching tmp") {
    StateTempDir dir;
    Spool spool(dir.path);
    auto first = three_recipients();
    commit(spool, first);
    std::ofstream(dir.path / "tmp" / "unfinished") << "partial";
    auto messages = spool.scan();
    REQUIRE(messages.size() == 1);
    CHECK(messages[0].envelope.id == first.id);
    CHECK(fs::exists(dir.path / "tmp" / "unfinished"));
}

TEST_CASE("retry delay doubles up to the maximum") {
    CHECK(retry_delay(1, seconds(300), seconds(4000)) == seconds(300));
    CHECK(retry_delay(2, seconds(300), seconds(4000)) == seconds(600));
    CHECK(retry_delay(4, seconds(300), seconds(4000)) == seconds(2400));
    CHECK(retry_delay(5, seconds(300), seconds(4000)) == seconds(4000));
    CHECK(retry_delay(1000, seconds(300), seconds(4000)) == seconds(4000));
    CHECK(retry_delay(1, seconds(0), seconds(0)) == seconds(1));
}

TEST_CASE("queue lifetime and delay warning thresholds") {
    const std::int64_t arrival = 1700000000000;
    CHECK_FALSE(lifetime_exceeded(arrival, arrival + 4 * 86400 * 1000LL, seconds(5 * 86400)));
    CHECK(lifetime_exceeded(arrival, arrival + 5 * 86400 * 1000LL, seconds(5 * 86400)));
    CHECK(lifetime_exceeded(arrival, arrival, seconds(0)));
    CHECK_FALSE(delay_warning_due(arrival, arrival + 86400 * 1000LL, seconds(0)));
    CHECK(delay_warning_due(arrival, arrival + 4 * 3600 * 1000LL, seconds(4 * 3600)));
    CHECK_FALSE(delay_warning_due(arrival, arrival + 3600 * 1000LL, seconds(4 * 3600)));
}

TEST_CASE("control requests are read in order and removed") {
    StateTempDir dir;
    Spool spool(dir.path);
    submit_request(dir.path, "hold ABC");
    submit_request(dir.path, "flush");
    auto requests = take_requests(dir.path);
    REQUIRE(requests.size() == 2);
    CHECK(requests[0].text == "hold ABC");
    CHECK(requests[1].text == "flush");
    for (const auto& request : requests) {
        finish_request(request);
    }
    CHECK(take_requests(dir.path).empty());
}

TEST_CASE("queue lock is exclusive") {
    StateTempDir dir;
    auto first = SpoolLock::try_acquire(dir.path);
    REQUIRE(first);
    // flock(2) locks belong to the open file description, so a second open
    // in the same process conflicts as another process would.
    CHECK_FALSE(SpoolLock::try_acquire(dir.path));
}
