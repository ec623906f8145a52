/**
 * Names in natural order: runs of digits compare as numbers ("f2" before "f10"), the rest by code
 * unit. Scientific workflows name their files by number (frame_7, tile-0042) and read them in that
 * order; a directory's listing order in Redis is its hash order, which predicts nothing.
 */
export function compareNames(a: string, b: string): number {
  let i = 0, j = 0;
  while (i < a.length && j < b.length) {
    const ca = a.charCodeAt(i), cb = b.charCodeAt(j);
    if (isDigit(ca) && isDigit(cb)) {
      // Leading zeros do not make a number bigger; then the longer run of digits is the bigger number.
      let si = i, sj = j;
      while (si < a.length && a.charCodeAt(si) === 48) si++;
      while (sj < b.length && b.charCodeAt(sj) === 48) sj++;
      let ei = si, ej = sj;
      while (ei < a.length && isDigit(a.charCodeAt(ei))) ei++;
      while (ej < b.length && isDigit(b.charCodeAt(ej))) ej++;
      if (ei - si !== ej - sj) return ei - si - (ej - sj);
      for (let k = 0; k < ei - si; k++) {
        const d = a.charCodeAt(si + k) - b.charCodeAt(sj + k);
        if (d) return d;
      }
      // Equal numbers: fewer leading zeros first, so that the order is total.
      if (si - i !== sj - j) return si - i - (sj - j);
      i = ei;
      j = ej;
      continue;
    }
    if (ca !== cb) return ca - cb;
    i++;
    j++;
  }
  return a.length - i - (b.length - j);
}

const isDigit = (c: number) => c >= 48 && c <= 57;
