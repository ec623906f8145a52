import * as fs from "node:fs";
import { dirname } from "node:path";
import type { MetadataStore, TodoEntry } from "../meta/store.ts";
import type { Logger } from "../util/log.ts";

/**
 * Makes the local disk follow renames and deletes that other nodes did to files this node holds,
 * from this node's todo list: at start (changes made while it was down) and when told.
 */
export interface TodoApplier {
  /** Apply every queued change; resolves when done. Calls are serialized. */
  drain(): Promise<void>;
}

function safe(p: string): boolean {
  return p.startsWith("/") && !p.includes("\0") && !p.split("/").some((s) => s === ".." || s === ".") && p.split("/")[1] !== ".mcfs";
}

export interface TodoApplierOptions {
  rootPath: string;
  nodeId: string;
  store: MetadataStore;
  log: Logger;
  /** Whether this node has ino open for writing: its close will make it the holder again. */
  writing(ino: number): boolean;
}

export function createTodoApplier(o: TodoApplierOptions): TodoApplier {
  const at = (p: string) => o.rootPath + p;
  const exists = (p: string) => {
    try {
      fs.lstatSync(p);
      return true;
    } catch {
      return false;
    }
  };

  function move(from: string, to: string): void {
    if (!exists(from)) return;
    if (exists(to)) fs.rmSync(to, { recursive: true, force: true });
    fs.mkdirSync(dirname(to), { recursive: true });
    fs.renameSync(from, to);
  }

  async function apply(e: TodoEntry): Promise<void> {
    const paths = e.op === "mv" || e.op === "swap" ? [e.from, e.to] : [e.path];
    if (!paths.every(safe)) {
      o.log.warn({ entry: e }, "todo entry with an unsafe path ignored");
      return;
    }
    switch (e.op) {
      case "rm":
        if (exists(at(e.path)) && !fs.lstatSync(at(e.path)).isDirectory()) fs.unlinkSync(at(e.path));
        return;
      case "rmdir":
        fs.rmSync(at(e.path), { recursive: true, force: true });
        return;
      case "mv":
        move(at(e.from), at(e.to));
        return;
      case "drop":
        if (o.writing(e.ino) || (await o.store.locations(e.ino)).has(o.nodeId)) return;
        if (exists(at(e.path)) && !fs.lstatSync(at(e.path)).isDirectory()) fs.unlinkSync(at(e.path));
        return;
      case "swap": {
        const tmp = `${at(e.to)}.mcfs-swap-${process.pid}`;
        move(at(e.to), tmp);
        move(at(e.from), at(e.to));
        move(tmp, at(e.from));
        return;
      }
    }
  }

  let chain: Promise<void> = Promise.resolve();
  return {
    drain() {
      chain = chain.then(async () => {
        const entries = await o.store.takeTodo();
        for (const e of entries) {
          try {
            await apply(e);
          } catch (err) {
            o.log.error({ entry: e, err: (err as Error).message }, "could not apply another node's change to the local disk");
          }
        }
        if (entries.length) o.log.info({ changes: entries.length }, "applied other nodes' renames and deletes to the local disk");
      }).catch((err: unknown) => o.log.warn({ err: (err as Error).message }, "reading the todo list failed"));
      return chain;
    },
  };
}
