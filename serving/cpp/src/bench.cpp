// bench-cpp TABLE.json N ITERS: load time, then p50/p99 of lookup + fuse + rank (one JSON line).
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <random>
#include <vector>

#include "batchrl_mtf/weight_table.hpp"

int main(int argc, char** argv) {
  using clock = std::chrono::steady_clock;
  if (argc != 4) return 2;
  auto cpu = []() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;  // microseconds of this thread's CPU time
  };
  auto t0 = clock::now();
  double c0 = cpu();
  auto table = batchrl_mtf::WeightTable::load(argv[1]);
  double load_s = std::chrono::duration<double>(clock::now() - t0).count();
  double load_cpu_s = (cpu() - c0) / 1e6;
  std::size_t n = std::stoul(argv[2]);
  long iters = std::stol(argv[3]);
  std::size_t k = table.tasks().size(), d = table.key_names().size();
  std::mt19937_64 rng(0);
  std::uniform_real_distribution<double> u(0.001, 0.999);
  std::normal_distribution<double> z(0.0, 1.0);
  std::vector<double> preds(n * k), x(d), scores(n);
  for (auto& p : preds) p = u(rng);
  std::vector<int> order(n);
  std::vector<double> times, cpu_times;
  long warm = std::max(2000L, iters / 5);
  long sink = 0;
  for (long it = -warm; it < iters; ++it) {
    for (auto& v : x) v = z(rng);
    double cs = cpu();
    auto s = clock::now();
    auto st = table.score(x.data(), preds.data(), n, scores.data(), order.data());
    auto e = clock::now();
    double ce = cpu();
    sink += order[0] + (st.ok ? 0 : 1);
    if (it >= 0) {
      times.push_back(std::chrono::duration<double, std::micro>(e - s).count());
      cpu_times.push_back(ce - cs);
    }
  }
  std::sort(times.begin(), times.end());
  std::sort(cpu_times.begin(), cpu_times.end());
  auto q = [](const std::vector<double>& v, double f) { return v[static_cast<std::size_t>(v.size() * f)]; };
  std::printf(
      "{\"lang\":\"cpp\",\"load_s\":%.4f,\"load_cpu_s\":%.4f,\"p50_us\":%.2f,\"p99_us\":%.2f,"
      "\"cpu_p50_us\":%.2f,\"cpu_p99_us\":%.2f,\"sink\":%ld}\n",
      load_s, load_cpu_s, q(times, 0.5), q(times, 0.99), q(cpu_times, 0.5), q(cpu_times, 0.99), sink);
  return 0;
}
