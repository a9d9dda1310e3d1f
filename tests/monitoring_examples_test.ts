/**
 * examples/grafana/broker-dashboard.json and examples/prometheus/alerts.yml
 * against a live broker-server's /metrics: every metric their PromQL names
 * exists, with every label they match, group by or print; and the rule file
 * has the structure Prometheus loads.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { parse } from "yaml";
import { clientConfig, serverConfig, startClient, startErp, startServer } from "./helpers/setup.ts";
import { echo } from "./helpers/apps.ts";

/** Labels Prometheus adds to every scraped sample. */
const SCRAPE_LABELS = ["instance", "job"];
/** Series Prometheus makes itself for each target. */
const SCRAPE_SERIES: Record<string, string[]> = { up: [] };

/** PromQL's functions, aggregations and keywords that the files may use. */
const PROMQL_WORDS = new Set([
  "sum",
  "min",
  "max",
  "avg",
  "count",
  "rate",
  "irate",
  "increase",
  "delta",
  "histogram_quantile",
  "absent",
  "clamp_min",
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "and",
  "or",
  "unless",
  "bool",
  "offset",
]);

/** Sample names of a Prometheus text exposition, each with its label names. */
export function parseExposition(text: string): Map<string, Set<string>> {
  const metrics = new Map<string, Set<string>>();
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? \S+$/.exec(line);
    if (!m) continue;
    const labels = metrics.get(m[1]!) ?? new Set<string>();
    for (const l of (m[3] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"/g)) labels.add(l[1]!);
    metrics.set(m[1]!, labels);
  }
  return metrics;
}

/** What a PromQL expression names: metrics, labels per selector, grouping labels, and words it does not know. */
export interface PromqlNames {
  metrics: string[];
  matchers: { metric: string; label: string }[];
  grouping: string[];
  unknown: string[];
}

/** Tokenizes `expr` (Grafana's `$variables` and strings removed) into the names it uses. */
export function promqlNames(expr: string): PromqlNames {
  const text = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""').replace(/\$\{?\w+\}?/g, "").replace(/\[[^\]]*\]/g, "");
  const names: PromqlNames = { metrics: [], matchers: [], grouping: [], unknown: [] };
  const clause = /\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g;
  for (const m of text.matchAll(clause)) names.grouping.push(...m[2]!.split(",").map((s) => s.trim()).filter(Boolean));
  const rest = text.replace(clause, " $1 ");
  for (const m of rest.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{([^}]*)\})?/g)) {
    const word = m[1]!;
    if (PROMQL_WORDS.has(word)) continue;
    if (/^(broker_|process_)/.test(word) || word in SCRAPE_SERIES) names.metrics.push(word);
    else names.unknown.push(word);
    for (const l of (m[3] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)/g)) {
      names.matchers.push({ metric: word, label: l[1]! });
    }
  }
  return names;
}

/** Problems of `expr` against the exposition's metrics, each a sentence naming `where`. */
export function checkExpr(expr: string, where: string, metrics: Map<string, Set<string>>): string[] {
  const names = promqlNames(expr);
  const problems = names.unknown.map((w) => `${where}: "${w}" is neither a metric of /metrics nor a PromQL word`);
  const labelsOf = (metric: string) =>
    new Set([...(metrics.get(metric) ?? SCRAPE_SERIES[metric] ?? []), ...SCRAPE_LABELS]);
  for (const metric of names.metrics) {
    if (!metrics.has(metric) && !(metric in SCRAPE_SERIES)) problems.push(`${where}: no metric ${metric} in /metrics`);
  }
  for (const { metric, label } of names.matchers) {
    if ((metrics.has(metric) || metric in SCRAPE_SERIES) && !labelsOf(metric).has(label)) {
      problems.push(`${where}: ${metric} has no label ${label}`);
    }
  }
  const anyLabels = new Set(names.metrics.flatMap((m) => [...labelsOf(m)]));
  for (const label of names.grouping) {
    if (!anyLabels.has(label)) problems.push(`${where}: no metric of the expression has the label ${label}`);
  }
  return problems;
}

/** Labels printed by `{{label}}` (Grafana legends) or `{{ $labels.label }}` (alert annotations) that `expr` lacks. */
export function checkPrinted(text: string, expr: string, where: string, metrics: Map<string, Set<string>>): string[] {
  const names = promqlNames(expr);
  const grouped = names.grouping.length > 0 && /\bby\s*\(/.test(expr);
  const available = grouped
    ? new Set(names.grouping)
    : new Set([...names.metrics.flatMap((m) => [...(metrics.get(m) ?? [])]), ...SCRAPE_LABELS]);
  const printed = [...text.matchAll(/\{\{\s*(?:\$labels\.)?([a-zA-Z_]\w*)\s*\}\}/g)].map((m) => m[1]!);
  return printed.filter((l) => !available.has(l)).map((l) => `${where}: prints the label ${l}, which it does not have`);
}

interface Target {
  expr: string;
  legendFormat?: string;
}

/** Every PromQL expression of the dashboard (panel targets, the variables' label_values), with where it is. */
export function dashboardExprs(dashboard: unknown): { where: string; expr: string; legend: string }[] {
  const d = dashboard as {
    panels: { title: string; targets?: Target[] }[];
    templating: { list: { name: string; definition?: string }[] };
  };
  const out = d.panels.flatMap((p) =>
    (p.targets ?? []).map((t) => ({ where: `panel "${p.title}"`, expr: t.expr, legend: t.legendFormat ?? "" }))
  );
  for (const v of d.templating.list) {
    const m = /^label_values\((\w+),\s*(\w+)\)$/.exec(v.definition ?? "");
    if (m) out.push({ where: `variable ${v.name}`, expr: `${m[1]}{${m[2]}=""}`, legend: "" });
  }
  return out;
}

/** Problems with the structure Prometheus expects of a rule file. */
export function checkRuleFile(rules: unknown): string[] {
  const problems: string[] = [];
  const file = rules as { groups?: unknown };
  if (!Array.isArray(file.groups) || file.groups.length === 0) return ["no groups[]"];
  for (const [i, group] of (file.groups as Record<string, unknown>[]).entries()) {
    if (typeof group.name !== "string" || group.name === "") problems.push(`groups[${i}] has no name`);
    if (!Array.isArray(group.rules) || group.rules.length === 0) problems.push(`groups[${i}] has no rules`);
    for (const rule of (group.rules ?? []) as Record<string, unknown>[]) problems.push(...checkRule(rule));
  }
  return problems;
}

function checkRule(rule: Record<string, unknown>): string[] {
  const name = String(rule.alert);
  const problems: string[] = [];
  const extra = Object.keys(rule).filter((k) => !["alert", "expr", "for", "labels", "annotations"].includes(k));
  if (extra.length) problems.push(`${name}: unexpected keys ${extra.join(", ")}`);
  if (typeof rule.alert !== "string" || !/^[A-Z][A-Za-z0-9]+$/.test(rule.alert)) problems.push(`${name}: bad alert`);
  if (typeof rule.expr !== "string" || rule.expr.trim() === "") problems.push(`${name}: no expr`);
  if (typeof rule.for !== "string" || !/^\d+[smhd]$/.test(rule.for)) problems.push(`${name}: for is not a duration`);
  const labels = rule.labels as Record<string, unknown> | undefined;
  if (!["critical", "warning"].includes(String(labels?.severity))) problems.push(`${name}: labels.severity`);
  const annotations = rule.annotations as Record<string, unknown> | undefined;
  for (const key of ["summary", "description"]) {
    if (typeof annotations?.[key] !== "string" || annotations[key] === "") problems.push(`${name}: annotations.${key}`);
  }
  return problems;
}

async function liveMetrics(): Promise<Map<string, Set<string>>> {
  await using erp = startErp(echo);
  const config = serverConfig([erp.port]);
  config.status = { enabled: true, listen: { hostname: "127.0.0.1", port: 0 }, accessKey: null };
  await using server = startServer(config);
  await using client = startClient(clientConfig([server.address.port]));
  const app = await Deno.connect({ hostname: "127.0.0.1", port: client.address.port });
  await app.write(new Uint8Array([1]));
  await app.read(new Uint8Array(1));
  const text = await (await fetch(`http://127.0.0.1:${server.statusAddress?.port}/metrics`)).text();
  app.close();
  return parseExposition(text);
}

Deno.test("the checker finds a misspelt metric, a missing label and a printed label the query lacks", () => {
  const metrics = parseExposition('broker_sessions{state="attached"} 1\nbroker_backend_up{server="A",address="x"} 1\n');
  deepEqual([...metrics.get("broker_sessions")!], ["state"]);
  equal(checkExpr('sum by (state) (broker_sessions{instance=~"$instance"})', "q", metrics).length, 0);
  deepEqual(checkExpr("sum(broker_sesions)", "q", metrics), ["q: no metric broker_sesions in /metrics"]);
  deepEqual(checkExpr('broker_sessions{cause="x"}', "q", metrics), ["q: broker_sessions has no label cause"]);
  deepEqual(checkExpr("sum by (server) (broker_sessions)", "q", metrics), [
    "q: no metric of the expression has the label server",
  ]);
  deepEqual(checkExpr("sum(rte(broker_sessions[5m]))", "q", metrics), [
    'q: "rte" is neither a metric of /metrics nor a PromQL word',
  ]);
  deepEqual(checkPrinted("{{server}}", "sum by (state) (broker_sessions)", "q", metrics), [
    "q: prints the label server, which it does not have",
  ]);
  equal(checkPrinted("{{ $labels.address }}", "broker_backend_up == 0", "q", metrics).length, 0);
  deepEqual(checkRuleFile({ groups: [{ name: "g", rules: [{ alert: "BrokerX", expr: "up", for: "1 minute" }] }] }), [
    "BrokerX: for is not a duration",
    "BrokerX: labels.severity",
    "BrokerX: annotations.summary",
    "BrokerX: annotations.description",
  ]);
});

Deno.test("the Grafana dashboard and the Prometheus alerts name only metrics and labels that /metrics has", async () => {
  const metrics = await liveMetrics();
  const dashboard = JSON.parse(await Deno.readTextFile("examples/grafana/broker-dashboard.json"));
  const rules = parse(await Deno.readTextFile("examples/prometheus/alerts.yml"));
  const problems = checkRuleFile(rules);
  const exprs = dashboardExprs(dashboard);
  ok(exprs.length >= 20, `the dashboard has its queries (${exprs.length})`);
  for (const { where, expr, legend } of exprs) {
    problems.push(...checkExpr(expr, where, metrics), ...checkPrinted(legend, expr, where, metrics));
  }
  for (const group of rules.groups) {
    for (const rule of group.rules) {
      const where = `alert ${rule.alert}`;
      const annotations = Object.values(rule.annotations).join(" ");
      problems.push(...checkExpr(rule.expr, where, metrics), ...checkPrinted(annotations, rule.expr, where, metrics));
    }
  }
  deepEqual(problems, []);
  // What the issue asks of them: sessions, resumes, outages, bytes, memory, ERP servers; down, expiring, buffers.
  const all = exprs.map((e) => e.expr).join("\n");
  for (
    const metric of [
      "broker_sessions",
      "broker_resumes_by_trigger_total",
      "broker_resume_duration_seconds_bucket",
      "broker_relayed_bytes_total",
      "broker_process_memory_bytes",
      "broker_backend_up",
      "broker_backend_sessions",
    ]
  ) match(all, new RegExp(`\\b${metric}\\b`), metric);
  deepEqual(
    rules.groups.flatMap((g: { rules: { alert: string }[] }) => g.rules.map((r) => r.alert)),
    ["BrokerDown", "BrokerBackendDown", "BrokerAllBackendsDown", "BrokerSessionsExpiring", "BrokerBuffersNearLimit"],
  );
});

Deno.test("/metrics has what MAX_BUFFERED counts and the limit itself", async () => {
  await using erp = startErp(echo);
  const config = serverConfig([erp.port], { MAX_BUFFERED: "64M" });
  config.status = { enabled: true, listen: { hostname: "127.0.0.1", port: 0 }, accessKey: null };
  await using server = startServer(config);
  const text = await (await fetch(`http://127.0.0.1:${server.statusAddress?.port}/metrics`)).text();
  match(text, /^broker_buffered_limit_bytes 67108864$/m);
  match(text, /^broker_buffered_bytes 0$/m);
});
