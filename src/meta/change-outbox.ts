import type { Invalidation } from "./store.ts";

/** Longest a rename or unlink waits for the other nodes to acknowledge it (a node that hangs). */
const ACK_WAIT_MS = 500;

/**
 * Longest a change nobody waits for is held back to go out with the next ones. Each message costs
 * every other node a wakeup, a decode and a pass over its caches (55 us here), and its origin a
 * PUBLISH: one writer's creates, a message each, cost the cluster more CPU than the creates. Held
 * 2 ms, a few go as one (one writer's creates with another node up: 1,650 -> 1,800-1,900 files/s,
 * the other node's CPU for them -65%). Only changes no node relies on hearing at once wait so: a
 * node that answers from what it heard (a watcher) is waited for, which sends the message at once.
 */
export const GATHER_MS = 2;

/**
 * How recent the last proof that this node's feed is current must be for its watches to hold: well
 * under ACK_WAIT_MS, the least a new version waits for a watcher that does not answer. A change whose
 * writer gave up on this node was published more than ACK_WAIT_MS before that writer returned; a proof
 * begun after the publish arrives behind the change on the same connection.
 */
export const WATCH_PROOF_MS = ACK_WAIT_MS - 150;

/** A message on the feed: changes of origin, whether it asks for acks, and the nodes its changes wait for (when they do). */
export interface FeedMessage {
  origin: string;
  seq: number;
  ack: boolean;
  waits?: string[];
  changes: Invalidation[];
}

/** Whether m's changes wait for node's acknowledgement before they return. */
export const awaits = (m: FeedMessage, node: string): boolean => Array.isArray(m.waits) && m.waits.includes(node);

/**
 * unresponsive: nodes a change waited for in vain, not waited for until they answer again; answering:
 * one of those answered; late watchers: watchers a new version waited for in vain (waited for again).
 */
export type SlowNodesEvent = "unresponsive" | "answering" | "late watchers";

export interface ChangeOutboxOptions {
  /** This node: the origin of the changes it publishes. */
  nodeId: string;
  /** False: publish waits for no acknowledgements but watchers' (see publish). */
  waitForAcks?: boolean | undefined;
  onSlowNodes?: ((event: SlowNodesEvent, nodes: string[]) => void) | undefined;
  /** Live nodes other than this one (those are waited for). */
  peers(): Promise<string[]>;
  /** Whether this node hears acknowledgements (it subscribed; else it begins to listen for them alone, if it can). */
  listen(): Promise<boolean>;
  /** Put one message on the feed: resolves once it is out (sent again meanwhile if lost on its way), rejects when given up. */
  send(message: string): Promise<void>;
}

/**
 * What a store's change feed does whatever carries it: changes completed together (or, when none
 * waits, within GATHER_MS) go out as one message, in order, and a waiting publish resolves once
 * every live node has acknowledged it (its kernel has dropped what it cached) or after ACK_WAIT_MS. A node that lets a wait run out is not
 * waited for by later changes until it answers again: a stopped node would otherwise cost every
 * rename and unlink on every node the full wait.
 */
export interface ChangeOutbox {
  /**
   * watchers: nodes to wait for whatever wait says, up to ACK_WAIT_MS each time, even those that let
   * a wait run out before: they answer opens of what changed without asking (ChangeFeed.watchesHold).
   * A client that cannot hear acknowledgements waits the whole ACK_WAIT_MS for them instead: their
   * trust is bounded by it.
   */
  publish(ch: Partial<Omit<Invalidation, "origin">>, wait?: boolean, watchers?: readonly string[]): Promise<void>;
  /** Send what is held back now (the store closing). */
  flush(): void;
  /** An acknowledgement message ("node seq") arrived for this node. */
  acked(message: string): void;
  /** Whether a change of this node waits for other nodes' acknowledgements now. */
  waiting(): boolean;
}

export function createChangeOutbox(o: ChangeOutboxOptions): ChangeOutbox {
  let outbox: Invalidation[] = [];
  let outboxWaits = false;
  let outboxWatchers = new Set<string>();
  let outboxDone: Promise<void> | undefined;
  // From a random start: a late acknowledgement of a message of this node's previous run must not match one of this run's.
  let seq = Math.floor(Math.random() * 2 ** 40);
  const awaitingAcks = new Map<number, { need: Set<string>; done: () => void }>();
  const unresponsive = new Set<string>();
  /** The message being gathered: its send, and the timer that sends it (none once it is due at once). */
  let pending: (() => void) | undefined;
  let gathering: ReturnType<typeof setTimeout> | undefined;
  const sendNow = () => {
    clearTimeout(gathering);
    gathering = undefined;
    const go = pending;
    pending = undefined;
    go?.();
  };

  return {
    publish(ch, wait = false, watchers = []) {
      const inv: Invalidation = { origin: o.nodeId, added: ch.added ?? [], removed: ch.removed ?? [], inodes: ch.inodes ?? [], data: ch.data ?? [], todo: ch.todo ?? [], ...(ch.touched ? { touched: ch.touched } : {}) };
      wait &&= o.waitForAcks !== false;
      const watched = watchers.some((id) => id !== o.nodeId);
      outboxWaits ||= wait;
      if (watched) for (const id of watchers) if (id !== o.nodeId) outboxWatchers.add(id);
      wait ||= watched;
      if (outbox.push(inv) > 1) {
        // Waited for: what was gathered goes with it, in order, now (sendNow stops the timer).
        if (wait && gathering) queueMicrotask(sendNow);
        return wait ? outboxDone! : Promise.resolve();
      }
      let settle!: () => void;
      outboxDone = new Promise<void>((res) => (settle = res));
      const done = outboxDone;
      pending = () => {
        const batch = outbox;
        const waitAll = outboxWaits;
        const watchersNow = outboxWatchers;
        const ack = waitAll || watchersNow.size > 0;
        outbox = [];
        outboxWaits = false;
        outboxWatchers = new Set();
        const s = ++seq;
        // origin first: a node knows its own messages by their first bytes.
        const send = (waits?: string[]) => o.send(JSON.stringify({ origin: o.nodeId, seq: s, ack, ...(waits ? { waits } : {}), changes: batch } satisfies FeedMessage));
        if (!ack) {
          void send().catch(() => {});
          return settle();
        }
        // The waiter is registered before the message goes out: an ack can never come before it.
        void (waitAll ? o.peers() : Promise.resolve([])).then(async (all) => {
          // A watcher is waited for even when it let a wait run out, or seems gone: it may answer
          // opens meanwhile. It watches no more once this change is made, so it costs one wait at most.
          const peers = all.filter((id) => !unresponsive.has(id));
          const ids = [...new Set([...peers, ...watchersNow])];
          if (!ids.length) {
            void send().catch(() => {});
            return settle();
          }
          if (!(await o.listen().catch(() => false))) {
            // The bound counts from the message's arrival, as the watchers' trust does.
            return void send().then(() => (watchersNow.size ? setTimeout(settle, ACK_WAIT_MS) : settle()), settle);
          }
          const need = new Set(ids);
          let timer: ReturnType<typeof setTimeout> | undefined;
          const finish = () => {
            clearTimeout(timer);
            awaitingAcks.delete(s);
            settle();
          };
          const runOut = () => {
            // Only a node every change waits for is then left out: a watcher late with one version
            // (one busy with its kernel's pages of the file) would otherwise miss the next unlink's wait.
            const out = [...need].filter((id) => peers.includes(id));
            for (const id of out) unresponsive.add(id);
            if (out.length) o.onSlowNodes?.("unresponsive", out);
            const late = [...need].filter((id) => !peers.includes(id));
            if (late.length) o.onSlowNodes?.("late watchers", late);
            finish();
          };
          awaitingAcks.set(s, { need, done: finish });
          // The wait runs from the message's arrival (it may have been sent again): a watcher trusts
          // what it heard for less than ACK_WAIT_MS after a proof begun once the message was in.
          void send(ids).then(() => {
            if (awaitingAcks.has(s)) timer = setTimeout(runOut, ACK_WAIT_MS);
          }, finish);
        });
      };
      if (wait) queueMicrotask(sendNow);
      else gathering = setTimeout(sendNow, GATHER_MS);
      return wait ? done : Promise.resolve();
    },
    flush: sendNow,
    waiting: () => awaitingAcks.size > 0,
    acked(message) {
      const [node, s] = message.split(" ");
      if (node && unresponsive.delete(node)) o.onSlowNodes?.("answering", [node]);
      const w = awaitingAcks.get(Number(s));
      if (!w || !node) return;
      w.need.delete(node);
      if (!w.need.size) w.done();
    },
  };
}
