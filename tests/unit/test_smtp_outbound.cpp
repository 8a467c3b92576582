#include <catch2/catch.hpp>

#include "tlsrelay/smtp/outbound.hpp"

using namespace tlsrelay::smtp;

namespace {

std::string encode(std::string_view content) {
    ContentEncoder encoder;
    std::string out;
    encoder.feed(content, out);
    encoder.finish(out);
    return out;
}

}  // namespace

TEST_CASE("outbound content is dot-stuffed", "[outbound]") {
    CHECK(encode("a\r\n.b\r\n..c\r\n") == "a\r\n..b\r\n...c\r\n.\r\n");
    CHECK(encode(".\r\n") == "..\r\n.\r\n");
    CHECK(encode("no final line end") == "no final line end\r\n.\r\n");
    CHECK(encode("") == ".\r\n");
}

TEST_CASE("outbound content stuffing spans chunks", "[outbound]") {
    ContentEncoder encoder;
    std::string out;
    encoder.feed("line\r", out);
    encoder.feed("\n.dot\r\n", out);
    encoder.finish(out);
    CHECK(out == "line\r\n..dot\r\n.\r\n");
}

TEST_CASE("outbound long lines are folded", "[outbound]") {
    std::string long_line(2000, 'a');
    auto out = encode(long_line + "\r\n");
    // Every wire line stays within 998 octets plus CRLF.
    std::size_t start = 0;
    while (start < out.size()) {
        auto end = out.find("\r\n", start);
        REQUIRE(end != std::string::npos);
        CHECK(end - start <= 998);
        start = end + 2;
    }
    // Removing the inserted CRLF SP gives the line back.
    std::string unfolded = out;
    for (auto fold = unfolded.find("\r\n "); fold != std::string::npos; fold = unfolded.find("\r\n ")) {
        unfolded.erase(fold, 3);
    }
    CHECK(unfolded == long_line + "\r\n.\r\n");
}

TEST_CASE("quoted-printable keeps lines short and bytes exact", "[outbound]") {
    CHECK(quoted_printable("caf\xc3\xa9 = ok\r\n") == "caf=C3=A9 =3D ok\r\n");
    CHECK(quoted_printable("trailing space \r\nend\t") == "trailing space=20\r\nend=09");
    auto encoded = quoted_printable(std::string(200, '\xe2'));
    std::size_t start = 0;
    while (start < encoded.size()) {
        auto end = encoded.find("\r\n", start);
        auto length = (end == std::string::npos ? encoded.size() : end) - start;
        CHECK(length <= 76);
        start = end == std::string::npos ? encoded.size() : end + 2;
    }
}

TEST_CASE("downgrade converts 8-bit leaf parts only", "[outbound]") {
    std::string message =
        "Subject: test\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
        "\r\n"
        "preamble\r\n"
        "--b1\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "K\xc3\xb6ln\r\n"
        "--b1\r\n"
        "Content-Type: application/octet-stream\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        "AAEC\r\n"
        "--b1--\r\n"
        "epilogue\r\n";
    auto converted = downgrade_to_7bit(message);
    CHECK(converted ==
          "Subject: test\r\n"
          "MIME-Version: 1.0\r\n"
          "Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
          "\r\n"
          "preamble\r\n"
          "--b1\r\n"
          "Content-Type: text/plain; charset=utf-8\r\n"
          "Content-Transfer-Encoding: quoted-printable\r\n"
          "\r\n"
          "K=C3=B6ln\r\n"
          "--b1\r\n"
          "Content-Type: application/octet-stream\r\n"
          "Content-Transfer-Encoding: base64\r\n"
          "\r\n"
          "AAEC\r\n"
          "--b1--\r\n"
          "epilogue\r\n");
}

TEST_CASE("downgrade leaves 7-bit messages alone", "[outbound]") {
    std::string message = "Subject: plain\r\n\r\nascii only\r\n";
    CHECK(downgrade_to_7bit(message) == message);
}
