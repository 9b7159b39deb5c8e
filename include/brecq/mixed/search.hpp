#pragma once
// Bit allocation as the BRECQ paper poses it: the model is cut into groups (blocks, and the
// layers outside blocks), each group has options (an assignment of bit-widths to its layers)
// with a measured sensitivity and a cost; choose one option per group minimising the summed
// sensitivity under a cost budget. Groups are independent in the objective (intra-block
// interactions are inside an option's sensitivity), so the problem is a multiple-choice knapsack;
// the paper searches it with a genetic algorithm, as here: seeded, with tournament selection,
// uniform crossover, mutation, elitism, a repair step that never leaves a candidate over budget,
// and a final one-gene local improvement of the best.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "brecq/config.hpp"
#include "brecq/tensor/rng.hpp"

namespace brecq::mixed {

/// One group's options: option o costs cost[o] and has sensitivity loss[o].
struct SearchGroup {
  std::string name;
  std::vector<double> loss{}, cost{};
};

struct GeneticParams {
  int population = 64;
  int generations = 150;
  int tournament = 3;
  double crossover = 0.9;  ///< probability that a child mixes two parents (else copies one)
  double mutation = -1;    ///< per-gene probability; < 0: 1 / number of groups
  int elite = 4;           ///< best candidates carried over unchanged
  uint64_t seed = 1029;
};

/// A choice of one option per group, its summed sensitivity and cost.
struct Allocation {
  std::vector<int> option{};
  double loss = 0, cost = 0;
};

struct SearchResult {
  Allocation best;
  std::vector<Allocation> pareto;  ///< non-dominated (cost, loss) among those evaluated, by cost
  int64_t evaluated = 0;
  double min_cost = 0, max_cost = 0;  ///< the cheapest and dearest allocations possible
};

inline void validate(const std::vector<SearchGroup>& groups) {
  check(!groups.empty(), "bit allocation: no groups to allocate");
  for (const SearchGroup& g : groups) {
    check(!g.loss.empty() && g.loss.size() == g.cost.size(), "bit allocation: group ", g.name,
          " has ", g.loss.size(), " sensitivities and ", g.cost.size(),
          " costs (expected as many, >= 1)");
    for (size_t o = 0; o < g.loss.size(); ++o)
      check(std::isfinite(g.loss[o]) && std::isfinite(g.cost[o]) && g.cost[o] >= 0,
            "bit allocation: group ", g.name, " option ", o, " has sensitivity ", g.loss[o],
            " and cost ", g.cost[o], " (expected finite, cost >= 0)");
  }
}

inline Allocation evaluate(const std::vector<SearchGroup>& groups, std::vector<int> option) {
  Allocation a{std::move(option)};
  for (size_t g = 0; g < groups.size(); ++g) {
    a.loss += groups[g].loss[static_cast<size_t>(a.option[g])];
    a.cost += groups[g].cost[static_cast<size_t>(a.option[g])];
  }
  return a;
}

namespace detail {

inline int cheapest(const SearchGroup& g) {
  return static_cast<int>(std::min_element(g.cost.begin(), g.cost.end()) - g.cost.begin());
}

/// Lowers cost until within budget, each step taking the option change that adds the least
/// sensitivity per unit of cost saved.
inline void repair(const std::vector<SearchGroup>& groups, double budget, std::vector<int>& opt) {
  double cost = evaluate(groups, opt).cost;
  while (cost > budget) {
    double best_rate = std::numeric_limits<double>::infinity();
    size_t bg = 0;
    int bo = -1;
    for (size_t g = 0; g < groups.size(); ++g) {
      const SearchGroup& G = groups[g];
      const size_t cur = static_cast<size_t>(opt[g]);
      for (size_t o = 0; o < G.cost.size(); ++o) {
        const double saved = G.cost[cur] - G.cost[o];
        if (saved <= 0) continue;
        const double rate = (G.loss[o] - G.loss[cur]) / saved;
        if (rate < best_rate) best_rate = rate, bg = g, bo = static_cast<int>(o);
      }
    }
    if (bo < 0) return;  // nothing cheaper (the caller checked the budget is reachable)
    cost -=
        groups[bg].cost[static_cast<size_t>(opt[bg])] - groups[bg].cost[static_cast<size_t>(bo)];
    opt[bg] = bo;
  }
}

/// Whether a is at least as good as b in both cost and loss and better in one.
inline bool dominates(const Allocation& a, const Allocation& b) {
  return a.cost <= b.cost && a.loss <= b.loss && (a.cost < b.cost || a.loss < b.loss);
}

inline void add_to_front(std::vector<Allocation>& front, const Allocation& a) {
  for (const Allocation& f : front)
    if (dominates(f, a) || (f.cost == a.cost && f.loss == a.loss)) return;
  std::erase_if(front, [&](const Allocation& f) { return dominates(a, f); });
  front.push_back(a);
}

}  // namespace detail

/// The genetic search; the result is never over budget. A budget below the cheapest allocation
/// is refused, naming that minimum.
inline SearchResult genetic_search(const std::vector<SearchGroup>& groups, double budget,
                                   const GeneticParams& p = {}) {
  validate(groups);
  check(p.population >= 2 && p.generations >= 0 && p.tournament >= 1 && p.elite >= 0 &&
            p.elite < p.population,
        "genetic search: population >= 2, generations >= 0, tournament >= 1 and elite < "
        "population expected, got ",
        p.population, ", ", p.generations, ", ", p.tournament, ", ", p.elite);
  const size_t n = groups.size();
  SearchResult r;
  for (const SearchGroup& g : groups) {
    r.min_cost += *std::min_element(g.cost.begin(), g.cost.end());
    r.max_cost += *std::max_element(g.cost.begin(), g.cost.end());
  }
  check(budget >= r.min_cost * (1 - 1e-12), "bit allocation: budget ", budget,
        " is below the cheapest allocation possible (", r.min_cost, ")");
  const double mutation = p.mutation >= 0 ? p.mutation : 1.0 / static_cast<double>(n);
  Rng rng(p.seed);
  auto uniform01 = [&] { return static_cast<double>(rng.next_u64() >> 11) * 0x1.0p-53; };
  auto below = [&](size_t k) { return static_cast<int>(rng.below(static_cast<uint64_t>(k))); };

  auto make = [&](std::vector<int> opt) {
    detail::repair(groups, budget, opt);
    Allocation a = evaluate(groups, std::move(opt));
    ++r.evaluated;
    detail::add_to_front(r.pareto, a);
    return a;
  };
  std::vector<Allocation> pop;
  {  // the cheapest allocation, the dearest (repaired) and random ones
    std::vector<int> lo(n), hi(n);
    for (size_t g = 0; g < n; ++g) {
      lo[g] = detail::cheapest(groups[g]);
      hi[g] = static_cast<int>(std::max_element(groups[g].cost.begin(), groups[g].cost.end()) -
                               groups[g].cost.begin());
    }
    pop.push_back(make(lo));
    pop.push_back(make(hi));
  }
  while (static_cast<int>(pop.size()) < p.population) {
    std::vector<int> opt(n);
    for (size_t g = 0; g < n; ++g) opt[g] = below(groups[g].loss.size());
    pop.push_back(make(std::move(opt)));
  }
  auto by_loss = [](const Allocation& a, const Allocation& b) {
    return a.loss < b.loss || (a.loss == b.loss && a.cost < b.cost);
  };
  auto pick = [&]() -> const Allocation& {
    size_t best = static_cast<size_t>(below(pop.size()));
    for (int t = 1; t < p.tournament; ++t) {
      const size_t c = static_cast<size_t>(below(pop.size()));
      if (by_loss(pop[c], pop[best])) best = c;
    }
    return pop[best];
  };
  for (int gen = 0; gen < p.generations; ++gen) {
    std::sort(pop.begin(), pop.end(), by_loss);
    std::vector<Allocation> next(pop.begin(), pop.begin() + p.elite);
    while (static_cast<int>(next.size()) < p.population) {
      const Allocation &a = pick(), &b = pick();
      std::vector<int> child = a.option;
      if (uniform01() < p.crossover)
        for (size_t g = 0; g < n; ++g)
          if (rng.next_u64() & 1) child[g] = b.option[g];
      for (size_t g = 0; g < n; ++g)
        if (uniform01() < mutation) child[g] = below(groups[g].loss.size());
      next.push_back(make(std::move(child)));
    }
    pop = std::move(next);
  }
  r.best = *std::min_element(pop.begin(), pop.end(), by_loss);
  // One-gene local improvement of the best: any single option change within budget that
  // lowers the sensitivity, until none does.
  for (bool improved = true; improved;) {
    improved = false;
    for (size_t g = 0; g < n; ++g)
      for (size_t o = 0; o < groups[g].loss.size(); ++o) {
        std::vector<int> opt = r.best.option;
        opt[g] = static_cast<int>(o);
        Allocation a = evaluate(groups, std::move(opt));
        ++r.evaluated;
        if (a.cost <= budget && a.loss < r.best.loss) {
          detail::add_to_front(r.pareto, a);
          r.best = std::move(a);
          improved = true;
        }
      }
  }
  std::sort(r.pareto.begin(), r.pareto.end(),
            [](const Allocation& a, const Allocation& b) { return a.cost < b.cost; });
  check(r.best.cost <= budget, "bit allocation: internal error, best allocation over budget");
  return r;
}

/// Every allocation, for problems small enough to enumerate (tests, tiny models).
inline Allocation exhaustive_search(const std::vector<SearchGroup>& groups, double budget) {
  validate(groups);
  std::vector<int> opt(groups.size(), 0);
  Allocation best;
  best.loss = std::numeric_limits<double>::infinity();
  while (true) {
    Allocation a = evaluate(groups, opt);
    if (a.cost <= budget && a.loss < best.loss) best = std::move(a);
    size_t g = 0;
    while (g < groups.size() && ++opt[g] == static_cast<int>(groups[g].loss.size())) opt[g++] = 0;
    if (g == groups.size()) break;
  }
  check(!best.option.empty(), "bit allocation: no allocation within budget ", budget);
  return best;
}

}  // namespace brecq::mixed
