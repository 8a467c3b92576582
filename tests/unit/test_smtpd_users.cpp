#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "tlsrelay/smtpd/users.hpp"

using namespace tlsrelay::smtpd;
namespace fs = std::filesystem;

namespace {

fs::path temp_file(const char* name) {
    auto dir = fs::temp_directory_path() / ("tlsrelay-users-" + std::to_string(std::random_device{}()));
    fs::create_directories(dir);
    return dir / name;
}

}  // namespace

TEST_CASE("users file round trip with yescrypt", "[smtpd]") {
    auto file = temp_file("users");
    set_password(file, "bob", "correct horse");
    set_password(file, "alice", "battery staple");
    set_password(file, "bob", "new password");

    struct stat info {};
    REQUIRE(::stat(file.c_str(), &info) == 0);
    CHECK((info.st_mode & 0777) == 0600);

    auto users = UserDatabase::load(file);
    CHECK(users.size() == 2);
    CHECK(users.verify("bob", "new password"));
    CHECK_FALSE(users.verify("bob", "correct horse"));
    CHECK(users.verify("alice", "battery staple"));
    CHECK_FALSE(users.verify("carol", "battery staple"));
    CHECK_FALSE(users.verify("alice", ""));

    std::ifstream in(file);
    std::string line;
    std::getline(in, line);
    CHECK(line.rfind("alice:$y$", 0) == 0);
    fs::remove_all(file.parent_path());
}

TEST_CASE("users file accepts SHA-512-crypt", "[smtpd]") {
    auto file = temp_file("users");
    // openssl passwd -6 -salt saltsalt secret
    std::ofstream(file) << "# comment\n\n"
                           "dave:$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1\n";
    auto users = UserDatabase::load(file);
    CHECK(users.verify("dave", "secret"));
    CHECK_FALSE(users.verify("dave", "Secret"));
    fs::remove_all(file.parent_path());
}

TEST_CASE("users file errors name file and line", "[smtpd]") {
    auto file = temp_file("users");
    std::ofstream(file) << "bob:$y$ok\nbroken line\n";
    try {
        UserDatabase::load(file);
        FAIL("no error raised");
    } catch (const UsersFileError& error) {
        CHECK(std::string(error.what()) == file.string() + ":2: expected \"user:hash\"");
    }
    std::ofstream(file) << "bob:plaintext\n";
    try {
        UserDatabase::load(file);
        FAIL("no error raised");
    } catch (const UsersFileError& error) {
        CHECK(std::string(error.what()) == file.string() +
                                               ":1: the hash for user bob is not in crypt(3) form such as $y$...; "
                                               "create it with tlsrelay passwd");
    }
    CHECK_THROWS_AS(set_password(file, "bad:name", "x"), UsersFileError);
    fs::remove_all(file.parent_path());
}
