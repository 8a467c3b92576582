#include "tlsrelay/smtpd/users.hpp"

#include <crypt.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

namespace tlsrelay::smtpd {
namespace {

// A valid yescrypt hash of a random password, compared against when the
// user does not exist so that the work done is the same.
constexpr const char* dummy_hash = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$Ryh9zJx2RKBCIIdztOJwG9zaGi4Kr6Zy8scYvOMpmZ/";

bool valid_user_name(std::string_view user) {
    return !user.empty() && user.size() <= 256 && user.find_first_of(":\r\n") == std::string_view::npos;
}

std::string crypt_with(const std::string& password, const std::string& setting) {
    // struct crypt_data is about 32 KiB: keep it off the coroutine's stack.
    auto data = std::make_unique<crypt_data>();
    std::memset(data.get(), 0, sizeof(crypt_data));
    const char* result = ::crypt_r(password.c_str(), setting.c_str(), data.get());
    if (result == nullptr || result[0] == '*') {
        return {};
    }
    return result;
}

}  // namespace

UserDatabase UserDatabase::load(const std::filesystem::path& file) {
    std::ifstream in(file);
    if (!in) {
        throw UsersFileError("cannot read users file " + file.string() + ": " + std::strerror(errno));
    }
    UserDatabase database;
    std::string line;
    int number = 0;
    while (std::getline(in, line)) {
        ++number;
        if (line.empty() || line.front() == '#') {
            continue;
        }
        auto colon = line.find(':');
        std::string where = file.string() + ":" + std::to_string(number);
        if (colon == std::string::npos || !valid_user_name(line.substr(0, colon))) {
            throw UsersFileError(where + ": expected \"user:hash\"");
        }
        auto hash = line.substr(colon + 1);
        if (hash.size() < 3 || hash.front() != '$') {
            throw UsersFileError(where + ": the hash for user " + line.substr(0, colon) +
                                 " is not in crypt(3) form such as $y$...; create it with tlsrelay passwd");
        }
        database.hashes_[line.substr(0, colon)] = hash;
    }
    return database;
}

bool UserDatabase::verify(const std::string& user, const std::string& password) const {
    auto found = hashes_.find(user);
    const std::string& stored = found == hashes_.end() ? std::string(dummy_hash) : found->second;
    auto computed = crypt_with(password, stored);
    if (found == hashes_.end() || computed.empty() || computed.size() != stored.size()) {
        return false;
    }
    // Compare without an early exit, so timing does not reveal the prefix.
    unsigned char difference = 0;
    for (std::size_t i = 0; i < stored.size(); ++i) {
        difference |= static_cast<unsigned char>(computed[i] ^ stored[i]);
    }
    return difference == 0;
}

std::string hash_password(const std::string& password) {
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    if (::crypt_gensalt_rn("$y$", 0, nullptr, 0, setting, sizeof setting) == nullptr) {
        throw std::runtime_error(std::string("cannot create a password salt: ") + std::strerror(errno));
    }
    auto hash = crypt_with(password, setting);
    if (hash.empty()) {
        throw std::runtime_error("cannot hash the password with yescrypt");
    }
    return hash;
}

void set_password(const std::filesystem::path& file, const std::string& user, const std::string& password) {
    if (!valid_user_name(user)) {
        throw UsersFileError("invalid user name \"" + user + "\": it must be non-empty and contain no \":\"");
    }
    std::vector<std::string> lines;
    {
        std::ifstream in(file);
        std::string line;
        while (std::getline(in, line)) {
            if (line.rfind(user + ":", 0) != 0) {
                lines.push_back(line);
            }
        }
    }
    lines.push_back(user + ":" + hash_password(password));

    auto tmp = file;
    tmp += ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        throw UsersFileError("cannot write " + tmp.string() + ": " + std::strerror(errno));
    }
    std::string text;
    for (const auto& line : lines) {
        text += line + "\n";
    }
    bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok || ::rename(tmp.c_str(), file.c_str()) != 0) {
        ::unlink(tmp.c_str());
        throw UsersFileError("cannot write " + file.string() + ": " + std::strerror(errno));
    }
}

}  // namespace tlsrelay::smtpd
