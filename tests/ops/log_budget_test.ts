import { deepEqual, equal } from "node:assert/strict";
import { LogBudget } from "../../src/ops/log_budget.ts";

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
