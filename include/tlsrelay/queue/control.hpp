// Queue commands for a running server, and the lock that tells whether one
// runs. The server holds an exclusive flock(2) on <queue>/lock while it
// runs. A command that gets the lock works on the spool itself; otherwise
// it writes a request file to <queue>/control/ (tmp name, then rename),
// which the server's scheduler applies and removes, so no command races a
// delivery in progress.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace tlsrelay::queue {

// An exclusive lock on a queue directory, released by the destructor.
class SpoolLock {
public:
    // Returns std::nullopt when another process holds the lock; raises
    // SpoolError when the lock file cannot be opened.
    static std::optional<SpoolLock> try_acquire(const std::filesystem::path& queue_directory);

    SpoolLock(SpoolLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
    SpoolLock& operator=(SpoolLock&&) = delete;
    ~SpoolLock();

private:
    explicit SpoolLock(int fd) : fd_(fd) {}
    int fd_ = -1;
};

struct ControlRequest {
    std::filesystem::path file;
    std::string text;  // "flush", "delete ID", "delete ALL", "hold ID", "release ID"
};

// Writes a request for the running server and returns its file.
std::filesystem::path submit_request(const std::filesystem::path& queue_directory, const std::string& text);

// Reads the pending requests in the order they were written.
std::vector<ControlRequest> take_requests(const std::filesystem::path& queue_directory);

// Removes a request file once it has been applied.
void finish_request(const ControlRequest& request);

}  // namespace tlsrelay::queue
