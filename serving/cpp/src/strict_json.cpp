// Implementation of batchrl_mtf/strict_json.hpp: the strict, bounded JSON reader (nlohmann/json SAX).
#include "batchrl_mtf/strict_json.hpp"

#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "batchrl_mtf/weight_table.hpp"  // TableError

namespace batchrl_mtf {

using nlohmann::json;

namespace {

/**
 * One pass over the text: whether it is UTF-8 (no overlong forms, surrogates, code points above
 * U+10FFFF or truncated sequences) and whether brackets outside strings nest deeper than
 * kMaxJsonDepth; a UTF-8 error anywhere is reported before a nesting error.
 */
void check_text(const char* data, std::size_t n) {
  // Bytes that need a look: quotes, backslash, brackets and every non-ASCII byte; runs of other
  // bytes (digits, names, punctuation: most of a table) are skipped with one table lookup each.
  static const auto special = [] {
    std::array<bool, 256> t{};
    for (unsigned char c : std::string("\"\\[]{}")) t[c] = true;
    for (int c = 0x80; c < 256; ++c) t[c] = true;
    return t;
  }();
  const auto* p = reinterpret_cast<const unsigned char*>(data);
  std::size_t i = 0;
  int depth = 0;
  bool in_string = false, too_deep = false, utf8 = true;
  while (i < n) {
    while (i < n && !special[p[i]]) ++i;
    if (i == n) break;
    unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      if (in_string) {
        if (c == '\\' && i < n && p[i] < 0x80) ++i;  // skip an escaped ASCII byte (others: checked)
        else if (c == '"') in_string = false;
      } else if (c == '"') {
        in_string = true;
      } else if (c == '[' || c == '{') {
        too_deep |= ++depth > kMaxJsonDepth;
      } else if (c == ']' || c == '}') {
        --depth;
      }
      continue;
    }
    std::size_t len;
    unsigned cp;
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else { utf8 = false; break; }
    if (i + len > n) { utf8 = false; break; }
    for (std::size_t j = 1; j < len; ++j) {
      if ((p[i + j] & 0xC0) != 0x80) { utf8 = false; break; }
      cp = (cp << 6) | (p[i + j] & 0x3F);
    }
    if (!utf8) break;
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      utf8 = false;
      break;
    }
    i += len;
  }
  if (!utf8) throw TableError("not UTF-8 text (JSON files are UTF-8, re-save it as UTF-8)");
  if (too_deep) throw TableError("not valid JSON (nesting deeper than " + std::to_string(kMaxJsonDepth) + " levels)");
}

/** SAX handler building a DOM, refusing duplicate keys, long and overflowing numbers. */
class StrictSax : public nlohmann::json_sax<json> {
 public:
  json root;
  std::string error;

  bool null() override { return put(json(nullptr)); }
  bool boolean(bool v) override { return put(json(v)); }
  bool number_integer(number_integer_t v) override { return put(json(v)); }
  bool number_unsigned(number_unsigned_t v) override { return put(json(v)); }
  bool number_float(number_float_t v, const string_t& s) override {
    if (s.size() > kMaxNumberChars) {
      error = "a number of " + std::to_string(s.size()) + " characters (at most 100)";
      return false;
    }
    if (!std::isfinite(v)) {
      error = "number " + s.substr(0, 30) + " overflows a double";
      return false;
    }
    return put(json(v));
  }
  bool string(string_t& v) override { return put(json(v)); }
  bool binary(binary_t&) override { error = "binary values"; return false; }
  bool start_object(std::size_t) override {
    if (!put(json::object())) return false;
    stack_.push_back(last_);
    return true;
  }
  bool key(string_t& k) override {
    // One lookup: insert a null under the key (refusing a duplicate); put() fills it.
    auto& o = stack_.back()->get_ref<json::object_t&>();
    auto res = o.emplace(std::move(k), nullptr);
    if (!res.second) {
      error = "duplicate key '" + res.first->first.substr(0, 40) + "' in an object";
      return false;
    }
    slot_ = &res.first->second;
    return true;
  }
  bool end_object() override { stack_.pop_back(); return true; }
  bool start_array(std::size_t) override {
    if (!put(json::array())) return false;
    stack_.push_back(last_);
    return true;
  }
  bool end_array() override { stack_.pop_back(); return true; }
  bool parse_error(std::size_t pos, const std::string&, const nlohmann::detail::exception& ex) override {
    std::string what = ex.what();
    auto at = what.find("] ");
    error = (at == std::string::npos ? what : what.substr(at + 2)) + " (byte " + std::to_string(pos) + ")";
    return false;
  }

 private:
  std::vector<json*> stack_;
  json* last_ = nullptr;
  json* slot_ = nullptr;  // the value of the object's latest key
  bool put(json&& v) {
    if (stack_.empty()) {
      root = std::move(v);
      last_ = &root;
    } else if (stack_.back()->is_object()) {
      *slot_ = std::move(v);
      last_ = slot_;
    } else {
      stack_.back()->push_back(std::move(v));
      last_ = &stack_.back()->back();
    }
    return true;
  }
};

}  // namespace

json parse_strict_json(const std::string& input) {
  if (input.size() > kMaxJsonBytes)
    throw TableError("expected at most " + std::to_string(kMaxJsonBytes) + " bytes of JSON, found " +
                     std::to_string(input.size()));
  const std::size_t skip = input.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;  // a UTF-8 BOM
  const char* begin = input.data() + skip;
  const char* end = input.data() + input.size();
  check_text(begin, static_cast<std::size_t>(end - begin));
  StrictSax sax;
  bool ok = json::sax_parse(begin, end, &sax, json::input_format_t::json, true, false);
  if (!ok) throw TableError("not valid JSON (" + (sax.error.empty() ? std::string("syntax error") : sax.error) + ")");
  return std::move(sax.root);
}

}  // namespace batchrl_mtf
