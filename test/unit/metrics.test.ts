import { describe, expect, test } from "bun:test";
import { Histogram, Registry } from "prom-client";
import { createMetrics } from "../../src/metrics/metrics.ts";

describe("metrics", () => {
  test("the tallied latency histograms scrape as prom-client's own Histogram does, fed the same observations", async () => {
    const m = createMetrics();
    const ref = new Registry();
    const buckets = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
    const h = new Histogram({ name: "mcfs_fuse_operation_duration_seconds", help: "Time to answer a FUSE operation in JS", labelNames: ["op"], buckets, registers: [ref] });
    const seen: [string, number][] = [["open", 0.0003], ["open", 0.0005], ["lookup", 0.00001], ["open", 7], ["flush", 11], ["lookup", 0.001]];
    for (const [op, s] of seen) {
      m.fuseLatency.observe(op, s);
      h.observe({ op }, s);
    }
    const lines = (text: string) => text.split("\n").filter((l) => l.startsWith("mcfs_fuse_operation_duration_seconds")).sort();
    const ours = lines(await m.registry.metrics());
    expect(ours).toContain('mcfs_fuse_operation_duration_seconds_bucket{le="0.0005",op="open"} 2');
    expect(ours).toContain('mcfs_fuse_operation_duration_seconds_count{op="open"} 3');
    expect(ours).toEqual(lines(await ref.metrics()));
  });
});
