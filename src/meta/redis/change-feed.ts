/**
 * The change feed: what this node changed goes to the others on P inval (they drop their caches and,
 * when asked, acknowledge on P ack:{origin}); changes of local files queued for this node wait in
 * P todo:{node}.
 */
import type { RedisClient } from "../redis-connect.ts";
import type { ChangeFeed, Invalidation, NodeState, TodoEntry } from "../store.ts";
import type { Keys } from "./keys.ts";
import { awaits, createChangeOutbox, WATCH_PROOF_MS, type FeedMessage, type SlowNodesEvent } from "../change-outbox.ts";

/** How often the subscriber proves its feed current (watchesHold): a few times within WATCH_PROOF_MS. */
const PROOF_EVERY_MS = 100;
/** How long a change message lost on its way is sent again: past that this node's heartbeat has run out (NODE_TTL_MS), and the others have dropped what they cached (ChangeFeed.subscribe: "node gone"). */
const PUBLISH_RETRY_MS = 30_000;

export interface ChangeFeedOptions {
  /** This node: the origin of the changes it publishes. */
  nodeId: string;
  /** False: publish waits for no acknowledgements but watchers' (see RedisStoreOptions). */
  waitForAcks?: boolean;
  /** No other node shares this Redis: nothing is sent (see RedisStoreOptions.alone). */
  alone?: boolean | undefined;
  onSlowNodes?: (event: SlowNodesEvent, nodes: string[]) => void;
  /** The membership, for which nodes are live (those are waited for). */
  nodes: () => Promise<Map<string, NodeState>>;
}

export interface RedisChangeFeed extends ChangeFeed {
  /**
   * Tell other nodes what changed. Sent behind the change on the same connection, before the caller
   * hears the change is done; changes completed together (one batch of Redis replies) go as one
   * message, in order, so a burst costs the other nodes one message, not thousands.
   * With wait, the promise resolves once every live node has acknowledged the message (its kernel
   * has dropped what it cached), or after a bound (see change-outbox.ts): a rename or unlink is then visible everywhere
   * when it returns. Otherwise it resolves at once. watchers: see ChangeOutbox.publish.
   */
  publish(ch: Partial<Omit<Invalidation, "origin">>, wait?: boolean, watchers?: readonly string[]): Promise<void>;
  /** Stop listening (the subscriber's own connection). */
  close(): Promise<void>;
}

export function createChangeFeed(client: RedisClient, keys: Keys, opts: ChangeFeedOptions): RedisChangeFeed {
  let peers: { at: number; ids: Promise<string[]> } | undefined;
  let refreshing = false;
  /** Every live node waits for watchers (NodeInfo.watches), at the last look at the membership. */
  let everyoneWaits = false;
  let subscriber: ReturnType<typeof client.duplicate> | undefined;
  let proving: ReturnType<typeof setInterval> | undefined;
  /** When the last answered PING on the subscriber was sent (performance.now): every message published before then has been heard. */
  let currentAsOf = -Infinity;
  let proofOut = false;
  const holdListeners: ((forMs: number) => void)[] = [];
  /** A client that never subscribed (the CSI controller) listens for acknowledgements alone once a change waits for watchers. */
  let ackListener: Promise<ReturnType<typeof client.duplicate> | undefined> | undefined;
  function listenForAcks(): Promise<boolean> {
    ackListener ??= (async () => {
      const s = client.duplicate();
      s.on("error", () => {});
      await s.connect();
      await s.subscribe(keys.ack(opts.nodeId), (m) => outbox.acked(m));
      return s;
    })().catch(() => {
      // Tried again by the next change that waits.
      ackListener = undefined;
      return undefined;
    });
    return ackListener.then((s) => s !== undefined);
  }
  const tellHold = (forMs: number) => {
    for (const l of holdListeners) l(forMs);
  };

  /** Live nodes other than this one, and whether each waits for watchers. */
  const load = () =>
    opts.nodes().then(
      (all) => {
        const live = [...all.values()].filter((n) => n.alive && n.id !== opts.nodeId);
        everyoneWaits = live.every((n) => n.watches === true);
        const now = new Map(live.map((n) => [n.id, n.startedAt]));
        if (wasLive && [...wasLive].some(([id, at]) => now.get(id) !== at)) nodeGone?.();
        wasLive = now;
        if (!everyoneWaits) tellHold(0);
        return live.map((n) => n.id);
      },
      () => {
        everyoneWaits = false;
        tellHold(0);
        return [];
      },
    );
  // The first tick looks at once: until then no watch holds.
  let lastLook = -Infinity;

  /**
   * A message lost on its way (the connection dropped under it) is sent again: a node watching what
   * it changed would otherwise never hear of it. Receivers apply a message as often as it comes.
   */
  async function publishUntilOut(m: string): Promise<void> {
    const end = Date.now() + PUBLISH_RETRY_MS;
    for (let pause = 10; ; pause = Math.min(pause * 2, 200)) {
      try {
        await client.publish(keys.inval, m);
        return;
      } catch (e) {
        if (Date.now() >= end) throw e;
      }
      await Bun.sleep(pause);
    }
  }
  /** Live nodes at the last look (id -> startedAt), and what hears that one stopped or restarted since. */
  let wasLive: Map<string, number> | undefined;
  let nodeGone: (() => void) | undefined;

  /** Live nodes other than this one; refreshed in the background once a second, never waited for after the first time. */
  function livePeers(): Promise<string[]> {
    if (!peers) peers = { at: Date.now(), ids: load() };
    else if (Date.now() - peers.at > 1000 && !refreshing) {
      refreshing = true;
      void load().then((ids) => {
        peers = { at: Date.now(), ids: Promise.resolve(ids) };
        refreshing = false;
      });
    }
    return peers.ids;
  }

  const outbox = createChangeOutbox({
    nodeId: opts.nodeId,
    waitForAcks: opts.waitForAcks,
    onSlowNodes: opts.onSlowNodes,
    peers: livePeers,
    listen: () => (subscriber ? Promise.resolve(true) : listenForAcks()),
    send: publishUntilOut,
  });

  return {
    // Alone, a message would be built and stringified for nobody (a sole node's every create and close).
    publish: opts.alone ? () => Promise.resolve() : outbox.publish,
    async subscribe(onChanges, resync) {
      nodeGone = () => resync("node gone");
      subscriber = client.duplicate();
      subscriber.on("error", () => {});
      // A reconnect means messages may have been lost meanwhile.
      let first = true;
      subscriber.on("ready", () => {
        if (!first) resync("reconnected");
        first = false;
      });
      await subscriber.connect();
      // This node's own messages come back too: known by their first bytes (the outbox writes origin first), not parsed.
      const own = `{"origin":${JSON.stringify(opts.nodeId)},`;
      await subscriber.subscribe(keys.inval, (msg) => {
        if (msg.startsWith(own)) return;
        let m: FeedMessage;
        try {
          m = JSON.parse(msg) as typeof m;
        } catch {
          return;
        }
        if (m.origin === opts.nodeId || !Array.isArray(m.changes)) return;
        const ack = m.ack ? () => void client.publish(keys.ack(m.origin), `${opts.nodeId} ${m.seq}`).catch(() => {}) : undefined;
        onChanges(m.changes, ack, outbox.waiting(), awaits(m, opts.nodeId));
      });
      await subscriber.subscribe(keys.ack(opts.nodeId), outbox.acked);
      // No other node to hear from: nothing to prove, and no wakeups of an idle node (a compute node's jitter).
      if (opts.alone) return;
      // Redis answers a PING on a subscribed connection in order with the messages: its answer comes
      // behind every message published before the PING got there.
      const sub = subscriber;
      const prove = async () => {
        // Its own look at the membership: loaded here, the list of peers a change waits for would be
        // as old as the last look whenever a change comes, missing nodes that joined since.
        let looked: Promise<unknown> | undefined;
        if (performance.now() - lastLook > 1000) {
          lastLook = performance.now();
          looked = load();
        }
        if (proofOut || !sub.isReady) return;
        proofOut = true;
        const sent = performance.now();
        const answered = await sub.ping().then(
          () => true,
          () => false,
        );
        if (answered && sent > currentAsOf) currentAsOf = sent;
        await looked;
        proofOut = false;
        if (answered && everyoneWaits) tellHold(WATCH_PROOF_MS - (performance.now() - currentAsOf));
      };
      // Proven once before this returns (before the mount): another node's rename in the first
      // moments waits for this node's ack like any later one, and an open that raced it may go on.
      // Unproven, every such open was refused, and one retried by the kernel often twice (ESTALE).
      await prove();
      proving = setInterval(() => void prove(), PROOF_EVERY_MS);
      proving.unref?.();
    },
    watchesHold: () => everyoneWaits && subscriber !== undefined && performance.now() - currentAsOf < WATCH_PROOF_MS,
    onWatchesHold: (l) => void holdListeners.push(l),
    async takeTodo() {
      const key = keys.todo(opts.nodeId);
      const [items] = (await client.multi().lRange(key, 0, -1).del(key).exec()) as unknown as [string[]];
      return items.map((i) => JSON.parse(i) as TodoEntry);
    },
    todoWaiting: async () => (await client.lLen(keys.todo(opts.nodeId))) > 0,
    async close() {
      // Out before the store's connection closes (it sends what it was given first).
      outbox.flush();
      clearInterval(proving);
      currentAsOf = -Infinity;
      tellHold(0);
      if (subscriber?.isOpen) await subscriber.disconnect().catch(() => {});
      const alone = await ackListener;
      if (alone?.isOpen) await alone.disconnect().catch(() => {});
    },
  };
}
