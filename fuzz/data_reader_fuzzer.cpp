// Splits arbitrary bytes into lines as the server does and decodes them as
// DATA content. Checks the property the smuggling defence rests on: in
// normalize mode the stored content has CRLF line ends only.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "tlsrelay/smtp/content.hpp"
#include "tlsrelay/smtp/line_reader.hpp"

namespace {

void check_crlf_only(const std::string& content) {
    for (std::size_t i = 0; i < content.size(); ++i) {
        if (content[i] == '\n' && (i == 0 || content[i - 1] != '\r')) {
            std::abort();
        }
        if (content[i] == '\r' && (i + 1 == content.size() || content[i + 1] != '\n')) {
            std::abort();
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    // The first byte picks the piece size, so line splitting across pieces
    // (including a CRLF split between two pieces) is reached with small inputs.
    std::size_t max_piece = 1 + data[0] % 64;
    std::string buffer(reinterpret_cast<const char*>(data) + 1, size - 1);

    tlsrelay::smtp::DataDecoder decoder(tlsrelay::smtp::BareNewline::normalize);
    tlsrelay::smtp::HopCounter hops;
    std::string content;
    std::size_t start = 0;
    bool ended = false;
    while (auto line = tlsrelay::smtp::take_line(buffer, start, max_piece)) {
        std::string decoded;
        if (decoder.feed(*line, decoded)) {
            ended = true;
            break;
        }
        hops.feed(decoded);
        content += decoded;
    }
    // A piece may stop in the middle of a line: only complete output counts.
    if (ended) {
        check_crlf_only(content);
    }

    tlsrelay::smtp::ChunkDecoder chunks(tlsrelay::smtp::BareNewline::normalize);
    std::string chunk_content;
    chunks.feed(buffer.substr(0, buffer.size() / 2), chunk_content);
    chunks.feed(buffer.substr(buffer.size() / 2), chunk_content);
    chunks.finish(chunk_content);
    check_crlf_only(chunk_content);
    return 0;
}
