// Definitions shared by the TLS sources and hidden from the public headers,
// which must stay free of wolfSSL types.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "tlsrelay/tls/context.hpp"

namespace tlsrelay::tls {

// The bytes of an ASN.1 string as they are; empty for a null or empty one.
inline std::string asn1_string_text(WOLFSSL_ASN1_STRING* value) {
    if (value == nullptr) {
        return {};
    }
    const unsigned char* data = wolfSSL_ASN1_STRING_get0_data(value);
    int length = wolfSSL_ASN1_STRING_length(value);
    if (data == nullptr || length <= 0) {
        return {};
    }
    return std::string(reinterpret_cast<const char*>(data), static_cast<std::size_t>(length));
}

// Owns one WOLFSSL_CTX. wolfSSL counts references from each WOLFSSL object
// created from it, so a session may outlive the context that made it.
class WolfContext {
public:
    explicit WolfContext(WOLFSSL_CTX* ctx) : ctx_(ctx) {}
    ~WolfContext() { wolfSSL_CTX_free(ctx_); }
    WolfContext(const WolfContext&) = delete;
    WolfContext& operator=(const WolfContext&) = delete;

    WOLFSSL_CTX* get() const { return ctx_; }

private:
    WOLFSSL_CTX* ctx_;
};

class ServerContext : public WolfContext {
public:
    using WolfContext::WolfContext;

    // Contexts for SNI names; the handshake switches to one when the
    // client's server name matches.
    std::vector<std::pair<std::string, std::shared_ptr<ServerContext>>> sni_contexts;
};

class ClientContext : public WolfContext {
public:
    using WolfContext::WolfContext;
};

// Calls wolfSSL_Init once per process. Every function that creates a
// context calls this first.
void ensure_wolfssl_initialized();

// Returns wolfSSL's text for an error code, with the code itself, e.g.
// "ASN no signer error to confirm failure (-188)".
std::string wolfssl_error_text(int code);

}  // namespace tlsrelay::tls
