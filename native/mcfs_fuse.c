/*
 * mcfs FUSE shim: runs a libfuse3 low-level session on its own threads and hands requests to JS.
 *
 * Why a shim: Bun cannot block in fuse_session_loop, so the loop runs here. Each handler copies its
 * request into a queue and wakes JS through a pipe; JS drains the queue in batches (mcfs_poll) and
 * replies through mcfs_reply_* by request id. Ids are slot|generation, so a stale or duplicate reply is
 * refused instead of touching a freed fuse_req_t: every request is answered exactly once.
 *
 * Hot path: when JS opens a file whose bytes are on the local disk it attaches the backing fd to the
 * file handle (mcfs_set_fd); read/write/lseek/fallocate/fsync on that handle are then served here
 * with pread/pwrite/splice without a round trip through JS.
 */
#define FUSE_USE_VERSION 312
#define _GNU_SOURCE
#include <fuse_lowlevel.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

enum {
	OP_LOOKUP = 1, OP_GETATTR, OP_SETATTR, OP_READLINK, OP_MKNOD, OP_MKDIR, OP_UNLINK, OP_RMDIR,
	OP_SYMLINK, OP_RENAME, OP_LINK, OP_OPEN, OP_READ, OP_WRITE, OP_FLUSH, OP_RELEASE, OP_FSYNC,
	OP_OPENDIR, OP_READDIR, OP_RELEASEDIR, OP_FSYNCDIR, OP_STATFS, OP_SETXATTR, OP_GETXATTR,
	OP_LISTXATTR, OP_REMOVEXATTR, OP_ACCESS, OP_CREATE, OP_READDIRPLUS
};

/* Fixed header of a queued request; variable bytes (name, name2, data) follow, record padded to 8. */
struct rec {
	uint32_t len, id, op, uid, gid, pid, n1, n2, dlen, pad;
	uint64_t ino, fh, a, b, c, d, e, f, g, h;
};

struct qitem {
	struct qitem *next;
	struct rec r;
	/* variable part follows */
};

#define MAX_REQS (1u << 16)
#define SLOT_MASK (MAX_REQS - 1)
#define MAX_FH (1u << 20)

static struct fuse_session *se;
static pthread_t loop_thread;
static int loop_running;
static int single_thread;
static int wake_r = -1, wake_w = -1;

static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static struct qitem *qhead, *qtail;
static int wake_pending;

static pthread_mutex_t rlock = PTHREAD_MUTEX_INITIALIZER;
static fuse_req_t reqs[MAX_REQS];
static uint32_t gens[MAX_REQS];
static uint32_t free_list[MAX_REQS];
static uint32_t free_top;

static _Atomic int fh_fd[MAX_FH];
static _Atomic uint8_t fh_dirty[MAX_FH];
/* Reads and writes served here from local fds, for metrics: ops and bytes each way. */
static _Atomic uint64_t io_count[4];

static uint32_t req_put(fuse_req_t req)
{
	pthread_mutex_lock(&rlock);
	if (free_top == 0) {
		pthread_mutex_unlock(&rlock);
		return 0;
	}
	uint32_t slot = free_list[--free_top];
	reqs[slot] = req;
	uint32_t gen = ++gens[slot] & 0x7fff;
	if (gen == 0)
		gen = gens[slot] = 1;
	pthread_mutex_unlock(&rlock);
	return (gen << 16) | slot;
}

static fuse_req_t req_take(uint32_t id)
{
	uint32_t slot = id & SLOT_MASK, gen = id >> 16;
	fuse_req_t req = NULL;
	pthread_mutex_lock(&rlock);
	if (reqs[slot] && (gens[slot] & 0x7fff) == gen) {
		req = reqs[slot];
		reqs[slot] = NULL;
		free_list[free_top++] = slot;
	}
	pthread_mutex_unlock(&rlock);
	return req;
}

static void wake(void)
{
	char c = 1;
	while (write(wake_w, &c, 1) < 0 && errno == EINTR)
		;
}

/* Queue a request for JS. */
static void enqueue(fuse_req_t req, struct rec *h, const char *n1, const char *n2, const void *data, size_t dlen)
{
	size_t l1 = n1 ? strlen(n1) + 1 : 0, l2 = n2 ? strlen(n2) + 1 : 0;
	size_t len = (sizeof(struct rec) + l1 + l2 + dlen + 7) & ~(size_t)7;
	struct qitem *q = malloc(sizeof(struct qitem) - sizeof(struct rec) + len);
	if (!q) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	uint32_t id = req_put(req);
	if (!id) {
		free(q);
		fuse_reply_err(req, EAGAIN);
		return;
	}
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	h->len = (uint32_t)len;
	h->id = id;
	h->uid = ctx->uid;
	h->gid = ctx->gid;
	h->pid = ctx->pid;
	h->n1 = (uint32_t)l1;
	h->n2 = (uint32_t)l2;
	h->dlen = (uint32_t)dlen;
	q->r = *h;
	char *p = (char *)(&q->r + 1);
	if (l1) { memcpy(p, n1, l1); p += l1; }
	if (l2) { memcpy(p, n2, l2); p += l2; }
	if (dlen) memcpy(p, data, dlen);
	q->next = NULL;
	pthread_mutex_lock(&qlock);
	if (qtail) qtail->next = q; else qhead = q;
	qtail = q;
	int need_wake = !wake_pending;
	wake_pending = 1;
	pthread_mutex_unlock(&qlock);
	if (need_wake)
		wake();
}

#define REC(op_) struct rec h; memset(&h, 0, sizeof h); h.op = (op_); h.ino = ino

static void ll_lookup(fuse_req_t req, fuse_ino_t ino, const char *name) { REC(OP_LOOKUP); enqueue(req, &h, name, NULL, NULL, 0); }
static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n) { (void)ino; (void)n; fuse_reply_none(req); }
static void ll_forget_multi(fuse_req_t req, size_t c, struct fuse_forget_data *f) { (void)c; (void)f; fuse_reply_none(req); }

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	REC(OP_GETATTR);
	h.fh = fi ? fi->fh : 0;
	h.a = fi ? 1 : 0;
	enqueue(req, &h, NULL, NULL, NULL, 0);
}

static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *st, int to_set, struct fuse_file_info *fi)
{
	REC(OP_SETATTR);
	h.fh = fi ? fi->fh : 0;
	h.a = (uint64_t)to_set | (fi ? (1ull << 32) : 0);
	h.b = (uint64_t)st->st_size;
	h.c = ((uint64_t)st->st_mode << 32);
	h.d = ((uint64_t)st->st_uid << 32) | st->st_gid;
	h.e = (uint64_t)st->st_atim.tv_sec;
	h.f = (uint64_t)st->st_atim.tv_nsec;
	h.g = (uint64_t)st->st_mtim.tv_sec;
	h.h = (uint64_t)st->st_mtim.tv_nsec;
	enqueue(req, &h, NULL, NULL, NULL, 0);
}

static void ll_readlink(fuse_req_t req, fuse_ino_t ino) { REC(OP_READLINK); enqueue(req, &h, NULL, NULL, NULL, 0); }

static void ll_mknod(fuse_req_t req, fuse_ino_t ino, const char *name, mode_t mode, dev_t rdev)
{
	REC(OP_MKNOD);
	h.a = mode;
	h.b = rdev;
	enqueue(req, &h, name, NULL, NULL, 0);
}

static void ll_mkdir(fuse_req_t req, fuse_ino_t ino, const char *name, mode_t mode)
{
	REC(OP_MKDIR);
	h.a = mode | S_IFDIR;
	enqueue(req, &h, name, NULL, NULL, 0);
}

static void ll_unlink(fuse_req_t req, fuse_ino_t ino, const char *name) { REC(OP_UNLINK); enqueue(req, &h, name, NULL, NULL, 0); }
static void ll_rmdir(fuse_req_t req, fuse_ino_t ino, const char *name) { REC(OP_RMDIR); enqueue(req, &h, name, NULL, NULL, 0); }

static void ll_symlink(fuse_req_t req, const char *link, fuse_ino_t ino, const char *name)
{
	REC(OP_SYMLINK);
	enqueue(req, &h, name, link, NULL, 0);
}

static void ll_rename(fuse_req_t req, fuse_ino_t ino, const char *name, fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	REC(OP_RENAME);
	h.a = newparent;
	h.b = flags;
	enqueue(req, &h, name, newname, NULL, 0);
}

static void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	REC(OP_LINK);
	h.a = newparent;
	enqueue(req, &h, newname, NULL, NULL, 0);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	REC(OP_OPEN);
	h.a = (uint32_t)fi->flags;
	enqueue(req, &h, NULL, NULL, NULL, 0);
}

static void ll_create(fuse_req_t req, fuse_ino_t ino, const char *name, mode_t mode, struct fuse_file_info *fi)
{
	REC(OP_CREATE);
	h.a = (uint32_t)fi->flags;
	h.b = mode;
	enqueue(req, &h, name, NULL, NULL, 0);
}

static int fd_of(uint64_t fh)
{
	return fh < MAX_FH ? atomic_load(&fh_fd[fh]) : -1;
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	int fd = fd_of(fi->fh);
	if (fd >= 0) {
		struct stat st;
		/* What the read returns: up to the end of the file (the kernel asks in whole pages). */
		if (fstat(fd, &st) == 0 && st.st_size > off)
			atomic_fetch_add(&io_count[1], (uint64_t)st.st_size - (uint64_t)off < size ? (uint64_t)st.st_size - (uint64_t)off : size);
		atomic_fetch_add(&io_count[0], 1);
		struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
		buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		buf.buf[0].fd = fd;
		buf.buf[0].pos = off;
		fuse_reply_data(req, &buf, 0);
		return;
	}
	REC(OP_READ);
	h.fh = fi->fh;
	h.a = (uint64_t)off;
	h.b = size;
	enqueue(req, &h, NULL, NULL, NULL, 0);
}

static void ll_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off, struct fuse_file_info *fi)
{
	int fd = fd_of(fi->fh);
	size_t size = fuse_buf_size(in);
	if (fd >= 0) {
		struct fuse_bufvec out = FUSE_BUFVEC_INIT(size);
		out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		out.buf[0].fd = fd;
		out.buf[0].pos = off;
		ssize_t n = fuse_buf_copy(&out, in, 0);
		if (n < 0) {
			fuse_reply_err(req, (int)-n);
			return;
		}
		atomic_store(&fh_dirty[fi->fh], 1);
		atomic_fetch_add(&io_count[2], 1);
		atomic_fetch_add(&io_count[3], (uint64_t)n);
		fuse_reply_write(req, (size_t)n);
		return;
	}
	void *data = malloc(size ? size : 1);
	if (!data) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	struct fuse_bufvec tmp = FUSE_BUFVEC_INIT(size);
	tmp.buf[0].mem = data;
	ssize_t n = fuse_buf_copy(&tmp, in, 0);
	if (n < 0) {
		free(data);
		fuse_reply_err(req, (int)-n);
		return;
	}
	REC(OP_WRITE);
	h.fh = fi->fh;
	h.a = (uint64_t)off;
	h.b = (uint64_t)n;
	enqueue(req, &h, NULL, NULL, data, (size_t)n);
	free(data);
}

static void ll_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	/* Nothing written through a local fd since the last flush: nothing to publish. */
	if (fd_of(fi->fh) >= 0 && !atomic_load(&fh_dirty[fi->fh])) {
		fuse_reply_err(req, 0);
		return;
	}
	REC(OP_FLUSH);
	h.fh = fi->fh;
	h.a = fi->fh < MAX_FH ? atomic_exchange(&fh_dirty[fi->fh], 0) : 0;
	enqueue(req, &h, NULL, NULL, NULL, 0);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	REC(OP_RELEASE);
	h.fh = fi->fh;
	h.a = fi->fh < MAX_FH ? atomic_exchange(&fh_dirty[fi->fh], 0) : 0;
	enqueue(req, &h, NULL, NULL, NULL, 0);
}

static void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	REC(OP_FSYNC);
	h.fh = fi->fh;
	h.a = (uint64_t)datasync;
	h.b = fi->fh < MAX_FH ? atomic_exchange(&fh_dirty[fi->fh], 0) : 0;
	enqueue(req, &h, NULL, NULL, NULL, 0);
}

static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	REC(OP_OPENDIR);
	h.a = (uint32_t)fi->flags;
	enqueue(req, &h, NULL, NULL, NULL, 0);
}

static void queue_readdir(uint32_t op, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	REC(op);
	h.fh = fi->fh;
	h.a = (uint64_t)off;
	h.b = size;
	enqueue(req, &h, NULL, NULL, NULL, 0);
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	queue_readdir(OP_READDIR, req, ino, size, off, fi);
}

static void ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	queue_readdir(OP_READDIRPLUS, req, ino, size, off, fi);
}

static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	REC(OP_RELEASEDIR);
	h.fh = fi->fh;
	enqueue(req, &h, NULL, NULL, NULL, 0);
}

static void ll_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	REC(OP_FSYNCDIR);
	h.fh = fi->fh;
	h.a = (uint64_t)datasync;
	enqueue(req, &h, NULL, NULL, NULL, 0);
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino) { REC(OP_STATFS); enqueue(req, &h, NULL, NULL, NULL, 0); }

static void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags)
{
	REC(OP_SETXATTR);
	h.a = (uint64_t)flags;
	enqueue(req, &h, name, NULL, value, size);
}

static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	/*
	 * The kernel asks for security.capability before every write, and ls -l asks for ACLs and SELinux
	 * labels of every file. mcfs keeps none of these (setxattr refuses them), so answer here instead of
	 * costing a trip to JS and Redis.
	 */
	if (strcmp(name, "security.capability") == 0 || strcmp(name, "security.selinux") == 0 ||
	    strncmp(name, "system.posix_acl_", 17) == 0) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	REC(OP_GETXATTR);
	h.a = size;
	enqueue(req, &h, name, NULL, NULL, 0);
}

static void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	REC(OP_LISTXATTR);
	h.a = size;
	enqueue(req, &h, NULL, NULL, NULL, 0);
}

static void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name) { REC(OP_REMOVEXATTR); enqueue(req, &h, name, NULL, NULL, 0); }

static void ll_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	REC(OP_ACCESS);
	h.a = (uint64_t)mask;
	enqueue(req, &h, NULL, NULL, NULL, 0);
}

static void ll_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
	(void)ino;
	int fd = fd_of(fi->fh);
	if (fd < 0) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	int r = fallocate(fd, mode, off, len);
	if (r == 0)
		atomic_store(&fh_dirty[fi->fh], 1);
	fuse_reply_err(req, r == 0 ? 0 : errno);
}

static void ll_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi)
{
	(void)ino;
	int fd = fd_of(fi->fh);
	if (fd < 0) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	off_t r = lseek(fd, off, whence);
	if (r < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_lseek(req, r);
}

static void ll_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* Reads of local files go from the backing fd to /dev/fuse without a copy through user space. */
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE;
	conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_MOVE);
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* O_TRUNC arrives with open instead of as a separate setattr. */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
	/* Lock state is node-local; the kernel then keeps flock/POSIX locks itself. */
	conn->want &= ~(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
	/* Requests of up to 1 MiB (libfuse asks the kernel for max_pages from max_write): an eighth of
	   the requests for big reads and writes, and so of the hops into JS for remote ones. */
	conn->max_write = 1u << 20;
	conn->max_readahead = 1u << 20;
}

static const struct fuse_lowlevel_ops ops = {
	.init = ll_init,
	.lookup = ll_lookup,
	.forget = ll_forget,
	.forget_multi = ll_forget_multi,
	.getattr = ll_getattr,
	.setattr = ll_setattr,
	.readlink = ll_readlink,
	.mknod = ll_mknod,
	.mkdir = ll_mkdir,
	.unlink = ll_unlink,
	.rmdir = ll_rmdir,
	.symlink = ll_symlink,
	.rename = ll_rename,
	.link = ll_link,
	.open = ll_open,
	.read = ll_read,
	.write_buf = ll_write_buf,
	.flush = ll_flush,
	.release = ll_release,
	.fsync = ll_fsync,
	.opendir = ll_opendir,
	.readdir = ll_readdir,
	.readdirplus = ll_readdirplus,
	.releasedir = ll_releasedir,
	.fsyncdir = ll_fsyncdir,
	.statfs = ll_statfs,
	.setxattr = ll_setxattr,
	.getxattr = ll_getxattr,
	.listxattr = ll_listxattr,
	.removexattr = ll_removexattr,
	.access = ll_access,
	.create = ll_create,
	.fallocate = ll_fallocate,
	.lseek = ll_lseek,
};

/*
 * Kernel cache invalidations run on their own thread: a notification can block until the kernel gets a
 * directory lock held by a request that only JS can answer, so JS must never make them itself.
 */
struct note {
	struct note *next;
	uint64_t ino;
	uint64_t seq;
	int entry;
	/* Inode: only its attributes (its cached pages stay). */
	int attrs_only;
	char name[];
};
/* Notes queued and carried out so far: JS waits for done to reach pushed (mcfs_notes_*). */
static uint64_t notes_pushed, notes_done;
static pthread_mutex_t nlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ncond = PTHREAD_COND_INITIALIZER;
static struct note *nhead, *ntail;
static int note_stop;
static pthread_t note_thread;
static int note_running;

static void *note_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&nlock);
	for (;;) {
		while (!nhead && !note_stop)
			pthread_cond_wait(&ncond, &nlock);
		if (note_stop)
			break;
		struct note *n = nhead;
		nhead = n->next;
		if (!nhead)
			ntail = NULL;
		pthread_mutex_unlock(&nlock);
		/* ENOENT only means the kernel had nothing cached for it. */
		if (n->entry)
			fuse_lowlevel_notify_inval_entry(se, n->ino, n->name, strlen(n->name));
		else
			fuse_lowlevel_notify_inval_inode(se, n->ino, n->attrs_only ? -1 : 0, 0);
		uint64_t seq = n->seq;
		free(n);
		pthread_mutex_lock(&nlock);
		notes_done = seq;
		/* Drained: JS may be waiting for these to have reached the kernel. */
		if (!nhead) {
			pthread_mutex_unlock(&nlock);
			wake();
			pthread_mutex_lock(&nlock);
		}
	}
	while (nhead) {
		struct note *n = nhead;
		nhead = n->next;
		free(n);
	}
	ntail = NULL;
	pthread_mutex_unlock(&nlock);
	return NULL;
}

static int note_push(uint64_t ino, const char *name, int attrs_only)
{
	size_t l = name ? strlen(name) + 1 : 1;
	struct note *n = malloc(sizeof *n + l);
	if (!n)
		return -ENOMEM;
	n->next = NULL;
	n->ino = ino;
	n->entry = name != NULL;
	n->attrs_only = attrs_only;
	memcpy(n->name, name ? name : "", l);
	pthread_mutex_lock(&nlock);
	if (!note_running) {
		pthread_mutex_unlock(&nlock);
		free(n);
		return -ENOTCONN;
	}
	n->seq = ++notes_pushed;
	if (ntail) ntail->next = n; else nhead = n;
	ntail = n;
	pthread_cond_signal(&ncond);
	pthread_mutex_unlock(&nlock);
	return 0;
}

/* Forget the kernel's cached entry parent/name (queued). */
int mcfs_inval_entry(uint64_t parent, const char *name) { return note_push(parent, name, 0); }

/* Forget the kernel's cached attributes and pages of ino (queued). */
int mcfs_inval_inode(uint64_t ino) { return note_push(ino, NULL, 0); }

/* Forget the kernel's cached attributes of ino, keeping its pages (queued). */
int mcfs_inval_attrs(uint64_t ino) { return note_push(ino, NULL, 1); }

/* How many invalidations were queued, and how many carried out (the kernel has them). */
uint64_t mcfs_notes_pushed(void)
{
	pthread_mutex_lock(&nlock);
	uint64_t n = notes_pushed;
	pthread_mutex_unlock(&nlock);
	return n;
}

uint64_t mcfs_notes_done(void)
{
	pthread_mutex_lock(&nlock);
	uint64_t n = notes_done;
	pthread_mutex_unlock(&nlock);
	return n;
}

static void *loop_main(void *arg)
{
	(void)arg;
	if (single_thread) {
		fuse_session_loop(se);
	} else {
		struct fuse_loop_config *cfg = fuse_loop_cfg_create();
		fuse_loop_cfg_set_max_threads(cfg, 16);
		fuse_loop_cfg_set_clone_fd(cfg, 0);
		fuse_session_loop_mt(se, cfg);
		fuse_loop_cfg_destroy(cfg);
	}
	/* Tell JS the session ended (unmounted from outside or stopped). */
	__atomic_store_n(&loop_running, 0, __ATOMIC_SEQ_CST);
	wake();
	return NULL;
}

/*
 * Mount and start the session. opts is a comma list of -o options. debug turns on libfuse's tracing.
 * Returns the read end of the wake pipe, or -errno.
 */
int mcfs_start(const char *mountpoint, const char *opts, int debug, int single)
{
	if (se)
		return -EBUSY;
	/*
	 * The abort file used by mcfs_stop lives in fusectl; mount it if the system has not (EBUSY if it
	 * has, EPERM for a user other than root, who relies on the system's).
	 */
	(void)mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, NULL);
	for (uint32_t i = 0; i < MAX_REQS - 1; i++)
		free_list[i] = MAX_REQS - 1 - i; /* slot 0 unused: id 0 means "no request" */
	free_top = MAX_REQS - 1;
	for (uint32_t i = 0; i < MAX_FH; i++)
		atomic_store(&fh_fd[i], -1);
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	/* Non-blocking both ways: Bun then waits on the read end in its event loop instead of blocking. */
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	fcntl(p[1], F_SETFL, O_NONBLOCK);
	wake_r = p[0];
	wake_w = p[1];
	const char *argv[5];
	int argc = 0;
	argv[argc++] = "mcfs";
	argv[argc++] = "-o";
	argv[argc++] = opts;
	if (debug)
		argv[argc++] = "-d";
	struct fuse_args args = FUSE_ARGS_INIT(argc, (char **)argv);
	se = fuse_session_new(&args, &ops, sizeof ops, NULL);
	if (!se) {
		close(p[0]);
		close(p[1]);
		return -EINVAL;
	}
	if (fuse_session_mount(se, mountpoint) != 0) {
		fuse_session_destroy(se);
		se = NULL;
		close(p[0]);
		close(p[1]);
		return -EIO;
	}
	single_thread = single;
	note_stop = 0;
	if (pthread_create(&note_thread, NULL, note_main, NULL) == 0)
		note_running = 1;
	loop_running = 1;
	if (pthread_create(&loop_thread, NULL, loop_main, NULL) != 0) {
		fuse_session_unmount(se);
		fuse_session_destroy(se);
		se = NULL;
		return -EAGAIN;
	}
	return wake_r;
}

int mcfs_running(void) { return __atomic_load_n(&loop_running, __ATOMIC_SEQ_CST); }

/* Copy queued requests into buf (whole records only). Returns bytes written. */
int mcfs_poll(uint8_t *buf, int cap)
{
	char drain[256];
	while (read(wake_r, drain, sizeof drain) == (ssize_t)sizeof drain)
		;
	int used = 0;
	pthread_mutex_lock(&qlock);
	while (qhead && used + (int)qhead->r.len <= cap) {
		struct qitem *q = qhead;
		qhead = q->next;
		if (!qhead)
			qtail = NULL;
		memcpy(buf + used, &q->r, q->r.len);
		used += (int)q->r.len;
		free(q);
	}
	wake_pending = qhead != NULL;
	pthread_mutex_unlock(&qlock);
	if (wake_pending)
		wake();
	return used;
}

/* Attr layout shared with JS: 16 x int64. */
enum { A_INO, A_MODE, A_NLINK, A_UID, A_GID, A_RDEV, A_SIZE, A_BLOCKS, A_ATIME, A_ATIMENS, A_MTIME, A_MTIMENS, A_CTIME, A_CTIMENS, A_BLKSIZE, A_N };

static void to_stat(const int64_t *a, struct stat *st)
{
	memset(st, 0, sizeof *st);
	st->st_ino = (ino_t)a[A_INO];
	st->st_mode = (mode_t)a[A_MODE];
	st->st_nlink = (nlink_t)a[A_NLINK];
	st->st_uid = (uid_t)a[A_UID];
	st->st_gid = (gid_t)a[A_GID];
	st->st_rdev = (dev_t)a[A_RDEV];
	st->st_size = (off_t)a[A_SIZE];
	st->st_blocks = (blkcnt_t)a[A_BLOCKS];
	st->st_atim.tv_sec = a[A_ATIME];
	st->st_atim.tv_nsec = a[A_ATIMENS];
	st->st_mtim.tv_sec = a[A_MTIME];
	st->st_mtim.tv_nsec = a[A_MTIMENS];
	st->st_ctim.tv_sec = a[A_CTIME];
	st->st_ctim.tv_nsec = a[A_CTIMENS];
	st->st_blksize = (blksize_t)a[A_BLKSIZE];
}

static void to_entry(const int64_t *a, double entry_to, double attr_to, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof *e);
	e->ino = (fuse_ino_t)a[A_INO];
	e->generation = 1;
	to_stat(a, &e->attr);
	e->entry_timeout = entry_to;
	e->attr_timeout = attr_to;
}

int mcfs_reply_err(uint32_t id, int err)
{
	fuse_req_t r = req_take(id);
	if (!r) return -ENOENT;
	return fuse_reply_err(r, err);
}

int mcfs_reply_none(uint32_t id)
{
	fuse_req_t r = req_take(id);
	if (!r) return -ENOENT;
	fuse_reply_none(r);
	return 0;
}

/* ino 0 with entry_to > 0 is a negative entry: the kernel caches "no such name". */
int mcfs_reply_entry(uint32_t id, const int64_t *attr, double entry_to, double attr_to)
{
	fuse_req_t r = req_take(id);
	if (!r) return -ENOENT;
	struct fuse_entry_param e;
	to_entry(attr, entry_to, attr_to, &e);
	return fuse_reply_entry(r, &e);
}

int mcfs_reply_attr(uint32_t id, const int64_t *attr, double attr_to)
{
	fuse_req_t r = req_take(id);
	if (!r) return -ENOENT;
	struct stat st;
	to_stat(attr, &st);
	return fuse_reply_attr(r, &st, attr_to);
}

static void set_fh(uint64_t fh, int fd)
{
	if (fh < MAX_FH) {
		atomic_store(&fh_dirty[fh], 0);
		atomic_store(&fh_fd[fh], fd);
	}
}

/* flags: bit0 direct_io, bit1 keep_cache, bit2 nonseekable. fd >= 0 attaches a backing fd to fh. */
int mcfs_reply_open(uint32_t id, uint64_t fh, int fd, uint32_t flags)
{
	fuse_req_t r = req_take(id);
	if (!r) return -ENOENT;
	struct fuse_file_info fi;
	memset(&fi, 0, sizeof fi);
	fi.fh = fh;
	fi.direct_io = flags & 1;
	fi.keep_cache = (flags >> 1) & 1;
	fi.nonseekable = (flags >> 2) & 1;
	set_fh(fh, fd);
	int rc = fuse_reply_open(r, &fi);
	if (rc != 0)
		set_fh(fh, -1);
	return rc;
}

int mcfs_reply_create(uint32_t id, const int64_t *attr, double entry_to, double attr_to, uint64_t fh, int fd, uint32_t flags)
{
	fuse_req_t r = req_take(id);
	if (!r) return -ENOENT;
	struct fuse_entry_param e;
	to_entry(attr, entry_to, attr_to, &e);
	struct fuse_file_info fi;
	memset(&fi, 0, sizeof fi);
	fi.fh = fh;
	fi.direct_io = flags & 1;
	fi.keep_cache = (flags >> 1) & 1;
	set_fh(fh, fd);
	int rc = fuse_reply_create(r, &e, &fi);
	if (rc != 0)
		set_fh(fh, -1);
	return rc;
}

/* Detach the backing fd from fh (JS closes the fd itself afterwards). */
void mcfs_clear_fh(uint64_t fh) { set_fh(fh, -1); }

/* Reads and writes served from local fds so far: out = {read ops, read bytes, write ops, write bytes}. */
void mcfs_io_counters(uint64_t *out)
{
	for (int i = 0; i < 4; i++)
		out[i] = atomic_load(&io_count[i]);
}

int mcfs_reply_buf(uint32_t id, const void *buf, uint64_t len)
{
	fuse_req_t r = req_take(id);
	if (!r) return -ENOENT;
	return fuse_reply_buf(r, buf, len);
}

int mcfs_reply_write(uint32_t id, uint64_t count)
{
	fuse_req_t r = req_take(id);
	if (!r) return -ENOENT;
	return fuse_reply_write(r, count);
}

int mcfs_reply_xattr(uint32_t id, uint64_t count)
{
	fuse_req_t r = req_take(id);
	if (!r) return -ENOENT;
	return fuse_reply_xattr(r, count);
}

int mcfs_reply_readlink(uint32_t id, const char *target)
{
	fuse_req_t r = req_take(id);
	if (!r) return -ENOENT;
	return fuse_reply_readlink(r, target);
}

/* s: bsize, frsize, blocks, bfree, bavail, files, ffree, favail, namemax */
int mcfs_reply_statfs(uint32_t id, const uint64_t *s)
{
	fuse_req_t r = req_take(id);
	if (!r) return -ENOENT;
	struct statvfs v;
	memset(&v, 0, sizeof v);
	v.f_bsize = s[0];
	v.f_frsize = s[1];
	v.f_blocks = s[2];
	v.f_bfree = s[3];
	v.f_bavail = s[4];
	v.f_files = s[5];
	v.f_ffree = s[6];
	v.f_favail = s[7];
	v.f_namemax = s[8];
	return fuse_reply_statfs(r, &v);
}

/*
 * Directory listing. ents holds n records: attr (A_N x int64), next offset (int64), name length
 * (int64, including NUL), name bytes padded to 8. Entries are packed until size is reached; plus
 * selects readdirplus. Returns how many entries were sent, or -errno.
 */
int mcfs_reply_dir(uint32_t id, uint64_t size, int plus, const uint8_t *ents, int n, double entry_to, double attr_to)
{
	fuse_req_t r = req_take(id);
	if (!r) return -ENOENT;
	char *buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(r, ENOMEM);
		return -ENOMEM;
	}
	size_t used = 0;
	int i;
	const uint8_t *p = ents;
	for (i = 0; i < n; i++) {
		const int64_t *a = (const int64_t *)p;
		int64_t next = a[A_N];
		int64_t nlen = a[A_N + 1];
		const char *name = (const char *)(a + A_N + 2);
		size_t sz;
		if (plus) {
			struct fuse_entry_param e;
			to_entry(a, entry_to, attr_to, &e);
			/* "." and ".." take no lookup reference: send them without attributes. */
			if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
				memset(&e, 0, sizeof e);
				e.attr.st_ino = (ino_t)a[A_INO];
				e.attr.st_mode = (mode_t)a[A_MODE];
			}
			sz = fuse_add_direntry_plus(r, buf + used, size - used, name, &e, next);
		} else {
			struct stat st;
			to_stat(a, &st);
			sz = fuse_add_direntry(r, buf + used, size - used, name, &st, next);
		}
		if (sz > size - used)
			break;
		used += sz;
		p += (size_t)((A_N + 2) * 8) + (((size_t)nlen + 7) & ~(size_t)7);
	}
	fuse_reply_buf(r, buf, used);
	free(buf);
	return i;
}



/*
 * Stop the session, once the caller has lazily unmounted it (umount2 as root, fusermount3 for other
 * users, who may not call umount2): abort the connection (conn is the mount's device minor, -1 if
 * unknown; fusectl gives its abort file to the user who mounted) so loop threads blocked in
 * read(/dev/fuse) return even while files are open, then join the loop thread for at most timeout_ms.
 * Returns 0 when the loop ended, -ETIMEDOUT when it is still stuck.
 */
int mcfs_stop(int conn, int timeout_ms)
{
	if (!se)
		return 0;
	fuse_session_exit(se);
	if (conn >= 0) {
		char path[80];
		snprintf(path, sizeof path, "/sys/fs/fuse/connections/%d/abort", conn);
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd >= 0) {
			(void)!write(fd, "1", 1);
			close(fd);
		}
	}
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	if (pthread_timedjoin_np(loop_thread, NULL, &ts) != 0)
		return -ETIMEDOUT;
	pthread_mutex_lock(&nlock);
	int joined_notes = note_running;
	note_running = 0;
	note_stop = 1;
	pthread_cond_signal(&ncond);
	pthread_mutex_unlock(&nlock);
	if (joined_notes)
		pthread_join(note_thread, NULL);
	fuse_session_unmount(se);
	fuse_session_destroy(se);
	se = NULL;
	return 0;
}
