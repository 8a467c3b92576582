// A DNSSEC lab on loopback for the DNS tests: NSD serves a zone signed at
// test time (keys from ldns-keygen, signatures from ldns-signzone) and an
// unsigned zone, and Unbound validates with the signed zone's DS record as
// its trust anchor. Each lab has its own temporary directory, and both
// servers are child processes stopped by PID when the lab goes, also when a
// check fails. No query leaves 127.0.0.1: Unbound sends names outside the
// two zones to a closed port on loopback.
#pragma once

#include <chrono>
#include <cstdint>
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

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/udp.hpp>
#include <catch2/catch.hpp>

#include "tlsrelay/dns/nameserver.hpp"

extern char** environ;

namespace dns_test {

namespace fs = std::filesystem;

inline std::string read_text(const fs::path& path) {
    std::ifstream file(path);
    std::ostringstream content;
    content << file.rdbuf();
    return content.str();
}

// Returns a port that is free for UDP and TCP on 127.0.0.1 right now.
// NOTE: another process may take it before the server binds it.
inline std::uint16_t free_loopback_port() {
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

// A temporary directory, removed with its content when the object goes.
class TempDirectory {
public:
    explicit TempDirectory(const std::string& prefix) {
        std::string pattern = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
        REQUIRE(mkdtemp(pattern.data()) != nullptr);
        path_ = pattern;
    }
    TempDirectory(const TempDirectory&) = delete;
    TempDirectory& operator=(const TempDirectory&) = delete;
    ~TempDirectory() {
        std::error_code ignored;
        fs::remove_all(path_, ignored);
    }

    const fs::path& path() const { return path_; }

private:
    fs::path path_;
};

// A child process started in `directory` with stdout and stderr in
// `log_path`. The destructor stops it by PID: SIGTERM, up to 5 s, SIGKILL.
class ChildProcess {
public:
    ChildProcess() = default;
    ChildProcess(const ChildProcess&) = delete;
    ChildProcess& operator=(const ChildProcess&) = delete;
    ~ChildProcess() { stop(); }

    void start(const std::vector<std::string>& args, const fs::path& directory, const fs::path& log_path) {
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addchdir_np(&actions, directory.c_str());
        posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                         0644);
        posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);

        std::vector<std::string> copies = args;
        std::vector<char*> argv;
        for (auto& arg : copies) {
            argv.push_back(arg.data());
        }
        argv.push_back(nullptr);
        int error = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        if (error != 0) {
            pid_ = -1;
            FAIL("starting " << args[0] << " failed: " << std::strerror(error));
        }
        name_ = args[0];
    }

    // Returns the exit status once the process has ended, or -1 while it runs.
    int poll_exit() {
        int status = 0;
        if (pid_ > 0 && waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        return -1;
    }

    // Waits up to `limit` for the process to end and returns its exit
    // status; kills it and fails the test when it runs longer.
    int wait(std::chrono::milliseconds limit) {
        auto give_up = std::chrono::steady_clock::now() + limit;
        while (std::chrono::steady_clock::now() < give_up) {
            int status = poll_exit();
            if (status >= 0) {
                return status;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        stop();
        FAIL(name_ << " did not finish within " << limit.count() << " ms");
        return -1;
    }

    void stop() {
        if (pid_ <= 0) {
            return;
        }
        kill(pid_, SIGTERM);
        for (int attempt = 0; attempt < 500; ++attempt) {
            if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
                pid_ = -1;
                return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

private:
    pid_t pid_ = -1;
    std::string name_;
};

// Runs a program in `directory` and returns its output. Fails the test with
// that output when it exits with an error or runs longer than 10 s.
inline std::string run_program(const std::vector<std::string>& args, const fs::path& directory) {
    fs::path output = directory / "command.out";
    ChildProcess process;
    process.start(args, directory, output);
    int status = process.wait(std::chrono::seconds(10));
    std::string text = read_text(output);
    if (status != 0) {
        FAIL(args[0] << " exited with status " << status << ":\n" << text);
    }
    return text;
}

// Waits up to 10 s until a TCP connection to 127.0.0.1:`port` succeeds.
inline void wait_until_listening(ChildProcess& process, const std::string& name, std::uint16_t port,
                                 const fs::path& log_path) {
    asio::io_context io;
    for (int attempt = 0; attempt < 1000; ++attempt) {
        int status = process.poll_exit();
        if (status >= 0) {
            FAIL(name << " exited during start-up with status " << status << ". Its log:\n" << read_text(log_path));
        }
        asio::ip::tcp::socket socket(io);
        std::error_code error;
        socket.connect({asio::ip::make_address("127.0.0.1"), port}, error);
        if (!error) {
            return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL(name << " did not listen on 127.0.0.1:" << port << " within 10 s. Its log:\n" << read_text(log_path));
}

// Number of MX records at big.secure.test. With the RRSIG that the DO bit
// brings, the reply is far above the 512-byte EDNS0 size a test advertises.
constexpr int big_mx_count = 40;

// The signed zone. The records at broken.secure.test and
// _25._tcp.broken.secure.test get corrupted signatures after signing.
inline std::string secure_zone() {
    std::ostringstream zone;
    zone << "$ORIGIN secure.test.\n"
         << "$TTL 300\n"
         << "@ SOA ns hostmaster 1 3600 600 86400 60\n"
         << "@ NS ns\n"
         << "ns A 127.0.0.1\n"
         << "@ MX 10 mx1\n"
         << "@ MX 20 mx2\n"
         << "mx1 A 192.0.2.1\n"
         << "mx1 AAAA 2001:db8::1\n"
         << "mx2 A 192.0.2.2\n"
         << "_25._tcp.mx1 TLSA 3 1 1 " << std::string(64, 'a') << "\n"
         << "_2525._tcp.mx1 TLSA 2 0 1 " << std::string(64, 'b') << "\n"
         << "_25._tcp.mx2 TXT \"a name without TLSA records\"\n"
         << "alias CNAME mx1\n"
         << "_25._tcp.alias CNAME _25._tcp.mx1\n"
         << "cname-mx MX 10 alias\n"
         << "nomail MX 0 .\n"
         << "implicit A 192.0.2.3\n"
         << "literal MX 10 192.0.2.7.\n"
         << "literal MX 20 mx2\n"
         << "mixed CNAME mx.insecure.test.\n"
         << "mixed-mx MX 10 mx.insecure.test.\n"
         << "txt TXT \"v=STSv1; \" \"id=20240101\"\n"
         << "broken A 192.0.2.9\n"
         << "broken MX 10 mx1\n"
         << "_25._tcp.broken TLSA 3 1 1 " << std::string(64, 'c') << "\n";
    for (int i = 0; i < big_mx_count; ++i) {
        zone << "big MX " << i << " mail-exchanger-" << i << "\n";
    }
    return zone.str();
}

inline std::string insecure_zone() {
    return "$ORIGIN insecure.test.\n"
           "$TTL 300\n"
           "@ SOA ns hostmaster 1 3600 600 86400 60\n"
           "@ NS ns\n"
           "ns A 127.0.0.1\n"
           "@ MX 10 mx\n"
           "mx A 192.0.2.50\n"
           "mx AAAA 2001:db8::50\n";
}

// Changes one base64 character of each RRSIG that covers A, MX or TLSA at
// the broken names. ldns-signzone writes one record per line with tab
// separated fields, the signature last.
inline std::string corrupt_signatures(const std::string& signed_zone) {
    std::istringstream lines(signed_zone);
    std::ostringstream output;
    std::string line;
    while (std::getline(lines, line)) {
        std::istringstream fields(line);
        std::string owner, ttl, rr_class, type, covered;
        fields >> owner >> ttl >> rr_class >> type >> covered;
        bool broken_owner = owner == "broken.secure.test." || owner == "_25._tcp.broken.secure.test.";
        bool covered_type = covered == "A" || covered == "MX" || covered == "TLSA";
        if (broken_owner && type == "RRSIG" && covered_type) {
            char& target = line[line.size() - 20];
            target = target == 'A' ? 'B' : 'A';
        }
        output << line << "\n";
    }
    return output.str();
}

class DnssecLab {
public:
    DnssecLab() : directory_("tlsrelay-dnssec") {
        for (const char* program : {"/usr/sbin/nsd", "/usr/sbin/unbound", "/usr/bin/ldns-keygen",
                                    "/usr/bin/ldns-signzone"}) {
            if (access(program, X_OK) != 0) {
                FAIL(program << " not found: install the Debian packages nsd, unbound and ldnsutils");
            }
        }
        const fs::path& dir = directory_.path();
        std::ofstream(dir / "secure.test.zone") << secure_zone();
        std::ofstream(dir / "insecure.test.zone") << insecure_zone();
        std::string ds = sign_zone();

        nsd_port_ = free_loopback_port();
        std::ofstream(dir / "nsd.conf") << nsd_config();
        nsd_.start({"/usr/sbin/nsd", "-d", "-c", (dir / "nsd.conf").string()}, dir, dir / "nsd.out");
        wait_until_listening(nsd_, "NSD", nsd_port_, dir / "nsd.out");

        unbound_port_ = free_loopback_port();
        std::ofstream(dir / "anchor.ds") << ds;
        std::ofstream(dir / "unbound.conf") << unbound_config(free_loopback_port());
        unbound_.start({"/usr/sbin/unbound", "-d", "-c", (dir / "unbound.conf").string()}, dir, dir / "unbound.out");
        wait_until_listening(unbound_, "Unbound", unbound_port_, dir / "unbound.out");
    }

    // The validating resolver.
    tlsrelay::dns::Nameserver unbound() const { return {asio::ip::make_address("127.0.0.1"), unbound_port_}; }
    // The authoritative server, which sets no AD bit.
    tlsrelay::dns::Nameserver nsd() const { return {asio::ip::make_address("127.0.0.1"), nsd_port_}; }

    // The servers' logs, for failure messages.
    std::string logs() const {
        const fs::path& dir = directory_.path();
        return "NSD:\n" + read_text(dir / "nsd.out") + read_text(dir / "nsd.log") + "Unbound:\n" +
               read_text(dir / "unbound.out");
    }

private:
    // Generates a KSK and a ZSK, signs secure.test, breaks the signatures of
    // the broken names, and returns the KSK's DS record.
    std::string sign_zone() {
        const fs::path& dir = directory_.path();
        auto first_line = [](const std::string& text) { return text.substr(0, text.find('\n')); };
        std::string ksk = first_line(
            run_program({"/usr/bin/ldns-keygen", "-a", "ECDSAP256SHA256", "-k", "secure.test"}, dir));
        std::string zsk = first_line(run_program({"/usr/bin/ldns-keygen", "-a", "ECDSAP256SHA256", "secure.test"}, dir));
        run_program({"/usr/bin/ldns-signzone", "-o", "secure.test", "secure.test.zone", zsk, ksk}, dir);

        std::string signed_zone = read_text(dir / "secure.test.zone.signed");
        REQUIRE(signed_zone.find("RRSIG") != std::string::npos);
        std::ofstream(dir / "secure.test.zone.signed") << corrupt_signatures(signed_zone);
        return read_text(dir / (ksk + ".ds"));
    }

    std::string nsd_config() const {
        const std::string dir = directory_.path().string();
        std::ostringstream config;
        config << "server:\n"
               << "    ip-address: 127.0.0.1\n"
               << "    port: " << nsd_port_ << "\n"
               << "    do-ip6: no\n"
               << "    server-count: 1\n"
               << "    username: \"\"\n"
               << "    chroot: \"\"\n"
               << "    database: \"\"\n"
               << "    zonesdir: \"" << dir << "\"\n"
               << "    zonelistfile: \"" << dir << "/zone.list\"\n"
               << "    xfrdfile: \"" << dir << "/xfrd.state\"\n"
               << "    xfrdir: \"" << dir << "\"\n"
               << "    pidfile: \"" << dir << "/nsd.pid\"\n"
               << "    logfile: \"" << dir << "/nsd.log\"\n"
               << "    verbosity: 1\n"
               << "remote-control:\n"
               << "    control-enable: no\n"
               << "zone:\n"
               << "    name: secure.test\n"
               << "    zonefile: secure.test.zone.signed\n"
               << "zone:\n"
               << "    name: insecure.test\n"
               << "    zonefile: insecure.test.zone\n";
        return config.str();
    }

    // `closed_port` takes the queries for names outside the lab's zones.
    std::string unbound_config(std::uint16_t closed_port) const {
        const std::string dir = directory_.path().string();
        std::ostringstream config;
        config << "server:\n"
               << "    interface: 127.0.0.1\n"
               << "    port: " << unbound_port_ << "\n"
               << "    do-ip6: no\n"
               << "    num-threads: 1\n"
               << "    username: \"\"\n"
               << "    chroot: \"\"\n"
               << "    directory: \"" << dir << "\"\n"
               << "    pidfile: \"" << dir << "/unbound.pid\"\n"
               << "    use-syslog: no\n"
               << "    logfile: \"\"\n"
               << "    verbosity: 1\n"
               << "    val-log-level: 2\n"
               << "    access-control: 127.0.0.0/8 allow\n"
               << "    do-not-query-localhost: no\n"
               << "    local-zone: \"test.\" nodefault\n"
               << "    trust-anchor-file: \"" << dir << "/anchor.ds\"\n"
               << "stub-zone:\n"
               << "    name: \"secure.test.\"\n"
               << "    stub-addr: 127.0.0.1@" << nsd_port_ << "\n"
               << "stub-zone:\n"
               << "    name: \"insecure.test.\"\n"
               << "    stub-addr: 127.0.0.1@" << nsd_port_ << "\n"
               << "forward-zone:\n"
               << "    name: \".\"\n"
               << "    forward-addr: 127.0.0.1@" << closed_port << "\n"
               << "remote-control:\n"
               << "    control-enable: no\n";
        return config.str();
    }

    // Declared first so that it is removed after both servers have stopped.
    TempDirectory directory_;
    std::uint16_t nsd_port_ = 0;
    std::uint16_t unbound_port_ = 0;
    ChildProcess nsd_;
    ChildProcess unbound_;
};

}  // namespace dns_test
