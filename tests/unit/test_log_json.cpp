#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdio>
#include <string>

#include "tlsrelay/util/json.hpp"
#include "tlsrelay/util/log.hpp"

using tlsrelay::json::quote;
using tlsrelay::log::json_line;
using tlsrelay::log::message_fields;

namespace {

// Timestamps look like "2026-12-05T01:02:03.456Z". Compared by hand
// because GCC 12's std::regex trips -Wmaybe-uninitialized under the
// sanitizer build.
constexpr std::size_t timestamp_length = 24;

bool is_timestamp(const std::string& text) {
    const std::string shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (text.size() != shape.size()) {
        return false;
    }
    for (std::size_t i = 0; i < shape.size(); ++i) {
        bool digit = text[i] >= '0' && text[i] <= '9';
        if (shape[i] == 'd' ? !digit : text[i] != shape[i]) {
            return false;
        }
    }
    return true;
}


using Fields = std::vector<std::pair<std::string, std::string>>;

// Captures what the logger writes to standard error while `write` runs.
template <typename Write>
std::string capture_stderr(Write write) {
    std::fflush(stderr);
    FILE* sink = std::tmpfile();
    REQUIRE(sink != nullptr);
    int saved = ::dup(STDERR_FILENO);
    ::dup2(::fileno(sink), STDERR_FILENO);
    write();
    std::fflush(stderr);
    ::dup2(saved, STDERR_FILENO);
    ::close(saved);

    std::string text;
    std::rewind(sink);
    char buffer[1024];
    while (auto size = std::fread(buffer, 1, sizeof buffer, sink)) {
        text.append(buffer, size);
    }
    std::fclose(sink);
    return text;
}

}  // namespace

TEST_CASE("log fields of a delivery line", "[log]") {
    auto fields = message_fields(
        "661D5AB67E89400: to=<bob@example.org>, relay=mx.example.org[192.0.2.1]:25, delay=0.4, tls=verified, "
        "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X1)");
    CHECK(fields == Fields{{"queue_id", "661D5AB67E89400"},
                           {"to", "bob@example.org"},
                           {"relay", "mx.example.org[192.0.2.1]:25"},
                           {"delay", "0.4"},
                           {"tls", "verified"},
                           {"dsn", "2.0.0"},
                           {"status", "sent"},
                           {"reason", "250 2.0.0 Ok: queued as X1"}});

    // A reason with parentheses and commas of its own stays whole.
    auto deferred = message_fields(
        "661D5AB67E89400: to=<carol@example.org>, relay=none, delay=12, tls=none, dsn=4.4.1, status=deferred "
        "(connect to mx.example.org[192.0.2.1]:25: Connection refused (tried 2, gave up))");
    REQUIRE(deferred.size() == 8);
    CHECK(deferred[7] == std::pair<std::string, std::string>{
                             "reason", "connect to mx.example.org[192.0.2.1]:25: Connection refused (tried 2, gave up)"});
}

TEST_CASE("log fields of an inbound line", "[log]") {
    auto fields = message_fields("0123456789ABCDE: client=localhost[127.0.0.1], from=<>, size=1234, nrcpt=2 "
                                 "(queue active)");
    CHECK(fields == Fields{{"queue_id", "0123456789ABCDE"},
                           {"client", "localhost[127.0.0.1]"},
                           {"from", ""},
                           {"size", "1234"},
                           {"nrcpt", "2"},
                           {"reason", "queue active"}});
}

TEST_CASE("log fields of other lines", "[log]") {
    CHECK(message_fields("listening on 127.0.0.1:2525").empty());
    CHECK(message_fields("NOQUEUE: reject: RCPT from unknown[192.0.2.9]: 554 5.7.1 Relay access denied").empty());
    CHECK(message_fields("0123456789ABCDE: sender non-delivery notification: 0123456789ABCDF") ==
          Fields{{"queue_id", "0123456789ABCDE"}});
    // Names the JSON line sets itself are not overwritten by a message.
    CHECK(message_fields("level=debug, to=<a@b>") == Fields{{"to", "a@b"}});
    // An address whose closing bracket is missing ends the parse.
    CHECK(message_fields("to=<a@b, relay=x").empty());
}

TEST_CASE("log json line layout", "[log]") {
    CHECK(json_line(tlsrelay::log::Level::warning, "disk \"full\"", "2025-12-04T10:00:00.123Z", 42) ==
          "{\"time\":\"2025-12-04T10:00:00.123Z\",\"level\":\"warning\",\"program\":\"tlsrelay\",\"pid\":42,"
          "\"message\":\"disk \\\"full\\\"\"}");
    CHECK(json_line(tlsrelay::log::Level::info, "ABCDEF: to=<x@y>, status=sent (ok)", "t", 1) ==
          "{\"time\":\"t\",\"level\":\"info\",\"program\":\"tlsrelay\",\"pid\":1,"
          "\"message\":\"ABCDEF: to=<x@y>, status=sent (ok)\",\"queue_id\":\"ABCDEF\",\"to\":\"x@y\","
          "\"status\":\"sent\",\"reason\":\"ok\"}");
}

TEST_CASE("json strings escape and keep UTF-8", "[log]") {
    CHECK(quote("plain") == "\"plain\"");
    CHECK(quote("quote \" backslash \\") == "\"quote \\\" backslash \\\\\"");
    CHECK(quote("tab\tnl\ncr\rbs\bff\f") == "\"tab\\tnl\\ncr\\rbs\\bff\\f\"");
    CHECK(quote(std::string("nul\0esc\x1b del\x7f", 13)) == "\"nul\\u0000esc\\u001b del\\u007f\"");
    CHECK(quote("Grüße 東京 📨") == "\"Grüße 東京 📨\"");
    // C1 controls (U+0085 NEL, U+009B CSI) are escaped, but U+00A0 is not a control.
    CHECK(quote("nel\xC2\x85 csi\xC2\x9B nbsp\xC2\xA0") == "\"nel\\u0085 csi\\u009b nbsp\xC2\xA0\"");

    const std::string replacement = "\xEF\xBF\xBD";
    CHECK(quote("bad \xFF byte") == "\"bad " + replacement + " byte\"");
    CHECK(quote("latin-1 caf\xE9!") == "\"latin-1 caf" + replacement + "!\"");  // truncated sequence
    CHECK(quote("overlong \xC0\xAF") == "\"overlong " + replacement + replacement + "\"");
    CHECK(quote("overlong \xE0\x80\xAF") == "\"overlong " + replacement + replacement + replacement + "\"");
    CHECK(quote("surrogate \xED\xA0\x80") == "\"surrogate " + replacement + replacement + replacement + "\"");
    CHECK(quote("too high \xF4\x90\x80\x80") ==
          "\"too high " + replacement + replacement + replacement + replacement + "\"");
    CHECK(quote("max \xF4\x8F\xBF\xBF") == "\"max \xF4\x8F\xBF\xBF\"");
    CHECK(quote("cut at end \xE6\x9D") == "\"cut at end " + replacement + replacement + "\"");
}

TEST_CASE("log writes text or json lines", "[log]") {
    auto pid = std::to_string(::getpid());
    auto text = capture_stderr([] { tlsrelay::log::warning("queue is slow"); });
    REQUIRE(text.size() > timestamp_length);
    CHECK(is_timestamp(text.substr(0, timestamp_length)));
    CHECK(text.substr(timestamp_length) == " tlsrelay[" + pid + "]: warning: queue is slow\n");

    tlsrelay::log::set_format(tlsrelay::log::Format::json);
    auto json = capture_stderr([] { tlsrelay::log::info("ABCDEF0123: to=<a@example.org>, status=sent (250 ok)"); });
    tlsrelay::log::set_format(tlsrelay::log::Format::text);
    const std::string opening = "{\"time\":\"";
    REQUIRE(json.size() > opening.size() + timestamp_length);
    CHECK(json.substr(0, opening.size()) == opening);
    CHECK(is_timestamp(json.substr(opening.size(), timestamp_length)));
    CHECK(json.substr(opening.size() + timestamp_length) ==
          "\",\"level\":\"info\",\"program\":\"tlsrelay\",\"pid\":" + pid +
              ",\"message\":\"ABCDEF0123: to=<a@example.org>, status=sent (250 ok)\",\"queue_id\":\"ABCDEF0123\","
              "\"to\":\"a@example.org\",\"status\":\"sent\",\"reason\":\"250 ok\"}\n");
}

TEST_CASE("log text escapes control characters", "[log]") {
    using tlsrelay::log::escape_control_characters;
    CHECK(escape_control_characters("helo=<client.example>") == "helo=<client.example>");
    CHECK(escape_control_characters("del\x7F") == "del\\x7F");
    const char with_nul[] = "nul\0 tab\t cr\r lf\n esc\x1b[31m";
    CHECK(escape_control_characters(std::string(with_nul, sizeof with_nul - 1)) ==
          "nul\\x00 tab\\x09 cr\\x0D lf\\x0A esc\\x1B[31m");
    CHECK(escape_control_characters("\x1f\x20\x7e\x7f") == "\\x1F ~\\x7F");

    // C1 controls in UTF-8 and bytes that are not valid UTF-8 are escaped
    // byte by byte. Other UTF-8 and backslashes stay as they are.
    CHECK(escape_control_characters("nel\xC2\x85 csi\xC2\x9B nbsp\xC2\xA0") ==
          "nel\\xC2\\x85 csi\\xC2\\x9B nbsp\xC2\xA0");
    CHECK(escape_control_characters("raw csi \x9B, latin-1 caf\xE9") == "raw csi \\x9B, latin-1 caf\\xE9");
    CHECK(escape_control_characters("j\xC3\xB6rg@\xE6\x9D\xB1\xE4\xBA\xAC.example") ==
          "j\xC3\xB6rg@\xE6\x9D\xB1\xE4\xBA\xAC.example");
    CHECK(escape_control_characters("quoted \"a\\\"b\"@example.org") == "quoted \"a\\\"b\"@example.org");

    // write() applies it to every text line.
    auto text = capture_stderr([] { tlsrelay::log::info("connect from x\x7Fy\r\nforged line"); });
    REQUIRE(text.size() > timestamp_length);
    CHECK(text.substr(timestamp_length) ==
          " tlsrelay[" + std::to_string(::getpid()) + "]: connect from x\\x7Fy\\x0D\\x0Aforged line\n");
}

TEST_CASE("log counts error lines", "[log]") {
    auto before = tlsrelay::log::error_count();
    capture_stderr([] {
        tlsrelay::log::error("disk full");
        tlsrelay::log::warning("not an error");
    });
    CHECK(tlsrelay::log::error_count() == before + 1);
}
