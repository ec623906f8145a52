import * as fs from "node:fs";
import { dirname } from "node:path";
import { openLocalDir, type LocalDir } from "./local-dir.ts";

/**
 * A directory only this daemon may change (the disk tier of the cache): sub inside base, made 0700.
 * Refused, naming the culprit, unless base and every directory above it belong to root or this user
 * and no other user can write to them (sticky directories like /tmp excepted): otherwise another user
 * could put a symlink or their own bytes where the daemon keeps copies it serves as other nodes' files.
 */
export function openPrivateDir(base: string, sub: string): LocalDir {
  // A symlink on the way is another user's choice of where root writes, unless root owns it.
  for (let p = base; p !== "/"; p = dirname(p)) {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(p);
    } catch {
      continue;
    }
    if (st.isSymbolicLink() && st.uid !== 0) throw new Error(`cache dir ${base}: ${p} is a symlink of uid ${st.uid}, who could choose where mcfs keeps copies; use a path without it`);
  }
  if (!fs.existsSync(base)) fs.mkdirSync(base, { recursive: true, mode: 0o700 });
  const real = fs.realpathSync(base);
  const me = process.geteuid?.() ?? 0;
  for (let p = real; ; p = dirname(p)) {
    const st = fs.lstatSync(p);
    const sticky = (st.mode & 0o1000) !== 0;
    if (st.uid !== 0 && st.uid !== me) throw new Error(`cache dir ${base}: ${p} belongs to uid ${st.uid}, who could swap what mcfs keeps there; use a directory owned by root or by the user running mcfs`);
    if (p === real ? st.mode & 0o022 : st.mode & 0o022 && !sticky) throw new Error(`cache dir ${base}: ${p} is writable by other users (mode ${(st.mode & 0o7777).toString(8)}); use a directory no other user can write`);
    if (p === "/") break;
  }
  const top = openLocalDir(real);
  try {
    top.ensureDir(`/${sub}`);
    top.chmod(`/${sub}`, 0o700);
  } finally {
    top.close();
  }
  return openLocalDir(`${real}/${sub}`);
}
