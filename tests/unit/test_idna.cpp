#include <catch2/catch.hpp>

#include "tlsrelay/util/idna.hpp"

TEST_CASE("idna converts UTF-8 domains to A-labels", "[idna]") {
    std::string error;
    CHECK(tlsrelay::to_a_label("b\xc3\xbc" "cher.example", error) == "xn--bcher-kva.example");
    CHECK(tlsrelay::to_a_label("B\xc3\x9c" "CHER.Example", error) == "xn--bcher-kva.example");
    CHECK(tlsrelay::to_a_label("Mail.Example.COM", error) == "mail.example.com");
    CHECK_FALSE(tlsrelay::to_a_label("bad\xff" "byte.example", error));
    CHECK_FALSE(error.empty());
}
