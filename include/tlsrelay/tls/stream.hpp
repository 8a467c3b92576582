// A TCP connection that speaks plaintext until STARTTLS and TLS afterwards.
// It drives wolfSSL directly on the non-blocking socket, so an idle session
// holds no stream buffers of its own. No wolfSSL header is visible here.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/ip/tcp.hpp>

#include "tlsrelay/tls/context.hpp"

namespace tlsrelay::tls {

// What a completed handshake established, in the terms logs and policy use.
struct SessionInfo {
    std::string protocol;  // "TLSv1.3"
    std::string cipher;    // IANA name, e.g. "TLS_AES_128_GCM_SHA256"
    bool peer_certificate_present = false;
    bool chain_trusted = false;  // chain validated against the client context's CA store
    std::string verify_error;    // why the chain is not trusted; empty when trusted
    // subjectAltName dNSName entries of the leaf; the subject CN when there are none.
    std::vector<std::string> peer_names;
    // Peer chain as DER, leaf first.
    std::vector<std::vector<unsigned char>> peer_chain_der;
    // Server name indication: the name the client sent (server side) or the
    // name requested (client side); empty when none.
    std::string server_name;
};

// Only one read, write, handshake or shutdown may be in progress at a time;
// SMTP is a lockstep protocol, so the relay never needs more. The owner must
// keep the Stream alive until a pending operation has returned, but may call
// socket().cancel() or close() at any time: the pending operation then raises
// asio::system_error (asio::error::operation_aborted, or bad_descriptor once
// the socket is closed).
//
// Sends use MSG_NOSIGNAL, both in plaintext (Asio sets it) and under TLS, so a
// peer that has gone away yields asio::error::broken_pipe instead of SIGPIPE.
class Stream {
public:
    explicit Stream(asio::ip::tcp::socket socket);
    ~Stream();
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;

    asio::ip::tcp::socket& socket() { return socket_; }
    bool is_tls() const { return ssl_ != nullptr; }
    const SessionInfo& session() const { return session_; }

    // Reads at least one byte; raises asio::system_error (asio::error::eof at
    // a clean end of stream) on failure.
    // Under TLS, eof means the peer sent close_notify or closed the TCP
    // connection; SMTP frames its own data, so a missing close_notify
    // cannot truncate a message unnoticed. Other TLS failures raise TlsError.
    asio::awaitable<std::size_t> read_some(asio::mutable_buffer buffer);
    // True when a read would find bytes without waiting for the peer: TLS
    // input buffered by wolfSSL (decrypted or not), or bytes in the socket.
    bool readable_now();

    // Reads without waiting. Without TLS it returns done (with `received`
    // set) or would_block, and raises errors as read_some does. Under TLS
    // it reads nothing and returns would_block or ready (see readable_now).
    enum class ReadNow { done, would_block, ready };
    ReadNow read_now(asio::mutable_buffer buffer, std::size_t& received);
    // Waits until the socket has bytes to read or the peer closed it.
    asio::awaitable<void> wait_readable();

    // Under TLS, a write that failed or was cancelled makes every later
    // write raise TlsError, because its record may be half sent.
    asio::awaitable<void> write_all(asio::const_buffer buffer);

    // Both raise TlsError on a failed handshake, with the library's reason,
    // also when the peer closes the connection mid-handshake; socket errors
    // and cancellation raise asio::system_error. The handshake reads from the
    // socket directly: bytes the caller read ahead in plaintext are not seen
    // by TLS and must be discarded by the caller. After a failed handshake
    // every read and write raises TlsError.
    asio::awaitable<void> handshake_server(ServerContext& context);
    // Sends `server_name` as SNI (unless empty) and records, without failing,
    // whether the server's chain is trusted by the context's CA store.
    asio::awaitable<void> handshake_client(ClientContext& context, std::string_view server_name);

    // Sends close_notify when TLS is up (best effort) and closes the socket.
    asio::awaitable<void> shutdown();
    void close();

private:
    // wolfSSL's I/O and verify callbacks, defined in stream.cpp.
    friend struct StreamCallbacks;

    enum class Operation { accept, connect, read, write };

    // Result of certificate verification for the leaf (depth 0), as the
    // verify callback saw it during the client handshake.
    struct LeafVerification {
        bool checked = false;
        bool valid = false;
        int error = 0;  // X509_V_ERR_* code from the callback
    };

    void start_tls(void* wolfssl_context);
    asio::awaitable<int> run(Operation operation, void* data, int size);
    asio::awaitable<void> wait_for(int want);
    [[noreturn]] void raise_failure(Operation operation, int error);
    void check_usable() const;
    void record_session(bool client_side);

    asio::ip::tcp::socket socket_;
    struct SslDeleter {
        void operator()(void* ssl) const;
    };
    std::unique_ptr<void, SslDeleter> ssl_holder_;
    void* ssl_ = nullptr;
    SessionInfo session_;
    bool handshake_failed_ = false;
    // wolfSSL must be called again with the same data after an interrupted
    // write, so once a TLS write fails or is cancelled no other may follow.
    bool write_interrupted_ = false;
    // Outcome of the last socket call made by the I/O callbacks: errno, or
    // whether recv() returned 0.
    int socket_error_ = 0;
    bool peer_closed_ = false;
    LeafVerification leaf_verification_;
};

// Raised by the handshake and by reads and writes under TLS.
class TlsError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

}  // namespace tlsrelay::tls
