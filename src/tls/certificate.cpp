// Certificate facts (names, verify errors) and self-signed certificate
// generation with wolfCrypt.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/error-crypt.h>
#include <wolfssl/wolfcrypt/random.h>

#include "certificate_facts.hpp"
#include "tlsrelay/tls/context.hpp"
#include "wolfssl_context.hpp"

namespace tlsrelay::tls {

namespace {

struct X509Deleter {
    void operator()(WOLFSSL_X509* x509) const { wolfSSL_X509_free(x509); }
};
using X509Pointer = std::unique_ptr<WOLFSSL_X509, X509Deleter>;

// A minimal DER reader, enough to walk to the subjectAltName extension.
// wolfSSL 5.5.4 returns alternative names in reverse order, so the names are
// read from the DER to keep the certificate's order.
class DerReader {
public:
    DerReader(const unsigned char* data, std::size_t size) : data_(data), size_(size) {}

    bool empty() const { return size_ == 0; }

    // Reads the next element; returns false on malformed input.
    bool next(unsigned char& tag, DerReader& content) {
        if (size_ < 2) {
            return false;
        }
        tag = data_[0];
        std::size_t length = data_[1];
        std::size_t header = 2;
        if (length & 0x80) {
            std::size_t octets = length & 0x7f;
            if (octets == 0 || octets > 3 || size_ < 2 + octets) {
                return false;
            }
            length = 0;
            for (std::size_t i = 0; i < octets; ++i) {
                length = (length << 8) | data_[2 + i];
            }
            header += octets;
        }
        if (size_ - header < length) {
            return false;
        }
        content = DerReader(data_ + header, length);
        data_ += header + length;
        size_ -= header + length;
        return true;
    }

    const unsigned char* data() const { return data_; }
    std::size_t size() const { return size_; }

private:
    const unsigned char* data_;
    std::size_t size_;
};

constexpr unsigned char der_sequence = 0x30;
constexpr unsigned char der_oid = 0x06;
constexpr unsigned char der_boolean = 0x01;
constexpr unsigned char der_octet_string = 0x04;
constexpr unsigned char der_extensions = 0xa3;  // [3] EXPLICIT in TBSCertificate
constexpr unsigned char der_dns_name = 0x82;    // [2] IMPLICIT IA5String in GeneralName
constexpr unsigned char subject_alt_name_oid[] = {0x55, 0x1d, 0x11};  // 2.5.29.17

// Returns the extnValue of the subjectAltName extension (RFC 5280 section
// 4.1), or an empty reader when there is none or the DER is malformed.
DerReader find_subject_alt_name(const std::vector<unsigned char>& der) {
    unsigned char tag = 0;
    DerReader certificate(der.data(), der.size());
    DerReader certificate_content(nullptr, 0);
    DerReader tbs(nullptr, 0);
    if (!certificate.next(tag, certificate_content) || tag != der_sequence ||
        !certificate_content.next(tag, tbs) || tag != der_sequence) {
        return DerReader(nullptr, 0);
    }

    DerReader field(nullptr, 0);
    while (tbs.next(tag, field)) {
        if (tag != der_extensions) {
            continue;
        }
        DerReader extensions(nullptr, 0);
        if (!field.next(tag, extensions) || tag != der_sequence) {
            return DerReader(nullptr, 0);
        }
        DerReader extension(nullptr, 0);
        while (extensions.next(tag, extension)) {
            DerReader oid(nullptr, 0);
            if (tag != der_sequence || !extension.next(tag, oid) || tag != der_oid) {
                return DerReader(nullptr, 0);
            }
            bool is_san = oid.size() == sizeof subject_alt_name_oid &&
                          std::memcmp(oid.data(), subject_alt_name_oid, oid.size()) == 0;
            if (!is_san) {
                continue;
            }
            DerReader value(nullptr, 0);
            if (!extension.next(tag, value)) {
                return DerReader(nullptr, 0);
            }
            if (tag == der_boolean && !extension.next(tag, value)) {
                return DerReader(nullptr, 0);
            }
            return tag == der_octet_string ? value : DerReader(nullptr, 0);
        }
    }
    return DerReader(nullptr, 0);
}

std::vector<std::string> dns_names(const std::vector<unsigned char>& der) {
    std::vector<std::string> names;
    DerReader extension_value = find_subject_alt_name(der);
    unsigned char tag = 0;
    DerReader general_names(nullptr, 0);
    if (!extension_value.next(tag, general_names) || tag != der_sequence) {
        return names;
    }
    DerReader name(nullptr, 0);
    while (general_names.next(tag, name)) {
        if (tag == der_dns_name && !name.empty()) {
            names.emplace_back(reinterpret_cast<const char*>(name.data()), name.size());
        }
    }
    return names;
}

std::vector<std::string> common_names(WOLFSSL_X509* x509) {
    std::vector<std::string> names;
    WOLFSSL_X509_NAME* subject = wolfSSL_X509_get_subject_name(x509);
    if (subject == nullptr) {
        return names;
    }
    // A subject has few attributes, so the loop ends after a handful of steps.
    int index = -1;
    while ((index = wolfSSL_X509_NAME_get_index_by_NID(subject, NID_commonName, index)) >= 0) {
        WOLFSSL_X509_NAME_ENTRY* entry = wolfSSL_X509_NAME_get_entry(subject, index);
        std::string text = asn1_string_text(wolfSSL_X509_NAME_ENTRY_get_data(entry));
        if (!text.empty()) {
            names.push_back(std::move(text));
        }
    }
    return names;
}

}  // namespace

std::vector<std::string> certificate_names(const std::vector<unsigned char>& der) {
    X509Pointer x509(wolfSSL_X509_d2i(nullptr, der.data(), static_cast<int>(der.size())));
    if (!x509) {
        return {};
    }
    std::vector<std::string> names = dns_names(der);
    if (names.empty()) {
        names = common_names(x509.get());
    }
    return names;
}

std::vector<std::string> certificate_dns_names(const std::vector<unsigned char>& der) {
    return dns_names(der);
}

std::string describe_verify_error(int error) {
    // wolfSSL 5.5.4's own table lacks several codes it emits (13, 14, 18),
    // so the usual OpenSSL wording is kept here.
    static const std::map<int, const char*> texts = {
        {X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT, "unable to get issuer certificate"},
        {X509_V_ERR_CERT_SIGNATURE_FAILURE, "certificate signature failure"},
        {X509_V_ERR_CERT_NOT_YET_VALID, "certificate is not yet valid"},
        {X509_V_ERR_CERT_HAS_EXPIRED, "certificate has expired"},
        {X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD, "invalid notBefore field in certificate"},
        {X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD, "invalid notAfter field in certificate"},
        {X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, "self-signed certificate"},
        {X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN, "self-signed certificate in certificate chain"},
        {X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, "unable to get local issuer certificate"},
        {X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, "unable to verify the first certificate"},
        {X509_V_ERR_CERT_CHAIN_TOO_LONG, "certificate chain too long"},
        {X509_V_ERR_CERT_REVOKED, "certificate revoked"},
        {X509_V_ERR_INVALID_CA, "invalid CA certificate"},
        {X509_V_ERR_PATH_LENGTH_EXCEEDED, "path length constraint exceeded"},
        {X509_V_ERR_INVALID_PURPOSE, "unsupported certificate purpose"},
        {X509_V_ERR_CERT_UNTRUSTED, "certificate not trusted"},
        {X509_V_ERR_CERT_REJECTED, "certificate rejected"},
    };

    if (error > 0) {
        auto found = texts.find(error);
        const char* text = found != texts.end() ? found->second
                                                : wolfSSL_X509_verify_cert_error_string(error);
        return std::string(text != nullptr ? text : "unknown error") + " (X509_V_ERR " +
               std::to_string(error) + ")";
    }
    if (error < -1) {
        return wolfssl_error_text(error);
    }
    return "certificate verification failed for an unknown reason";
}

// ---------------------------------------------------------------------------
// Self-signed certificate generation

namespace {

// One year is counted as 365 days; the few leap days do not matter here.
constexpr int validity_days = 3650;

[[noreturn]] void raise_crypto(const std::string& step, int code) {
    const char* text = wc_GetErrorString(code);
    throw TlsSetupError("self-signed certificate: " + step + " failed: " +
                        (text != nullptr ? text : "unknown error") + " (" +
                        std::to_string(code) + ")");
}

// Appends a DER length in definite form.
void append_der_length(std::vector<unsigned char>& out, std::size_t length) {
    if (length < 0x80) {
        out.push_back(static_cast<unsigned char>(length));
    } else if (length <= 0xff) {
        out.push_back(0x81);
        out.push_back(static_cast<unsigned char>(length));
    } else {
        out.push_back(0x82);
        out.push_back(static_cast<unsigned char>(length >> 8));
        out.push_back(static_cast<unsigned char>(length & 0xff));
    }
}

// Encodes GeneralNames (RFC 5280 section 4.2.1.6) holding one dNSName,
// which is the extension value wolfCrypt expects in Cert::altNames.
std::vector<unsigned char> encode_dns_alt_name(const std::string& hostname) {
    std::vector<unsigned char> name;
    name.push_back(0x82);  // [2] IMPLICIT IA5String: dNSName
    append_der_length(name, hostname.size());
    name.insert(name.end(), hostname.begin(), hostname.end());

    std::vector<unsigned char> sequence;
    sequence.push_back(0x30);
    append_der_length(sequence, name.size());
    sequence.insert(sequence.end(), name.begin(), name.end());
    return sequence;
}

// Rejects names that cannot be a DNS name in a certificate: RFC 1035 limits
// a name to 253 characters, and dNSName is an IA5String of printable
// characters without spaces.
std::string checked_hostname(const std::string& hostname) {
    std::string name = hostname;
    if (!name.empty() && name.back() == '.') {
        name.pop_back();
    }
    if (name.empty() || name.size() > 253) {
        throw TlsSetupError("self-signed certificate: invalid hostname \"" + hostname +
                            "\": must be 1 to 253 characters");
    }
    for (char c : name) {
        auto byte = static_cast<unsigned char>(c);
        if (byte <= 0x20 || byte >= 0x7f) {
            throw TlsSetupError("self-signed certificate: invalid hostname \"" + hostname +
                                "\": only printable ASCII without spaces is allowed "
                                "(use the A-label form of an IDN)");
        }
    }
    return name;
}

// Holds secret bytes and wipes them when it goes out of scope.
class SecretBuffer {
public:
    explicit SecretBuffer(std::size_t size) : bytes_(size) {}
    ~SecretBuffer() { explicit_bzero(bytes_.data(), bytes_.size()); }
    SecretBuffer(const SecretBuffer&) = delete;
    SecretBuffer& operator=(const SecretBuffer&) = delete;

    unsigned char* data() { return bytes_.data(); }
    std::size_t size() const { return bytes_.size(); }

private:
    std::vector<unsigned char> bytes_;
};

// Writes `size` bytes to a temporary file beside `path`, syncs it, and
// renames it over `path`, so that a reader never sees a partial file.
void write_file_replacing(const std::string& path, const unsigned char* data, std::size_t size,
                          mode_t mode) {
    std::string temporary = path + ".tmp-XXXXXX";
    // mkstemp creates the file with mode 0600, so a key is never readable
    // by others, not even briefly.
    int fd = ::mkstemp(temporary.data());
    if (fd < 0) {
        throw TlsSetupError("cannot create a temporary file for " + path + ": " +
                            std::strerror(errno));
    }

    auto fail = [&](const char* step) {
        int error = errno;
        ::close(fd);
        ::unlink(temporary.c_str());
        throw TlsSetupError(std::string("cannot ") + step + " " + temporary + ": " +
                            std::strerror(error));
    };
    if (::fchmod(fd, mode) != 0) {
        fail("set the mode of");
    }
    std::size_t written = 0;
    while (written < size) {
        ssize_t result = ::write(fd, data + written, size - written);
        if (result < 0 && errno == EINTR) {
            continue;
        }
        if (result <= 0) {
            fail("write");
        }
        written += static_cast<std::size_t>(result);
    }
    if (::fsync(fd) != 0) {
        fail("sync");
    }
    if (::close(fd) != 0) {
        int error = errno;
        ::unlink(temporary.c_str());
        throw TlsSetupError("cannot close " + temporary + ": " + std::strerror(error));
    }
    if (::rename(temporary.c_str(), path.c_str()) != 0) {
        int error = errno;
        ::unlink(temporary.c_str());
        throw TlsSetupError("cannot rename " + temporary + " to " + path + ": " +
                            std::strerror(error));
    }
}

// Converts DER to PEM of the given wolfCrypt type (CERT_TYPE, ...).
int der_to_pem(const unsigned char* der, int der_size, unsigned char* pem, int pem_capacity,
               int type) {
    return wc_DerToPem(der, static_cast<word32>(der_size), pem, static_cast<word32>(pem_capacity),
                       type);
}

class Rng {
public:
    Rng() {
        int ret = wc_InitRng(&rng_);
        if (ret != 0) {
            raise_crypto("random number generator setup", ret);
        }
    }
    ~Rng() { wc_FreeRng(&rng_); }
    Rng(const Rng&) = delete;
    Rng& operator=(const Rng&) = delete;
    WC_RNG* get() { return &rng_; }

private:
    WC_RNG rng_{};
};

class EccKey {
public:
    EccKey() {
        int ret = wc_ecc_init(&key_);
        if (ret != 0) {
            raise_crypto("ECC key setup", ret);
        }
    }
    ~EccKey() { wc_ecc_free(&key_); }
    EccKey(const EccKey&) = delete;
    EccKey& operator=(const EccKey&) = delete;
    ecc_key* get() { return &key_; }

private:
    ecc_key key_{};
};

}  // namespace

void generate_self_signed(const std::string& hostname, const std::string& cert_file,
                          const std::string& key_file) {
    ensure_wolfssl_initialized();
    std::string name = checked_hostname(hostname);

    // An ECDSA P-256 key: small, fast, and accepted by every current TLS peer.
    Rng rng;
    EccKey key;
    int ret = wc_ecc_make_key_ex(rng.get(), 32, key.get(), ECC_SECP256R1);
    if (ret != 0) {
        raise_crypto("ECC key generation", ret);
    }

    // Cert is tens of kilobytes, too big for the stack.
    auto cert = std::make_unique<Cert>();
    ret = wc_InitCert(cert.get());
    if (ret != 0) {
        raise_crypto("certificate setup", ret);
    }
    cert->sigType = CTC_SHA256wECDSA;
    cert->isCA = 0;
    // wolfCrypt sets notBefore one day in the past, which absorbs clock skew
    // between the relay and its peers, and notAfter daysValid days from now.
    cert->daysValid = validity_days;

    // X.520 limits a CN to 64 characters (CTC_NAME_SIZE includes the NUL).
    // A longer name goes only into subjectAltName, which then must be
    // critical and needs a non-empty issuer name (RFC 5280 section 4.1.2.4).
    if (name.size() < CTC_NAME_SIZE) {
        std::memcpy(cert->subject.commonName, name.data(), name.size());
        cert->subject.commonName[name.size()] = '\0';
    } else {
        std::strcpy(cert->subject.org, "tlsrelay self-signed");
        cert->altNamesCrit = 1;
    }

    std::vector<unsigned char> alt_names = encode_dns_alt_name(name);
    std::memcpy(cert->altNames, alt_names.data(), alt_names.size());
    cert->altNamesSz = static_cast<int>(alt_names.size());

    ret = wc_SetSubjectKeyIdFromPublicKey_ex(cert.get(), ECC_TYPE, key.get());
    if (ret != 0) {
        raise_crypto("subject key identifier", ret);
    }
    ret = wc_SetKeyUsage(cert.get(), "digitalSignature");
    if (ret != 0) {
        raise_crypto("key usage", ret);
    }
    ret = wc_SetExtKeyUsage(cert.get(), "serverAuth,clientAuth");
    if (ret != 0) {
        raise_crypto("extended key usage", ret);
    }

    constexpr int der_capacity = 4096;
    std::vector<unsigned char> cert_der(der_capacity);
    ret = wc_MakeCert_ex(cert.get(), cert_der.data(), der_capacity, ECC_TYPE, key.get(),
                         rng.get());
    if (ret < 0) {
        raise_crypto("certificate encoding", ret);
    }
    int cert_der_size = wc_SignCert_ex(cert->bodySz, cert->sigType, cert_der.data(), der_capacity,
                                       ECC_TYPE, key.get(), rng.get());
    if (cert_der_size < 0) {
        raise_crypto("certificate signing", cert_der_size);
    }

    constexpr int pem_capacity = 8192;
    std::vector<unsigned char> cert_pem(pem_capacity);
    int cert_pem_size =
        der_to_pem(cert_der.data(), cert_der_size, cert_pem.data(), pem_capacity, CERT_TYPE);
    if (cert_pem_size < 0) {
        raise_crypto("certificate PEM encoding", cert_pem_size);
    }

    SecretBuffer key_der(1024);
    int key_der_size = wc_EccKeyToDer(key.get(), key_der.data(), static_cast<word32>(key_der.size()));
    if (key_der_size < 0) {
        raise_crypto("private key encoding", key_der_size);
    }
    SecretBuffer key_pem(4096);
    int key_pem_size = der_to_pem(key_der.data(), key_der_size, key_pem.data(),
                                  static_cast<int>(key_pem.size()), ECC_PRIVATEKEY_TYPE);
    if (key_pem_size < 0) {
        raise_crypto("private key PEM encoding", key_pem_size);
    }

    // The key goes first: a crash between the two renames leaves a new key
    // with an old certificate, which make_server_context reports as a
    // mismatch instead of serving a certificate whose key was never saved.
    write_file_replacing(key_file, key_pem.data(), static_cast<std::size_t>(key_pem_size), 0600);
    write_file_replacing(cert_file, cert_pem.data(), static_cast<std::size_t>(cert_pem_size),
                         0644);
}

}  // namespace tlsrelay::tls
