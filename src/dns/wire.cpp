#include "wire.hpp"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <stdexcept>

// ldns/common.h defines bool, true and false unless stdbool.h came first.
#include <stdbool.h>
#include <ldns/ldns.h>

namespace tlsrelay::dns::wire {

namespace {

struct PacketDeleter {
    void operator()(ldns_pkt* packet) const { ldns_pkt_free(packet); }
};
struct RdfDeleter {
    void operator()(ldns_rdf* rdf) const { ldns_rdf_deep_free(rdf); }
};
struct RrDeleter {
    void operator()(ldns_rr* rr) const { ldns_rr_free(rr); }
};
struct StringDeleter {
    void operator()(char* text) const { std::free(text); }
};

using PacketPtr = std::unique_ptr<ldns_pkt, PacketDeleter>;
using RdfPtr = std::unique_ptr<ldns_rdf, RdfDeleter>;
using RrPtr = std::unique_ptr<ldns_rr, RrDeleter>;
using StringPtr = std::unique_ptr<char, StringDeleter>;

// Parses a name in presentation format. A missing trailing dot is implied.
RdfPtr parse_dname(const std::string& name) {
    return RdfPtr(ldns_dname_new_frm_str(name.empty() ? "." : (name + ".").c_str()));
}

// Converts a dname to lower case presentation format without the trailing dot.
std::string dname_to_string(const ldns_rdf* dname) {
    RdfPtr copy(ldns_rdf_clone(dname));
    ldns_dname2canonical(copy.get());
    StringPtr text(ldns_rdf2str(copy.get()));
    std::string name = text ? text.get() : "";
    if (!name.empty() && name.back() == '.') {
        name.pop_back();
    }
    return name;
}

std::optional<asio::ip::address> decode_address(const ldns_rdf* rdf) {
    const std::uint8_t* data = ldns_rdf_data(rdf);
    if (ldns_rdf_get_type(rdf) == LDNS_RDF_TYPE_A && ldns_rdf_size(rdf) == 4) {
        asio::ip::address_v4::bytes_type bytes;
        std::copy_n(data, bytes.size(), bytes.begin());
        return asio::ip::address_v4(bytes);
    }
    if (ldns_rdf_get_type(rdf) == LDNS_RDF_TYPE_AAAA && ldns_rdf_size(rdf) == 16) {
        asio::ip::address_v6::bytes_type bytes;
        std::copy_n(data, bytes.size(), bytes.begin());
        return asio::ip::address_v6(bytes);
    }
    return std::nullopt;
}

// Concatenates the character-strings of a TXT record. Each one is a length
// byte followed by that many bytes (RFC 1035 section 3.3).
bool decode_txt(const ldns_rr* rr, ResourceRecord& record) {
    TxtData txt;
    for (std::size_t i = 0; i < ldns_rr_rd_count(rr); ++i) {
        const ldns_rdf* rdf = ldns_rr_rdf(rr, i);
        std::size_t size = ldns_rdf_size(rdf);
        const std::uint8_t* data = ldns_rdf_data(rdf);
        if (ldns_rdf_get_type(rdf) != LDNS_RDF_TYPE_STR || size == 0 || data[0] != size - 1) {
            return false;
        }
        txt.text.append(reinterpret_cast<const char*>(data + 1), size - 1);
    }
    record.data = std::move(txt);
    return true;
}

// Certificate usage, selector and matching type are one byte each, and the
// association data is the rest of the record (RFC 6698 section 2.1).
bool decode_tlsa(const ldns_rr* rr, ResourceRecord& record) {
    if (ldns_rr_rd_count(rr) != 4) {
        return false;
    }
    for (std::size_t i = 0; i < 3; ++i) {
        if (ldns_rdf_size(ldns_rr_rdf(rr, i)) != 1) {
            return false;
        }
    }
    const ldns_rdf* association = ldns_rr_rdf(rr, 3);
    const std::uint8_t* data = ldns_rdf_data(association);
    record.data = TlsaRecord{
        ldns_rdf2native_int8(ldns_rr_rdf(rr, 0)),
        ldns_rdf2native_int8(ldns_rr_rdf(rr, 1)),
        ldns_rdf2native_int8(ldns_rr_rdf(rr, 2)),
        std::vector<unsigned char>(data, data + ldns_rdf_size(association)),
    };
    return true;
}

// Decodes the record data of the types the resolver queries. Returns false
// when a record of such a type has data of the wrong shape.
bool decode_record_data(const ldns_rr* rr, ResourceRecord& record) {
    switch (record.type) {
    case type_a:
    case type_aaaa: {
        if (ldns_rr_rd_count(rr) != 1) {
            return false;
        }
        auto address = decode_address(ldns_rr_rdf(rr, 0));
        if (!address) {
            return false;
        }
        record.data = *address;
        return true;
    }
    case type_cname:
        if (ldns_rr_rd_count(rr) != 1 || ldns_rdf_get_type(ldns_rr_rdf(rr, 0)) != LDNS_RDF_TYPE_DNAME) {
            return false;
        }
        record.data = CnameData{dname_to_string(ldns_rr_rdf(rr, 0))};
        return true;
    case type_mx:
        if (ldns_rr_rd_count(rr) != 2 || ldns_rdf_size(ldns_rr_rdf(rr, 0)) != 2 ||
            ldns_rdf_get_type(ldns_rr_rdf(rr, 1)) != LDNS_RDF_TYPE_DNAME) {
            return false;
        }
        record.data = MxRecord{ldns_rdf2native_int16(ldns_rr_rdf(rr, 0)), dname_to_string(ldns_rr_rdf(rr, 1))};
        return true;
    case type_txt: return decode_txt(rr, record);
    case type_tlsa: return decode_tlsa(rr, record);
    case type_soa:
        // MNAME, RNAME, SERIAL, REFRESH, RETRY, EXPIRE, MINIMUM (RFC 1035 section 3.3.13).
        if (ldns_rr_rd_count(rr) != 7 || ldns_rdf_size(ldns_rr_rdf(rr, 6)) != 4) {
            return false;
        }
        record.data = SoaData{ldns_rdf2native_int32(ldns_rr_rdf(rr, 6))};
        return true;
    default:
        return true;
    }
}

void decode_header(const ldns_pkt* packet, Message& message) {
    message.id = ldns_pkt_id(packet);
    message.response = ldns_pkt_qr(packet);
    message.opcode = static_cast<int>(ldns_pkt_get_opcode(packet));
    message.truncated = ldns_pkt_tc(packet);
    message.recursion_desired = ldns_pkt_rd(packet);
    message.recursion_available = ldns_pkt_ra(packet);
    message.authentic_data = ldns_pkt_ad(packet);
    message.rcode = (ldns_pkt_edns_extended_rcode(packet) << 4) | static_cast<int>(ldns_pkt_get_rcode(packet));
    message.has_edns = ldns_pkt_edns(packet);
    message.edns_udp_size = ldns_pkt_edns_udp_size(packet);
    message.dnssec_ok = ldns_pkt_edns_do(packet);
}

void decode_questions(const ldns_pkt* packet, Message& message) {
    const ldns_rr_list* questions = ldns_pkt_question(packet);
    for (std::size_t i = 0; i < ldns_rr_list_rr_count(questions); ++i) {
        const ldns_rr* rr = ldns_rr_list_rr(questions, i);
        message.questions.push_back(Question{
            dname_to_string(ldns_rr_owner(rr)),
            static_cast<std::uint16_t>(ldns_rr_get_type(rr)),
            static_cast<std::uint16_t>(ldns_rr_get_class(rr)),
        });
    }
}

// Decodes one section into `records`. Returns false when a record has
// malformed data. Records of classes other than IN are skipped, because this
// module queries class IN only.
bool decode_section(const ldns_rr_list* section, std::vector<ResourceRecord>& records) {
    for (std::size_t i = 0; i < ldns_rr_list_rr_count(section); ++i) {
        const ldns_rr* rr = ldns_rr_list_rr(section, i);
        if (ldns_rr_get_class(rr) != LDNS_RR_CLASS_IN) {
            continue;
        }
        ResourceRecord record;
        record.owner = dname_to_string(ldns_rr_owner(rr));
        record.type = static_cast<std::uint16_t>(ldns_rr_get_type(rr));
        record.ttl = ldns_rr_ttl(rr);
        if (!decode_record_data(rr, record)) {
            return false;
        }
        records.push_back(std::move(record));
    }
    return true;
}

Bytes packet_to_bytes(const ldns_pkt* packet) {
    std::uint8_t* buffer = nullptr;
    std::size_t size = 0;
    if (ldns_pkt2wire(&buffer, packet, &size) != LDNS_STATUS_OK) {
        std::free(buffer);
        throw std::runtime_error("ldns_pkt2wire failed to encode a DNS message");
    }
    Bytes bytes(buffer, buffer + size);
    std::free(buffer);
    return bytes;
}

void push_question(ldns_pkt* packet, const Question& question) {
    RdfPtr owner = parse_dname(question.name);
    if (!owner) {
        throw std::invalid_argument("invalid question name \"" + question.name + "\"");
    }
    ldns_rr* rr = ldns_rr_new();
    ldns_rr_set_owner(rr, owner.release());
    ldns_rr_set_type(rr, static_cast<ldns_rr_type>(question.type));
    ldns_rr_set_class(rr, static_cast<ldns_rr_class>(question.rr_class));
    ldns_rr_set_question(rr, true);
    ldns_pkt_push_rr(packet, LDNS_SECTION_QUESTION, rr);
}

void push_record(ldns_pkt* packet, ldns_pkt_section section, const std::string& text) {
    ldns_rr* rr = nullptr;
    ldns_status status = ldns_rr_new_frm_str(&rr, text.c_str(), 3600, nullptr, nullptr);
    if (status != LDNS_STATUS_OK) {
        throw std::invalid_argument("invalid resource record \"" + text + "\": " + ldns_get_errorstr_by_id(status));
    }
    ldns_pkt_push_rr(packet, section, rr);
}

}  // namespace

std::optional<std::string> normalize_name(std::string_view name) {
    if (name.empty()) {
        return std::nullopt;
    }
    std::string text(name);
    if (text.back() != '.') {
        text += '.';
    }
    RdfPtr dname(ldns_dname_new_frm_str(text.c_str()));
    if (!dname) {
        return std::nullopt;
    }
    return dname_to_string(dname.get());
}

std::optional<Bytes> encode_query(const Question& question, std::uint16_t id, std::uint16_t udp_size) {
    RdfPtr name = parse_dname(question.name);
    if (!name) {
        return std::nullopt;
    }
    PacketPtr packet(ldns_pkt_query_new(name.release(), static_cast<ldns_rr_type>(question.type),
                                        static_cast<ldns_rr_class>(question.rr_class), LDNS_RD));
    ldns_pkt_set_id(packet.get(), id);
    ldns_pkt_set_edns_udp_size(packet.get(), udp_size);
    ldns_pkt_set_edns_do(packet.get(), true);
    return packet_to_bytes(packet.get());
}

Bytes encode_message(const MessageDraft& draft) {
    PacketPtr packet(ldns_pkt_new());
    ldns_pkt_set_id(packet.get(), draft.id);
    ldns_pkt_set_opcode(packet.get(), LDNS_PACKET_QUERY);
    ldns_pkt_set_qr(packet.get(), draft.response);
    ldns_pkt_set_tc(packet.get(), draft.truncated);
    ldns_pkt_set_rd(packet.get(), draft.recursion_desired);
    ldns_pkt_set_ra(packet.get(), draft.recursion_available);
    ldns_pkt_set_ad(packet.get(), draft.authentic_data);
    ldns_pkt_set_rcode(packet.get(), static_cast<std::uint8_t>(draft.rcode & 0x0f));

    for (const auto& question : draft.questions) {
        push_question(packet.get(), question);
    }
    for (const auto& text : draft.answers) {
        push_record(packet.get(), LDNS_SECTION_ANSWER, text);
    }
    for (const auto& text : draft.authority) {
        push_record(packet.get(), LDNS_SECTION_AUTHORITY, text);
    }
    return packet_to_bytes(packet.get());
}

std::optional<Message> decode_message(std::span<const std::uint8_t> bytes) {
    ldns_pkt* raw = nullptr;
    if (ldns_wire2pkt(&raw, bytes.data(), bytes.size()) != LDNS_STATUS_OK) {
        return std::nullopt;
    }
    PacketPtr packet(raw);

    Message message;
    decode_header(packet.get(), message);
    decode_questions(packet.get(), message);
    if (!decode_section(ldns_pkt_answer(packet.get()), message.answers) ||
        !decode_section(ldns_pkt_authority(packet.get()), message.authority)) {
        return std::nullopt;
    }
    return message;
}

std::optional<std::uint16_t> peek_id(std::span<const std::uint8_t> bytes) {
    if (bytes.size() < 12) {
        return std::nullopt;
    }
    return static_cast<std::uint16_t>((bytes[0] << 8) | bytes[1]);
}

std::string rcode_name(int rcode) {
    switch (rcode) {
    case rcode_noerror: return "NOERROR";
    case rcode_formerr: return "FORMERR";
    case rcode_servfail: return "SERVFAIL";
    case rcode_nxdomain: return "NXDOMAIN";
    case rcode_notimp: return "NOTIMP";
    case rcode_refused: return "REFUSED";
    case 6: return "YXDOMAIN";
    case 7: return "YXRRSET";
    case 8: return "NXRRSET";
    case 9: return "NOTAUTH";
    case 10: return "NOTZONE";
    case 16: return "BADVERS";
    default: return "RCODE" + std::to_string(rcode);
    }
}

}  // namespace tlsrelay::dns::wire
