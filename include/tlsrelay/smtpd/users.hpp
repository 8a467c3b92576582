// SMTP AUTH users: a file of "user:hash" lines, hashes in crypt(3) form
// (yescrypt "$y$" by default; SHA-512-crypt "$6$" and others libxcrypt
// supports are accepted).
#pragma once

#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>

namespace tlsrelay::smtpd {

class UsersFileError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class UserDatabase {
public:
    // Reads the file; raises UsersFileError naming the file and line of a
    // malformed entry. Blank lines and lines starting with "#" are skipped.
    static UserDatabase load(const std::filesystem::path& file);

    // Checks a password. Slow by design (the hash's work factor), so call
    // it off the event loop. An unknown user costs the same time as a
    // known one, so timing does not reveal which users exist.
    bool verify(const std::string& user, const std::string& password) const;

    std::size_t size() const { return hashes_.size(); }

private:
    std::map<std::string, std::string> hashes_;
};

// Hashes a password with yescrypt and a fresh random salt.
std::string hash_password(const std::string& password);

// Adds or replaces the entry for `user` in `file`, creating it with mode
// 0600 when missing; the file is rewritten through a temporary file.
void set_password(const std::filesystem::path& file, const std::string& user, const std::string& password);

}  // namespace tlsrelay::smtpd
