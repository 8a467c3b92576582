// Helpers for the TLS tests: a temporary directory, a test PKI made with the
// openssl command-line tool, child processes, and a loopback connection
// pair driven by one io_context.
#pragma once

#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <catch2/catch.hpp>

#include "tlsrelay/tls/context.hpp"
#include "tlsrelay/tls/stream.hpp"

namespace tls_test {

namespace fs = std::filesystem;
using asio::ip::tcp;
using namespace std::chrono_literals;

// A directory under $TMPDIR (or /tmp) that is removed with its contents.
class TempDir {
public:
    TempDir() {
        std::string pattern = (fs::temp_directory_path() / "tlsrelay-tls-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr) {
            throw std::runtime_error("mkdtemp failed for " + pattern);
        }
        path_ = pattern;
    }
    ~TempDir() {
        std::error_code ignored;
        fs::remove_all(path_, ignored);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const fs::path& path() const { return path_; }
    std::string file(const std::string& name) const { return (path_ / name).string(); }

private:
    fs::path path_;
};

inline std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline std::vector<unsigned char> read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::vector<unsigned char>(std::istreambuf_iterator<char>(in),
                                      std::istreambuf_iterator<char>());
}

inline void write_text(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
}

// Runs a shell command with its output going to `log`; raises with the
// command and the log's content when it exits non-zero.
inline void run_command(const std::string& command, const std::string& log) {
    std::string full = command + " >>" + log + " 2>&1";
    int status = std::system(full.c_str());
    if (status != 0) {
        throw std::runtime_error("command failed (status " + std::to_string(status) +
                                 "): " + command + "\n" + read_text(log));
    }
}

// A test PKI:
//   ca             root "tlsrelay test CA" (EC P-256)
//   intermediate   CA signed by ca
//   server         RSA-2048 leaf from ca, SAN mx.test.example and
//                  *.mail.test.example, CN mx.test.example
//   chained        EC leaf from intermediate, SAN chained.test.example;
//                  chained-chain.crt contains leaf + intermediate
//   cn-only        EC leaf from ca without subjectAltName, CN cn-only.test.example
//   expired        EC leaf from ca, valid 2020-01-01 to 2021-01-01
//   other-ca       an unrelated root
//   other-leaf     leaf from other-ca; other-chain.crt contains leaf + other-ca,
//                  so the untrusted root arrives at depth 1
//   self-signed    self-signed leaf for mx.test.example
class TestPki {
public:
    TestPki() {
        log_ = dir_.file("openssl.log");
        write_text(dir_.file("index.txt"), "");
        write_text(dir_.file("serial"), "1000\n");
        fs::create_directory(dir_.path() / "newcerts");
        write_text(dir_.file("ca.cnf"), ca_config());

        make_root("ca", "tlsrelay test CA");
        make_root("other-ca", "unrelated test CA");
        make_request("intermediate", "ec", "tlsrelay test intermediate CA");
        sign("intermediate", "ca", "intermediate_ext", "");

        make_request("server", "rsa", "mx.test.example");
        sign("server", "ca", "server_ext", "");
        make_request("chained", "ec", "chained.test.example");
        sign("chained", "intermediate", "chained_ext", "");
        make_request("cn-only", "ec", "cn-only.test.example");
        sign("cn-only", "ca", "cn_only_ext", "");
        make_request("expired", "ec", "mx.test.example");
        sign("expired", "ca", "server_ext", "-startdate 20200101000000Z -enddate 20210101000000Z");
        make_request("other-leaf", "ec", "mx.test.example");
        sign("other-leaf", "other-ca", "server_ext", "");

        run_command("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
                    " -keyout " + dir_.file("self-signed.key") +
                        " -out " + dir_.file("self-signed.crt") +
                        " -days 30 -subj /CN=mx.test.example"
                        " -addext subjectAltName=DNS:mx.test.example",
                    log_);

        concatenate({"chained.crt", "intermediate.crt"}, "chained-chain.crt");
        concatenate({"other-leaf.crt", "other-ca.crt"}, "other-chain.crt");
        run_command("openssl x509 -in " + dir_.file("server.crt") + " -outform DER -out " +
                        dir_.file("server.der"),
                    log_);
    }

    // Path of a file in the PKI directory, e.g. file("ca.crt").
    std::string file(const std::string& name) const { return dir_.file(name); }

private:
    static std::string ca_config() {
        return "[ca]\n"
               "default_ca = test_ca\n"
               "[test_ca]\n"
               "dir = .\n"
               "database = $dir/index.txt\n"
               "new_certs_dir = $dir/newcerts\n"
               "serial = $dir/serial\n"
               "default_md = sha256\n"
               "default_days = 365\n"
               "policy = policy_any\n"
               "unique_subject = no\n"
               "email_in_dn = no\n"
               "[policy_any]\n"
               "commonName = supplied\n"
               "[intermediate_ext]\n"
               "basicConstraints = critical, CA:TRUE, pathlen:0\n"
               "keyUsage = critical, keyCertSign, cRLSign\n"
               "subjectKeyIdentifier = hash\n"
               "authorityKeyIdentifier = keyid\n"
               "[server_ext]\n"
               "basicConstraints = CA:FALSE\n"
               "keyUsage = critical, digitalSignature, keyEncipherment\n"
               "extendedKeyUsage = serverAuth\n"
               "subjectAltName = DNS:mx.test.example, DNS:*.mail.test.example\n"
               "[chained_ext]\n"
               "basicConstraints = CA:FALSE\n"
               "keyUsage = critical, digitalSignature\n"
               "extendedKeyUsage = serverAuth\n"
               "subjectAltName = DNS:chained.test.example\n"
               "[cn_only_ext]\n"
               "basicConstraints = CA:FALSE\n"
               "keyUsage = critical, digitalSignature\n"
               "extendedKeyUsage = serverAuth\n";
    }

    void make_root(const std::string& name, const std::string& common_name) {
        run_command("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
                    " -keyout " + dir_.file(name + ".key") + " -out " + dir_.file(name + ".crt") +
                        " -days 3650 -subj '/CN=" + common_name + "'"
                        " -addext basicConstraints=critical,CA:TRUE"
                        " -addext keyUsage=critical,keyCertSign,cRLSign",
                    log_);
    }

    void make_request(const std::string& name, const std::string& key_type,
                      const std::string& common_name) {
        std::string key_options = key_type == "rsa"
                                      ? "-newkey rsa:2048"
                                      : "-newkey ec -pkeyopt ec_paramgen_curve:P-256";
        run_command("openssl req -new " + key_options + " -nodes -keyout " +
                        dir_.file(name + ".key") + " -out " + dir_.file(name + ".csr") +
                        " -subj '/CN=" + common_name + "'",
                    log_);
    }

    void sign(const std::string& name, const std::string& issuer, const std::string& extensions,
              const std::string& extra_options) {
        run_command("cd " + dir_.path().string() +
                        " && openssl ca -batch -notext -config ca.cnf -cert " + issuer +
                        ".crt -keyfile " + issuer + ".key -extensions " + extensions + " " +
                        extra_options + " -in " + name + ".csr -out " + name + ".crt",
                    log_);
    }

    void concatenate(const std::vector<std::string>& parts, const std::string& output) {
        std::string text;
        for (const std::string& part : parts) {
            text += read_text(dir_.file(part));
        }
        write_text(dir_.file(output), text);
    }

    TempDir dir_;
    std::string log_;
};

// Built once per test run: making the keys takes about a second.
inline const TestPki& test_pki() {
    static const TestPki pki;
    return pki;
}

using StreamTask = std::function<asio::awaitable<void>(tlsrelay::tls::Stream&)>;

// Connects a client Stream to a server Stream over 127.0.0.1 and runs both
// tasks in one io_context, for at most `limit`. Rethrows the server's
// exception first, then the client's.
inline void run_pair(const StreamTask& server, const StreamTask& client,
                     std::chrono::milliseconds limit = 20s) {
    asio::io_context io;
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    tcp::endpoint endpoint = acceptor.local_endpoint();

    bool server_done = false;
    bool client_done = false;
    std::exception_ptr server_error;
    std::exception_ptr client_error;

    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            tlsrelay::tls::Stream stream(co_await acceptor.async_accept(asio::use_awaitable));
            co_await server(stream);
        },
        [&](std::exception_ptr error) {
            server_error = error;
            server_done = true;
        });
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            tcp::socket socket(io);
            co_await socket.async_connect(endpoint, asio::use_awaitable);
            tlsrelay::tls::Stream stream(std::move(socket));
            co_await client(stream);
        },
        [&](std::exception_ptr error) {
            client_error = error;
            client_done = true;
        });

    io.run_for(limit);
    REQUIRE(server_done);
    REQUIRE(client_done);
    if (server_error) {
        std::rethrow_exception(server_error);
    }
    if (client_error) {
        std::rethrow_exception(client_error);
    }
}

// Reads exactly `size` bytes.
inline asio::awaitable<std::string> read_exactly(tlsrelay::tls::Stream& stream, std::size_t size) {
    std::string data(size, '\0');
    std::size_t done = 0;
    while (done < size) {
        done += co_await stream.read_some(asio::buffer(data.data() + done, size - done));
    }
    co_return data;
}

// Reads until `terminator` has arrived, at most `max_size` bytes.
inline asio::awaitable<std::string> read_until(tlsrelay::tls::Stream& stream,
                                               const std::string& terminator,
                                               std::size_t max_size = 65536) {
    std::string data;
    char chunk[4096];
    while (data.find(terminator) == std::string::npos && data.size() < max_size) {
        std::size_t n = co_await stream.read_some(asio::buffer(chunk));
        data.append(chunk, n);
    }
    co_return data;
}

inline asio::awaitable<void> write_text(tlsrelay::tls::Stream& stream, const std::string& text) {
    co_await stream.write_all(asio::buffer(text));
}

// Returns a 127.0.0.1 port that was free a moment ago, for a child process
// to listen on.
inline unsigned short free_loopback_port() {
    asio::io_context io;
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    return acceptor.local_endpoint().port();
}

// A child process with stdin from a file and stdout and stderr to a file.
// The destructor kills it (by its own pid) if it is still running.
class ChildProcess {
public:
    ChildProcess(const std::vector<std::string>& argv, const std::string& stdin_file,
                 const std::string& output_file) {
        pid_ = ::fork();
        if (pid_ < 0) {
            throw std::runtime_error("fork failed");
        }
        if (pid_ == 0) {
            int in = ::open(stdin_file.c_str(), O_RDONLY);
            int out = ::open(output_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (in < 0 || out < 0) {
                ::_exit(126);
            }
            ::dup2(in, 0);
            ::dup2(out, 1);
            ::dup2(out, 2);
            std::vector<char*> args;
            for (const std::string& arg : argv) {
                args.push_back(const_cast<char*>(arg.c_str()));
            }
            args.push_back(nullptr);
            ::execvp(args[0], args.data());
            ::_exit(127);
        }
    }
    ~ChildProcess() {
        if (pid_ > 0 && !exited_) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    ChildProcess(const ChildProcess&) = delete;
    ChildProcess& operator=(const ChildProcess&) = delete;

    // Waits up to `limit` for the child to exit; returns its exit status,
    // or -1 if it is still running.
    int wait(std::chrono::milliseconds limit) {
        auto deadline = std::chrono::steady_clock::now() + limit;
        while (std::chrono::steady_clock::now() < deadline) {
            int status = 0;
            pid_t result = ::waitpid(pid_, &status, WNOHANG);
            if (result == pid_) {
                exited_ = true;
                return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            }
            std::this_thread::sleep_for(20ms);
        }
        return -1;
    }

private:
    pid_t pid_ = -1;
    bool exited_ = false;
};

}  // namespace tls_test
