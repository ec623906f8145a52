/*
 * FUSE passthrough (Linux 6.9+): the kernel reads and writes a handle's backing file itself, with no
 * request to the shim. libfuse 3.14 knows nothing of it, so it is negotiated through the I/O hooks
 * (killpriv.c) and each reply that opens a file in passthrough gets its flag and backing id there.
 *
 * The kernel allows one backing file per inode at a time, and no passthrough open while the inode
 * is open otherwise (nor the other way round: such an open fails with EIO). So every open of a file
 * is counted here by node id: the first open that may pass through registers its fd as the inode's
 * backing file, later ones of the same file share it, and an inode open otherwise opens otherwise.
 * An open JS did not allow to pass through that comes while the inode is open in passthrough reads
 * the backing file too (the kernel leaves no other way): JS only allows a node's own file, and reads
 * that file on the node while a writer is open on it anyway.
 *
 * The kernel writes through the backing file unseen: a writer's handle counts as written at each of
 * its flushes (io.c's sticky dirty), and the space floor is checked only when it opens.
 */
#include "mcfs_fuse.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

/* From the kernel's UAPI (7.40); the system's linux/fuse.h may be older. */
#define PT_INIT_EXT (1u << 30)
#define PT_FLAGS2_PASSTHROUGH (1u << (37 - 32))
#define PT_FOPEN_PASSTHROUGH (1u << 7)
/* The open flags the kernel accepts beside FOPEN_PASSTHROUGH (FOPEN_PASSTHROUGH_MASK). */
#define PT_FOPEN_KEEP (FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES | FOPEN_NOFLUSH)
struct pt_backing_map {
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};
#define PT_IOC_BACKING_OPEN _IOW(229, 1, struct pt_backing_map)
#define PT_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)
/* The backing files' filesystems may not be stacked themselves (an overlayfs root opens otherwise). */
#define PT_STACK_DEPTH 1

#define MAX_FH (1u << 20)
#define BUCKETS 1024

struct pt_inode {
	struct pt_inode *next;
	uint64_t nodeid;
	int backing_id; /* -1 while no handle passes through */
	dev_t dev;
	ino_t ino;
	uint32_t through; /* handles passing through */
	uint32_t cached;  /* handles that do not */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct pt_inode *buckets[BUCKETS];
/* Each handle's node id and whether it passes through (2) or not (1); 0: not counted. */
static uint64_t fh_node[MAX_FH];
static uint8_t fh_mode[MAX_FH];
static int dev_fd = -1;
static int offered;
static _Atomic int negotiated;
/* The backing id the reply this thread is about to send opens with (-1: none). */
static _Thread_local int reply_backing = -1;

static struct pt_inode **slot(uint64_t nodeid)
{
	struct pt_inode **p = &buckets[(nodeid * 0x9E3779B97F4A7C15ull) >> 54];
	while (*p && (*p)->nodeid != nodeid)
		p = &(*p)->next;
	return p;
}

void passthrough_reset(int fd)
{
	pthread_mutex_lock(&lock);
	for (int b = 0; b < BUCKETS; b++) {
		while (buckets[b]) {
			struct pt_inode *n = buckets[b];
			buckets[b] = n->next;
			free(n);
		}
	}
	for (uint32_t i = 0; i < MAX_FH; i++)
		fh_mode[i] = 0;
	dev_fd = fd;
	offered = 0;
	atomic_store(&negotiated, 0);
	pthread_mutex_unlock(&lock);
}

void passthrough_offered(const struct fuse_init_in *in, size_t len)
{
	offered = len >= offsetof(struct fuse_init_in, flags2) + sizeof(uint32_t) && (in->flags & PT_INIT_EXT) &&
		  (in->flags2 & PT_FLAGS2_PASSTHROUGH);
}

void passthrough_accept(struct fuse_init_out *out, size_t len)
{
	if (!offered || len < offsetof(struct fuse_init_out, unused) + sizeof(uint32_t) || (out->flags & FUSE_WRITEBACK_CACHE))
		return;
	out->flags |= PT_INIT_EXT;
	out->flags2 |= PT_FLAGS2_PASSTHROUGH;
	out->unused[0] = PT_STACK_DEPTH; /* max_stack_depth */
	atomic_store(&negotiated, 1);
}

int mcfs_passthrough(void) { return atomic_load(&negotiated); }

/*
 * A backing id for fd's file: registered from an fd of its own, opened for reading and writing and
 * without O_APPEND (the kernel's writes through it follow the caller's flags, and every handle of the
 * inode shares it). -1 when the kernel refuses it.
 */
static int backing_open(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	int own = -1;
	if (fl < 0 || (fl & (O_ACCMODE | O_APPEND | O_DIRECT)) != O_RDWR) {
		char path[40];
		snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
		own = open(path, O_RDWR | O_CLOEXEC);
		if (own < 0)
			return -1;
	}
	struct pt_backing_map map = { .fd = own >= 0 ? own : fd, .flags = 0, .padding = 0 };
	int id = ioctl(dev_fd, PT_IOC_BACKING_OPEN, &map);
	if (own >= 0)
		close(own);
	return id < 0 ? -1 : id;
}

int passthrough_open(uint64_t nodeid, uint64_t fh, int fd, int allowed)
{
	if (nodeid == 0 || fh >= MAX_FH)
		return -1;
	struct stat st;
	int have = fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
	int id = -1;
	pthread_mutex_lock(&lock);
	struct pt_inode **p = slot(nodeid);
	struct pt_inode *n = *p;
	if (!n) {
		n = calloc(1, sizeof *n);
		if (!n) {
			pthread_mutex_unlock(&lock);
			return -1;
		}
		n->nodeid = nodeid;
		n->backing_id = -1;
		*p = n;
	}
	if (n->through > 0) {
		id = n->backing_id;
		if (!allowed || !have || st.st_dev != n->dev || st.st_ino != n->ino)
			io_count(IO_PASSTHROUGH_SHARED);
	} else if (allowed && have && n->cached == 0 && atomic_load(&negotiated) && !(st.st_mode & (S_ISUID | S_ISGID)) &&
		   !killpriv_may_hold(nodeid) && io_room_for(fd, 0)) {
		id = backing_open(fd);
		if (id >= 0) {
			n->backing_id = id;
			n->dev = st.st_dev;
			n->ino = st.st_ino;
		}
	}
	if (id >= 0) {
		n->through++;
		fh_mode[fh] = 2;
		io_count(IO_PASSTHROUGH_OPENS);
	} else {
		n->cached++;
		fh_mode[fh] = 1;
	}
	fh_node[fh] = nodeid;
	pthread_mutex_unlock(&lock);
	reply_backing = id;
	return id;
}

void passthrough_release(uint64_t fh)
{
	if (fh >= MAX_FH)
		return;
	pthread_mutex_lock(&lock);
	uint8_t mode = fh_mode[fh];
	fh_mode[fh] = 0;
	struct pt_inode **p = mode ? slot(fh_node[fh]) : NULL;
	struct pt_inode *n = p ? *p : NULL;
	if (n) {
		if (mode == 2 && n->through > 0 && --n->through == 0) {
			/* The kernel let go of the backing file at its own release, before this request came. */
			uint32_t id = (uint32_t)n->backing_id;
			(void)ioctl(dev_fd, PT_IOC_BACKING_CLOSE, &id);
			n->backing_id = -1;
		} else if (mode == 1 && n->cached > 0) {
			n->cached--;
		}
		if (n->through == 0 && n->cached == 0) {
			*p = n->next;
			free(n);
		}
	}
	pthread_mutex_unlock(&lock);
}

void passthrough_reply_done(void) { reply_backing = -1; }

void passthrough_patch_reply(struct iovec *iov, int count)
{
	if (reply_backing < 0 || count < 2 || iov[1].iov_len < sizeof(struct fuse_open_out))
		return;
	struct fuse_open_out *o = (struct fuse_open_out *)((char *)iov[1].iov_base + iov[1].iov_len - sizeof *o);
	o->open_flags = (o->open_flags & PT_FOPEN_KEEP) | PT_FOPEN_PASSTHROUGH;
	o->padding = (uint32_t)reply_backing; /* backing_id */
	reply_backing = -1;
}
