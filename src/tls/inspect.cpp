// Certificate details and PEM chain reading with wolfSSL.
#include "tlsrelay/tls/inspect.hpp"

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/asn_public.h>

#include "certificate_facts.hpp"
#include "tlsrelay/tls/context.hpp"
#include "wolfssl_context.hpp"

namespace tlsrelay::tls {

namespace {

struct X509Deleter {
    void operator()(WOLFSSL_X509* x509) const { wolfSSL_X509_free(x509); }
};
using X509Pointer = std::unique_ptr<WOLFSSL_X509, X509Deleter>;

constexpr std::uint8_t selector_spki = 1;
constexpr std::uint8_t matching_sha256 = 1;

// A chain of a few certificates takes a few KiB, so a file over 1 MiB is
// rejected instead of being read into memory.
constexpr std::streamsize max_pem_file_size = 1024 * 1024;

// Returns the attribute type of a name entry as its short name ("CN", "O")
// or, for types wolfSSL has no name for, as a dotted OID.
std::string attribute_type(WOLFSSL_X509_NAME_ENTRY* entry) {
    WOLFSSL_ASN1_OBJECT* object = wolfSSL_X509_NAME_ENTRY_get_object(entry);
    if (object == nullptr) {
        return "?";
    }
    int nid = wolfSSL_OBJ_obj2nid(object);
    const char* short_name = nid > 0 ? wolfSSL_OBJ_nid2sn(nid) : nullptr;
    if (short_name != nullptr && *short_name != '\0') {
        return short_name;
    }
    char oid[128] = {};
    if (wolfSSL_OBJ_obj2txt(oid, sizeof oid, object, 1) > 0) {
        return oid;
    }
    return "?";
}

// Returns the entry's value with control characters replaced by '?', so a
// crafted name cannot forge lines in terminals or logs.
std::string attribute_value(WOLFSSL_X509_NAME_ENTRY* entry) {
    std::string text = asn1_string_text(wolfSSL_X509_NAME_ENTRY_get_data(entry));
    for (char& c : text) {
        auto byte = static_cast<unsigned char>(c);
        if (byte < 0x20 || byte == 0x7f) {
            c = '?';
        }
    }
    return text;
}

std::string format_name(WOLFSSL_X509_NAME* name) {
    if (name == nullptr) {
        return {};
    }
    std::string text;
    int count = wolfSSL_X509_NAME_entry_count(name);
    for (int i = 0; i < count; ++i) {
        WOLFSSL_X509_NAME_ENTRY* entry = wolfSSL_X509_NAME_get_entry(name, i);
        if (entry == nullptr) {
            continue;
        }
        if (!text.empty()) {
            text += ", ";
        }
        text += attribute_type(entry) + "=" + attribute_value(entry);
    }
    return text;
}

std::chrono::system_clock::time_point to_time_point(const WOLFSSL_ASN1_TIME* time,
                                                    const char* field) {
    std::tm parts{};
    if (time == nullptr || wolfSSL_ASN1_TIME_to_tm(time, &parts) != WOLFSSL_SUCCESS) {
        throw TlsSetupError(std::string("invalid certificate: cannot read ") + field);
    }
    // Certificate times are UTC (RFC 5280 section 4.1.2.5).
    return std::chrono::system_clock::from_time_t(::timegm(&parts));
}

}  // namespace

CertificateDetails describe_certificate(const std::vector<unsigned char>& der) {
    ensure_wolfssl_initialized();
    X509Pointer x509;
    if (!der.empty()) {
        x509.reset(wolfSSL_X509_d2i(nullptr, der.data(), static_cast<int>(der.size())));
    }
    if (!x509) {
        throw TlsSetupError("invalid certificate: the DER data cannot be parsed");
    }

    CertificateDetails details;
    details.subject = format_name(wolfSSL_X509_get_subject_name(x509.get()));
    details.issuer = format_name(wolfSSL_X509_get_issuer_name(x509.get()));
    details.dns_names = certificate_dns_names(der);
    details.not_before = to_time_point(wolfSSL_X509_get_notBefore(x509.get()), "notBefore");
    details.not_after = to_time_point(wolfSSL_X509_get_notAfter(x509.get()), "notAfter");

    auto spki_sha256 = tlsa_association_data(der, selector_spki, matching_sha256);
    if (spki_sha256.empty()) {
        throw TlsSetupError("invalid certificate: cannot read its SubjectPublicKeyInfo");
    }
    details.spki_sha256_hex = hex_string(spki_sha256);
    return details;
}

std::vector<Der> parse_pem_certificates(const std::string& pem, const std::string& source) {
    static const std::string begin_marker = "-----BEGIN CERTIFICATE-----";
    static const std::string end_marker = "-----END CERTIFICATE-----";
    ensure_wolfssl_initialized();

    std::vector<Der> certificates;
    std::size_t position = 0;
    // Each pass moves `position` past one END marker, so the loop ends.
    while ((position = pem.find(begin_marker, position)) != std::string::npos) {
        std::size_t end = pem.find(end_marker, position);
        if (end == std::string::npos) {
            throw TlsSetupError(source + ": certificate " + std::to_string(certificates.size() + 1) +
                                " has no \"" + end_marker + "\" line");
        }
        end += end_marker.size();
        std::string block = pem.substr(position, end - position) + "\n";
        position = end;

        // DER is never larger than its base64 text.
        Der der(block.size());
        int size = wc_CertPemToDer(reinterpret_cast<const unsigned char*>(block.data()),
                                   static_cast<int>(block.size()), der.data(),
                                   static_cast<int>(der.size()), CERT_TYPE);
        if (size <= 0) {
            throw TlsSetupError(source + ": certificate " + std::to_string(certificates.size() + 1) +
                                " is not valid PEM: " + wolfssl_error_text(size));
        }
        der.resize(static_cast<std::size_t>(size));
        certificates.push_back(std::move(der));
    }
    return certificates;
}

std::vector<Der> load_pem_certificates(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) {
        throw TlsSetupError("cannot open " + path + ": " + std::strerror(errno));
    }
    std::string text(static_cast<std::size_t>(max_pem_file_size) + 1, '\0');
    file.read(text.data(), max_pem_file_size + 1);
    if (file.bad()) {
        throw TlsSetupError("cannot read " + path + ": " + std::strerror(errno));
    }
    std::streamsize size = file.gcount();
    if (size > max_pem_file_size) {
        throw TlsSetupError(path + ": larger than " + std::to_string(max_pem_file_size) +
                            " bytes, which is not a certificate chain");
    }
    text.resize(static_cast<std::size_t>(size));
    return parse_pem_certificates(text, path);
}

std::string hex_string(const std::vector<unsigned char>& bytes) {
    static const char digits[] = "0123456789abcdef";
    std::string text;
    text.reserve(bytes.size() * 2);
    for (unsigned char byte : bytes) {
        text += digits[byte >> 4];
        text += digits[byte & 0x0f];
    }
    return text;
}

}  // namespace tlsrelay::tls
