import { deepEqual, equal } from "node:assert/strict";
import { LogBudget, SourceLogBudgets } from "../../src/ops/log_budget.ts";

Deno.test("log budget: the first lines of each window pass, the rest are counted onto the next line written", () => {
  let t = 0;
  const budget = new LogBudget(3, 10_000, () => t);
  const results = Array.from({ length: 1000 }, () => {
    t += 5; // 1,000 events in 5 s
    return budget.spend();
  });
  deepEqual(results.slice(0, 4), [0, 0, 0, null]);
  equal(results.filter((r) => r !== null).length, 3, "3 lines for 1,000 events");
  t += 10_000;
  equal(budget.spend(), 997, "the next window's first line says how many were held back");
  equal(budget.spend(), 0);
});

Deno.test("source log budgets: each source spends its own budget; the least recently heard is forgotten first", () => {
  let t = 0;
  const budgets = new SourceLogBudgets(2, 10_000, { maxSources: 2, now: () => t });
  deepEqual([budgets.spend("a"), budgets.spend("a"), budgets.spend("a"), budgets.spend("a")], [0, 0, null, null]);
  deepEqual([budgets.spend("b"), budgets.spend("b"), budgets.spend("b")], [0, 0, null], "a's flood costs b nothing");
  t += 10_000;
  equal(budgets.spend("a"), 2, "a's next line says how many of its lines were held back");
  equal(budgets.spend("c"), 0, "a third source makes b, heard from least recently, forgotten");
  equal(budgets.spend("a"), 0);
  t += 10_000;
  equal(budgets.spend("b"), 0, "b starts afresh: its held-back count was forgotten with it");
});
