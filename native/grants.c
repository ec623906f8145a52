/*
 * Opens the shim answers without JS. After JS answered a read-only open of a file this node watches
 * (every change of it elsewhere waits for this node to hear it), it may grant the file: a read-only
 * fd of the bytes of the version it opened (this node's own file, or a whole copy of another's).
 * Another read-only open of that inode is then answered here with a dup of the grant's fd, its reads
 * served by io.c, while the change feed is shown current (listing_trusted). A copy fetched ahead may
 * be granted as it lands, before any open here (GRANT_FRESH): the kernel may hold pages of the inode
 * of another version, which each open answered from it has it drop, until JS settles it (after the
 * release of one such open: the kernel took the drop in before). JS hears of the handle
 * through a note queued before the reply, with the grant's id and version, as it hears of the
 * shim's creates. JS revokes a grant before it acknowledges a change of its file, and when it stops
 * watching it or lets go of the copy: an open answered here after that began before the change
 * returned elsewhere.
 *
 * Each handle takes one of the handle numbers JS reserved and handed here (mcfs_grant_fhs); with none
 * left the open goes to JS.
 */
#include "mcfs_fuse.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GRANT_BUCKETS 4096
#define SPARE_MAX 256

struct grant {
	struct grant *next;
	uint64_t ino, id, version, size;
	uint32_t flags;
	/* Opens answered from it while fresh whose reply the kernel never took (its caller gone): their
	 * releases reach JS as any other, but the kernel dropped no page for them: as many settles are not
	 * (JS settles once: the grant then stays fresh, its opens dropping pages, which is only slower). */
	uint32_t unanswered;
	int fd;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct grant *buckets[GRANT_BUCKETS];
static int ngrants;
static uint64_t spare[SPARE_MAX];
static int nspare;
/* Read without the lock: an open skips all this while nothing is granted. */
static _Atomic int any;
static _Atomic uint64_t answered;

static struct grant **bucket_of(uint64_t ino)
{
	return &buckets[(ino * 0x9E3779B97F4A7C15ull) >> 52];
}

static struct grant **find(uint64_t ino)
{
	struct grant **p = bucket_of(ino);
	while (*p && (*p)->ino != ino)
		p = &(*p)->next;
	return p;
}

static void unlink_grant(struct grant **p)
{
	struct grant *g = *p;
	*p = g->next;
	close(g->fd);
	free(g);
	ngrants--;
	atomic_store(&any, ngrants > 0);
}

/*
 * Grant ino: opens of it are answered with a dup of fd (JS keeps its own), as id, at version and
 * size; flags: GRANT_*. Replaces a grant of ino. 0, or -errno (none taken: too many).
 */
int mcfs_grant(uint64_t ino, int fd, uint64_t id, uint64_t version, uint64_t size, uint32_t flags)
{
	struct grant *g = malloc(sizeof *g);
	if (!g)
		return -ENOMEM;
	g->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (g->fd < 0) {
		int err = errno;
		free(g);
		return -err;
	}
	g->ino = ino;
	g->id = id;
	g->version = version;
	g->size = size;
	g->flags = flags;
	g->unanswered = 0;
	pthread_mutex_lock(&lock);
	struct grant **p = find(ino);
	if (*p)
		unlink_grant(p);
	if (ngrants >= GRANTS_MAX) {
		pthread_mutex_unlock(&lock);
		close(g->fd);
		free(g);
		return -ENOSPC;
	}
	g->next = *bucket_of(ino);
	*bucket_of(ino) = g;
	ngrants++;
	atomic_store(&any, 1);
	pthread_mutex_unlock(&lock);
	return 0;
}

/* Opens of ino go to JS from now on: one answered here has its note queued already. */
void mcfs_grant_revoke(uint64_t ino)
{
	if (!atomic_load(&any))
		return;
	pthread_mutex_lock(&lock);
	struct grant **p = find(ino);
	if (*p)
		unlink_grant(p);
	pthread_mutex_unlock(&lock);
}

/* The kernel holds no page of ino but of grant id's version: opens from it keep them. */
void mcfs_grant_settle(uint64_t ino, uint64_t id)
{
	pthread_mutex_lock(&lock);
	struct grant *g = *find(ino);
	if (g && g->id == id) {
		if (g->unanswered > 0)
			g->unanswered--;
		else
			g->flags &= ~(uint32_t)GRANT_FRESH;
	}
	pthread_mutex_unlock(&lock);
}

void mcfs_grant_clear(void)
{
	pthread_mutex_lock(&lock);
	for (int b = 0; b < GRANT_BUCKETS; b++)
		while (buckets[b])
			unlink_grant(&buckets[b]);
	pthread_mutex_unlock(&lock);
}

/* A new session: no grant, no handle number of an earlier one. */
void grants_reset(void)
{
	mcfs_grant_clear();
	pthread_mutex_lock(&lock);
	nspare = 0;
	pthread_mutex_unlock(&lock);
}

/* n more handle numbers for opens answered here (those past SPARE_MAX are not taken). Returns how many are held. */
int mcfs_grant_fhs(const uint64_t *fhs, int n)
{
	pthread_mutex_lock(&lock);
	for (int i = 0; i < n && nspare < SPARE_MAX; i++)
		spare[nspare++] = fhs[i];
	int held = nspare;
	pthread_mutex_unlock(&lock);
	return held;
}

uint64_t mcfs_grant_opens(void) { return atomic_load(&answered); }

int grants_try_open(fuse_req_t req, uint64_t ino, struct fuse_file_info *fi)
{
	if (!atomic_load(&any) || (fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & (O_TRUNC | O_DIRECT)) || !listing_trusted())
		return 0;
	/* Copied: a note may follow the answer. */
	const struct fuse_ctx c = *fuse_req_ctx(req);
	struct mcfs_req h;
	memset(&h, 0, sizeof h);
	h.op = OP_OPENED;
	h.ino = ino;
	pthread_mutex_lock(&lock);
	struct grant *g = *find(ino);
	int fd = g && nspare > 0 ? fcntl(g->fd, F_DUPFD_CLOEXEC, 0) : -1;
	if (fd < 0) {
		pthread_mutex_unlock(&lock);
		return 0;
	}
	h.fh = spare[--nspare];
	h.opened.fd = (uint64_t)fd;
	h.opened.grant = g->id;
	h.opened.version = g->version;
	h.opened.size = g->size;
	h.opened.copy = (g->flags & GRANT_COPY) != 0;
	int keep = !(g->flags & GRANT_FRESH);
	/*
	 * Attached, then queued, under the lock: once a revoke returns, every open the grant answered is
	 * in the queue, and whatever JS does with its handle after (a detach) is not undone here.
	 */
	open_attach(ino, h.fh, fd, (keep ? OPEN_KEEP_CACHE : 0) | OPEN_NO_FLUSH);
	if (queue_note(&c, &h, NULL) != 0) {
		open_undone(ino, h.fh);
		spare[nspare++] = h.fh;
		pthread_mutex_unlock(&lock);
		passthrough_reply_done();
		close(fd);
		return 0;
	}
	pthread_mutex_unlock(&lock);
	fi->fh = h.fh;
	fi->direct_io = 0;
	fi->keep_cache = keep;
	fi->noflush = 1;
	int rc = fuse_reply_open(req, fi);
	passthrough_reply_done();
	if (rc != 0) {
		/* The kernel never had the handle: JS closes it. */
		if (!keep) {
			pthread_mutex_lock(&lock);
			struct grant *still = *find(ino);
			if (still && still->id == h.opened.grant)
				still->unanswered++;
			pthread_mutex_unlock(&lock);
		}
		open_undone(ino, h.fh);
		memset(&h, 0, sizeof h);
		h.op = OP_RELEASE;
		h.ino = ino;
		h.fh = fi->fh;
		queue_note(&c, &h, NULL);
		return 1;
	}
	atomic_fetch_add(&answered, 1);
	return 1;
}
