// score TABLE.json < requests.jsonl > responses.jsonl -- the scorer contract shared with
// `batchrl-mtf score` (batchrl_mtf/serving/scoring.py, docs/serving.md).
#include <cmath>
#include <cstdio>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "batchrl_mtf/strict_json.hpp"
#include "batchrl_mtf/weight_table.hpp"

using batchrl_mtf::Status;
using batchrl_mtf::TableError;
using batchrl_mtf::WeightTable;
using nlohmann::json;

namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string show(const json& v) {
  std::string s = v.dump();
  return s.size() <= 60 ? s : s.substr(0, 57) + "...";
}

std::string quote(const std::string& s) { return json(s).dump(); }

std::string score_line(const WeightTable& table, const json& req) {
  if (!req.is_object()) throw TableError("request: expected a JSON object, found " + show(req));
  for (auto it = req.begin(); it != req.end(); ++it)
    if (it.key() != "features" && it.key() != "preds" && it.key() != "draws")
      throw TableError("request: unknown field(s) ['" + it.key() + "']");
  if (!req.contains("features") || !req["features"].is_object())
    throw TableError("features: expected an object, found " + (req.contains("features") ? show(req["features"]) : "None"));
  const json& feats = req["features"];
  const auto& keys = table.key_names();
  std::vector<double> x(keys.size());
  for (std::size_t j = 0; j < keys.size(); ++j) {
    if (!feats.contains(keys[j])) throw TableError("features: missing key feature '" + keys[j] + "'");
    const json& v = feats[keys[j]];
    if (v.is_null()) x[j] = NAN;
    else if (v.is_number()) x[j] = v.get<double>();
    else throw TableError("features." + keys[j] + ": expected a number or null, found " + show(v));
  }
  if (!req.contains("preds") || !req["preds"].is_object())
    throw TableError("preds: expected an object, found " + (req.contains("preds") ? show(req["preds"]) : "None"));
  const json& preds = req["preds"];
  const auto& tasks = table.tasks();
  std::set<std::string> have, want(tasks.begin(), tasks.end());
  for (auto it = preds.begin(); it != preds.end(); ++it) have.insert(it.key());
  if (have != want) throw TableError("preds: expected exactly the table's tasks");
  const std::size_t k = tasks.size();
  std::size_t n = 0;
  std::vector<double> p;
  for (std::size_t t = 0; t < k; ++t) {
    const json& col = preds[tasks[t]];
    if (!col.is_array()) throw TableError("preds." + tasks[t] + ": expected a list, found " + show(col));
    if (t == 0) {
      n = col.size();
      p.assign(n * k, 0.0);
    } else if (col.size() != n) {
      throw TableError("preds." + tasks[t] + ": expected " + std::to_string(n) + " predictions (as the first task), found " +
                       std::to_string(col.size()));
    }
    for (std::size_t i = 0; i < n; ++i) {
      const json& v = col[i];
      if (v.is_null()) p[i * k + t] = NAN;
      else if (v.is_number()) p[i * k + t] = v.get<double>();
      else throw TableError("preds." + tasks[t] + "[" + std::to_string(i) + "]: expected a number or null, found " + show(v));
    }
  }
  std::vector<double> w(k);
  std::string logp;
  if (req.contains("draws")) {
    if (!table.has_exploration()) throw TableError("draws: the table has no exploration block to sample from");
    const json& dr = req["draws"];
    if (!dr.is_array()) throw TableError("draws: expected a list of numbers, found " + show(dr));
    std::vector<double> draws;
    for (const auto& v : dr) {
      if (!v.is_number()) throw TableError("draws: expected a list of numbers, found " + show(dr));
      draws.push_back(v.get<double>());
    }
    std::size_t next = 0;
    batchrl_mtf::Sample s;
    Status st = table.sample_from_draws(
        x.data(),
        [&](double* d) {
          if (next >= draws.size()) return false;
          *d = draws[next++];
          return true;
        },
        &s);
    if (!st.ok) throw TableError(st.message);
    w = s.weights;
    logp = num(s.behavior_logp);
  } else {
    const double* lw = table.lookup(x.data());
    w.assign(lw, lw + k);
  }
  std::vector<double> scores(n);
  std::vector<int> order(n);
  Status st = table.fuse(p.data(), n, w.data(), scores.data());
  if (!st.ok) throw TableError(st.message);
  WeightTable::rank(scores.data(), n, order.data());
  std::string out;
  out.reserve(64 + 26 * n);
  out += logp.empty() ? "{\"weights\":{" : "{\"behavior_logp\":" + logp + ",\"weights\":{";
  for (std::size_t t = 0; t < k; ++t) out += (t ? "," : "") + quote("w_" + tasks[t]) + ":" + num(w[t]);
  out += "},\"scores\":[";
  for (std::size_t i = 0; i < n; ++i) out += (i ? "," : "") + (std::isnan(scores[i]) ? std::string("null") : num(scores[i]));
  out += "],\"order\":[";
  for (std::size_t i = 0; i < n; ++i) out += (i ? "," : "") + std::to_string(order[i]);
  return out + "]}";
}

bool blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "error: usage: score TABLE.json < requests.jsonl > responses.jsonl\n";
    return 2;
  }
  std::ios::sync_with_stdio(false);
  WeightTable table = [&]() {
    try {
      return WeightTable::load(argv[1]);
    } catch (const TableError& e) {
      std::string msg = e.what();
      for (auto& c : msg)
        if (c == '\n') c = ' ';
      std::cerr << "error: " << msg << "\n";
      std::exit(2);
    }
  }();
  std::string line, first;
  long number = 0, n = 0, errors = 0;
  while (std::getline(std::cin, line)) {
    ++number;
    if (blank(line)) continue;
    ++n;
    std::string response;
    try {
      response = score_line(table, batchrl_mtf::parse_strict_json(line));
    } catch (const std::exception& e) {
      std::string msg = "line " + std::to_string(number) + ": " + e.what();
      response = "{\"error\":" + json(msg).dump(-1, ' ', false, json::error_handler_t::replace) + "}";
      ++errors;
      if (first.empty()) first = msg;
    }
    std::cout << response << '\n';
  }
  std::cout.flush();
  if (errors) {
    std::cerr << "error: " << errors << " of " << n << " requests invalid (first: " << first << ")\n";
    return 2;
  }
  return 0;
}
