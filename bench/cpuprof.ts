/**
 * A Bun --cpu-prof profile (bench/probe.ts with PROF=dir) by function: self time, and time with
 * callees. UNDER=text: self time of what runs under frames whose name has text. CALLERS=text: where
 * frames whose name has text were called from (four frames up).
 *
 * Usage: bun bench/cpuprof.ts FILE.cpuprofile [top]
 */
import * as fs from "node:fs";

interface Profile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
}

const [file, topArg] = process.argv.slice(2);
if (!file) {
  console.error("usage: bun bench/cpuprof.ts FILE.cpuprofile [top]");
  process.exit(2);
}
const TOP = Number(topArg ?? 30);
const p = JSON.parse(fs.readFileSync(file, "utf8")) as Profile;
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
/**
 * Microseconds sampled in each node itself: samples times the median interval. A sample's own delta
 * would count the thread's idle time before it (the profiler samples only while JS runs).
 */
const interval = [...p.timeDeltas].sort((a, b) => a - b)[p.timeDeltas.length >> 1] ?? 1000;
const self = new Map<number, number>();
for (const id of p.samples) self.set(id, (self.get(id) ?? 0) + interval);
const name = (id: number) => {
  const c = byId.get(id)!.callFrame;
  return `${c.functionName || "(anonymous)"} ${c.url.split("/").slice(-2).join("/")}:${c.lineNumber}`;
};
const up = (id: number) => {
  const chain: number[] = [];
  for (let x = parent.get(id); x !== undefined; x = parent.get(x)) chain.push(x);
  return chain;
};

function show(title: string, m: Map<string, number>, of: number): void {
  console.log(`== ${title} (${(of / 1e6).toFixed(2)} s)`);
  for (const [k, t] of [...m].sort((a, b) => b[1] - a[1]).slice(0, TOP)) console.log(`${((100 * t) / of).toFixed(1).padStart(5)}%  ${k}`);
}

const add = (m: Map<string, number>, k: string, t: number) => m.set(k, (m.get(k) ?? 0) + t);
let all = 0;
const selfBy = new Map<string, number>(), totalBy = new Map<string, number>();
for (const [id, t] of self) {
  all += t;
  add(selfBy, name(id), t);
  for (const k of new Set([name(id), ...up(id).map(name)])) add(totalBy, k, t);
}
show("self", selfBy, all);
show("with callees", totalBy, all);

const under = process.env.UNDER, callers = process.env.CALLERS;
if (under) {
  const m = new Map<string, number>();
  let sum = 0;
  for (const [id, t] of self) {
    if (![id, ...up(id)].some((x) => name(x).includes(under))) continue;
    sum += t;
    add(m, name(id), t);
  }
  show(`self time under ${under}`, m, sum);
}
if (callers) {
  const m = new Map<string, number>();
  let sum = 0;
  for (const [id, t] of self) {
    if (!name(id).includes(callers)) continue;
    sum += t;
    add(m, up(id).slice(0, 4).map(name).join(" < "), t);
  }
  show(`callers of ${callers}`, m, sum);
}
