// Group commit for the spool. One thread makes new messages durable and
// removes delivered ones, in batches: whatever sessions and deliveries
// handed in while the previous batch ran. The files of a batch are written
// out first, then fsync'd in parallel (each fsync waits for a disk cache
// flush, and concurrent ones can share it), and one
// fsync of active/ covers every rename and unlink of the batch. Each
// message still gets its own fsync before its 250, and a removal its
// folder fsync before it counts as done.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <asio/associated_executor.hpp>
#include <asio/execution/outstanding_work.hpp>
#include <asio/prefer.hpp>
#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/post.hpp>
#include <asio/thread_pool.hpp>
#include <asio/use_awaitable.hpp>

#include "tlsrelay/queue/spool.hpp"

namespace tlsrelay::queue {

class Committer {
public:
    // Called on the committer thread with the error text, empty on success.
    using Done = std::function<void(std::string error)>;

    // With fsync_threads = 0 the files of a batch are fsync'd one after
    // the other on the committer thread; otherwise up to fsync_threads + 1
    // run at once.
    explicit Committer(Spool& spool, std::size_t fsync_threads = 0);
    // Finishes the work already handed in, then stops the thread.
    ~Committer();
    Committer(const Committer&) = delete;
    Committer& operator=(const Committer&) = delete;

    // Does what MessageWriter::commit() does; the writer must stay alive
    // until `done` runs.
    void commit(MessageWriter& writer, Done done);
    // Does what Spool::remove() does.
    void remove(std::string id, bool has_state_file, Done done);

private:
    struct Request {
        MessageWriter* writer = nullptr;  // null for a removal
        std::string id;
        bool has_state_file = false;
        Done done;
    };

    void hand_in(Request request);
    void run();
    void process(std::vector<Request>& batch);
    void make_durable(std::vector<Request>& batch, std::vector<std::string>& errors);

    Spool& spool_;
    std::size_t fsync_threads_;
    asio::thread_pool fsync_pool_;
    std::mutex mutex_;
    std::condition_variable work_;
    std::vector<Request> pending_;
    bool stopping_ = false;
    std::thread thread_;
};

namespace detail {

// Starts a committer request and resumes the awaiting coroutine on its own
// executor with the error text.
template <typename Start>
asio::awaitable<std::string> await_committer(Start start) {
    auto initiation = [start = std::move(start)](auto handler) mutable {
        auto shared = std::make_shared<decltype(handler)>(std::move(handler));
        // A tracked executor keeps the io_context's run() going until the
        // committer has completed the request.
        auto executor = asio::prefer(asio::get_associated_executor(*shared), asio::execution::outstanding_work.tracked);
        start([shared, executor](std::string error) {
            asio::post(executor, [shared, error = std::move(error)]() mutable { (*shared)(std::move(error)); });
        });
    };
    return asio::async_initiate<const asio::use_awaitable_t<>&, void(std::string)>(std::move(initiation),
                                                                                     asio::use_awaitable);
}

}  // namespace detail

// Commits through the committer; returns the error text, empty on success.
inline asio::awaitable<std::string> async_commit(Committer& committer, MessageWriter& writer) {
    return detail::await_committer(
        [&committer, &writer](Committer::Done done) { committer.commit(writer, std::move(done)); });
}

// Removes through the committer; returns the error text, empty on success.
inline asio::awaitable<std::string> async_remove(Committer& committer, std::string id, bool has_state_file) {
    return detail::await_committer([&committer, id = std::move(id), has_state_file](Committer::Done done) {
        committer.remove(id, has_state_file, std::move(done));
    });
}

}  // namespace tlsrelay::queue
