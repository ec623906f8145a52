/*
 * Creates the shim answers without JS: the file is made in its directory's local dir (an fd JS
 * handed listings.c), given an inode number, a handle and an identity from a kit JS handed here
 * beforehand, and the kernel gets its entry at once. JS hears of it through a note queued before
 * the reply, so it has the file (record, handle, store write behind) before any request about it.
 * The store knows nothing of the file until then; a crash meanwhile leaves the local file, which
 * the start-up scan publishes as it does any create written behind.
 *
 * On a sole node the name is known free from the directory's whole listing. On a node of a cluster
 * the kernel's lookup of it just before went to the store and found none: the create is then what
 * a create JS writes behind is (another node's file made under the name meanwhile is replaced);
 * O_EXCL ones go to JS, which asks the store first; and the handle starts unpublished, so that its
 * close goes to JS and waits for the store to have the file.
 *
 * Anything unusual goes to JS instead: no kit left, a directory JS handed no fd for (or, on a sole
 * node, whose listing it does not have whole), a name that is there or reserved, any error making
 * the file.
 *
 * Until JS takes the note in, the file's attributes are the shim's alone: JS takes every note queued
 * before a request of its own, the other nodes know nothing of the file yet, and any change of it
 * through the kernel waits for the inode's lock, which a truncate holds. So a truncate through the
 * creating handle meanwhile (a writer setting the size it wrote: Bun's writeFileSync) is made here
 * too (creates_try_setattr).
 */
#include "mcfs_fuse.h"
#include "keep-fd.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_KITS 1024

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/*
 * A ring, in the order JS handed them: a file made takes the oldest kit, so a directory's inode
 * numbers go up in the order its files are made (the order JS prefetches their records in).
 */
static struct mcfs_kit kits[MAX_KITS];
static int first, nkits;
/* Set before the session starts: the name reserved at the top, the identity mark's xattr. */
static int on, cluster;
static double entry_to, attr_to;
static char reserved[256], mark_xattr[256];
static _Atomic uint64_t made, truncated;

/* Files made here whose note JS has not taken yet, one a slot by handle (a slot taken again: no fast path for the first). Under lock. */
#define UNCLAIMED_SLOTS 4096
struct unclaimed {
	uint64_t fh, ino, time_ns;
	uint32_t mode, uid, gid;
};
static struct unclaimed unclaimed[UNCLAIMED_SLOTS];

/* Not unclaimed any more: JS took the note of the file made with handle fh, or it was never queued. */
void creates_claimed(uint64_t fh)
{
	pthread_mutex_lock(&lock);
	struct unclaimed *u = &unclaimed[fh % UNCLAIMED_SLOTS];
	if (u->fh == fh)
		memset(u, 0, sizeof *u);
	pthread_mutex_unlock(&lock);
}

void mcfs_creates_start(double entry_timeout, double attr_timeout, const char *reserved_name, const char *mark_name, int of_cluster)
{
	cluster = of_cluster;
	if (cluster)
		listings_allow_unlisted();
	entry_to = entry_timeout;
	attr_to = attr_timeout;
	snprintf(reserved, sizeof reserved, "%s", reserved_name);
	snprintf(mark_xattr, sizeof mark_xattr, "%s", mark_name);
	/* A new session: no handle of an earlier one is unclaimed. */
	pthread_mutex_lock(&lock);
	memset(unclaimed, 0, sizeof unclaimed);
	pthread_mutex_unlock(&lock);
	on = 1;
}

/* n more kits (struct mcfs_kit each); those past MAX_KITS are not taken. Returns how many are held. */
int mcfs_create_kits(const uint8_t *buf, int n)
{
	pthread_mutex_lock(&lock);
	for (int i = 0; i < n && nkits < MAX_KITS; i++) {
		struct mcfs_kit *k = &kits[(first + nkits) % MAX_KITS];
		memcpy(k, buf + (size_t)i * sizeof(struct mcfs_kit), sizeof(struct mcfs_kit));
		k->mark[sizeof k->mark - 1] = 0;
		nkits++;
	}
	int held = nkits;
	pthread_mutex_unlock(&lock);
	return held;
}

uint64_t mcfs_creates_made(void) { return atomic_load(&made); }
uint64_t mcfs_creates_truncated(void) { return atomic_load(&truncated); }

static int take_kit(struct mcfs_kit *k)
{
	pthread_mutex_lock(&lock);
	int got = nkits > 0;
	if (got) {
		*k = kits[first];
		first = (first + 1) % MAX_KITS;
		nkits--;
	}
	pthread_mutex_unlock(&lock);
	return got;
}

static void give_back(const struct mcfs_kit *k)
{
	pthread_mutex_lock(&lock);
	/* Back in front: the next file made takes it, as it would have. */
	if (nkits < MAX_KITS) {
		first = (first + MAX_KITS - 1) % MAX_KITS;
		kits[first] = *k;
		nkits++;
	}
	pthread_mutex_unlock(&lock);
}

/* Make name in dirfd, owned and marked as JS would: the open fd, or -errno (nothing left behind). */
static int make(int dirfd, const char *name, int flags, mode_t mode, uid_t uid, gid_t gid, const char *mark)
{
	int fd = openat(dirfd, name, flags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	int rc = keep_fd(fd, uid, gid, (int)mode, mark_xattr, mark);
	if (rc < 0) {
		close(fd);
		unlinkat(dirfd, name, 0);
		return rc;
	}
	return fd;
}

/* Strict UTF-8, as JS decodes names (no overlong forms, surrogates, or code points past U+10FFFF). */
static int utf8_ok(const unsigned char *s)
{
	while (*s) {
		unsigned c = *s++;
		if (c < 0x80)
			continue;
		int n = c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2 : c >= 0xF0 && c <= 0xF4 ? 3 : -1;
		if (n < 0)
			return 0;
		unsigned lo = 0x80, hi = 0xBF;
		if (c == 0xE0) lo = 0xA0;
		else if (c == 0xED) hi = 0x9F;
		else if (c == 0xF0) lo = 0x90;
		else if (c == 0xF4) hi = 0x8F;
		for (int i = 0; i < n; i++, lo = 0x80, hi = 0xBF)
			if (*s < lo || *s > hi)
				return 0;
			else
				s++;
	}
	return 1;
}

int creates_try(fuse_req_t req, uint64_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
	/* Anything JS refuses (a name too long, not UTF-8, reserved) is JS's to refuse. */
	if (!on || strlen(name) > 255 || !utf8_ok((const unsigned char *)name) || (parent == 1 && strcmp(name, reserved) == 0))
		return 0;
	if (cluster && (fi->flags & O_EXCL))
		return 0;
	struct mcfs_kit k;
	if (!take_kit(&k))
		return 0;
	int dirfd;
	uint32_t dir_mode, dir_gid;
	if (!listing_claim(parent, name, &dirfd, &dir_mode, &dir_gid)) {
		give_back(&k);
		return 0;
	}
	/* The disk's last room is kept for removals: JS refuses the name (ENOSPC). */
	if (!io_room_for(dirfd, 0)) {
		close(dirfd);
		listing_unclaim(parent, name);
		give_back(&k);
		return 0;
	}
	/* Copied: the request is gone once answered, and a note may follow the answer. */
	const struct fuse_ctx c = *fuse_req_ctx(req);
	mode_t perm = mode & 07777;
	gid_t gid = dir_mode & S_ISGID ? dir_gid : c.gid;
	/*
	 * Read and write whatever the caller asked (the kernel checks its handle's mode): the shim writes
	 * through it, and a backing file for passthrough must be O_RDWR (else passthrough.c reopens it).
	 */
	int flags = (fi->flags & (O_APPEND | O_SYNC | O_DSYNC)) | O_RDWR;
	int fd = make(dirfd, name, flags, perm, c.uid, gid, k.mark);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	struct mcfs_req h;
	memset(&h, 0, sizeof h);
	h.op = OP_CREATED;
	h.ino = parent;
	h.fh = k.fh;
	h.created.flags = (uint64_t)fi->flags;
	h.created.mode = perm;
	h.created.new_ino = k.ino;
	h.created.fd = (uint64_t)fd;
	h.created.gid = gid;
	h.created.time_ns = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
	if (fd >= 0) {
		/* Before the note: JS may take it the moment it is queued. */
		pthread_mutex_lock(&lock);
		unclaimed[k.fh % UNCLAIMED_SLOTS] = (struct unclaimed){ .fh = k.fh, .ino = k.ino, .time_ns = h.created.time_ns, .mode = S_IFREG | perm, .uid = c.uid, .gid = gid };
		pthread_mutex_unlock(&lock);
		if (queue_note(&c, &h, name) != 0) {
			creates_claimed(k.fh);
			close(fd);
			unlinkat(dirfd, name, 0);
			fd = -1;
		}
	}
	close(dirfd);
	if (fd < 0) {
		listing_unclaim(parent, name);
		give_back(&k);
		return 0;
	}
	int64_t a[A_N];
	memset(a, 0, sizeof a);
	a[A_INO] = (int64_t)k.ino;
	a[A_MODE] = S_IFREG | perm;
	a[A_NLINK] = 1;
	a[A_UID] = c.uid;
	a[A_GID] = gid;
	a[A_ATIME] = a[A_MTIME] = a[A_CTIME] = now.tv_sec;
	a[A_ATIME_NSEC] = a[A_MTIME_NSEC] = a[A_CTIME_NSEC] = now.tv_nsec;
	a[A_BLKSIZE] = 4096;
	struct fuse_entry_param e;
	attr_entry(a, entry_to, attr_to, &e);
	fi->fh = k.fh;
	fi->direct_io = 0;
	fi->keep_cache = 0;
	/*
	 * Where JS publishes a close after it is answered anyway, the close need not come here at all:
	 * the release publishes instead (the kernel queues it as the last close returns), one round trip
	 * less a file. Until JS has it, the file is open here to JS, which answers for it from its fd; an
	 * open JS took before it (another of the shim's threads) catches up with it (file-ops caughtUp).
	 */
	fi->noflush = ops_close_notes();
	open_attach(k.ino, k.fh, fd, OPEN_WRITES | (fi->flags & O_DIRECT ? 0 : OPEN_PASSTHROUGH) | (cluster ? OPEN_UNPUBLISHED : 0));
	atomic_fetch_add(&made, 1);
	/* The kernel drops the directory's attributes with this reply and asks for them next: they have the file. */
	entries_dir_touched(parent, now.tv_sec, now.tv_nsec);
	int rc = fuse_reply_create(req, &e, fi);
	passthrough_reply_done();
	if (rc != 0) {
		/* The kernel never had the handle: JS closes it (the file stays, as after a create whose caller died). */
		notify_entry_done(k.ino);
		open_undone(k.ino, k.fh);
		memset(&h, 0, sizeof h);
		h.op = OP_RELEASE;
		h.ino = k.ino;
		h.fh = k.fh;
		queue_note(&c, &h, NULL);
	}
	return 1;
}

/* t, or the time in ns if that is later (the disk's clock is coarse: it may read before the file was made). */
static struct timespec at_least(struct timespec t, uint64_t ns)
{
	uint64_t have = (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
	if (have >= ns)
		return t;
	return (struct timespec){ .tv_sec = (time_t)(ns / 1000000000ull), .tv_nsec = (long)(ns % 1000000000ull) };
}

/* A truncate through the handle of a file made here whose note JS has not taken: made here. 1 if answered. */
int creates_try_setattr(fuse_req_t req, uint64_t ino, const struct stat *st, int to_set, struct fuse_file_info *fi)
{
	/* Past 2^53 JS refuses a size (not exact there): so does this, by leaving it to JS. */
	if (!on || !fi || to_set != FUSE_SET_ATTR_SIZE || st->st_size < 0 || (uint64_t)st->st_size >= (1ull << 53) || killpriv_request_kills())
		return 0;
	pthread_mutex_lock(&lock);
	struct unclaimed u = unclaimed[fi->fh % UNCLAIMED_SLOTS];
	pthread_mutex_unlock(&lock);
	if (u.fh != fi->fh || u.ino != ino || ino == 0)
		return 0;
	int fd = io_whole_fd(fi->fh);
	struct stat now;
	/* A failure is JS's to answer: it makes the same cut, which fails the same way. */
	if (fd < 0 || ftruncate(fd, st->st_size) != 0 || fstat(fd, &now) != 0)
		return 0;
	/* Published with the rest of what the handle wrote (a passthrough writer's is, whatever this says). */
	mcfs_dirty_fh(fi->fh);
	struct stat a;
	memset(&a, 0, sizeof a);
	a.st_ino = ino;
	a.st_mode = u.mode;
	a.st_nlink = 1;
	a.st_uid = u.uid;
	a.st_gid = u.gid;
	a.st_size = now.st_size;
	a.st_blocks = now.st_blocks;
	a.st_blksize = 4096;
	a.st_atim = at_least(now.st_atim, u.time_ns);
	a.st_mtim = at_least(now.st_mtim, u.time_ns);
	a.st_ctim = at_least(now.st_ctim, u.time_ns);
	killpriv_told(ino, a.st_mode);
	/* Counted before the reply: whoever asked sees it counted once answered. */
	atomic_fetch_add(&truncated, 1);
	fuse_reply_attr(req, &a, attr_to);
	return 1;
}
