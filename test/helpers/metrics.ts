import type { TestDaemon } from "./daemon.ts";

/** The port a daemon started with --metrics-port 0 serves its metrics on, from its log. */
export function metricsPort(d: TestDaemon): number {
  const m = /"port":(\d+),"msg":"serving metrics at \/metrics"/.exec(d.log());
  if (!m) throw new Error(`no metrics port in the log:\n${d.log()}`);
  return Number(m[1]);
}

/** One sample of a scrape: the sum of the series of name whose labels include these. */
export async function scrape(d: TestDaemon): Promise<(name: string, labels?: Record<string, string>) => number> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort(d)}/metrics`)).text();
  return (name, labels = {}) => {
    let sum = 0;
    for (const line of text.split("\n")) {
      const m = /^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
      if (!m || m[1] !== name) continue;
      const ls = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
      if (Object.entries(labels).every(([k, v]) => ls[k] === v)) sum += Number(m[3]);
    }
    return sum;
  };
}
