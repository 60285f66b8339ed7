// Strict, bounded JSON as batchrl-mtf reads it (the rules of batchrl_mtf/serving/_json.py): UTF-8
// only (a UTF-8 BOM is skipped), at most 256 MiB, no NaN/Infinity, no number overflowing a double,
// number tokens at most 100 characters, nesting at most 64 levels, no duplicate keys.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace batchrl_mtf {

constexpr std::size_t kMaxJsonBytes = std::size_t(256) << 20;
constexpr int kMaxJsonDepth = 64;
constexpr std::size_t kMaxNumberChars = 100;

/** Parses strict JSON. @throws TableError("not UTF-8 text ..." / "not valid JSON (...)") */
nlohmann::json parse_strict_json(const std::string& text);

}  // namespace batchrl_mtf
