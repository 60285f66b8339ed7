// thread-check-cpp TABLE.json: 8 threads score the same random requests as one thread; exit 0 when
// every result is identical (a loaded table is shared without locks), 1 otherwise.
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "batchrl_mtf/weight_table.hpp"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const auto table = batchrl_mtf::WeightTable::load(argv[1]);
  const std::size_t k = table.tasks().size(), d = table.key_names().size(), n = 300, reqs = 200;
  std::mt19937_64 rng(1);
  std::normal_distribution<double> z(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> x(reqs * d), p(n * k);
  for (auto& v : x) v = z(rng);
  for (auto& v : p) v = u(rng);
  auto run = [&](std::vector<int>* orders, std::vector<double>* scores) {
    orders->assign(reqs * n, 0);
    scores->assign(reqs * n, 0.0);
    for (int rep = 0; rep < 20; ++rep)
      for (std::size_t r = 0; r < reqs; ++r)
        table.score(&x[r * d], p.data(), n, &(*scores)[r * n], &(*orders)[r * n]);
  };
  std::vector<int> serial_o;
  std::vector<double> serial_s;
  run(&serial_o, &serial_s);
  std::vector<std::vector<int>> o(8);
  std::vector<std::vector<double>> s(8);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) threads.emplace_back(run, &o[t], &s[t]);
  for (auto& t : threads) t.join();
  for (int t = 0; t < 8; ++t)
    if (o[t] != serial_o || s[t] != serial_s) {
      std::printf("thread %d differs\n", t);
      return 1;
    }
  std::printf("8 threads agree with the serial run\n");
  return 0;
}
