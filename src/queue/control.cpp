#include "tlsrelay/queue/control.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "tlsrelay/queue/spool.hpp"

namespace tlsrelay::queue {
namespace {

namespace fs = std::filesystem;

// People type these commands, so a poll usually finds a handful. The cap
// bounds the work of one poll when a script floods the folder.
constexpr std::size_t max_requests_per_poll = 1000;

}  // namespace

std::optional<SpoolLock> SpoolLock::try_acquire(const fs::path& queue_directory) {
    auto path = queue_directory / "lock";
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        throw SpoolError("cannot open " + path.string() + ": " + std::strerror(errno));
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ::close(fd);
        return std::nullopt;
    }
    return SpoolLock(fd);
}

SpoolLock::~SpoolLock() {
    if (fd_ >= 0) {
        ::close(fd_);
    }
}

fs::path submit_request(const fs::path& queue_directory, const std::string& text) {
    static std::atomic<unsigned> counter{0};
    auto now = std::chrono::duration_cast<std::chrono::microseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
    // Names sort by time; the leading dot hides the file from the server
    // until the rename makes it whole.
    std::string name = std::to_string(now) + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    auto folder = queue_directory / "control";
    auto tmp = folder / ("." + name);
    auto target = folder / name;
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out << text << "\n";
        out.close();
        if (!out) {
            throw SpoolError("cannot write " + tmp.string());
        }
    }
    std::error_code error;
    fs::rename(tmp, target, error);
    if (error) {
        fs::remove(tmp, error);
        throw SpoolError("cannot rename into " + target.string() + ": " + error.message());
    }
    return target;
}

std::vector<ControlRequest> take_requests(const fs::path& queue_directory) {
    std::vector<ControlRequest> requests;
    std::error_code error;
    for (fs::directory_iterator it(queue_directory / "control", error), end; !error && it != end; it.increment(error)) {
        auto name = it->path().filename().string();
        if (name.starts_with(".")) {
            continue;
        }
        std::ifstream in(it->path(), std::ios::binary);
        std::string line;
        std::getline(in, line);
        requests.push_back(ControlRequest{it->path(), line});
        if (requests.size() >= max_requests_per_poll) {
            break;
        }
    }
    std::sort(requests.begin(), requests.end(),
              [](const ControlRequest& a, const ControlRequest& b) { return a.file.filename() < b.file.filename(); });
    return requests;
}

void finish_request(const ControlRequest& request) {
    std::error_code ignored;
    fs::remove(request.file, ignored);
}

}  // namespace tlsrelay::queue
