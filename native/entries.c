/*
 * Names the kernel may be given without a hop through JS: entries whose records JS has at hand (a
 * directory's listing it prefetched), with the very attributes JS would reply, each good until a
 * deadline (JS's own cache of those records lasts as long). A lookup that finds its name here is
 * answered here; any other goes to JS.
 *
 * JS drops what changes: a name, an inode (all its names), a directory (all names in it), everything.
 * Kernel invalidations drop the same (notify.c), so nothing JS tells the kernel to forget survives
 * here. Inodes and directories are dropped by bumping a generation their entries were kept under
 * (slots shared by hash: a drop may take unrelated entries along, which then just go to JS).
 *
 * Attributes are kept the same way, for inodes whose records JS has fresh (not open here): as an
 * entry of the inode itself under the empty name, which no lookup asks for. A getattr that finds one
 * is answered here; dropping the inode drops it with its names. A file the shim makes moves its
 * directory's times here at once (entries_dir_touched), as JS records them once it takes the file
 * in: the kernel asks for the directory's attributes right after a create, and keeps the answer.
 *
 * A reply is made under the read lock, and drops take the write lock: once a drop returns, every
 * reply made from what it dropped has reached the kernel, so the invalidation JS sends next lands
 * after them, never before.
 */
#include "mcfs_fuse.h"
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BUCKETS (1u << 17)
#define MAX_ENTRIES (1u << 17)
#define INO_SLOTS (1u << 18)
#define DIR_SLOTS (1u << 16)

struct entry {
	struct entry *next;
	uint64_t parent;
	uint64_t until_ms;
	double entry_to, attr_to;
	uint32_t hash, ino_gen, dir_gen, all_gen;
	int64_t attr[A_N];
	char name[];
};

/* Writers first: a storm of lookups must not keep JS's drops (on its only thread) waiting. */
static pthread_rwlock_t lock = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
static struct entry *buckets[BUCKETS];
static uint32_t count;
/* When a full table was last swept: at most one sweep a second (a batch of keeps on a table full of
 * current entries would otherwise scan it once per entry, holding the lock). */
static uint64_t swept_ms;
static uint32_t ino_gens[INO_SLOTS], dir_gens[DIR_SLOTS], all_gen;
/* Read without the lock: a lookup skips the table while it is empty. */
static _Atomic uint32_t kept;
static _Atomic uint64_t hits, attr_hits;

static uint64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static uint32_t hash_of(uint64_t parent, const char *name)
{
	uint32_t h = 2166136261u;
	for (int i = 0; i < 8; i++)
		h = (h ^ (uint8_t)(parent >> (8 * i))) * 16777619u;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h;
}

static uint32_t slot(uint64_t ino, uint32_t slots) { return (uint32_t)((ino * 0x9E3779B97F4A7C15ull) >> 40) & (slots - 1); }
#define INO_GEN(ino) ino_gens[slot((ino), INO_SLOTS)]
#define DIR_GEN(dir) dir_gens[slot((dir), DIR_SLOTS)]

static struct entry **find(uint64_t parent, const char *name, uint32_t h)
{
	struct entry **at = &buckets[h & (BUCKETS - 1)];
	for (; *at; at = &(*at)->next)
		if ((*at)->hash == h && (*at)->parent == parent && strcmp((*at)->name, name) == 0)
			return at;
	return at;
}

static int current(const struct entry *e, uint64_t now)
{
	return e->until_ms > now && e->all_gen == all_gen && e->ino_gen == INO_GEN((uint64_t)e->attr[A_INO]) &&
	       e->dir_gen == DIR_GEN(e->parent);
}

static void unlink_at(struct entry **at)
{
	struct entry *e = *at;
	*at = e->next;
	free(e);
	count--;
}

/* Free what is no longer current (write lock held). */
static void sweep(void)
{
	uint64_t now = now_ms();
	for (uint32_t b = 0; b < BUCKETS; b++)
		for (struct entry **at = &buckets[b]; *at;)
			if (current(*at, now)) at = &(*at)->next;
			else unlink_at(at);
	atomic_store(&kept, count);
}

/* Answer req from the current entry of (parent, name), if there is one: 1 if answered. */
static int answer(fuse_req_t req, uint64_t parent, const char *name, int attr_only)
{
	if (!atomic_load(&kept))
		return 0;
	uint32_t h = hash_of(parent, name);
	pthread_rwlock_rdlock(&lock);
	struct entry *e = *find(parent, name, h);
	if (!e || !current(e, now_ms())) {
		pthread_rwlock_unlock(&lock);
		return 0;
	}
	struct fuse_entry_param p;
	attr_entry(e->attr, e->entry_to, e->attr_to, &p);
	/* Counted first: once the caller has its answer, the count already shows it. */
	atomic_fetch_add(attr_only ? &attr_hits : &hits, 1);
	if (attr_only)
		fuse_reply_attr(req, &p.attr, e->attr_to);
	else if (fuse_reply_entry(req, &p) != 0)
		notify_entry_done(p.ino);
	pthread_rwlock_unlock(&lock);
	return 1;
}

int entries_try_lookup(fuse_req_t req, uint64_t parent, const char *name) { return answer(req, parent, name, 0); }

int entries_try_getattr(fuse_req_t req, uint64_t ino) { return answer(req, ino, "", 1); }

/* Put one entry (write lock held); 0, or -ENOSPC when the table is full of current entries. */
static int put(uint64_t parent, const char *name, const int64_t *attr, double entry_to, double attr_to, uint64_t until_ms)
{
	uint32_t h = hash_of(parent, name);
	struct entry **at = find(parent, name, h);
	if (*at)
		unlink_at(at);
	else if (count >= MAX_ENTRIES) {
		uint64_t now = now_ms();
		if (now - swept_ms < 1000)
			return -ENOSPC;
		swept_ms = now;
		sweep();
		if (count >= MAX_ENTRIES)
			return -ENOSPC;
		at = find(parent, name, h);
	}
	size_t l = strlen(name) + 1;
	struct entry *n = malloc(sizeof *n + l);
	if (!n)
		return -ENOMEM;
	n->parent = parent;
	n->until_ms = until_ms;
	n->entry_to = entry_to;
	n->attr_to = attr_to;
	n->hash = h;
	memcpy(n->attr, attr, sizeof n->attr);
	memcpy(n->name, name, l);
	n->ino_gen = INO_GEN((uint64_t)attr[A_INO]);
	n->dir_gen = DIR_GEN(parent);
	n->all_gen = all_gen;
	n->next = *at;
	*at = n;
	count++;
	return 0;
}

/* Whether times (sec, nsec) are later than the ctime of attributes a. */
static int later_than_ctime(int64_t sec, int64_t nsec, const int64_t *a)
{
	return sec > a[A_CTIME] || (sec == a[A_CTIME] && nsec > a[A_CTIME_NSEC]);
}

/*
 * n entries in the layout of a readdir reply's (mcfs_reply_dir; next unused), good for ttl_ms: names of
 * parent, or with parent 0 (no inode's number) each inode's attributes, under its own number and the
 * empty name. Attributes replace all that was kept of their inode, its names too (which carry the old
 * ones): under one lock, so that no getattr between a drop and a keep goes to JS. Times the shim moved
 * on since (a create it made, which JS has yet to take in) stay: a change's ctime is never earlier.
 */
int mcfs_entry_keep(uint64_t parent, const uint8_t *ents, int n, double entry_to, double attr_to, uint32_t ttl_ms)
{
	uint64_t until = now_ms() + ttl_ms;
	int rc = 0;
	pthread_rwlock_wrlock(&lock);
	for (int i = 0; i < n && rc == 0; i++) {
		const int64_t *a = (const int64_t *)ents;
		if (parent) {
			rc = put(parent, (const char *)(a + DIRENT_NAME), a, entry_to, attr_to, until);
		} else {
			uint64_t ino = (uint64_t)a[A_INO];
			int64_t merged[A_N];
			memcpy(merged, a, sizeof merged);
			const struct entry *had = *find(ino, "", hash_of(ino, ""));
			if (had && current(had, now_ms()) && later_than_ctime(had->attr[A_CTIME], had->attr[A_CTIME_NSEC], a)) {
				merged[A_MTIME] = had->attr[A_MTIME];
				merged[A_MTIME_NSEC] = had->attr[A_MTIME_NSEC];
				merged[A_CTIME] = had->attr[A_CTIME];
				merged[A_CTIME_NSEC] = had->attr[A_CTIME_NSEC];
			}
			INO_GEN(ino)++;
			rc = put(ino, "", merged, 0, attr_to, until);
		}
		ents = dirent_next(a);
	}
	atomic_store(&kept, count);
	pthread_rwlock_unlock(&lock);
	return rc;
}

int mcfs_attr_keep(const uint8_t *ents, int n, double attr_to, uint32_t ttl_ms) { return mcfs_entry_keep(0, ents, n, 0, attr_to, ttl_ms); }

void entries_dir_touched(uint64_t dir, int64_t sec, int64_t nsec)
{
	if (!atomic_load(&kept))
		return;
	pthread_rwlock_wrlock(&lock);
	struct entry *e = *find(dir, "", hash_of(dir, ""));
	if (e && current(e, now_ms()) && later_than_ctime(sec, nsec, e->attr)) {
		e->attr[A_MTIME] = e->attr[A_CTIME] = sec;
		e->attr[A_MTIME_NSEC] = e->attr[A_CTIME_NSEC] = nsec;
	}
	pthread_rwlock_unlock(&lock);
}

void mcfs_entry_drop(uint64_t parent, const char *name)
{
	if (!atomic_load(&kept))
		return;
	uint32_t h = hash_of(parent, name);
	pthread_rwlock_wrlock(&lock);
	struct entry **at = find(parent, name, h);
	if (*at)
		unlink_at(at);
	atomic_store(&kept, count);
	pthread_rwlock_unlock(&lock);
}

/* Every entry kept under this generation slot stops being current. */
static void bump(uint32_t *gen)
{
	if (!atomic_load(&kept))
		return;
	pthread_rwlock_wrlock(&lock);
	(*gen)++;
	pthread_rwlock_unlock(&lock);
}

void mcfs_entry_drop_inode(uint64_t ino) { bump(&INO_GEN(ino)); }

void mcfs_entry_drop_dir(uint64_t dir) { bump(&DIR_GEN(dir)); }

void mcfs_entry_clear(void)
{
	pthread_rwlock_wrlock(&lock);
	all_gen++;
	sweep();
	pthread_rwlock_unlock(&lock);
}

uint64_t mcfs_entry_hits(void) { return atomic_load(&hits); }

uint64_t mcfs_attr_hits(void) { return atomic_load(&attr_hits); }
