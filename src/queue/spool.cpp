#include "tlsrelay/queue/spool.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>

#include "tlsrelay/util/log.hpp"

namespace tlsrelay::queue {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view format_line = "tlsrelay-queue 1";
constexpr std::size_t write_buffer_size = 64 * 1024;

// A new message whose content fits in the write buffer keeps a copy of it
// in memory for its first delivery attempt, so a relay that forwards mail
// at once reads no queue file. The copies of all messages together stay
// under this many bytes; a message past the cap is read from its file.
constexpr std::size_t memory_copy_budget = 4 * 1024 * 1024;
std::atomic<std::size_t> memory_copy_bytes{0};

std::shared_ptr<const std::string> copy_into_memory(std::string_view content) {
    auto size = content.size();
    if (memory_copy_bytes.fetch_add(size) + size > memory_copy_budget) {
        memory_copy_bytes.fetch_sub(size);
        return nullptr;
    }
    return std::shared_ptr<const std::string>(new std::string(content), [size](const std::string* copy) {
        memory_copy_bytes.fetch_sub(size);
        delete copy;
    });
}

std::string errno_text(const std::string& what, const fs::path& path) {
    return what + " " + path.string() + ": " + std::strerror(errno);
}

void write_all(int fd, std::string_view bytes, const fs::path& path) {
    while (!bytes.empty()) {
        ssize_t written = ::write(fd, bytes.data(), bytes.size());
        if (written < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw SpoolError(errno_text("cannot write", path));
        }
        bytes.remove_prefix(static_cast<std::size_t>(written));
    }
}

// Writes a small file through tmp/, fsyncs it and renames it into place.
void write_file_durably(const fs::path& tmp, const fs::path& target, std::string_view contents) {
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        throw SpoolError(errno_text("cannot create", tmp));
    }
    try {
        write_all(fd, contents, tmp);
        if (::fsync(fd) != 0) {
            throw SpoolError(errno_text("cannot fsync", tmp));
        }
    } catch (...) {
        ::close(fd);
        ::unlink(tmp.c_str());
        throw;
    }
    ::close(fd);
    if (::rename(tmp.c_str(), target.c_str()) != 0) {
        ::unlink(tmp.c_str());
        throw SpoolError(errno_text("cannot rename into", target));
    }
    sync_directory(target.parent_path());
}

std::string serialise(const Envelope& envelope) {
    std::string text(format_line);
    text += "\nid " + envelope.id;
    text += "\narrival " + std::to_string(envelope.arrival_unix_ms);
    text += "\nclient " + envelope.client;
    text += "\nsender " + envelope.sender;
    text += std::string("\nbody ") + (envelope.eight_bit ? "8bitmime" : "7bit");
    if (!envelope.dsn_ret.empty()) {
        text += "\nret " + envelope.dsn_ret;
    }
    if (!envelope.dsn_envid.empty()) {
        text += "\nenvid " + envelope.dsn_envid;
    }
    if (envelope.smtputf8) {
        text += "\nsmtputf8 yes";
    }
    if (!envelope.authenticated_user.empty()) {
        text += "\nauth " + envelope.authenticated_user;
    }
    for (std::size_t i = 0; i < envelope.recipients.size(); ++i) {
        text += "\nrecipient " + envelope.recipients[i];
        if (i < envelope.recipient_dsn.size()) {
            const auto& dsn = envelope.recipient_dsn[i];
            if (!dsn.notify.empty()) {
                text += "\nnotify " + dsn.notify;
            }
            if (!dsn.orcpt.empty()) {
                text += "\norcpt " + dsn.orcpt;
            }
        }
    }
    text += "\ncontent\n";
    return text;
}

constexpr std::string_view state_format_line = "tlsrelay-state 2";

// State file fields are separated by spaces and end at the line end, so
// reasons lose their line breaks and empty fields are written as "-".
std::string field(const std::string& value) {
    if (value.empty()) {
        return "-";
    }
    std::string text = value;
    std::replace_if(text.begin(), text.end(), [](char c) { return c == ' ' || c == '\r' || c == '\n'; }, '_');
    return text;
}

std::string one_line(const std::string& value) {
    std::string text = value;
    std::replace_if(text.begin(), text.end(), [](char c) { return c == '\r' || c == '\n'; }, ' ');
    return text;
}

std::optional<RecipientStatus> status_from(const std::string& text) {
    if (text == "pending") return RecipientStatus::pending;
    if (text == "deferred") return RecipientStatus::deferred;
    if (text == "sent") return RecipientStatus::sent;
    if (text == "bounced") return RecipientStatus::bounced;
    return std::nullopt;
}

}  // namespace

const char* to_string(RecipientStatus status) {
    switch (status) {
    case RecipientStatus::pending: return "pending";
    case RecipientStatus::deferred: return "deferred";
    case RecipientStatus::sent: return "sent";
    case RecipientStatus::bounced: return "bounced";
    }
    return "pending";
}

std::string serialise_state(const MessageState& state) {
    std::string text(state_format_line);
    text += "\n";
    if (state.held) {
        text += "hold\n";
    }
    for (std::size_t index = 0; index < state.recipients.size(); ++index) {
        const auto& recipient = state.recipients[index];
        if (recipient.status == RecipientStatus::pending && recipient.attempts == 0) {
            continue;
        }
        std::string flags;
        if (recipient.notified) flags += 'n';
        if (recipient.delay_warned) flags += 'w';
        text += "recipient " + std::to_string(index) + " " + to_string(recipient.status) + " " +
                std::to_string(recipient.attempts) + " " + std::to_string(recipient.next_try_unix_ms) + " " +
                field(flags) + " " + field(recipient.dsn) + " " + field(recipient.relay) + " " +
                one_line(recipient.reason) + "\n";
    }
    return text;
}

std::optional<MessageState> parse_state(const std::string& text, std::size_t recipient_count) {
    MessageState state;
    state.recipients.resize(recipient_count);
    std::istringstream in(text);
    std::string line;
    bool first = true;
    bool versioned = false;
    while (std::getline(in, line)) {
        if (first && line == state_format_line) {
            versioned = true;
            first = false;
            continue;
        }
        first = false;
        if (line.empty()) {
            continue;
        }
        if (!versioned) {
            // The first format: one index per line of a recipient that has
            // a final result, without saying which.
            if (line.find_first_not_of("0123456789") != std::string::npos || line.size() > 9) {
                return std::nullopt;
            }
            auto index = std::stoul(line);
            if (index < recipient_count) {
                state.recipients[index].status = RecipientStatus::sent;
                state.recipients[index].notified = true;
            }
            continue;
        }
        if (line == "hold") {
            state.held = true;
            continue;
        }
        std::istringstream fields(line);
        std::string key, status, flags, dsn, relay;
        std::size_t index = 0;
        int attempts = 0;
        std::int64_t next_try = 0;
        if (!(fields >> key >> index >> status >> attempts >> next_try >> flags >> dsn >> relay) || key != "recipient") {
            return std::nullopt;
        }
        auto parsed = status_from(status);
        if (!parsed) {
            return std::nullopt;
        }
        std::string reason;
        std::getline(fields, reason);
        if (!reason.empty() && reason.front() == ' ') {
            reason.erase(0, 1);
        }
        if (index >= recipient_count) {
            continue;
        }
        auto& recipient = state.recipients[index];
        recipient.status = *parsed;
        recipient.attempts = attempts;
        recipient.next_try_unix_ms = next_try;
        recipient.notified = flags.find('n') != std::string::npos;
        recipient.delay_warned = flags.find('w') != std::string::npos;
        recipient.dsn = dsn == "-" ? "" : dsn;
        recipient.relay = relay == "-" ? "" : relay;
        recipient.reason = reason;
    }
    return state;
}

namespace {

// Group commit of one folder's fsyncs. An fsync of a folder makes every
// change to it that came before the fsync started durable, so a caller that
// arrives while one runs waits for the next, and that next one covers every
// caller that arrived meanwhile. Under load this turns one fsync per
// message into one per batch of concurrent commits.
class FolderSync {
public:
    explicit FolderSync(fs::path directory) : directory_(std::move(directory)) {}

    ~FolderSync() {
        if (fd_ >= 0) {
            ::close(fd_);
        }
    }

    void sync() {
        std::unique_lock lock(mutex_);
        std::uint64_t ticket = ++requested_;
        while (completed_ < ticket) {
            if (running_) {
                finished_.wait(lock);
                continue;
            }
            running_ = true;
            std::uint64_t covered = requested_;
            lock.unlock();
            std::string error = fsync_folder();
            lock.lock();
            running_ = false;
            if (!error.empty()) {
                failures_.push_back(Failure{completed_ + 1, covered, error});
                if (failures_.size() > 64) {
                    failures_.pop_front();
                }
            }
            completed_ = covered;
            finished_.notify_all();
        }
        for (const auto& failure : failures_) {
            if (ticket >= failure.first && ticket <= failure.last) {
                throw SpoolError(failure.message);
            }
        }
    }

private:
    struct Failure {
        std::uint64_t first;
        std::uint64_t last;
        std::string message;
    };

    // Only the caller that set running_ gets here, so fd_ needs no lock.
    // The folder stays open between syncs; after a failure it is opened
    // again.
    std::string fsync_folder() {
        if (fd_ < 0) {
            fd_ = ::open(directory_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (fd_ < 0) {
                return errno_text("cannot open folder", directory_);
            }
        }
        if (::fsync(fd_) != 0) {
            auto error = errno_text("cannot fsync folder", directory_);
            ::close(fd_);
            fd_ = -1;
            return error;
        }
        return {};
    }

    fs::path directory_;
    int fd_ = -1;
    std::mutex mutex_;
    std::condition_variable finished_;
    std::uint64_t requested_ = 0;  // tickets handed out
    std::uint64_t completed_ = 0;  // every ticket up to this one is covered by a finished fsync
    bool running_ = false;
    std::deque<Failure> failures_;  // ticket ranges whose fsync failed, newest last
};

FolderSync& folder_sync_for(const fs::path& directory) {
    static std::mutex mutex;
    static std::map<std::string, std::unique_ptr<FolderSync>> folders;
    std::lock_guard lock(mutex);
    auto& folder = folders[directory.string()];
    if (!folder) {
        folder = std::make_unique<FolderSync>(directory);
    }
    return *folder;
}

}  // namespace

void sync_directory(const fs::path& directory) {
    folder_sync_for(directory).sync();
}

MessageWriter::MessageWriter(const Spool& spool, std::string id, int fd, fs::path tmp)
    : spool_(&spool), id_(std::move(id)), fd_(fd), tmp_(std::move(tmp)) {
    buffer_.reserve(write_buffer_size);
}

MessageWriter::MessageWriter(MessageWriter&& other) noexcept
    : spool_(other.spool_),
      id_(std::move(other.id_)),
      fd_(other.fd_),
      tmp_(std::move(other.tmp_)),
      spare_(other.spare_),
      buffer_(std::move(other.buffer_)),
      header_size_(other.header_size_),
      content_size_(other.content_size_),
      flushed_(other.flushed_),
      committed_(other.committed_),
      content_(std::move(other.content_)) {
    other.fd_ = -1;
    other.committed_ = true;
}

MessageWriter::~MessageWriter() {
    if (fd_ >= 0) {
        ::close(fd_);
    }
    if (!committed_) {
        ::unlink(tmp_.c_str());
    }
}

void MessageWriter::append(std::string_view bytes) {
    content_size_ += bytes.size();
    if (buffer_.size() + bytes.size() > write_buffer_size) {
        flushed_ = true;
        flush();
    }
    if (bytes.size() >= write_buffer_size) {
        flushed_ = true;
        write_all(fd_, bytes, tmp_);
        return;
    }
    buffer_.append(bytes);
}

void MessageWriter::flush() {
    write_all(fd_, buffer_, tmp_);
    buffer_.clear();
}

void MessageWriter::commit() {
    write_out();
    make_durable();
    sync_directory(spool_->active_path(id_).parent_path());
}

void MessageWriter::write_out() {
    if (!flushed_ && buffer_.size() >= header_size_) {
        content_ = copy_into_memory(std::string_view(buffer_).substr(header_size_));
    }
    flushed_ = true;
    flush();
    // A reused file may be longer than this message.
    if (spare_ && ::ftruncate(fd_, static_cast<off_t>(header_size_ + content_size_)) != 0) {
        throw SpoolError(errno_text("cannot truncate", tmp_));
    }
}

void MessageWriter::make_durable() {
    auto target = spool_->active_path(id_);
    try {
        if (::fsync(fd_) != 0) {
            throw SpoolError(errno_text("cannot fsync", tmp_));
        }
        ::close(fd_);
        fd_ = -1;
        if (::rename(tmp_.c_str(), target.c_str()) != 0) {
            throw SpoolError(errno_text("cannot rename into", target));
        }
    } catch (const SpoolError&) {
        content_.reset();
        throw;
    }
    committed_ = true;
}

StoredMessage MessageWriter::stored_message(const Envelope& envelope) const {
    StoredMessage message;
    message.envelope = envelope;
    message.envelope.recipient_dsn.resize(envelope.recipients.size());
    message.state = *parse_state("", envelope.recipients.size());
    message.file = spool_->active_path(id_);
    message.content_offset = header_size_;
    message.content_size = content_size_;
    message.content = content_;
    return message;
}

Spool::Spool(fs::path directory) : directory_(std::move(directory)) {
    for (const char* sub : {"tmp", "active", "state", "corrupt", "control"}) {
        std::error_code error;
        fs::create_directories(directory_ / sub, error);
        if (error) {
            throw SpoolError("cannot create queue folder " + (directory_ / sub).string() + ": " + error.message());
        }
    }
}

fs::path Spool::tmp_path(const std::string& id) const { return directory_ / "tmp" / id; }
fs::path Spool::active_path(const std::string& id) const { return directory_ / "active" / id; }
fs::path Spool::state_path(const std::string& id) const { return directory_ / "state" / id; }

Spool::~Spool() {
    std::lock_guard lock(spares_mutex_);
    for (const auto& [fd, path] : spares_) {
        ::close(fd);
        ::unlink(path.c_str());
    }
}

void Spool::make_spares(std::size_t count) {
    for (;;) {
        {
            std::lock_guard lock(spares_mutex_);
            if (spares_.size() >= count) {
                return;
            }
        }
        // A fresh queue id names the file: unique, and never a message's.
        auto path = tmp_path(make_queue_id() + ".new");
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
            // create() makes its own file; it reports the error if this persists.
            return;
        }
        std::lock_guard lock(spares_mutex_);
        spares_.emplace_back(fd, std::move(path));
    }
}

fs::path Spool::recycle(const std::string& id, std::size_t limit) {
    {
        std::lock_guard lock(spares_mutex_);
        if (spares_.size() >= limit) {
            return {};
        }
    }
    auto path = tmp_path(make_queue_id() + ".new");
    if (::rename(active_path(id).c_str(), path.c_str()) != 0) {
        return {};
    }
    return path;
}

void Spool::add_spare(const fs::path& file) {
    int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        ::unlink(file.c_str());
        return;
    }
    std::lock_guard lock(spares_mutex_);
    spares_.emplace_back(fd, file);
}

MessageWriter Spool::create(const Envelope& envelope) {
    {
        std::unique_lock lock(spares_mutex_);
        if (!spares_.empty()) {
            auto [fd, path] = std::move(spares_.back());
            spares_.pop_back();
            lock.unlock();
            MessageWriter writer(*this, envelope.id, fd, std::move(path));
            writer.spare_ = true;
            writer.buffer_ = serialise(envelope);
            writer.header_size_ = writer.buffer_.size();
            return writer;
        }
    }
    auto path = tmp_path(envelope.id);
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        throw SpoolError(errno_text("cannot create", path));
    }
    MessageWriter writer(*this, envelope.id, fd, std::move(path));
    writer.buffer_ = serialise(envelope);
    writer.header_size_ = writer.buffer_.size();
    return writer;
}

void Spool::record_finished(const std::string& id, const std::set<std::size_t>& finished) {
    MessageState state;
    if (!finished.empty()) {
        state.recipients.resize(*finished.rbegin() + 1);
    }
    for (auto index : finished) {
        state.recipients[index].status = RecipientStatus::sent;
        state.recipients[index].notified = true;
    }
    record_state(id, state);
}

void Spool::record_state(const std::string& id, const MessageState& state) {
    write_file_durably(directory_ / "tmp" / (id + ".state"), state_path(id), serialise_state(state));
}

std::vector<StoredMessage> Spool::scan() const {
    std::vector<StoredMessage> messages;
    std::error_code error;
    for (fs::directory_iterator it(directory_ / "active", error), end; !error && it != end; it.increment(error)) {
        if (auto message = read_message(it->path())) {
            messages.push_back(std::move(*message));
        }
    }
    std::sort(messages.begin(), messages.end(), [](const StoredMessage& a, const StoredMessage& b) {
        return a.envelope.arrival_unix_ms < b.envelope.arrival_unix_ms;
    });
    return messages;
}

void Spool::remove(const std::string& id, bool has_state_file) {
    // The message goes first: a state file without its message is ignored
    // and cleaned up at the next start, while the reverse would resend.
    ::unlink(active_path(id).c_str());
    sync_directory(directory_ / "active");
    if (has_state_file) {
        ::unlink(state_path(id).c_str());
    }
}

std::optional<StoredMessage> Spool::read_message(const fs::path& file) const {
    std::ifstream in(file, std::ios::binary);
    std::string line;
    if (!std::getline(in, line) || line != format_line) {
        return std::nullopt;
    }

    StoredMessage message;
    message.file = file;
    bool content_found = false;
    while (std::getline(in, line)) {
        auto space = line.find(' ');
        std::string key = line.substr(0, space);
        std::string value = space == std::string::npos ? "" : line.substr(space + 1);
        if (key == "content") {
            content_found = true;
            break;
        }
        if (key == "id") message.envelope.id = value;
        else if (key == "arrival") message.envelope.arrival_unix_ms = std::stoll(value);
        else if (key == "client") message.envelope.client = value;
        else if (key == "sender") message.envelope.sender = value;
        else if (key == "body") message.envelope.eight_bit = value == "8bitmime";
        else if (key == "ret") message.envelope.dsn_ret = value;
        else if (key == "envid") message.envelope.dsn_envid = value;
        else if (key == "smtputf8") message.envelope.smtputf8 = value == "yes";
        else if (key == "auth") message.envelope.authenticated_user = value;
        else if (key == "recipient") {
            message.envelope.recipients.push_back(value);
            message.envelope.recipient_dsn.emplace_back();
        } else if ((key == "notify" || key == "orcpt") && !message.envelope.recipients.empty()) {
            auto& dsn = message.envelope.recipient_dsn.back();
            (key == "notify" ? dsn.notify : dsn.orcpt) = value;
        }
        else return std::nullopt;
    }
    if (!content_found || message.envelope.id != file.filename().string() || message.envelope.recipients.empty()) {
        return std::nullopt;
    }
    message.content_offset = static_cast<std::uint64_t>(in.tellg());
    std::error_code size_error;
    auto file_size = fs::file_size(file, size_error);
    if (!size_error && file_size >= message.content_offset) {
        message.content_size = file_size - message.content_offset;
    }

    // No state file means no recipient was tried yet.
    std::ifstream state_file(state_path(message.envelope.id), std::ios::binary);
    message.has_state_file = state_file.is_open();
    std::ostringstream state_text;
    if (message.has_state_file) {
        state_text << state_file.rdbuf();
    }
    auto state = parse_state(state_text.str(), message.envelope.recipients.size());
    if (!state) {
        // Resending is better than losing the message to corrupt/.
        log::error("state file " + state_path(message.envelope.id).string() +
                   " is unreadable; every recipient of the message counts as pending");
        state = parse_state("", message.envelope.recipients.size());
    }
    message.state = std::move(*state);
    for (std::size_t index = 0; index < message.state.recipients.size(); ++index) {
        auto status = message.state.recipients[index].status;
        if (status == RecipientStatus::sent || status == RecipientStatus::bounced) {
            message.finished.insert(index);
        }
    }
    return message;
}

std::vector<StoredMessage> Spool::recover() {
    // Files in tmp/ never got their 250: the client received no reply that
    // accepted the message, so removing them loses nothing it relies on.
    {
        std::lock_guard lock(spares_mutex_);
        for (const auto& spare : spares_) {
            ::close(spare.first);
        }
        spares_.clear();
    }
    for (const auto& entry : fs::directory_iterator(directory_ / "tmp")) {
        std::error_code ignored;
        fs::remove(entry.path(), ignored);
    }

    std::vector<StoredMessage> messages;
    for (const auto& entry : fs::directory_iterator(directory_ / "active")) {
        auto message = read_message(entry.path());
        if (!message) {
            auto target = directory_ / "corrupt" / entry.path().filename();
            std::error_code ignored;
            fs::rename(entry.path(), target, ignored);
            log::error("queue file " + entry.path().string() + " is unreadable; moved to " + target.string());
            continue;
        }
        messages.push_back(std::move(*message));
    }

    // State files whose message is gone were left by a crash during remove().
    for (const auto& entry : fs::directory_iterator(directory_ / "state")) {
        if (!fs::exists(active_path(entry.path().filename().string()))) {
            std::error_code ignored;
            fs::remove(entry.path(), ignored);
        }
    }
    return messages;
}

}  // namespace tlsrelay::queue
