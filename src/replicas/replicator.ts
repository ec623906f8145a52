/**
 * Replicas on one node. After a close publishes a version here, the other nodes a file's directory
 * wants copies on are asked for them (their copy lists in the store); and this node makes the
 * copies asked of it, one at a time (the bandwidth bound): fetched into its root path as any holder's
 * file is, then listed as a holder at that version — unless the file changed meanwhile, when the
 * stale copy is removed again. An order leaves the list once done with, so one cut short by a crash
 * is made at the restart.
 */
import type { LocalDir } from "../local/local-dir.ts";
import { RESERVED_NAME } from "../local/root-layout.ts";
import type { CopyOrder, Inode, MetadataStore, NodeState } from "../meta/store.ts";
import { errnoOf, E } from "../util/errno.ts";
import { isReg } from "../util/file-mode.ts";
import { fileIdentity } from "../meta/store.ts";
import type { Logger } from "../util/log.ts";
import type { ReplicaCount } from "./replica-count.ts";
import { pickTargets } from "./targets.ts";

/** Where copies arrive before they are put at their paths; emptied at start (a copy cut short). */
const ASIDE = `/${RESERVED_NAME}/replicas`;
/** How often the copy list is looked at when it was empty. */
const POLL_MS = 1_000;
/** Orders taken from the list at once. */
const TAKE = 8;

export interface Replicator {
  /** This node published ino at version (path, in directory dir): ask other nodes for the copies wanted. */
  published(r: Inode, path: string): void;
  close(): Promise<void>;
}

export interface ReplicatorOptions {
  store: MetadataStore;
  nodeId: string;
  root: LocalDir;
  log: Logger;
  count: ReplicaCount;
  /** Fetch ino's bytes at version (at path on its holders) into this node's root path at into. */
  fetchTo(ino: number, version: number, path: string, size: number, owner: Inode, into: string): Promise<void>;
  /** The inode's current path in the namespace, read fresh (a rename elsewhere is not heard here). */
  pathOf(ino: number): Promise<string>;
  /** The path of a name in directory parent, read fresh. */
  childPath(parent: number, name: string): Promise<string>;
  /** Give the bytes at from one more local name (a hard link), replacing a stale leftover there. */
  linkLocal(from: string, to: string): void;
  /** Move the local file at from to to, replacing a stale leftover there and making missing directories. */
  moveLocal(from: string, to: string): void;
  /** Whether ino is being written here (its bytes are this node's to publish, not to copy). */
  writing(ino: number): boolean;
  /** A copy was made here (for metrics). */
  copied?: (bytes: number) => void;
}

export function createReplicator(o: ReplicatorOptions): Replicator {
  const { store, nodeId, log } = o;
  o.root.remove(ASIDE);
  let nodes: { at: number; all: Promise<Map<string, NodeState>> } | undefined;
  const liveNodes = () => {
    if (!nodes || Date.now() - nodes.at > 2_000) nodes = { at: Date.now(), all: store.nodes() };
    return nodes.all;
  };

  async function ask(r: Inode, path: string): Promise<void> {
    const want = await o.count.of(r.parent);
    if (want <= 1) return;
    const loc = await store.locations(r.ino);
    const have = new Set([...loc].filter(([, v]) => v === r.version).map(([n]) => n));
    const targets = pickTargets(await liveNodes(), new Set([...have, nodeId]), want - have.size);
    for (const t of targets) await store.queueCopy(t, { ino: r.ino, version: r.version, path });
    if (targets.length < want - have.size) log.warn({ path, ino: r.ino, want, have: have.size, asked: targets.length }, "fewer live nodes than the copies wanted");
  }

  /** Make one copy asked of this node; false when there was nothing to do. */
  async function make(order: CopyOrder): Promise<boolean> {
    let r: Inode;
    try {
      r = await store.get(order.ino);
    } catch (e) {
      if (errnoOf(e) === E.ENOENT) return false;
      throw e;
    }
    // Another version by now: its own writer asks for its copies.
    if (r.version !== order.version || !isReg(r.mode) || o.writing(r.ino)) return false;
    const loc = await store.locations(r.ino);
    if (loc.get(nodeId) === r.version) return false;
    // Made on live nodes meanwhile (asked of another while this node was down, say).
    const live = await liveNodes();
    if ([...loc].filter(([n, v]) => v === r.version && live.get(n)?.alive).length >= (await o.count.of(r.parent))) return false;
    // Fetched aside, then put where the namespace has the file once it is whole: a rename meanwhile
    // (this node is not a holder yet, so no one tells it) does not leave the copy under an old name.
    const aside = `${ASIDE}/${r.ino}.${r.version}`;
    o.root.ensureDir(ASIDE);
    await o.fetchTo(r.ino, r.version, await o.pathOf(r.ino), r.size, r, aside);
    let path = await o.pathOf(r.ino);
    o.moveLocal(aside, path);
    if (!(await store.addHolder(r.ino, nodeId, r.version))) {
      // Written again while it came: this copy is of no version, and no one would tell this node to drop it.
      if (o.root.identityOf(path) === fileIdentity(r.ino, r.gen) && (await store.locations(r.ino)).get(nodeId) === undefined) o.root.unlink(path);
      return false;
    }
    // Renamed between the path read and the listing: from the listing on, renames reach this node's todo list.
    const now = await o.pathOf(r.ino);
    if (now !== path) {
      o.moveLocal(path, now);
      path = now;
    }
    // A holder has the bytes under every name of the file: its hard links too.
    if (r.nlink > 1) for (const { parent, name } of await store.extraNames(r.ino)) o.linkLocal(path, await o.childPath(parent, name));
    o.copied?.(r.size);
    return true;
  }

  let closed = false;
  let wake: (() => void) | undefined;
  const loop = (async () => {
    while (!closed) {
      let orders: CopyOrder[] = [];
      try {
        orders = await store.nextCopies(nodeId, TAKE);
      } catch (e) {
        log.warn({ err: (e as Error).message }, "could not read this node's copy list");
      }
      for (const order of orders) {
        try {
          await make(order);
        } catch (e) {
          log.warn({ ino: order.ino, path: order.path, err: (e as Error).message }, "could not make a replica; the next repair asks again");
        }
        await store.copyDone(nodeId, order).catch((e: unknown) => log.warn({ ino: order.ino, err: (e as Error).message }, "could not take a done copy off this node's list"));
      }
      if (orders.length) continue;
      await new Promise<void>((res) => {
        wake = res;
        setTimeout(res, POLL_MS);
      });
      wake = undefined;
    }
  })();

  return {
    published(r, path) {
      void ask(r, path).catch((e: unknown) => log.warn({ path, ino: r.ino, err: (e as Error).message }, "could not ask for replicas; the next repair does"));
    },
    async close() {
      closed = true;
      wake?.();
      await loop;
    },
  };
}
