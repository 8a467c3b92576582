// The on-disk queue. A message is one file: an envelope header, then the
// message content with CRLF line ends. Write order for a new message: a
// file in tmp/ is written and fsync'd, renamed to active/<id>, and active/
// is fsync'd; only then may the SMTP server reply 250. A file left in tmp/ never
// got its 250 and is removed at start. Per-recipient delivery state lives
// in state/<id> (see MessageState), replaced by the same tmp, fsync, rename
// and folder fsync steps.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace tlsrelay::queue {

class SpoolError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Creates a queue id: upper-case hex of the arrival time in microseconds and
// a per-process counter, unique within one queue directory.
std::string make_queue_id();

// RFC 3461 parameters of one recipient, kept for bounces and relaying.
struct RecipientDsn {
    std::string notify;  // "NEVER" or a list of SUCCESS, FAILURE, DELAY; empty when not given
    std::string orcpt;   // "rfc822;addr" in xtext as received; empty when not given
};

struct Envelope {
    std::string id;
    std::string sender;  // empty for the null sender <>
    std::vector<std::string> recipients;
    std::vector<RecipientDsn> recipient_dsn;  // parallel to recipients
    std::string dsn_ret;                      // RET=FULL or HDRS; empty when not given
    std::string dsn_envid;                    // ENVID in xtext; empty when not given
    bool smtputf8 = false;                    // the client sent MAIL ... SMTPUTF8
    std::string authenticated_user;           // SASL login name; empty when none
    std::int64_t arrival_unix_ms = 0;
    std::string client;  // "host[addr]" of the submitting client
    bool eight_bit = false;  // content has octets above 127: relay with BODY=8BITMIME
};

// The delivery status of one recipient. sent and bounced are final.
enum class RecipientStatus { pending, deferred, sent, bounced };
const char* to_string(RecipientStatus status);

// The delivery record of one recipient, kept in the state file.
struct RecipientState {
    RecipientStatus status = RecipientStatus::pending;
    int attempts = 0;
    std::int64_t next_try_unix_ms = 0;  // 0 when no retry is planned
    std::string dsn;                    // enhanced status code of the last result, "4.1.1"
    std::string relay;                  // "host[addr]:port" of the last result, or "none"
    std::string reason;                 // the last reply or local reason, one line
    bool notified = false;              // the failure DSN for a bounced recipient is queued
    bool delay_warned = false;          // the delay DSN is queued
};

// The state file of one message: per-recipient records and the hold mark.
struct MessageState {
    std::vector<RecipientState> recipients;  // parallel to envelope.recipients
    bool held = false;                       // queue hold: not delivered until released
};

// A message found in active/ with its state, and the recipients that
// already have a final result (their indices into envelope.recipients).
struct StoredMessage {
    Envelope envelope;
    MessageState state;
    std::set<std::size_t> finished;
    std::filesystem::path file;
    std::uint64_t content_offset = 0;
    std::uint64_t content_size = 0;
    bool has_state_file = false;  // false until a state file was written or found
    // The content as stored in the file, kept in memory for a small new
    // message so its first delivery reads no file; null otherwise. The
    // memory of all such copies is capped (see MessageWriter).
    std::shared_ptr<const std::string> content;
};

// Formats and parses the state file text; parse returns std::nullopt for
// text that is not a state file. A bare index per line is the first state
// format and means "sent".
std::string serialise_state(const MessageState& state);
std::optional<MessageState> parse_state(const std::string& text, std::size_t recipient_count);

class Spool;
class Committer;

// Streams one new message to tmp/. Destroying it before commit() removes
// the file.
class MessageWriter {
public:
    MessageWriter(MessageWriter&& other) noexcept;
    MessageWriter& operator=(MessageWriter&&) = delete;
    ~MessageWriter();

    // Appends content bytes as they are; raises SpoolError on a write error.
    void append(std::string_view bytes);
    std::uint64_t content_size() const { return content_size_; }

    // Makes the message durable (see the file comment); raises SpoolError.
    void commit();

    // The committed message as load() would read it, with every recipient
    // pending, so a new message goes to delivery without a file read. It
    // carries its content in memory when the message is small and the
    // process-wide cap on such copies allows.
    StoredMessage stored_message(const Envelope& envelope) const;

private:
    friend class Spool;
    friend class Committer;
    MessageWriter(const Spool& spool, std::string id, int fd, std::filesystem::path tmp);
    void flush();
    // The two halves of commit() before the folder fsync: write_out()
    // writes what is buffered, make_durable() fsyncs, closes and renames.
    void write_out();
    void make_durable();

    const Spool* spool_;
    std::string id_;
    int fd_ = -1;
    std::filesystem::path tmp_;  // the file in tmp/ until the rename
    bool spare_ = false;         // tmp_ was a spare, perhaps with old bytes to cut off
    std::string buffer_;
    std::size_t header_size_ = 0;  // envelope bytes before the content
    std::uint64_t content_size_ = 0;
    bool flushed_ = false;  // some bytes left buffer_ before commit()
    bool committed_ = false;
    std::shared_ptr<const std::string> content_;  // content copy made by commit(), small messages only
};

class Spool {
public:
    // Creates the folders if needed; raises SpoolError when it cannot.
    explicit Spool(std::filesystem::path directory);
    // Closes and removes the spare files.
    ~Spool();
    Spool(const Spool&) = delete;
    Spool& operator=(const Spool&) = delete;

    const std::filesystem::path& directory() const { return directory_; }

    // Starts a message; the envelope is written first. It takes a spare
    // file when one is ready, so the event loop usually makes no file.
    MessageWriter create(const Envelope& envelope);

    // Creates empty files in tmp/ until `count` are ready for create().
    // Creating a file can take a while on a busy file system, so a disk
    // thread calls this rather than the sessions' event loop. A spare
    // never used is removed at the next start like any file in tmp/.
    void make_spares(std::size_t count);

    // Moves a delivered message's file from active/ into tmp/, to become a
    // spare once the removal is durable (add_spare), unless `limit` spares
    // are ready. Returns the new path, or an empty path when the file was
    // not moved and the caller must unlink it. Reusing the inode spares the
    // file system an inode allocation and release per message, which on
    // ext4 without a journal was a third of the relay's CPU time under load.
    std::filesystem::path recycle(const std::string& id, std::size_t limit);
    // Makes a file moved by recycle() a spare. Call it only after active/
    // was fsync'd, because until then a crash brings the old message back
    // at that file. A new message overwrites the file and cuts off the rest.
    void add_spare(const std::filesystem::path& file);

    // Removes unfinished files from tmp/ and reads every message in active/.
    // A file that cannot be parsed is moved to corrupt/ and logged.
    std::vector<StoredMessage> recover();

    // Reads one message from active/; std::nullopt when missing or unreadable.
    std::optional<StoredMessage> load(const std::string& id) const { return read_message(active_path(id)); }

    // Reads every message in active/ without changing anything, for the
    // queue commands; unreadable files are skipped.
    std::vector<StoredMessage> scan() const;

    // Records durably that these recipients have a final result.
    void record_finished(const std::string& id, const std::set<std::size_t>& finished);

    // Replaces the state file durably: tmp/, fsync, rename, fsync state/.
    void record_state(const std::string& id, const MessageState& state);

    // Deletes a message whose recipients are all finished. Without
    // `has_state_file` no state file is looked for.
    void remove(const std::string& id, bool has_state_file = true);

    std::filesystem::path active_path(const std::string& id) const;

private:
    friend class MessageWriter;
    friend class Committer;
    std::filesystem::path tmp_path(const std::string& id) const;
    std::filesystem::path state_path(const std::string& id) const;
    std::optional<StoredMessage> read_message(const std::filesystem::path& file) const;

    std::filesystem::path directory_;
    std::mutex spares_mutex_;
    std::vector<std::pair<int, std::filesystem::path>> spares_;  // open, empty files in tmp/
};

// Fsyncs a folder so that a rename or unlink inside it is durable. Callers
// on several threads share fsyncs: one that starts after a caller's change
// covers it, so concurrent commits cost one fsync per batch (group commit).
void sync_directory(const std::filesystem::path& directory);

}  // namespace tlsrelay::queue
