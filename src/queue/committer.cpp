#include "tlsrelay/queue/committer.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace tlsrelay::queue {
namespace {

// Files kept ready in tmp/ for new messages. 32 is an estimate of what
// arrives while one batch runs with a few dozen sessions. Up to
// recycled_files are kept from delivered messages.
constexpr std::size_t spare_files = 32;
constexpr std::size_t recycled_files = 64;

}  // namespace

Committer::Committer(Spool& spool, std::size_t fsync_threads)
    : spool_(spool),
      fsync_threads_(fsync_threads),
      fsync_pool_(fsync_threads == 0 ? 1 : fsync_threads),
      thread_([this] { run(); }) {}

Committer::~Committer() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    work_.notify_one();
    thread_.join();
}

void Committer::commit(MessageWriter& writer, Done done) {
    Request request;
    request.writer = &writer;
    request.done = std::move(done);
    hand_in(std::move(request));
}

void Committer::remove(std::string id, bool has_state_file, Done done) {
    Request request;
    request.id = std::move(id);
    request.has_state_file = has_state_file;
    request.done = std::move(done);
    hand_in(std::move(request));
}

void Committer::hand_in(Request request) {
    bool was_idle = false;
    {
        std::lock_guard lock(mutex_);
        was_idle = pending_.empty();
        pending_.push_back(std::move(request));
    }
    // A busy committer takes the whole pending list when its batch ends,
    // so only the first request of a batch needs to wake it.
    if (was_idle) {
        work_.notify_one();
    }
}

void Committer::run() {
    std::vector<Request> batch;
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            work_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
            if (pending_.empty()) {
                return;
            }
            batch.swap(pending_);
        }
        try {
            process(batch);
        } catch (const std::exception& error) {
            // Only an allocation failure gets here. Each request not yet
            // completed gets the error, so no session sends a 250.
            for (auto& request : batch) {
                if (request.done) {
                    request.done(std::string("queue commit failed: ") + error.what());
                }
            }
        }
        batch.clear();
        // Files for the next messages are made here, after the batch,
        // rather than by the sessions on the event loop.
        bool stopping = false;
        {
            std::lock_guard lock(mutex_);
            stopping = stopping_;
        }
        if (!stopping) {
            try {
                spool_.make_spares(spare_files);
            } catch (const std::exception&) {
                // Sessions create their own files until this works again.
            }
        }
    }
}

void Committer::process(std::vector<Request>& batch) {
    std::vector<std::string> errors(batch.size());

    // Every new file is written and its writeback started before the first
    // fsync, so the fsyncs mostly wait for I/O that is already under way.
    for (std::size_t i = 0; i < batch.size(); ++i) {
        auto* writer = batch[i].writer;
        if (writer == nullptr) {
            continue;
        }
        try {
            writer->write_out();
            ::sync_file_range(writer->fd_, 0, 0, SYNC_FILE_RANGE_WRITE);
        } catch (const std::exception& error) {
            errors[i] = error.what();
        }
    }
    make_durable(batch, errors);
    std::vector<std::size_t> renamed;  // new messages now in active/
    for (std::size_t i = 0; i < batch.size(); ++i) {
        if (batch[i].writer != nullptr && errors[i].empty()) {
            renamed.push_back(i);
        }
    }

    // The message goes first: a state file without its message is ignored
    // and cleaned up at the next start, while the reverse would resend.
    std::vector<std::filesystem::path> set_aside;  // become spares after the folder fsync
    bool removed = false;
    for (std::size_t i = 0; i < batch.size(); ++i) {
        const auto& request = batch[i];
        if (request.writer != nullptr) {
            continue;
        }
        auto spare = spool_.recycle(request.id, recycled_files);
        if (!spare.empty()) {
            set_aside.push_back(std::move(spare));
        } else {
            auto file = spool_.active_path(request.id);
            if (::unlink(file.c_str()) != 0 && errno != ENOENT) {
                errors[i] = "cannot remove " + file.string() + ": " + std::strerror(errno);
                continue;
            }
        }
        removed = true;
    }

    bool folder_failed = false;
    if (!renamed.empty() || removed) {
        try {
            sync_directory(spool_.directory() / "active");
        } catch (const std::exception& error) {
            folder_failed = true;
            for (auto& text : errors) {
                if (text.empty()) {
                    text = error.what();
                }
            }
            // None of these got its 250, and the client will send it again:
            // left in active/, each would be delivered twice.
            for (auto i : renamed) {
                ::unlink(spool_.active_path(batch[i].writer->id_).c_str());
            }
        }
    }
    // Until the folder fsync succeeded, a crash could bring a file set aside
    // back as its old message, so only then is it reused.
    for (const auto& file : set_aside) {
        if (!folder_failed) {
            spool_.add_spare(file);
        } else {
            ::unlink(file.c_str());
        }
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
        const auto& request = batch[i];
        if (request.writer == nullptr && request.has_state_file && errors[i].empty()) {
            ::unlink(spool_.state_path(request.id).c_str());
        }
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
        auto done = std::move(batch[i].done);
        batch[i].done = nullptr;
        done(std::move(errors[i]));
    }
}

// Runs MessageWriter::make_durable() for every new message of the batch
// that has no error yet: the first on this thread, the others on the fsync
// pool, and returns when all are done.
void Committer::make_durable(std::vector<Request>& batch, std::vector<std::string>& errors) {
    std::vector<std::size_t> todo;
    for (std::size_t i = 0; i < batch.size(); ++i) {
        if (batch[i].writer != nullptr && errors[i].empty()) {
            todo.push_back(i);
        }
    }
    auto durable = [&batch, &errors](std::size_t i) {
        try {
            batch[i].writer->make_durable();
        } catch (const std::exception& error) {
            errors[i] = error.what();
        }
    };
    if (todo.empty()) {
        return;
    }
    if (fsync_threads_ == 0 || todo.size() == 1) {
        for (auto i : todo) {
            durable(i);
        }
        return;
    }

    // Each task writes only its own errors[i]. The mutex makes those
    // writes visible here, and the last task's notify happens under it,
    // so the condition variable outlives every use.
    std::mutex mutex;
    std::condition_variable finished;
    std::size_t remaining = todo.size() - 1;
    for (std::size_t k = 1; k < todo.size(); ++k) {
        asio::post(fsync_pool_, [&, i = todo[k]] {
            durable(i);
            std::lock_guard lock(mutex);
            if (--remaining == 0) {
                finished.notify_one();
            }
        });
    }
    durable(todo.front());
    std::unique_lock lock(mutex);
    finished.wait(lock, [&remaining] { return remaining == 0; });
}

}  // namespace tlsrelay::queue
