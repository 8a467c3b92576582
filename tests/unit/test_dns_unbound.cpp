// Resolver tests against a real Unbound on 127.0.0.1, started by the test
// with its own configuration in a temporary directory. Unbound serves only
// local data, and it forwards any other query to a closed port on loopback,
// so no query leaves the machine.

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "dns_test_support.hpp"
#include "tlsrelay/dns/resolver.hpp"

using namespace std::chrono_literals;
using dns_test::Lab;
using tlsrelay::dns::Status;

extern char** environ;

namespace {

constexpr const char* unbound_path = "/usr/sbin/unbound";

// Number of A records of big.example.test: 100 records make a reply of about
// 1.6 kB, more than the 1232-byte EDNS0 size the resolver advertises.
constexpr int big_rrset_size = 100;

// Returns a port that is free for UDP and TCP on 127.0.0.1 right now.
std::uint16_t find_free_port() {
    asio::io_context io;
    for (int attempt = 0; attempt < 20; ++attempt) {
        asio::ip::udp::socket udp(io, {asio::ip::make_address("127.0.0.1"), 0});
        std::uint16_t port = udp.local_endpoint().port();
        asio::ip::tcp::acceptor tcp(io);
        std::error_code error;
        tcp.open(asio::ip::tcp::v4());
        tcp.bind({asio::ip::make_address("127.0.0.1"), port}, error);
        if (!error) {
            return port;
        }
    }
    FAIL("no port on 127.0.0.1 was free for both UDP and TCP");
    return 0;
}

std::string read_file(const std::filesystem::path& path) {
    std::ifstream file(path);
    std::ostringstream content;
    content << file.rdbuf();
    return content.str();
}

std::string unbound_config(const std::filesystem::path& directory, std::uint16_t port, std::uint16_t closed_port) {
    std::ostringstream config;
    config << "server:\n"
           << "    interface: 127.0.0.1\n"
           << "    port: " << port << "\n"
           << "    do-ip6: no\n"
           << "    num-threads: 1\n"
           << "    username: \"\"\n"
           << "    chroot: \"\"\n"
           << "    directory: \"" << directory.string() << "\"\n"
           << "    pidfile: \"" << (directory / "unbound.pid").string() << "\"\n"
           << "    use-syslog: no\n"
           << "    logfile: \"\"\n"
           << "    verbosity: 1\n"
           << "    access-control: 127.0.0.0/8 allow\n"
           << "    do-not-query-localhost: no\n"
           << "    module-config: \"iterator\"\n"
           << "    local-zone: \"test.\" nodefault\n"
           << "    local-zone: \"example.test.\" static\n"
           << "    local-data: \"example.test. 300 IN MX 20 mx2.example.test.\"\n"
           << "    local-data: \"example.test. 300 IN MX 10 MX1.Example.Test.\"\n"
           << "    local-data: \"mx1.example.test. 300 IN A 192.0.2.25\"\n"
           << "    local-data: \"mx1.example.test. 300 IN AAAA 2001:db8::25\"\n"
           << "    local-data: \"nomail.example.test. 300 IN MX 0 .\"\n"
           << "    local-data: \"alias.example.test. 300 IN CNAME mx1.example.test.\"\n";
    for (int i = 0; i < big_rrset_size; ++i) {
        config << "    local-data: \"big.example.test. 300 IN A 198.51.100." << i << "\"\n";
    }
    // Recursion for names outside the local zone goes to a closed port on
    // loopback instead of the root servers.
    config << "forward-zone:\n"
           << "    name: \".\"\n"
           << "    forward-addr: 127.0.0.1@" << closed_port << "\n"
           << "remote-control:\n"
           << "    control-enable: no\n";
    return config.str();
}

// An Unbound child process in the foreground, with its configuration and log
// in a temporary directory. The destructor stops it by PID and removes the
// directory.
class UnboundProcess {
public:
    UnboundProcess() {
        if (access(unbound_path, X_OK) != 0) {
            FAIL("Unbound not found at " << unbound_path << ": install the Debian package unbound "
                                          << "(apt-get install unbound)");
        }

        std::string pattern = (std::filesystem::temp_directory_path() / "tlsrelay-unbound-XXXXXX").string();
        REQUIRE(mkdtemp(pattern.data()) != nullptr);
        directory_ = pattern;

        // A failed check throws, and then no destructor runs, so clean up here.
        try {
            port_ = find_free_port();
            std::ofstream(directory_ / "unbound.conf") << unbound_config(directory_, port_, find_free_port());
            spawn();
            wait_until_listening();
        } catch (...) {
            clean_up();
            throw;
        }
    }

    ~UnboundProcess() { clean_up(); }

    std::uint16_t port() const { return port_; }
    std::string log() const { return read_file(directory_ / "unbound.log"); }

private:
    void clean_up() {
        stop();
        std::error_code ignored;
        std::filesystem::remove_all(directory_, ignored);
    }

    void spawn() {
        std::string config = (directory_ / "unbound.conf").string();
        std::string log_path = (directory_ / "unbound.log").string();
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                         0644);
        posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);

        std::vector<std::string> args{unbound_path, "-d", "-c", config};
        std::vector<char*> argv;
        for (auto& arg : args) {
            argv.push_back(arg.data());
        }
        argv.push_back(nullptr);
        int error = posix_spawn(&pid_, unbound_path, &actions, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        if (error != 0) {
            pid_ = -1;
            FAIL("starting " << unbound_path << " failed: " << std::strerror(error));
        }
    }

    // Polls for the TCP listener for up to 10 s. Fails with Unbound's log
    // when the process exits or never listens.
    void wait_until_listening() {
        asio::io_context io;
        for (int attempt = 0; attempt < 200; ++attempt) {
            int status = 0;
            if (waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
                FAIL("Unbound exited during start-up with exit code " << code << ". Its log:\n" << log());
            }
            asio::ip::tcp::socket socket(io);
            std::error_code error;
            socket.connect({asio::ip::make_address("127.0.0.1"), port_}, error);
            if (!error) {
                return;
            }
            std::this_thread::sleep_for(50ms);
        }
        FAIL("Unbound did not listen on 127.0.0.1:" << port_ << " within 10 s. Its log:\n" << log());
    }

    // Sends SIGTERM, waits up to 5 s, then sends SIGKILL.
    void stop() {
        if (pid_ <= 0) {
            return;
        }
        kill(pid_, SIGTERM);
        for (int attempt = 0; attempt < 100; ++attempt) {
            if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
                pid_ = -1;
                return;
            }
            std::this_thread::sleep_for(50ms);
        }
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

    std::filesystem::path directory_;
    std::uint16_t port_ = 0;
    pid_t pid_ = -1;
};

tlsrelay::dns::Resolver unbound_resolver(Lab& lab, const UnboundProcess& unbound) {
    tlsrelay::dns::ResolverOptions options;
    options.nameservers = {{asio::ip::make_address("127.0.0.1"), unbound.port()}};
    options.timeout = 2000ms;
    options.attempts = 2;
    return tlsrelay::dns::Resolver(lab.io.get_executor(), std::move(options));
}

std::vector<std::string> to_strings(const std::vector<asio::ip::address>& addresses) {
    std::vector<std::string> texts;
    for (const auto& address : addresses) {
        texts.push_back(address.to_string());
    }
    return texts;
}

}  // namespace

TEST_CASE("Unbound: MX, A and AAAA from local data", "[dns][unbound]") {
    UnboundProcess unbound;
    Lab lab;
    auto resolver = unbound_resolver(lab, unbound);

    auto mx = lab.run(resolver.query_mx("example.test"));
    INFO("reason: " << mx.reason << "\nUnbound log:\n" << unbound.log());
    REQUIRE(mx.status == Status::ok);
    REQUIRE(mx.records.size() == 2);
    CHECK(mx.records[0].preference == 10);
    CHECK(mx.records[0].exchange == "mx1.example.test");
    CHECK(mx.records[1].preference == 20);
    CHECK(mx.records[1].exchange == "mx2.example.test");
    CHECK_FALSE(mx.secure);

    auto a = lab.run(resolver.query_a("MX1.example.test."));
    REQUIRE(a.status == Status::ok);
    CHECK(to_strings(a.records) == std::vector<std::string>{"192.0.2.25"});

    auto aaaa = lab.run(resolver.query_aaaa("mx1.example.test"));
    REQUIRE(aaaa.status == Status::ok);
    CHECK(to_strings(aaaa.records) == std::vector<std::string>{"2001:db8::25"});
}

TEST_CASE("Unbound: null MX, NXDOMAIN, NODATA and CNAME", "[dns][unbound]") {
    UnboundProcess unbound;
    Lab lab;
    auto resolver = unbound_resolver(lab, unbound);

    auto null_mx = lab.run(resolver.query_mx("nomail.example.test"));
    REQUIRE(null_mx.status == Status::ok);
    REQUIRE(null_mx.records.size() == 1);
    CHECK(null_mx.records[0].exchange == "");

    auto missing = lab.run(resolver.query_mx("missing.example.test"));
    CHECK(missing.status == Status::nxdomain);

    auto no_aaaa = lab.run(resolver.query_aaaa("example.test"));
    CHECK(no_aaaa.status == Status::nodata);

    auto alias = lab.run(resolver.query_a("alias.example.test"));
    INFO("reason: " << alias.reason);
    REQUIRE(alias.status == Status::ok);
    CHECK(to_strings(alias.records) == std::vector<std::string>{"192.0.2.25"});
}

TEST_CASE("Unbound: large reply retried over TCP", "[dns][unbound]") {
    UnboundProcess unbound;
    Lab lab;
    auto resolver = unbound_resolver(lab, unbound);

    // Over UDP Unbound 1.17 returns TC and no records for this name, so all
    // records arrive only if the resolver retried over TCP.
    auto big = lab.run(resolver.query_a("big.example.test"));

    INFO("reason: " << big.reason << "\nUnbound log:\n" << unbound.log());
    REQUIRE(big.status == Status::ok);
    CHECK(big.records.size() == big_rrset_size);
}
