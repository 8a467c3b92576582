// TLS contexts: one server context per certificate, one client context per
// CA store. Contexts are expensive (loading /etc/ssl/certs takes tens of
// milliseconds and over a megabyte), so the relay builds each once and shares it.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace tlsrelay::tls {

// Raised when a context, key or certificate cannot be set up; what() names
// the file and the library's reason.
class TlsSetupError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class ServerContext;
class ClientContext;

// Loads a PEM certificate chain and its private key for STARTTLS on the
// inbound side.
std::shared_ptr<ServerContext> make_server_context(const std::string& cert_file,
                                                   const std::string& key_file);

// A certificate presented when the client asks for `name` by SNI.
struct SniCertificate {
    std::string name;  // lower case; "*.example.com" matches exactly one label
    std::string cert_file;
    std::string key_file;
};

// True when the SNI entry `pattern` selects its certificate for the server
// name `name` (lower case, without a trailing dot): an equal name, or for
// "*.example.com" a name with exactly one more label.
bool sni_name_matches(std::string_view pattern, std::string_view name);

struct ServerContextOptions {
    std::string cert_file;  // the default certificate, when no SNI entry matches
    std::string key_file;
    std::vector<SniCertificate> sni;
    bool require_tls13 = false;  // refuse TLS 1.2
};

std::shared_ptr<ServerContext> make_server_context(const ServerContextOptions& options);

struct ClientContextOptions {
    std::string ca_file;  // PEM bundle; empty: none
    std::string ca_path;  // hashed directory such as /etc/ssl/certs; empty: none
};

// Builds the outbound context. Peer certificates are always requested and
// checked against the CA store, but a failed check never aborts the
// handshake: the result is recorded in SessionInfo for the policy to judge.
std::shared_ptr<ClientContext> make_client_context(const ClientContextOptions& options);

// Creates a self-signed certificate for `hostname` (subjectAltName dNSName
// and CN) and writes it and its private key as PEM. The key file gets mode 0600.
void generate_self_signed(const std::string& hostname, const std::string& cert_file,
                          const std::string& key_file);

}  // namespace tlsrelay::tls
