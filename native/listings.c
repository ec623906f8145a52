/*
 * Names the shim may answer ENOENT for without a hop through JS: for a node whose loaded listings
 * are complete (a sole node, the only writer of its namespace), the names of each directory JS has
 * the whole listing of. A name in none of them is surely absent there. Every create is preceded by
 * such a lookup, so this saves a trip to JS per new file.
 *
 * Names are kept whole (an add or a drop of a name is exact however often it is told). JS adds a
 * name before it answers the request that made it (the kernel holds the directory's lock over a
 * create, so no lookup of that name can run meanwhile); a name JS drops late only costs a trip to JS.
 *
 * The read lock is held over the reply, as in entries.c: once a change returns, no reply made from
 * what it changed is still on its way.
 *
 * A listed directory may also have its local directory's fd, mode and gid (mcfs_listing_make_here):
 * creates.c then makes new files in it without JS. Dropping the listing closes the fd. A node of a
 * cluster keeps no listings (another node's create may be in none), only such directories, each
 * without names (not whole): there the kernel's lookup just before asked the store, and found none;
 * and the whole listings of the directories it watches (MetadataStore.listDir with watch), which
 * answer only while its change feed is shown current (mcfs_listing_trust_for): until then a name
 * another node made there may not have reached them.
 */
#include "mcfs_fuse.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DIR_BUCKETS (1u << 12)
/* Past this many names in all, listings are dropped (JS keeps its own; lookups then go to it). */
#define MAX_NAMES (1u << 22)

struct name_slot {
	uint64_t hash;
	char *name; /* NULL: empty; TOMB: a name dropped */
};
static char tomb_mark;
#define TOMB (&tomb_mark)

struct dir {
	struct dir *next;
	uint64_t ino;
	uint32_t used, live, cap; /* slots not empty (names and tombstones), names, slots */
	struct name_slot *slots;
	int fd; /* the local directory new files are made in by the shim, or -1 */
	uint32_t mode, gid;
	int whole; /* its names are its whole listing; 0: none kept (a cluster's, see above) */
};

static pthread_rwlock_t lock = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
static struct dir *dirs[DIR_BUCKETS];
static uint32_t names;
/* Read without the lock: a lookup skips all this while no listing is kept. */
static _Atomic uint32_t listed;
static _Atomic uint64_t hits;
/* Set before the session starts: directories may be handed without listings (a node of a cluster). */
static int unlisted_ok;
/* CLOCK_MONOTONIC ns up to which listings answer for missing names: for good, unless JS says otherwise (a node of a cluster). */
static _Atomic int64_t trusted_until = INT64_MAX;

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void listings_allow_unlisted(void) { unlisted_ok = 1; }

void mcfs_listing_trust_for(int ms) { atomic_store(&trusted_until, ms > 0 ? now_ns() + (int64_t)ms * 1000000 : 0); }

int listing_trusted(void) { return now_ns() < atomic_load(&trusted_until); }

static uint64_t name_hash(const char *name)
{
	uint64_t h = 1469598103934665603ull;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 1099511628211ull;
	return h ^ (h >> 29);
}

static struct dir **dir_at(uint64_t ino)
{
	struct dir **at = &dirs[(ino * 0x9E3779B97F4A7C15ull) >> 52];
	while (*at && (*at)->ino != ino)
		at = &(*at)->next;
	return at;
}

/* The slot of name in d: its own, or the free one it would take (the first tombstone on the way). */
static struct name_slot *slot_of(struct dir *d, const char *name, uint64_t hash)
{
	uint32_t mask = d->cap - 1, i = (uint32_t)hash & mask;
	struct name_slot *tomb = NULL;
	for (;; i = (i + 1) & mask) {
		struct name_slot *s = &d->slots[i];
		if (!s->name)
			return tomb ? tomb : s;
		if (s->name == TOMB) {
			if (!tomb)
				tomb = s;
		} else if (s->hash == hash && strcmp(s->name, name) == 0)
			return s;
	}
}

static int holds(const struct name_slot *s) { return s->name && s->name != TOMB; }

static void dir_free(struct dir **at)
{
	struct dir *d = *at;
	*at = d->next;
	for (uint32_t i = 0; i < d->cap; i++)
		if (holds(&d->slots[i])) {
			free(d->slots[i].name);
			names--;
		}
	free(d->slots);
	if (d->fd >= 0)
		close(d->fd);
	free(d);
	atomic_fetch_sub(&listed, 1);
}

static void clear_all(void)
{
	for (uint32_t b = 0; b < DIR_BUCKETS; b++)
		while (dirs[b])
			dir_free(&dirs[b]);
}

/* Rehash d into cap slots, dropping tombstones: 0, or -ENOMEM. */
static int resize(struct dir *d, uint32_t cap)
{
	struct name_slot *old = d->slots;
	uint32_t old_cap = d->cap;
	struct name_slot *slots = calloc(cap, sizeof *slots);
	if (!slots)
		return -ENOMEM;
	d->slots = slots;
	d->cap = cap;
	d->used = 0;
	for (uint32_t i = 0; i < old_cap; i++)
		if (holds(&old[i])) {
			*slot_of(d, old[i].name, old[i].hash) = old[i];
			d->used++;
		}
	d->live = d->used;
	free(old);
	return 0;
}

/* name is in d (write lock held): 0, or -ENOMEM. */
static int add(struct dir *d, const char *name)
{
	uint64_t h = name_hash(name);
	struct name_slot *s = slot_of(d, name, h);
	if (holds(s))
		return 0;
	if ((d->used + 1) * 4 > d->cap * 3) {
		/* Mostly tombstones (names made and dropped): swept at the same size, not doubled. */
		if (resize(d, (d->live + 1) * 2 < d->cap ? d->cap : d->cap * 2) < 0)
			return -ENOMEM;
		s = slot_of(d, name, h);
	}
	char *copy = strdup(name);
	if (!copy)
		return -ENOMEM;
	if (!s->name)
		d->used++;
	s->hash = h;
	s->name = copy;
	d->live++;
	names++;
	return 0;
}

/*
 * dir's whole listing: n names, each a NUL-terminated string, one after the other in buf. Replaces
 * what was kept of dir. 0, or -errno (nothing then kept of dir).
 */
int mcfs_listing_set(uint64_t dir, const char *buf, int n)
{
	uint32_t cap = 16;
	while (cap * 3 < (uint32_t)n * 4 + 4)
		cap *= 2;
	struct dir *d = calloc(1, sizeof *d);
	struct name_slot *slots = calloc(cap, sizeof *slots);
	int rc = -ENOMEM;
	pthread_rwlock_wrlock(&lock);
	struct dir **at = dir_at(dir);
	if (*at)
		dir_free(at);
	if (d && slots) {
		if (names + (uint32_t)n > MAX_NAMES)
			clear_all();
		d->ino = dir;
		d->cap = cap;
		d->slots = slots;
		d->fd = -1;
		d->whole = 1;
		*dir_at(dir) = d;
		atomic_fetch_add(&listed, 1);
		rc = 0;
		for (int i = 0; i < n && rc == 0; i++) {
			rc = add(d, buf);
			buf += strlen(buf) + 1;
		}
		if (rc < 0)
			dir_free(dir_at(dir));
		d = NULL;
		slots = NULL;
	}
	pthread_rwlock_unlock(&lock);
	free(d);
	free(slots);
	return rc;
}

/* (write lock held) */
static void change(uint64_t dir, const char *name, int present)
{
	struct dir **at = dir_at(dir);
	if (!*at)
		return;
	struct dir *d = *at;
	if (!d->whole)
		return;
	if (present) {
		if (add(d, name) < 0)
			dir_free(at);
		return;
	}
	struct name_slot *s = slot_of(d, name, name_hash(name));
	if (holds(s)) {
		free(s->name);
		s->name = TOMB;
		d->live--;
		names--;
	}
}

/* A name came into dir (present: 1) or left it (0); nothing if dir's listing is not kept. */
void mcfs_listing_name(uint64_t dir, const char *name, int present)
{
	if (!atomic_load(&listed))
		return;
	pthread_rwlock_wrlock(&lock);
	change(dir, name, present);
	pthread_rwlock_unlock(&lock);
}

void mcfs_listing_drop(uint64_t dir)
{
	if (!atomic_load(&listed))
		return;
	pthread_rwlock_wrlock(&lock);
	struct dir **at = dir_at(dir);
	if (*at)
		dir_free(at);
	pthread_rwlock_unlock(&lock);
}

void mcfs_listing_clear(void)
{
	pthread_rwlock_wrlock(&lock);
	clear_all();
	pthread_rwlock_unlock(&lock);
}

/*
 * New files in listed dir may be made by the shim, in fd (its local directory: taken over, closed
 * with the listing), with the directory's mode and gid (a setgid one gives its group); fd -1 when
 * only they changed. name: a file just made in dir, open as file_fd. -ENOENT when dir is not listed
 * (and unlisted directories are not taken), -ESTALE when fd does not hold that file (fd closed either way).
 */
int mcfs_listing_make_here(uint64_t dir, int fd, uint32_t mode, uint32_t gid, const char *name, int file_fd)
{
	/* Opened by path, fd may be another directory by now (dir renamed meanwhile): it must hold the file just made in dir. */
	if (fd >= 0) {
		struct stat there, made;
		if (fstatat(fd, name, &there, AT_SYMLINK_NOFOLLOW) != 0 || fstat(file_fd, &made) != 0 || there.st_ino != made.st_ino || there.st_dev != made.st_dev) {
			close(fd);
			return -ESTALE;
		}
	}
	pthread_rwlock_wrlock(&lock);
	struct dir *d = *dir_at(dir);
	if (!d && fd >= 0 && unlisted_ok && (d = calloc(1, sizeof *d)) != NULL) {
		d->ino = dir;
		d->fd = -1;
		*dir_at(dir) = d;
		atomic_fetch_add(&listed, 1);
	}
	if (d) {
		if (fd >= 0) {
			if (d->fd >= 0 && d->fd != fd)
				close(d->fd);
			d->fd = fd;
		}
		d->mode = mode;
		d->gid = gid;
	}
	pthread_rwlock_unlock(&lock);
	if (!d && fd >= 0)
		close(fd);
	return d ? 0 : -ENOENT;
}

/* The shim makes no more files in dir (its fd closed); its listing stays. */
void mcfs_listing_make_elsewhere(uint64_t dir)
{
	pthread_rwlock_wrlock(&lock);
	struct dir *d = *dir_at(dir);
	if (d && d->fd >= 0) {
		close(d->fd);
		d->fd = -1;
	}
	pthread_rwlock_unlock(&lock);
}

int listing_claim(uint64_t parent, const char *name, int *dirfd, uint32_t *mode, uint32_t *gid)
{
	if (!atomic_load(&listed))
		return 0;
	int claimed = 0;
	pthread_rwlock_wrlock(&lock);
	struct dir *d = *dir_at(parent);
	if (d && d->fd >= 0 && (!d->whole || !holds(slot_of(d, name, name_hash(name))))) {
		*dirfd = fcntl(d->fd, F_DUPFD_CLOEXEC, 0);
		*mode = d->mode;
		*gid = d->gid;
		claimed = *dirfd >= 0 && (!d->whole || add(d, name) == 0);
		if (!claimed && *dirfd >= 0)
			close(*dirfd);
	}
	pthread_rwlock_unlock(&lock);
	return claimed;
}

void listing_unclaim(uint64_t parent, const char *name) { mcfs_listing_name(parent, name, 0); }

uint64_t mcfs_listing_absent_hits(void) { return atomic_load(&hits); }

int listing_try_absent(fuse_req_t req, uint64_t parent, const char *name)
{
	if (!atomic_load(&listed))
		return 0;
	/* Longer names are JS's to refuse (ENAMETOOLONG). */
	if (strlen(name) > 255)
		return 0;
	if (!listing_trusted())
		return 0;
	pthread_rwlock_rdlock(&lock);
	struct dir *d = *dir_at(parent);
	int absent = d && d->whole && !holds(slot_of(d, name, name_hash(name)));
	if (absent) {
		atomic_fetch_add(&hits, 1);
		fuse_reply_err(req, ENOENT);
	}
	pthread_rwlock_unlock(&lock);
	return absent;
}
