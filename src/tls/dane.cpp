// TLSA matching and certificate digests with wolfSSL.
#include "tlsrelay/tls/dane.hpp"

#include <algorithm>
#include <memory>
#include <optional>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/hash.h>

#include "certificate_facts.hpp"
#include "tlsrelay/tls/hostname.hpp"
#include "wolfssl_context.hpp"

namespace tlsrelay::tls {

namespace {

struct X509Deleter {
    void operator()(WOLFSSL_X509* x509) const { wolfSSL_X509_free(x509); }
};
using X509Pointer = std::unique_ptr<WOLFSSL_X509, X509Deleter>;

struct StoreDeleter {
    void operator()(WOLFSSL_X509_STORE* store) const { wolfSSL_X509_STORE_free(store); }
};
struct StoreContextDeleter {
    void operator()(WOLFSSL_X509_STORE_CTX* context) const { wolfSSL_X509_STORE_CTX_free(context); }
};

// Chains longer than this are not walked; real SMTP chains have two to four
// certificates.
constexpr std::size_t max_chain_length = 10;

constexpr std::uint8_t usage_dane_ta = 2;
constexpr std::uint8_t usage_dane_ee = 3;
constexpr std::uint8_t selector_cert = 0;
constexpr std::uint8_t selector_spki = 1;
constexpr std::uint8_t matching_full = 0;
constexpr std::uint8_t matching_sha256 = 1;
constexpr std::uint8_t matching_sha512 = 2;

X509Pointer parse(const Der& der) {
    if (der.empty()) {
        return nullptr;
    }
    return X509Pointer(wolfSSL_X509_d2i(nullptr, der.data(), static_cast<int>(der.size())));
}

std::vector<unsigned char> digest(const std::vector<unsigned char>& data, std::uint8_t matching_type) {
    if (matching_type == matching_full) {
        return data;
    }
    if (matching_type == matching_sha256) {
        std::vector<unsigned char> out(WC_SHA256_DIGEST_SIZE);
        if (wc_Sha256Hash(data.data(), static_cast<word32>(data.size()), out.data()) != 0) {
            return {};
        }
        return out;
    }
    if (matching_type == matching_sha512) {
        std::vector<unsigned char> out(WC_SHA512_DIGEST_SIZE);
        if (wc_Sha512Hash(data.data(), static_cast<word32>(data.size()), out.data()) != 0) {
            return {};
        }
        return out;
    }
    return {};
}

bool record_matches(const TlsaRecord& record, const Der& certificate) {
    auto data = tlsa_association_data(certificate, record.selector, record.matching_type);
    return !data.empty() && data == record.data;
}

// True when `issuer` signed `subject` and `subject` is within its validity
// dates. Each link is checked in a store that holds only `issuer`, so no
// other certificate the server sent can stand in for the trust anchor.
bool issued_by(const Der& subject, const Der& issuer) {
    X509Pointer subject_x509 = parse(subject);
    X509Pointer issuer_x509 = parse(issuer);
    if (!subject_x509 || !issuer_x509) {
        return false;
    }
    std::unique_ptr<WOLFSSL_X509_STORE, StoreDeleter> store(wolfSSL_X509_STORE_new());
    std::unique_ptr<WOLFSSL_X509_STORE_CTX, StoreContextDeleter> context(wolfSSL_X509_STORE_CTX_new());
    if (!store || !context) {
        return false;
    }
    // wolfSSL rejects a certificate that is not a CA here, which is the
    // right result for an issuer too.
    if (wolfSSL_X509_STORE_add_cert(store.get(), issuer_x509.get()) != WOLFSSL_SUCCESS) {
        return false;
    }
    if (wolfSSL_X509_STORE_CTX_init(context.get(), store.get(), subject_x509.get(), nullptr) !=
        WOLFSSL_SUCCESS) {
        return false;
    }
    // wolfSSL 5.5.4 returns negative codes as well as 0 on failure.
    return wolfSSL_X509_verify_cert(context.get()) == WOLFSSL_SUCCESS;
}

// True when the leaf chains to `anchor` through certificates of `chain`
// (in any order), each link signed by the next and within its dates.
bool chains_to_anchor(const std::vector<Der>& chain, const Der& anchor) {
    std::size_t length = std::min(chain.size(), max_chain_length);
    std::vector<bool> used(length, false);
    used[0] = true;
    std::size_t current = 0;
    // Each step either reaches the anchor or moves up to an unused
    // certificate, so the loop ends after at most `length` steps.
    for (std::size_t step = 0; step < length; ++step) {
        if (issued_by(chain[current], anchor)) {
            return true;
        }
        std::optional<std::size_t> next;
        for (std::size_t i = 1; i < length && !next; ++i) {
            if (!used[i] && chain[i] != anchor && issued_by(chain[current], chain[i])) {
                next = i;
            }
        }
        if (!next) {
            return false;
        }
        used[*next] = true;
        current = *next;
    }
    return false;
}

// The certificates a DANE-TA record can designate: those the server sent
// above the leaf, and the record's own certificate when it carries one in
// full (2 0 0). Servers may omit the trust anchor from the chain (RFC 7671
// section 5.2.2).
std::vector<Der> trust_anchor_candidates(const TlsaRecord& record, const std::vector<Der>& chain) {
    std::vector<Der> anchors;
    std::size_t length = std::min(chain.size(), max_chain_length);
    for (std::size_t i = 1; i < length; ++i) {
        if (record_matches(record, chain[i])) {
            anchors.push_back(chain[i]);
        }
    }
    if (record.selector == selector_cert && record.matching_type == matching_full && parse(record.data)) {
        if (std::find(anchors.begin(), anchors.end(), record.data) == anchors.end()) {
            anchors.push_back(record.data);
        }
    }
    // NOTE: a full public key record (2 1 0) of an anchor that the server
    // does not send cannot be used: wolfSSL verifies signatures only with
    // an issuer certificate, and the record carries just the key.
    return anchors;
}

std::string join(const std::vector<std::string>& names) {
    std::string text;
    for (const auto& name : names) {
        text += (text.empty() ? "" : ", ") + name;
    }
    return text.empty() ? "none" : text;
}

}  // namespace

std::string describe_parameters(const TlsaRecord& record) {
    return std::to_string(record.usage) + " " + std::to_string(record.selector) + " " +
           std::to_string(record.matching_type);
}

bool is_usable(const TlsaRecord& record) {
    bool usage = record.usage == usage_dane_ta || record.usage == usage_dane_ee;
    bool selector = record.selector == selector_cert || record.selector == selector_spki;
    bool matching = record.matching_type == matching_full || record.matching_type == matching_sha256 ||
                    record.matching_type == matching_sha512;
    return usage && selector && matching && !record.data.empty();
}

Der subject_public_key_info(const Der& certificate) {
    X509Pointer x509 = parse(certificate);
    if (!x509) {
        return {};
    }
    // wolfSSL_X509_get_pubkey_buffer returns the DER SubjectPublicKeyInfo.
    // i2d_PUBKEY would return a bare PKCS#1 key for RSA, which gives wrong
    // "x 1 x" TLSA data.
    int size = 0;
    if (wolfSSL_X509_get_pubkey_buffer(x509.get(), nullptr, &size) != WOLFSSL_SUCCESS || size <= 0) {
        return {};
    }
    Der spki(static_cast<std::size_t>(size));
    if (wolfSSL_X509_get_pubkey_buffer(x509.get(), spki.data(), &size) != WOLFSSL_SUCCESS || size <= 0) {
        return {};
    }
    spki.resize(static_cast<std::size_t>(size));
    return spki;
}

std::vector<unsigned char> tlsa_association_data(const Der& certificate, std::uint8_t selector,
                                                 std::uint8_t matching_type) {
    Der selected;
    if (selector == selector_cert) {
        if (!parse(certificate)) {
            return {};
        }
        selected = certificate;
    } else if (selector == selector_spki) {
        selected = subject_public_key_info(certificate);
    }
    if (selected.empty()) {
        return {};
    }
    return digest(selected, matching_type);
}

std::string hex_fingerprint(const std::vector<unsigned char>& bytes) {
    static const char digits[] = "0123456789abcdef";
    std::string text;
    for (unsigned char byte : bytes) {
        if (!text.empty()) {
            text += ':';
        }
        text += digits[byte >> 4];
        text += digits[byte & 0x0f];
    }
    return text;
}

CertificateDigests certificate_digests(const Der& certificate) {
    CertificateDigests digests;
    auto full = tlsa_association_data(certificate, selector_cert, matching_sha256);
    auto key = tlsa_association_data(certificate, selector_spki, matching_sha256);
    digests.certificate_sha256 = hex_fingerprint(full);
    digests.public_key_sha256 = hex_fingerprint(key);
    return digests;
}

DaneMatch match_tlsa(const std::vector<TlsaRecord>& records, const std::vector<Der>& chain,
                     const std::vector<std::string>& reference_names) {
    DaneMatch result;
    if (chain.empty()) {
        result.reason = "the server sent no certificate";
        return result;
    }
    ensure_wolfssl_initialized();

    // DANE-EE first: it needs no chain building (RFC 7672 section 3.1.1).
    for (const auto& record : records) {
        if (is_usable(record) && record.usage == usage_dane_ee && record_matches(record, chain.front())) {
            result.matched = true;
            result.how = "DANE TLSA " + describe_parameters(record) + " matched the leaf certificate";
            return result;
        }
    }

    bool anchor_seen = false;
    bool anchor_chained = false;
    std::vector<std::string> leaf_names = certificate_names(chain.front());
    bool name_matches = std::any_of(reference_names.begin(), reference_names.end(),
                                    [&](const std::string& name) { return match_hostname(leaf_names, name); });
    for (const auto& record : records) {
        if (!is_usable(record) || record.usage != usage_dane_ta) {
            continue;
        }
        for (const auto& anchor : trust_anchor_candidates(record, chain)) {
            anchor_seen = true;
            if (!chains_to_anchor(chain, anchor)) {
                continue;
            }
            anchor_chained = true;
            // RFC 7672 section 3.2.2: under DANE-TA the leaf must carry a
            // reference identifier, unlike under DANE-EE.
            if (name_matches) {
                result.matched = true;
                bool in_chain = std::find(chain.begin() + 1, chain.end(), anchor) != chain.end();
                result.how = "DANE TLSA " + describe_parameters(record) + " matched the trust anchor" +
                             (in_chain ? "" : " from the TLSA record") + ", name matched " +
                             join(reference_names);
                return result;
            }
        }
    }

    if (anchor_chained) {
        result.reason = "the certificate names (" + join(leaf_names) + ") match none of " +
                        join(reference_names) + " as DANE-TA requires";
    } else if (anchor_seen) {
        result.reason = "the leaf certificate does not chain to the DANE-TA trust anchor, "
                        "or is outside its validity dates";
    } else {
        result.reason = "no TLSA record matched the server's certificate chain";
    }
    return result;
}

}  // namespace tlsrelay::tls
