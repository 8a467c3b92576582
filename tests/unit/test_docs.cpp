#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "tlsrelay/config/config.hpp"

namespace {

std::string read_source_file(const std::string& relative_path) {
    std::ifstream in(std::filesystem::path(TLSRELAY_SOURCE_DIR) / relative_path);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE("config reference documents every key", "[docs]") {
    auto text = read_source_file("docs/configuration.md");
    REQUIRE_FALSE(text.empty());
    for (const auto& key : tlsrelay::config::known_keys()) {
        // Each key has a table row that starts with its full name in backquotes.
        INFO("key " << key << " has no row \"| `" << key << "` |\" in docs/configuration.md");
        CHECK(text.find("| `" + key + "` |") != std::string::npos);
    }
}

TEST_CASE("Postfix page names every smtp key", "[docs]") {
    auto text = read_source_file("docs/postfix.md");
    REQUIRE_FALSE(text.empty());
    for (const auto& key : tlsrelay::config::known_keys()) {
        if (key.rfind("smtp.", 0) != 0) {
            continue;
        }
        INFO("key " << key << " is missing from docs/postfix.md");
        CHECK(text.find("`" + key + "`") != std::string::npos);
    }
}
