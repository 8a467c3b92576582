// Server and client TLS contexts on wolfSSL.
#include "tlsrelay/tls/context.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <string>
#include <vector>

#include "wolfssl_context.hpp"

namespace tlsrelay::tls {

void ensure_wolfssl_initialized() {
    static std::once_flag once;
    std::call_once(once, [] {
        if (wolfSSL_Init() != WOLFSSL_SUCCESS) {
            throw TlsSetupError("wolfSSL_Init failed");
        }
    });
}

std::string wolfssl_error_text(int code) {
    char text[WOLFSSL_MAX_ERROR_SZ] = {};
    wolfSSL_ERR_error_string_n(static_cast<unsigned long>(code), text, sizeof text);
    return std::string(text) + " (" + std::to_string(code) + ")";
}

namespace {

// Reads a whole file, so that a missing or unreadable file is reported with
// the system's reason instead of wolfSSL's generic "bad file".
std::vector<unsigned char> read_file(const std::string& path, const char* description) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw TlsSetupError("cannot open " + std::string(description) + " " + path + ": " +
                            std::strerror(errno));
    }
    std::vector<unsigned char> data{std::istreambuf_iterator<char>(in),
                                    std::istreambuf_iterator<char>()};
    if (in.bad()) {
        throw TlsSetupError("cannot read " + std::string(description) + " " + path + ": " +
                            std::strerror(errno));
    }
    if (data.empty()) {
        throw TlsSetupError(std::string(description) + " " + path + " is empty");
    }
    return data;
}

WOLFSSL_CTX* new_context(WOLFSSL_METHOD* method) {
    ensure_wolfssl_initialized();
    WOLFSSL_CTX* ctx = method == nullptr ? nullptr : wolfSSL_CTX_new(method);
    if (ctx == nullptr) {
        throw TlsSetupError("wolfSSL_CTX_new failed (out of memory)");
    }
    return ctx;
}

// Debian's wolfSSL 5.5.4 enables by default suites that must never be
// used: TLS 1.3 integrity-only (TLS13-SHA256-SHA256), RC4, 3DES, NULL and
// PSK. wolfSSL's "HIGH" keyword still includes RC4 and 3DES, so the suites
// are listed by name: AEAD first, then CBC with SHA-2 and SHA-1 for older
// MTAs, all with forward secrecy. wolfSSL picks by this order as a server.
// ChaCha20-Poly1305 comes first because its state is about 2 KiB smaller
// per session than AES-GCM's: the "[.memory]" test measured 59.3 against
// 61.2 KiB per idle server session.
constexpr const char* cipher_list =
    "TLS13-CHACHA20-POLY1305-SHA256:TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:"
    "ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:"
    "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA";

// Applies the settings both sides share. TLS 1.0 and 1.1 are deprecated by
// RFC 8996, so only TLS 1.2 and 1.3 are accepted.
void apply_protocol_settings(WolfContext& context) {
    int ret = wolfSSL_CTX_SetMinVersion(context.get(), WOLFSSL_TLSV1_2);
    if (ret != WOLFSSL_SUCCESS) {
        throw TlsSetupError("cannot set the minimum TLS version to 1.2: " +
                            wolfssl_error_text(ret));
    }
    ret = wolfSSL_CTX_set_cipher_list(context.get(), cipher_list);
    if (ret != WOLFSSL_SUCCESS) {
        throw TlsSetupError("cannot set the TLS cipher list: " + wolfssl_error_text(ret));
    }
}

}  // namespace

std::shared_ptr<ServerContext> make_server_context(const std::string& cert_file,
                                                   const std::string& key_file) {
    auto context = std::make_shared<ServerContext>(new_context(wolfSSLv23_server_method()));
    apply_protocol_settings(*context);

    std::vector<unsigned char> chain = read_file(cert_file, "certificate file");
    int ret = wolfSSL_CTX_use_certificate_chain_buffer_format(
        context->get(), chain.data(), static_cast<long>(chain.size()), WOLFSSL_FILETYPE_PEM);
    if (ret != WOLFSSL_SUCCESS) {
        throw TlsSetupError("invalid PEM certificate chain in " + cert_file + ": " +
                            wolfssl_error_text(ret));
    }

    std::vector<unsigned char> key = read_file(key_file, "private key file");
    ret = wolfSSL_CTX_use_PrivateKey_buffer(context->get(), key.data(),
                                            static_cast<long>(key.size()), WOLFSSL_FILETYPE_PEM);
    // Clear this heap copy of the key, because wolfSSL has made its own.
    explicit_bzero(key.data(), key.size());
    if (ret != WOLFSSL_SUCCESS) {
        throw TlsSetupError("invalid or encrypted PEM private key in " + key_file + ": " +
                            wolfssl_error_text(ret));
    }

    if (wolfSSL_CTX_check_private_key(context->get()) != WOLFSSL_SUCCESS) {
        throw TlsSetupError("private key in " + key_file +
                            " does not match the certificate in " + cert_file);
    }

    // The relay does not ask SMTP clients for certificates.
    wolfSSL_CTX_set_verify(context->get(), WOLFSSL_VERIFY_NONE, nullptr);
    return context;
}

bool sni_name_matches(std::string_view pattern, std::string_view name) {
    if (pattern.starts_with("*.")) {
        auto dot = name.find('.');
        return dot != std::string_view::npos && dot > 0 && name.substr(dot) == pattern.substr(1);
    }
    return name == pattern;
}

namespace {

// Switches the session to the certificate configured for the client's SNI
// name; without a match the default certificate stays.
int select_sni_certificate(WOLFSSL* ssl, int* /*alert*/, void* argument) {
    auto* context = static_cast<ServerContext*>(argument);
    const char* requested = wolfSSL_get_servername(ssl, WOLFSSL_SNI_HOST_NAME);
    if (requested == nullptr) {
        return 0;
    }
    std::string name(requested);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (!name.empty() && name.back() == '.') {
        name.pop_back();
    }
    for (const auto& [pattern, sni_context] : context->sni_contexts) {
        if (sni_name_matches(pattern, name)) {
            wolfSSL_set_SSL_CTX(ssl, sni_context->get());
            break;
        }
    }
    return 0;
}

}  // namespace

std::shared_ptr<ServerContext> make_server_context(const ServerContextOptions& options) {
    auto context = make_server_context(options.cert_file, options.key_file);
    auto restrict_to_tls13 = [](ServerContext& target) {
        int ret = wolfSSL_CTX_SetMinVersion(target.get(), WOLFSSL_TLSV1_3);
        if (ret != WOLFSSL_SUCCESS) {
            throw TlsSetupError("cannot set the minimum TLS version to 1.3: " + wolfssl_error_text(ret));
        }
    };
    if (options.require_tls13) {
        restrict_to_tls13(*context);
    }
    for (const auto& entry : options.sni) {
        auto sni_context = make_server_context(entry.cert_file, entry.key_file);
        if (options.require_tls13) {
            restrict_to_tls13(*sni_context);
        }
        context->sni_contexts.emplace_back(entry.name, sni_context);
    }
    if (!context->sni_contexts.empty()) {
        wolfSSL_CTX_set_servername_callback(context->get(), &select_sni_certificate);
        wolfSSL_CTX_set_servername_arg(context->get(), context.get());
    }
    return context;
}

std::shared_ptr<ClientContext> make_client_context(const ClientContextOptions& options) {
    auto context = std::make_shared<ClientContext>(new_context(wolfSSLv23_client_method()));
    apply_protocol_settings(*context);

    if (!options.ca_file.empty()) {
        // Read first so a missing file gets the system's reason.
        read_file(options.ca_file, "CA file");
        int ret = wolfSSL_CTX_load_verify_locations_ex(context->get(), options.ca_file.c_str(),
                                                       nullptr, WOLFSSL_LOAD_VERIFY_DEFAULT_FLAGS);
        if (ret != WOLFSSL_SUCCESS) {
            throw TlsSetupError("cannot load CA certificates from " + options.ca_file + ": " +
                                wolfssl_error_text(ret));
        }
    }

    if (!options.ca_path.empty()) {
        std::error_code error;
        if (!std::filesystem::is_directory(options.ca_path, error)) {
            throw TlsSetupError("CA path " + options.ca_path + " is not a directory" +
                                (error ? ": " + error.message() : std::string()));
        }
        // wolfSSL reads every file in the directory now rather than looking
        // certificates up by hash later. Directories such as /etc/ssl/certs
        // also hold files that are not certificates, so those are skipped.
        int ret = wolfSSL_CTX_load_verify_locations_ex(context->get(), nullptr,
                                                       options.ca_path.c_str(),
                                                       WOLFSSL_LOAD_FLAG_IGNORE_ERR);
        if (ret != WOLFSSL_SUCCESS) {
            throw TlsSetupError("no CA certificate could be loaded from " + options.ca_path +
                                ": " + wolfssl_error_text(ret));
        }
    }

    // The stream installs a verify callback on each session that records the
    // result and lets the handshake go on. Without it, an untrusted chain
    // aborts the handshake, which is the safe default.
    wolfSSL_CTX_set_verify(context->get(), WOLFSSL_VERIFY_PEER, nullptr);
    return context;
}

}  // namespace tlsrelay::tls
