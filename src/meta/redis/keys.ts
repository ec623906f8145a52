/**
 * The Redis key map of the store (P = key prefix, default "mcfs:"):
 *
 * | key               | type   | holds                                                                 |
 * |-------------------|--------|-----------------------------------------------------------------------|
 * | P next            | string | last inode number handed out (INCR); root is 1                        |
 * | P i:{ino}         | hash   | m mode, u uid, g gid, r rdev, s size, n nlink, a/t/c atime/mtime/ctime |
 * |                   |        | (ns since epoch, decimal strings), v data version, gn generation,     |
 * |                   |        | p parent ino, nm primary name, l symlink target                        |
 * | P d:{ino}         | hash   | directory entries: name -> "{child ino}:{mode >> 12}"                 |
 * | P l:{ino}         | set    | extra hard-link names of a file: "{parent ino}/{name}"                |
 * | P x:{ino}         | hash   | extended attributes: name -> value (binary)                           |
 * | P loc:{ino}       | hash   | nodes holding the bytes in their root path: node id -> data version   |
 * | P cc:{ino}        | hash   | nodes holding a cached copy: node id -> "{version} {startedAt}" (the  |
 * |                   |        | run that cached it: a restarted node's cache is gone)                 |
 * | P orphans         | set    | inodes with no names left, kept while some node has them open         |
 * | P gone            | zset   | inodes deleted (a file's record purged, a directory removed) -> when, |
 * |                   |        | in s; 30 days                                                         |
 * | P nodes           | hash   | every node that ever joined: id -> JSON {id, address, startedAt}      |
 * | P hb:{node}       | string | heartbeat, expires when the node stops beating                         |
 * | P seen            | hash   | node id -> JSON {at, cache}: its last heartbeat and what it reported  |
 * | P inval           | pubsub | JSON {origin, seq, ack, changes: Invalidation[]}: other nodes drop   |
 * |                   |        | their caches; with ack they answer on P ack:{origin} once done        |
 * | P ack:{node}      | pubsub | "{node} {seq}": that node has applied message seq of this node       |
 * | P w:{ino}         | string | node writing ino's bytes now (a lease, expires): writers take turns    |
 * | P cb:{ino}        | set    | nodes watching ino: they answer opens of it from what they read, and   |
 * |                   |        | its next new version waits for their acknowledgement (then empties)   |
 * | P dw:{ino}        | set    | nodes watching directory ino: they answer lookups of names missing     |
 * |                   |        | from their listing, and a new name waits for their acknowledgement    |
 * |                   |        | (then they leave the set; its maker stays)                             |
 * | P todo:{node}     | list   | JSON changes of local files a node must still make (rm, rmdir, mv,     |
 * |                   |        | swap, link), in the order made, with the paths the namespace had then: |
 * |                   |        | the node that made a rename or rmdir is queued one too                 |
 * | P copy:{node}     | list   | JSON {ino, version, path}: copies (replicas) the node is asked to make |
 * | P settings        | hash   | cluster-wide settings: replicas (copies of each file wanted)          |
 * | P repair          | string | node repairing missing replicas now (a lease, expires)                |
 *
 * Nothing else is kept: `mcfs fsck` reports (and with --repair removes) holder entries of versions
 * other than the record's or of nodes not in P nodes, d: entries naming inodes without a record,
 * records no entry names that are not in P orphans, and P orphans members with links or no record.
 *
 * The Lua scripts (this folder's .lua files) build the same keys from the prefix themselves; P w:{ino},
 * P cb:{ino} and P dw:{ino} are only ever touched there.
 */
export function createKeys(P: string) {
  return {
    next: `${P}next`,
    inode: (ino: number) => `${P}i:${ino}`,
    entries: (ino: number) => `${P}d:${ino}`,
    links: (ino: number) => `${P}l:${ino}`,
    xattrs: (ino: number) => `${P}x:${ino}`,
    locations: (ino: number) => `${P}loc:${ino}`,
    cached: (ino: number) => `${P}cc:${ino}`,
    orphans: `${P}orphans`,
    gone: `${P}gone`,
    nodes: `${P}nodes`,
    heartbeat: (node: string) => `${P}hb:${node}`,
    seen: `${P}seen`,
    inval: `${P}inval`,
    ack: (node: string) => `${P}ack:${node}`,
    todo: (node: string) => `${P}todo:${node}`,
    copies: (node: string) => `${P}copy:${node}`,
    nodeOfCopies: (key: string) => key.slice(`${P}copy:`.length),
    settings: `${P}settings`,
    repairLease: `${P}repair`,
    /** SCAN patterns of the per-inode keys of one kind, and the inode a key of that kind is for. */
    scan: {
      inodes: `${P}i:*`,
      locations: `${P}loc:*`,
      cached: `${P}cc:*`,
      copies: `${P}copy:*`,
    },
    isLocations: (key: string) => key.startsWith(`${P}loc:`),
    inodeOf: (key: string, kind: "i" | "loc") => Number(key.slice(`${P}${kind}:`.length)),
  };
}

export type Keys = ReturnType<typeof createKeys>;
