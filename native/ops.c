/*
 * The libfuse low-level handlers. Each one either answers in C (the fd fast path in io.c, names JS
 * handed entries.c, names missing from listings JS handed listings.c, opens of files JS granted
 * grants.c, xattrs mcfs never stores,
 * forgets, a sole node's flushes) or fills its operation's arguments (named in mcfs_abi.h, from
 * src/fuse/abi.ts) and queues the request for JS. The strings go first and second in the order abi.ts
 * names them.
 */
#include "mcfs_fuse.h"
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define REQ(op_) struct mcfs_req h; memset(&h, 0, sizeof h); h.op = (op_); h.ino = ino

static void ll_lookup(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	if (entries_try_lookup(req, ino, name) || listing_try_absent(req, ino, name))
		return;
	REQ(OP_LOOKUP);
	queue_put(req, &h, name, NULL, NULL, 0);
}
static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n)
{
	(void)n;
	notify_entry_done(ino);
	fuse_reply_none(req);
}

static void ll_forget_multi(fuse_req_t req, size_t c, struct fuse_forget_data *f)
{
	for (size_t i = 0; i < c; i++)
		notify_entry_done(f[i].ino);
	fuse_reply_none(req);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (entries_try_getattr(req, ino))
		return;
	REQ(OP_GETATTR);
	h.fh = fi ? fi->fh : 0;
	h.getattr.has_fh = fi != NULL;
	queue_put(req, &h, NULL, NULL, NULL, 0);
}

static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *st, int to_set, struct fuse_file_info *fi)
{
	if (creates_try_setattr(req, ino, st, to_set, fi))
		return;
	REQ(OP_SETATTR);
	h.fh = fi ? fi->fh : 0;
	h.setattr.valid = (uint32_t)to_set | (killpriv_request_kills() ? SETATTR_KILL_PRIVILEGES : 0);
	h.setattr.has_fh = fi != NULL;
	h.setattr.size = (uint64_t)st->st_size;
	h.setattr.mode = st->st_mode;
	h.setattr.uid = st->st_uid;
	h.setattr.gid = st->st_gid;
	h.setattr.atime_sec = (uint64_t)st->st_atim.tv_sec;
	h.setattr.atime_nsec = (uint64_t)st->st_atim.tv_nsec;
	h.setattr.mtime_sec = (uint64_t)st->st_mtim.tv_sec;
	h.setattr.mtime_nsec = (uint64_t)st->st_mtim.tv_nsec;
	queue_put(req, &h, NULL, NULL, NULL, 0);
}

static void ll_readlink(fuse_req_t req, fuse_ino_t ino) { REQ(OP_READLINK); queue_put(req, &h, NULL, NULL, NULL, 0); }

static void ll_mknod(fuse_req_t req, fuse_ino_t ino, const char *name, mode_t mode, dev_t rdev)
{
	REQ(OP_MKNOD);
	h.mknod.mode = mode;
	h.mknod.rdev = rdev;
	queue_put(req, &h, name, NULL, NULL, 0);
}

static void ll_mkdir(fuse_req_t req, fuse_ino_t ino, const char *name, mode_t mode)
{
	REQ(OP_MKDIR);
	h.mkdir.mode = mode | S_IFDIR;
	queue_put(req, &h, name, NULL, NULL, 0);
}

static void ll_unlink(fuse_req_t req, fuse_ino_t ino, const char *name) { REQ(OP_UNLINK); queue_put(req, &h, name, NULL, NULL, 0); }
static void ll_rmdir(fuse_req_t req, fuse_ino_t ino, const char *name) { REQ(OP_RMDIR); queue_put(req, &h, name, NULL, NULL, 0); }

static void ll_symlink(fuse_req_t req, const char *link, fuse_ino_t ino, const char *name)
{
	REQ(OP_SYMLINK);
	queue_put(req, &h, name, link, NULL, 0);
}

static void ll_rename(fuse_req_t req, fuse_ino_t ino, const char *name, fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	REQ(OP_RENAME);
	h.rename.new_parent = newparent;
	h.rename.flags = flags;
	queue_put(req, &h, name, newname, NULL, 0);
}

static void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	REQ(OP_LINK);
	h.link.new_parent = newparent;
	queue_put(req, &h, newname, NULL, NULL, 0);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (grants_try_open(req, ino, fi))
		return;
	REQ(OP_OPEN);
	h.open.flags = (uint32_t)fi->flags;
	queue_put(req, &h, NULL, NULL, NULL, 0);
}

static void ll_create(fuse_req_t req, fuse_ino_t ino, const char *name, mode_t mode, struct fuse_file_info *fi)
{
	if (creates_try(req, ino, name, mode, fi))
		return;
	REQ(OP_CREATE);
	h.create.flags = (uint32_t)fi->flags;
	h.create.mode = mode;
	queue_put(req, &h, name, NULL, NULL, 0);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	if (io_try_read(req, fi->fh, size, off))
		return;
	REQ(OP_READ);
	h.fh = fi->fh;
	h.read.offset = (uint64_t)off;
	h.read.size = size;
	queue_put(req, &h, NULL, NULL, NULL, 0);
}

static void ll_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off, struct fuse_file_info *fi)
{
	/* Privileges to take first: JS does that, then the write. */
	int kill = killpriv_request_kills() && killpriv_may_hold(ino);
	if (!kill && io_try_write(req, fi->fh, in, off))
		return;
	size_t size = fuse_buf_size(in);
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
	REQ(OP_WRITE);
	h.fh = fi->fh;
	h.write.offset = (uint64_t)off;
	h.write.size = (uint64_t)n;
	h.write.kill = (uint64_t)kill;
	queue_put(req, &h, NULL, NULL, data, (size_t)n);
	free(data);
}

/* Set by mcfs_flush_notes before the session starts; read by the loop's threads only after. */
static int flush_notes;

void mcfs_flush_notes(int on) { flush_notes = on; }

int ops_close_notes(void) { return flush_notes; }

/* Every flush the kernel sent: a read-only open's handle gets none (FOPEN_NOFLUSH). */
static _Atomic uint64_t flushes;

uint64_t mcfs_flush_requests(void) { return atomic_load(&flushes); }

static void ll_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	atomic_fetch_add(&flushes, 1);
	/* Nothing written through a local fd since the last flush: nothing to publish. */
	if (io_served(fi->fh) && !io_dirty(fi->fh)) {
		fuse_reply_err(req, 0);
		return;
	}
	REQ(OP_FLUSH);
	h.fh = fi->fh;
	uint64_t seen[3];
	h.flush.dirty = io_take_dirty(fi->fh, seen);
	h.flush.size = seen[0];
	h.flush.mtime = seen[1];
	h.flush.ctime = seen[2];
	/*
	 * A node whose publish nobody else waits for (a sole node) answers the close here: the bytes are
	 * in its local file already, and JS publishes them before it answers anything after (in order).
	 */
	if (flush_notes && io_served(fi->fh) && queue_note(fuse_req_ctx(req), &h, NULL) == 0) {
		fuse_reply_err(req, 0);
		return;
	}
	queue_put(req, &h, NULL, NULL, NULL, 0);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	passthrough_release(fi->fh);
	REQ(OP_RELEASE);
	h.fh = fi->fh;
	uint64_t seen[3];
	h.release.dirty = io_take_dirty_at_release(fi->fh, seen);
	h.release.size = seen[0];
	h.release.mtime = seen[1];
	h.release.ctime = seen[2];
	/*
	 * A release with nothing written since the last flush changes nothing the kernel waits on (close
	 * returned with that flush): answered here, and JS closes the handle with its next request
	 * (before it, in order), or a late wake later, without a wake of its own. A writer's close
	 * published at its flush; its write turn goes back that much later. On a node whose flushes are
	 * notes, a written one is a note too: its writers have no flush (FOPEN_NOFLUSH), their release publishes.
	 */
	if ((!h.release.dirty || (flush_notes && io_served(fi->fh))) && queue_note(fuse_req_ctx(req), &h, NULL) == 0) {
		fuse_reply_err(req, 0);
		return;
	}
	queue_put(req, &h, NULL, NULL, NULL, 0);
}

static void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	REQ(OP_FSYNC);
	h.fh = fi->fh;
	h.fsync.datasync = (uint64_t)datasync;
	h.fsync.dirty = io_take_dirty(fi->fh, NULL);
	queue_put(req, &h, NULL, NULL, NULL, 0);
}

static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	REQ(OP_OPENDIR);
	h.opendir.flags = (uint32_t)fi->flags;
	queue_put(req, &h, NULL, NULL, NULL, 0);
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	REQ(OP_READDIR);
	h.fh = fi->fh;
	h.readdir.offset = (uint64_t)off;
	h.readdir.size = size;
	queue_put(req, &h, NULL, NULL, NULL, 0);
}

static void ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	REQ(OP_READDIRPLUS);
	h.fh = fi->fh;
	h.readdirplus.offset = (uint64_t)off;
	h.readdirplus.size = size;
	queue_put(req, &h, NULL, NULL, NULL, 0);
}

static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	REQ(OP_RELEASEDIR);
	h.fh = fi->fh;
	queue_put(req, &h, NULL, NULL, NULL, 0);
}

static void ll_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	REQ(OP_FSYNCDIR);
	h.fh = fi->fh;
	h.fsyncdir.datasync = (uint64_t)datasync;
	queue_put(req, &h, NULL, NULL, NULL, 0);
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino) { REQ(OP_STATFS); queue_put(req, &h, NULL, NULL, NULL, 0); }

static void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags)
{
	REQ(OP_SETXATTR);
	h.setxattr.flags = (uint64_t)flags;
	queue_put(req, &h, name, NULL, value, size);
}

static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	/*
	 * The kernel asks for security.capability before every write, and ls -l asks for ACLs and SELinux
	 * labels of every file. mcfs keeps none of these (setxattr refuses them), so answer here instead of
	 * costing a trip to JS and Redis; and answer that they are not supported, as a filesystem without
	 * them does: ls then stops asking for the rest of the files on the mount. The kernel asks before
	 * each write only where FUSE_HANDLE_KILLPRIV_V2 could not be negotiated (killpriv.c); where it was,
	 * once after each refresh of a file's attributes.
	 */
	if (strcmp(name, "security.capability") == 0 || strcmp(name, "security.selinux") == 0 ||
	    strncmp(name, "system.posix_acl_", 17) == 0) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	REQ(OP_GETXATTR);
	h.getxattr.size = size;
	queue_put(req, &h, name, NULL, NULL, 0);
}

static void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	REQ(OP_LISTXATTR);
	h.listxattr.size = size;
	queue_put(req, &h, NULL, NULL, NULL, 0);
}

static void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name) { REQ(OP_REMOVEXATTR); queue_put(req, &h, name, NULL, NULL, 0); }

static void ll_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	REQ(OP_ACCESS);
	h.access.mask = (uint64_t)mask;
	queue_put(req, &h, NULL, NULL, NULL, 0);
}

static void ll_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
	/* The kernel sends no kill flag with it: JS decides, for a file that may have privileges. */
	if (mcfs_killpriv() && killpriv_may_hold(ino)) {
		REQ(OP_FALLOCATE);
		h.fh = fi->fh;
		h.fallocate.mode = (uint64_t)mode;
		h.fallocate.offset = (uint64_t)off;
		h.fallocate.length = (uint64_t)len;
		queue_put(req, &h, NULL, NULL, NULL, 0);
		return;
	}
	io_fallocate(req, fi->fh, mode, off, len);
}

static void ll_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi)
{
	(void)ino;
	io_lseek(req, fi->fh, off, whence);
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

const struct fuse_lowlevel_ops ll_ops = {
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
