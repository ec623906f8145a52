import { describe, expect, test } from "bun:test";
import { compareNames } from "../../src/vfs/name-order.ts";

describe("natural order of names", () => {
  test("numbers in names compare as numbers, the rest by code unit; the order is total", () => {
    const sorted = ["", "a", "f", "f0", "f00", "f1", "f01", "f2", "f9", "f10", "f10a", "f10b", "f011x", "f100", "f1000", "frame_2_b", "frame_10_a", "g1", "tile-0009", "tile-0010", "tile-0100", "z"];
    const shuffled = [...sorted].reverse();
    for (let i = 0; i < shuffled.length; i += 3) [shuffled[i], shuffled[shuffled.length - 1 - i]] = [shuffled[shuffled.length - 1 - i]!, shuffled[i]!];
    expect(shuffled.sort(compareNames)).toEqual(sorted);
    for (const a of sorted) for (const b of sorted) expect(Math.sign(compareNames(a, b))).toBe(-Math.sign(compareNames(b, a)) || 0);
  });
  test("digits beyond any integer's size still compare by value", () => {
    expect(compareNames("x123456789012345678901234567890", "x123456789012345678901234567891")).toBeLessThan(0);
    expect(compareNames("x99999999999999999999", "x100000000000000000000")).toBeLessThan(0);
  });
});
