// Stream: plaintext over Asio until STARTTLS, then wolfSSL driven directly on
// the non-blocking socket.
//
// wolfSSL does its own recv()/send() through the callbacks below. When it
// reports WANT_READ or WANT_WRITE, the coroutine waits for socket readiness
// with async_wait and repeats the same wolfSSL call with the same arguments,
// as wolfSSL requires. No buffers exist beyond wolfSSL's own record buffers.
//
// NOTE: with Debian's wolfSSL 5.5.4, wolfSSL_new alone allocates about
// 55 KiB, most of it a session struct sized for SESSION_CERTS. The "[.memory]"
// test measured an idle server session at about 60 KiB and an idle client
// session at about 77 KiB (the peer certificate wolfSSL keeps adds the rest).
#include "tlsrelay/tls/stream.hpp"

#include <sys/socket.h>
#include <sys/types.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <utility>

#include <asio/error.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "certificate_facts.hpp"
#include "wolfssl_context.hpp"

namespace tlsrelay::tls {

namespace {

// wolfSSL 5.5.4 reports an expired certificate as "invalid notAfter field"
// and a future one as "invalid notBefore field", so the dates are compared
// with the clock to report the usual codes.
int refine_date_error(int error, WOLFSSL_X509* certificate) {
    if (certificate == nullptr) {
        return error;
    }
    if (error == X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD) {
        const WOLFSSL_ASN1_TIME* not_after = wolfSSL_X509_get_notAfter(certificate);
        if (not_after != nullptr && wolfSSL_X509_cmp_current_time(not_after) < 0) {
            return X509_V_ERR_CERT_HAS_EXPIRED;
        }
    }
    if (error == X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD) {
        const WOLFSSL_ASN1_TIME* not_before = wolfSSL_X509_get_notBefore(certificate);
        if (not_before != nullptr && wolfSSL_X509_cmp_current_time(not_before) > 0) {
            return X509_V_ERR_CERT_NOT_YET_VALID;
        }
    }
    return error;
}

}  // namespace

// Callbacks that wolfSSL calls with the Stream as their context pointer.
struct StreamCallbacks {
    static int receive(WOLFSSL*, char* buffer, int size, void* context) {
        auto* stream = static_cast<Stream*>(context);
        while (true) {
            ssize_t received = ::recv(stream->socket_.native_handle(), buffer,
                                      static_cast<std::size_t>(size), 0);
            if (received > 0) {
                return static_cast<int>(received);
            }
            if (received == 0) {
                stream->peer_closed_ = true;
                return WOLFSSL_CBIO_ERR_CONN_CLOSE;
            }
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return WOLFSSL_CBIO_ERR_WANT_READ;
            }
            stream->socket_error_ = errno;
            return errno == ECONNRESET ? WOLFSSL_CBIO_ERR_CONN_RST : WOLFSSL_CBIO_ERR_GENERAL;
        }
    }

    static int send(WOLFSSL*, char* buffer, int size, void* context) {
        auto* stream = static_cast<Stream*>(context);
        while (true) {
            // MSG_NOSIGNAL: a closed peer must give EPIPE, not kill the process.
            ssize_t sent = ::send(stream->socket_.native_handle(), buffer,
                                  static_cast<std::size_t>(size), MSG_NOSIGNAL);
            if (sent >= 0) {
                return static_cast<int>(sent);
            }
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return WOLFSSL_CBIO_ERR_WANT_WRITE;
            }
            stream->socket_error_ = errno;
            if (errno == EPIPE) {
                return WOLFSSL_CBIO_ERR_CONN_CLOSE;
            }
            return errno == ECONNRESET ? WOLFSSL_CBIO_ERR_CONN_RST : WOLFSSL_CBIO_ERR_GENERAL;
        }
    }

    // Accepts every chain so that the handshake goes on, and records the
    // leaf's result for SessionInfo. Only depth 0 decides: wolfSSL 5.5.4
    // reports preverify=1 for an untrusted self-signed root sent at depth 1,
    // and a failure above depth 0 may belong to an alternative path that is
    // not used. The leaf's result covers the chain, because wolfSSL checks the
    // leaf only against CAs it trusts or intermediates it has already
    // verified.
    static int verify(int preverify, WOLFSSL_X509_STORE_CTX* store) {
        auto* stream = static_cast<Stream*>(store->userCtx);
        if (stream == nullptr) {
            return 0;
        }
        if (wolfSSL_X509_STORE_CTX_get_error_depth(store) != 0) {
            return 1;
        }

        Stream::LeafVerification& leaf = stream->leaf_verification_;
        int error = refine_date_error(wolfSSL_X509_STORE_CTX_get_error(store),
                                      store->current_cert);
        bool valid = preverify == 1 && error == 0;
        // The callback may run more than once for the leaf; any failure sticks.
        if (!leaf.checked || leaf.valid) {
            leaf.valid = valid;
            leaf.error = valid ? 0 : (error != 0 ? error : -1);
        }
        leaf.checked = true;
        return 1;
    }
};

void Stream::SslDeleter::operator()(void* ssl) const {
    wolfSSL_free(static_cast<WOLFSSL*>(ssl));
}

Stream::Stream(asio::ip::tcp::socket socket) : socket_(std::move(socket)) {}

Stream::~Stream() = default;

void Stream::start_tls(void* wolfssl_context) {
    if (ssl_ != nullptr) {
        throw TlsError("TLS handshake requested on a connection that already uses TLS");
    }
    if (!socket_.is_open()) {
        throw asio::system_error(asio::error::bad_descriptor, "TLS handshake");
    }

    WOLFSSL* ssl = wolfSSL_new(static_cast<WOLFSSL_CTX*>(wolfssl_context));
    if (ssl == nullptr) {
        throw TlsError("wolfSSL_new failed (out of memory)");
    }
    ssl_holder_.reset(ssl);
    ssl_ = ssl;

    // wolfSSL's own recv()/send() path would also work through
    // wolfSSL_set_fd, but the callbacks keep errno for asio::system_error
    // and always pass MSG_NOSIGNAL.
    wolfSSL_SSLSetIORecv(ssl, &StreamCallbacks::receive);
    wolfSSL_SSLSetIOSend(ssl, &StreamCallbacks::send);
    wolfSSL_SetIOReadCtx(ssl, this);
    wolfSSL_SetIOWriteCtx(ssl, this);
    socket_.non_blocking(true);
}

asio::awaitable<void> Stream::handshake_server(ServerContext& context) {
    start_tls(context.get());
    try {
        co_await run(Operation::accept, nullptr, 0);
    } catch (...) {
        handshake_failed_ = true;
        throw;
    }
    record_session(false);
}

asio::awaitable<void> Stream::handshake_client(ClientContext& context,
                                               std::string_view server_name) {
    start_tls(context.get());
    auto* ssl = static_cast<WOLFSSL*>(ssl_);

    // RFC 6066 section 3: SNI carries host names only, never an address
    // literal such as the next hop of "user@[192.0.2.1]".
    std::string_view unbracketed = server_name;
    if (unbracketed.size() >= 2 && unbracketed.front() == '[' && unbracketed.back() == ']') {
        unbracketed = unbracketed.substr(1, unbracketed.size() - 2);
        // RFC 5321 section 4.1.3 writes IPv6 literals as "[IPv6:...]".
        if (unbracketed.size() > 5 && (unbracketed.substr(0, 5) == "IPv6:" || unbracketed.substr(0, 5) == "ipv6:")) {
            unbracketed.remove_prefix(5);
        }
    }
    std::error_code not_an_address;
    asio::ip::make_address(std::string(unbracketed), not_an_address);
    if (!not_an_address) {
        server_name = {};
    }

    if (!server_name.empty()) {
        int ret = wolfSSL_UseSNI(ssl, WOLFSSL_SNI_HOST_NAME, server_name.data(),
                                 static_cast<unsigned short>(
                                     std::min<std::size_t>(server_name.size(), USHRT_MAX)));
        if (ret != WOLFSSL_SUCCESS) {
            handshake_failed_ = true;
            throw TlsError("cannot set SNI to \"" + std::string(server_name) +
                           "\": " + wolfssl_error_text(ret));
        }
        session_.server_name = server_name;
    }

    leaf_verification_ = {};
    wolfSSL_set_verify(ssl, WOLFSSL_VERIFY_PEER, &StreamCallbacks::verify);
    wolfSSL_SetCertCbCtx(ssl, this);

    try {
        co_await run(Operation::connect, nullptr, 0);
    } catch (...) {
        handshake_failed_ = true;
        throw;
    }
    record_session(true);
}

asio::awaitable<std::size_t> Stream::read_some(asio::mutable_buffer buffer) {
    if (ssl_ == nullptr) {
        co_return co_await socket_.async_read_some(buffer, asio::use_awaitable);
    }
    check_usable();
    if (buffer.size() == 0) {
        co_return 0;
    }
    int size = static_cast<int>(std::min<std::size_t>(buffer.size(), INT_MAX));
    co_return static_cast<std::size_t>(co_await run(Operation::read, buffer.data(), size));
}

bool Stream::readable_now() {
    if (ssl_ != nullptr && wolfSSL_has_pending(static_cast<WOLFSSL*>(ssl_)) != 0) {
        return true;
    }
    std::error_code error;
    auto count = socket_.available(error);
    // On an error the read itself reports it.
    return error || count > 0;
}

Stream::ReadNow Stream::read_now(asio::mutable_buffer buffer, std::size_t& received) {
    if (ssl_ != nullptr) {
        return readable_now() ? ReadNow::ready : ReadNow::would_block;
    }
    // One recv() usually returns the next command. Checking first with
    // FIONREAD would cost one more system call per line.
    if (!socket_.non_blocking()) {
        socket_.non_blocking(true);
    }
    std::error_code error;
    received = socket_.read_some(buffer, error);
    if (error == asio::error::would_block || error == asio::error::try_again) {
        return ReadNow::would_block;
    }
    if (error) {
        throw asio::system_error(error);
    }
    return ReadNow::done;
}

asio::awaitable<void> Stream::wait_readable() {
    // Returned directly rather than awaited in a coroutine of its own, so an
    // idle session has one coroutine frame less.
    return socket_.async_wait(asio::socket_base::wait_read, asio::use_awaitable);
}

asio::awaitable<void> Stream::write_all(asio::const_buffer buffer) {
    if (ssl_ == nullptr) {
        co_await asio::async_write(socket_, buffer, asio::use_awaitable);
        co_return;
    }
    check_usable();
    if (write_interrupted_) {
        throw TlsError("TLS write rejected: an earlier write was interrupted mid-record; "
                       "close the connection");
    }

    // One record's worth per call: a failed wolfSSL_write must be repeated
    // with the same arguments, which is easy when each call is bounded.
    constexpr std::size_t chunk_size = 16384;
    const auto* data = static_cast<const unsigned char*>(buffer.data());
    std::size_t remaining = buffer.size();
    while (remaining > 0) {
        int size = static_cast<int>(std::min(remaining, chunk_size));
        int written = 0;
        try {
            written = co_await run(Operation::write, const_cast<unsigned char*>(data), size);
        } catch (...) {
            write_interrupted_ = true;
            throw;
        }
        data += written;
        remaining -= static_cast<std::size_t>(written);
    }
}

asio::awaitable<void> Stream::shutdown() {
    if (ssl_ != nullptr && !handshake_failed_ && !write_interrupted_ && socket_.is_open()) {
        // Send close_notify without waiting for the peer's: the SMTP dialogue
        // is over by now. A few rounds cover a full socket send buffer, and
        // errors do not matter because the socket is closed next.
        auto* ssl = static_cast<WOLFSSL*>(ssl_);
        constexpr int max_attempts = 4;
        for (int attempt = 0; attempt < max_attempts && socket_.is_open(); ++attempt) {
            int ret = wolfSSL_shutdown(ssl);
            int error = wolfSSL_get_error(ssl, ret);
            if (ret >= 0 || error != WOLFSSL_ERROR_WANT_WRITE) {
                break;
            }
            asio::error_code wait_error;
            co_await socket_.async_wait(asio::socket_base::wait_write,
                                        asio::redirect_error(asio::use_awaitable, wait_error));
            if (wait_error) {
                break;
            }
        }
        wolfSSL_ERR_clear_error();
    }
    close();
}

void Stream::close() {
    asio::error_code ignored;
    socket_.shutdown(asio::socket_base::shutdown_both, ignored);
    socket_.close(ignored);
}

void Stream::check_usable() const {
    if (handshake_failed_) {
        throw TlsError("connection unusable: the TLS handshake failed");
    }
}

asio::awaitable<int> Stream::run(Operation operation, void* data, int size) {
    auto* ssl = static_cast<WOLFSSL*>(ssl_);
    while (true) {
        if (!socket_.is_open()) {
            throw asio::system_error(asio::error::bad_descriptor);
        }

        socket_error_ = 0;
        peer_closed_ = false;
        int ret = 0;
        switch (operation) {
        case Operation::accept:
            ret = wolfSSL_accept(ssl);
            break;
        case Operation::connect:
            ret = wolfSSL_connect(ssl);
            break;
        case Operation::read:
            ret = wolfSSL_read(ssl, data, size);
            break;
        case Operation::write:
            ret = wolfSSL_write(ssl, data, size);
            break;
        }
        if (ret > 0) {
            co_return ret;
        }

        int error = wolfSSL_get_error(ssl, ret);
        if (error == WOLFSSL_ERROR_WANT_READ || error == WOLFSSL_ERROR_WANT_WRITE) {
            // Raises asio::system_error when the owner cancels or closes.
            co_await wait_for(error);
            continue;
        }
        raise_failure(operation, error);
    }
}

asio::awaitable<void> Stream::wait_for(int want) {
    auto wait_type = want == WOLFSSL_ERROR_WANT_READ ? asio::socket_base::wait_read
                                                     : asio::socket_base::wait_write;
    co_await socket_.async_wait(wait_type, asio::use_awaitable);
}

void Stream::raise_failure(Operation operation, int error) {
    auto* ssl = static_cast<WOLFSSL*>(ssl_);
    const char* operation_name = "TLS write";
    switch (operation) {
    case Operation::accept:
        operation_name = "TLS handshake (server side)";
        break;
    case Operation::connect:
        operation_name = "TLS handshake (client side)";
        break;
    case Operation::read:
        operation_name = "TLS read";
        break;
    case Operation::write:
        break;
    }
    bool handshake = operation == Operation::accept || operation == Operation::connect;
    wolfSSL_ERR_clear_error();

    if (socket_error_ != 0) {
        throw asio::system_error(asio::error_code(socket_error_, asio::system_category()),
                                 operation_name);
    }

    bool closed = peer_closed_ || error == WOLFSSL_ERROR_ZERO_RETURN || error == ZERO_RETURN ||
                  error == SOCKET_PEER_CLOSED_E;
    if (closed && !handshake) {
        throw asio::system_error(asio::error::eof, operation_name);
    }
    if (closed) {
        throw TlsError(std::string(operation_name) + " failed: the peer closed the connection");
    }

    std::string message = std::string(operation_name) + " failed: " + wolfssl_error_text(error);
    WOLFSSL_ALERT_HISTORY alerts{};
    if (error == FATAL_ERROR && wolfSSL_get_alert_history(ssl, &alerts) == WOLFSSL_SUCCESS &&
        alerts.last_rx.code > 0) {
        message += ", alert from peer: ";
        message += wolfSSL_alert_desc_string_long(alerts.last_rx.code);
    }
    throw TlsError(message);
}

void Stream::record_session(bool client_side) {
    auto* ssl = static_cast<WOLFSSL*>(ssl_);

    const char* version = wolfSSL_get_version(ssl);
    session_.protocol = version != nullptr ? version : "";
    int suite = wolfSSL_get_current_cipher_suite(ssl);
    const char* cipher = wolfSSL_get_cipher_name_iana_from_suite(
        static_cast<unsigned char>((suite >> 8) & 0xff), static_cast<unsigned char>(suite & 0xff));
    session_.cipher = cipher != nullptr ? cipher : "";

    if (!client_side) {
        const char* requested = wolfSSL_get_servername(ssl, WOLFSSL_SNI_HOST_NAME);
        session_.server_name = requested != nullptr ? requested : "";
    }

    // The session's copy of the chain is in received order, leaf first.
    session_.peer_chain_der.clear();
    WOLFSSL_X509_CHAIN* chain = wolfSSL_get_peer_chain(ssl);
    int count = chain != nullptr ? wolfSSL_get_chain_count(chain) : 0;
    for (int i = 0; i < count; ++i) {
        const unsigned char* der = wolfSSL_get_chain_cert(chain, i);
        int length = wolfSSL_get_chain_length(chain, i);
        if (der != nullptr && length > 0) {
            session_.peer_chain_der.emplace_back(der, der + length);
        }
    }
    session_.peer_certificate_present = !session_.peer_chain_der.empty();
    session_.peer_names.clear();
    if (session_.peer_certificate_present) {
        session_.peer_names = certificate_names(session_.peer_chain_der.front());
    }

    if (!client_side) {
        return;
    }
    if (!session_.peer_certificate_present) {
        session_.chain_trusted = false;
        session_.verify_error = "server sent no certificate";
    } else if (!leaf_verification_.checked) {
        session_.chain_trusted = false;
        session_.verify_error = "server certificate was not verified";
    } else if (leaf_verification_.valid) {
        session_.chain_trusted = true;
        session_.verify_error.clear();
    } else {
        session_.chain_trusted = false;
        session_.verify_error = describe_verify_error(leaf_verification_.error);
    }
}

}  // namespace tlsrelay::tls
