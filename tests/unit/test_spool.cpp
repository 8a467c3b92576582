#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>

#include "tlsrelay/queue/committer.hpp"
#include "tlsrelay/queue/spool.hpp"

using namespace tlsrelay::queue;
namespace fs = std::filesystem;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        path = fs::temp_directory_path() / ("tlsrelay-spool-" + std::to_string(std::random_device{}()));
        fs::create_directories(path);
    }
    ~TempDir() { fs::remove_all(path); }
};

Envelope sample_envelope() {
    Envelope envelope;
    envelope.id = make_queue_id();
    envelope.sender = "alice@example.com";
    envelope.recipients = {"bob@example.org", "carol@example.net"};
    envelope.arrival_unix_ms = 1700000000123;
    envelope.client = "unknown[127.0.0.1]";
    envelope.eight_bit = true;
    return envelope;
}

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE("queue ids are unique and sortable") {
    auto first = make_queue_id();
    auto second = make_queue_id();
    CHECK(first != second);
    CHECK(first.size() == 15);
    CHECK(first.find_first_not_of("0123456789ABCDEF") == std::string::npos);
}

TEST_CASE("spool commit moves the message into active") {
    TempDir dir;
    Spool spool(dir.path);
    auto envelope = sample_envelope();
    {
        auto writer = spool.create(envelope);
        CHECK(fs::exists(dir.path / "tmp" / envelope.id));
        writer.append("Subject: test\r\n\r\nbody line\r\n");
        writer.commit();
    }
    CHECK_FALSE(fs::exists(dir.path / "tmp" / envelope.id));
    REQUIRE(fs::exists(dir.path / "active" / envelope.id));
    CHECK((fs::status(dir.path / "active" / envelope.id).permissions() & fs::perms::others_read) == fs::perms::none);

    auto loaded = spool.load(envelope.id);
    REQUIRE(loaded);
    CHECK(loaded->envelope.sender == "alice@example.com");
    CHECK(loaded->envelope.recipients == envelope.recipients);
    CHECK(loaded->envelope.arrival_unix_ms == 1700000000123);
    CHECK(loaded->envelope.eight_bit);
    auto content = read_file(loaded->file).substr(loaded->content_offset);
    CHECK(content == "Subject: test\r\n\r\nbody line\r\n");
}

TEST_CASE("stored message matches spool load") {
    TempDir dir;
    Spool spool(dir.path);
    auto envelope = sample_envelope();
    envelope.recipient_dsn = {RecipientDsn{"SUCCESS,FAILURE", "rfc822;bob@example.org"}};
    envelope.dsn_ret = "HDRS";
    const std::string body = "Subject: test\r\n\r\nbody line\r\n";
    auto writer = spool.create(envelope);
    writer.append(body);
    writer.commit();

    auto handed = writer.stored_message(envelope);
    auto loaded = spool.load(envelope.id);
    REQUIRE(loaded);
    CHECK(handed.file == loaded->file);
    CHECK(handed.content_offset == loaded->content_offset);
    CHECK(handed.content_size == loaded->content_size);
    CHECK(handed.envelope.recipients == loaded->envelope.recipients);
    REQUIRE(handed.envelope.recipient_dsn.size() == 2);
    CHECK(handed.envelope.recipient_dsn[0].notify == "SUCCESS,FAILURE");
    CHECK(handed.envelope.recipient_dsn[1].notify.empty());
    CHECK(handed.envelope.dsn_ret == loaded->envelope.dsn_ret);
    CHECK(handed.state.recipients.size() == 2);
    CHECK(handed.state.recipients[0].status == RecipientStatus::pending);
    CHECK(handed.finished.empty());
    CHECK_FALSE(handed.has_state_file);
    REQUIRE(handed.content);
    CHECK(*handed.content == body);
    CHECK(*handed.content == read_file(loaded->file).substr(loaded->content_offset));
    CHECK_FALSE(loaded->content);
}

TEST_CASE("large message has no memory copy") {
    TempDir dir;
    Spool spool(dir.path);
    auto envelope = sample_envelope();
    auto writer = spool.create(envelope);
    std::string line(998, 'x');
    line += "\r\n";
    for (int i = 0; i < 100; ++i) {
        writer.append(line);
    }
    writer.commit();
    auto handed = writer.stored_message(envelope);
    CHECK_FALSE(handed.content);
    CHECK(handed.content_size == 100 * line.size());
    CHECK(fs::file_size(handed.file) == handed.content_offset + handed.content_size);
}

TEST_CASE("spool writer abandoned before commit leaves nothing") {
    TempDir dir;
    Spool spool(dir.path);
    auto envelope = sample_envelope();
    {
        auto writer = spool.create(envelope);
        writer.append("partial");
    }
    CHECK(fs::is_empty(dir.path / "tmp"));
    CHECK(fs::is_empty(dir.path / "active"));
}

TEST_CASE("spool recovery keeps committed mail and drops uncommitted") {
    TempDir dir;
    auto envelope = sample_envelope();
    {
        Spool spool(dir.path);
        auto writer = spool.create(envelope);
        writer.append("Subject: kept\r\n\r\nx\r\n");
        writer.commit();
        spool.record_finished(envelope.id, {1});
    }
    // A file in tmp/ is what a crash during DATA leaves behind.
    std::ofstream(dir.path / "tmp" / "0000000000000AA") << "half a message";
    // A state file without a message is what a crash during removal leaves.
    std::ofstream(dir.path / "state" / "0000000000000BB") << "0\n";

    Spool spool(dir.path);
    auto messages = spool.recover();
    REQUIRE(messages.size() == 1);
    CHECK(messages[0].envelope.id == envelope.id);
    CHECK(messages[0].finished == std::set<std::size_t>{1});
    CHECK(fs::is_empty(dir.path / "tmp"));
    CHECK_FALSE(fs::exists(dir.path / "state" / "0000000000000BB"));
}

TEST_CASE("spool moves unreadable files aside") {
    TempDir dir;
    Spool spool(dir.path);
    std::ofstream(dir.path / "active" / "0000000000000CC") << "not a queue file";
    auto messages = spool.recover();
    CHECK(messages.empty());
    CHECK(fs::exists(dir.path / "corrupt" / "0000000000000CC"));
}

TEST_CASE("spool remove deletes message and state") {
    TempDir dir;
    Spool spool(dir.path);
    auto envelope = sample_envelope();
    auto writer = spool.create(envelope);
    writer.commit();
    spool.record_finished(envelope.id, {0});
    spool.remove(envelope.id);
    CHECK(fs::is_empty(dir.path / "active"));
    CHECK(fs::is_empty(dir.path / "state"));
}

namespace {

asio::awaitable<void> commit_through(tlsrelay::queue::Committer& committer, Spool& spool, Envelope envelope,
                                     std::string body, std::vector<std::string>& errors,
                                     std::vector<StoredMessage>& handed, std::thread::id& resumed_on) {
    auto writer = spool.create(envelope);
    writer.append(body);
    auto error = co_await tlsrelay::queue::async_commit(committer, writer);
    resumed_on = std::this_thread::get_id();
    errors.push_back(error);
    handed.push_back(writer.stored_message(envelope));
}

asio::awaitable<void> remove_through(tlsrelay::queue::Committer& committer, std::string id, bool has_state_file,
                                     std::vector<std::string>& errors) {
    errors.push_back(co_await tlsrelay::queue::async_remove(committer, std::move(id), has_state_file));
}

}  // namespace

TEST_CASE("committer commits and removes in batches") {
    // Both ways to fsync a batch: on the committer thread alone, or in
    // parallel on its fsync threads.
    std::size_t fsync_threads = GENERATE(0, 4);
    TempDir dir;
    Spool spool(dir.path);
    tlsrelay::queue::Committer committer(spool, fsync_threads);
    asio::io_context io;
    std::vector<std::string> errors;
    std::vector<StoredMessage> handed;
    std::thread::id resumed_on;

    // Twenty sessions commit at once, as under load; each gets its result.
    std::vector<Envelope> envelopes;
    for (int i = 0; i < 20; ++i) {
        envelopes.push_back(sample_envelope());
        asio::co_spawn(io,
                       commit_through(committer, spool, envelopes.back(), "Subject: " + std::to_string(i) + "\r\n\r\nx\r\n",
                                      errors, handed, resumed_on),
                       asio::detached);
    }
    io.run();
    REQUIRE(errors.size() == 20);
    for (const auto& error : errors) {
        CHECK(error.empty());
    }
    CHECK(resumed_on == std::this_thread::get_id());
    // Only the spare files the committer made for later messages are left.
    for (const auto& entry : fs::directory_iterator(dir.path / "tmp")) {
        CHECK(entry.path().extension() == ".new");
    }
    for (const auto& message : handed) {
        auto loaded = spool.load(message.envelope.id);
        REQUIRE(loaded);
        REQUIRE(message.content);
        CHECK(*message.content == read_file(loaded->file).substr(loaded->content_offset));
    }

    // Removals, one with a state file, share a batch with a new commit.
    spool.record_finished(envelopes[0].id, {0});
    REQUIRE(fs::exists(dir.path / "state" / envelopes[0].id));
    errors.clear();
    handed.clear();
    io.restart();
    for (std::size_t i = 0; i < envelopes.size(); ++i) {
        asio::co_spawn(io, remove_through(committer, envelopes[i].id, i == 0, errors), asio::detached);
    }
    auto last = sample_envelope();
    asio::co_spawn(io, commit_through(committer, spool, last, "Subject: last\r\n\r\n", errors, handed, resumed_on),
                   asio::detached);
    io.run();
    REQUIRE(errors.size() == 21);
    for (const auto& error : errors) {
        CHECK(error.empty());
    }
    CHECK(fs::is_empty(dir.path / "state"));
    std::vector<std::string> left;
    for (const auto& entry : fs::directory_iterator(dir.path / "active")) {
        left.push_back(entry.path().filename().string());
    }
    CHECK(left == std::vector<std::string>{last.id});
}

TEST_CASE("spool spare files serve new messages") {
    TempDir dir;
    auto count_tmp = [&dir] {
        return std::distance(fs::directory_iterator(dir.path / "tmp"), fs::directory_iterator());
    };
    {
        Spool spool(dir.path);
        spool.make_spares(3);
        CHECK(count_tmp() == 3);

        auto envelope = sample_envelope();
        auto writer = spool.create(envelope);
        CHECK(count_tmp() == 3);
        CHECK_FALSE(fs::exists(dir.path / "tmp" / envelope.id));
        writer.append("Subject: spare\r\n\r\n");
        writer.commit();
        CHECK(count_tmp() == 2);
        auto loaded = spool.load(envelope.id);
        REQUIRE(loaded);
        CHECK(read_file(loaded->file).substr(loaded->content_offset) == "Subject: spare\r\n\r\n");

        // A writer abandoned before commit removes the spare it took.
        {
            auto abandoned = spool.create(sample_envelope());
        }
        CHECK(count_tmp() == 1);
    }
    // The spool removes the spares it did not use.
    CHECK(count_tmp() == 0);

    // recover() drops the spares with the rest of tmp/, and create() then
    // makes its own file.
    Spool spool(dir.path);
    spool.make_spares(2);
    spool.recover();
    CHECK(count_tmp() == 0);
    auto envelope = sample_envelope();
    auto writer = spool.create(envelope);
    CHECK(fs::exists(dir.path / "tmp" / envelope.id));
}

TEST_CASE("spool recycles a delivered file") {
    TempDir dir;
    Spool spool(dir.path);
    auto first = sample_envelope();
    {
        auto writer = spool.create(first);
        writer.append("Subject: a long first message\r\n\r\n" + std::string(5000, 'a') + "\r\n");
        writer.commit();
    }
    auto spare = spool.recycle(first.id, 4);
    REQUIRE_FALSE(spare.empty());
    CHECK_FALSE(fs::exists(dir.path / "active" / first.id));
    CHECK_FALSE(spool.load(first.id));

    // Until add_spare() (after the fsync of active/) the file is not used.
    {
        auto early = sample_envelope();
        auto writer = spool.create(early);
        CHECK(fs::exists(dir.path / "tmp" / early.id));
    }
    spool.add_spare(spare);

    // The next message reuses the file: none of the old bytes remain.
    auto second = sample_envelope();
    second.recipients = {"dave@example.org"};
    auto writer = spool.create(second);
    CHECK_FALSE(fs::exists(dir.path / "tmp" / second.id));
    writer.append("Subject: short\r\n\r\nb\r\n");
    writer.commit();
    auto loaded = spool.load(second.id);
    REQUIRE(loaded);
    CHECK(loaded->envelope.recipients == second.recipients);
    CHECK(read_file(loaded->file).substr(loaded->content_offset) == "Subject: short\r\n\r\nb\r\n");
    CHECK(fs::file_size(loaded->file) == loaded->content_offset + loaded->content_size);

    // With `limit` spares ready the file stays for the caller to unlink.
    spool.make_spares(2);
    CHECK(spool.recycle(second.id, 2).empty());
    CHECK(fs::exists(dir.path / "active" / second.id));
}
