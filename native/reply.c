/*
 * Replies from JS, by request id: each mcfs_reply_* takes the request out of the id table (ids.c) and
 * answers it, or returns -ENOENT when the id was already answered. Attributes, directory entries and
 * statfs arrive as the int64/uint64 arrays described in mcfs_abi.h.
 */
#include "mcfs_fuse.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

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
	st->st_atim.tv_nsec = a[A_ATIME_NSEC];
	st->st_mtim.tv_sec = a[A_MTIME];
	st->st_mtim.tv_nsec = a[A_MTIME_NSEC];
	st->st_ctim.tv_sec = a[A_CTIME];
	st->st_ctim.tv_nsec = a[A_CTIME_NSEC];
	st->st_blksize = (blksize_t)a[A_BLKSIZE];
}

void attr_entry(const int64_t *a, double entry_to, double attr_to, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof *e);
	e->ino = (fuse_ino_t)a[A_INO];
	e->generation = 1;
	to_stat(a, &e->attr);
	killpriv_told((uint64_t)a[A_INO], (uint32_t)a[A_MODE]);
	mcfs_entry_answering((uint64_t)a[A_INO]);
	e->entry_timeout = entry_to;
	e->attr_timeout = attr_to;
}

int mcfs_reply_err(uint32_t id, int err)
{
	fuse_req_t r = ids_take(id);
	if (!r) return -ENOENT;
	return fuse_reply_err(r, err);
}

int mcfs_reply_none(uint32_t id)
{
	fuse_req_t r = ids_take(id);
	if (!r) return -ENOENT;
	fuse_reply_none(r);
	return 0;
}

/* ino 0 with entry_to > 0 is a negative entry: the kernel caches "no such name". */
int mcfs_reply_entry(uint32_t id, const int64_t *attr, double entry_to, double attr_to)
{
	fuse_req_t r = ids_take(id);
	if (!r) return -ENOENT;
	struct fuse_entry_param e;
	attr_entry(attr, entry_to, attr_to, &e);
	int rc = fuse_reply_entry(r, &e);
	if (rc != 0 && e.ino)
		notify_entry_done(e.ino);
	return rc;
}

int mcfs_reply_attr(uint32_t id, const int64_t *attr, double attr_to)
{
	fuse_req_t r = ids_take(id);
	if (!r) return -ENOENT;
	struct stat st;
	to_stat(attr, &st);
	killpriv_told((uint64_t)attr[A_INO], (uint32_t)attr[A_MODE]);
	return fuse_reply_attr(r, &st, attr_to);
}

/*
 * fd (>= 0) attached to fh for io.c, and in passthrough when passthrough.c says so (ino 0: a
 * directory's, never). A passthrough writer's writes are unseen: its flushes and release publish
 * (IO_STICKY).
 */
void open_attach(uint64_t ino, uint64_t fh, int fd, uint32_t flags)
{
	int through = ino != 0 && passthrough_open(ino, fh, fd, (flags & OPEN_PASSTHROUGH) != 0) >= 0;
	io_attach(fh, fd, through && (flags & OPEN_WRITES) ? IO_STICKY : (flags & OPEN_UNPUBLISHED) != 0);
}

/* Nothing of the handle is left here (its fh numbers a directory's handles too: ino 0 says which). */
void open_undone(uint64_t ino, uint64_t fh)
{
	io_attach(fh, -1, 0);
	if (ino != 0)
		passthrough_release(fh);
}

/* flags: OPEN_* bits. fd >= 0 attaches a backing fd to fh (io.c serves it from then on). */
int mcfs_reply_open(uint32_t id, uint64_t ino, uint64_t fh, int fd, uint32_t flags)
{
	fuse_req_t r = ids_take(id);
	if (!r) return -ENOENT;
	struct fuse_file_info fi;
	memset(&fi, 0, sizeof fi);
	fi.fh = fh;
	fi.direct_io = (flags & OPEN_DIRECT_IO) != 0;
	fi.keep_cache = (flags & OPEN_KEEP_CACHE) != 0;
	fi.nonseekable = (flags & OPEN_NONSEEKABLE) != 0;
	fi.noflush = (flags & OPEN_NO_FLUSH) != 0;
	open_attach(ino, fh, fd, flags);
	int rc = fuse_reply_open(r, &fi);
	passthrough_reply_done();
	if (rc != 0)
		open_undone(ino, fh);
	return rc;
}

int mcfs_reply_create(uint32_t id, const int64_t *attr, double entry_to, double attr_to, uint64_t fh, int fd, uint32_t flags)
{
	fuse_req_t r = ids_take(id);
	if (!r) return -ENOENT;
	struct fuse_entry_param e;
	attr_entry(attr, entry_to, attr_to, &e);
	struct fuse_file_info fi;
	memset(&fi, 0, sizeof fi);
	fi.fh = fh;
	fi.direct_io = (flags & OPEN_DIRECT_IO) != 0;
	fi.keep_cache = (flags & OPEN_KEEP_CACHE) != 0;
	fi.noflush = (flags & OPEN_NO_FLUSH) != 0;
	uint64_t ino = (uint64_t)attr[A_INO];
	open_attach(ino, fh, fd, flags);
	int rc = fuse_reply_create(r, &e, &fi);
	passthrough_reply_done();
	if (rc != 0) {
		notify_entry_done(ino);
		open_undone(ino, fh);
	}
	return rc;
}

int mcfs_reply_fallocate(uint32_t id, uint64_t fh, int mode, uint64_t offset, uint64_t length)
{
	fuse_req_t r = ids_take(id);
	if (!r) return -ENOENT;
	io_fallocate(r, fh, mode, (off_t)offset, (off_t)length);
	return 0;
}

int mcfs_reply_buf(uint32_t id, const void *buf, uint64_t len)
{
	fuse_req_t r = ids_take(id);
	if (!r) return -ENOENT;
	return fuse_reply_buf(r, buf, len);
}

/*
 * len bytes of fd from off, spliced from its pages as the fast path does (no copy through JS). A file
 * shorter than that is EIO: a short read would tell the kernel the file ends there.
 */
int mcfs_reply_fd(uint32_t id, int fd, uint64_t off, uint64_t len)
{
	fuse_req_t r = ids_take(id);
	if (!r) return -ENOENT;
	struct stat st;
	if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < off + len)
		return fuse_reply_err(r, EIO);
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(len);
	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = fd;
	buf.buf[0].pos = (off_t)off;
	return fuse_reply_data(r, &buf, 0);
}

int mcfs_reply_write(uint32_t id, uint64_t count)
{
	fuse_req_t r = ids_take(id);
	if (!r) return -ENOENT;
	return fuse_reply_write(r, count);
}

int mcfs_reply_xattr(uint32_t id, uint64_t count)
{
	fuse_req_t r = ids_take(id);
	if (!r) return -ENOENT;
	return fuse_reply_xattr(r, count);
}

int mcfs_reply_readlink(uint32_t id, const char *target)
{
	fuse_req_t r = ids_take(id);
	if (!r) return -ENOENT;
	return fuse_reply_readlink(r, target);
}

/* s: STATFS_N values in the order of STATFS_*. */
int mcfs_reply_statfs(uint32_t id, const uint64_t *s)
{
	fuse_req_t r = ids_take(id);
	if (!r) return -ENOENT;
	struct statvfs v;
	memset(&v, 0, sizeof v);
	v.f_bsize = s[STATFS_BSIZE];
	v.f_frsize = s[STATFS_FRSIZE];
	v.f_blocks = s[STATFS_BLOCKS];
	v.f_bfree = s[STATFS_BFREE];
	v.f_bavail = s[STATFS_BAVAIL];
	v.f_files = s[STATFS_FILES];
	v.f_ffree = s[STATFS_FFREE];
	v.f_favail = s[STATFS_FAVAIL];
	v.f_namemax = s[STATFS_NAMEMAX];
	return fuse_reply_statfs(r, &v);
}

/*
 * Directory listing. ents holds n records laid out as DIRENT_* says. Entries are packed until size is
 * reached; plus selects readdirplus. Returns how many entries were sent, or -errno.
 */
int mcfs_reply_dir(uint32_t id, uint64_t size, int plus, const uint8_t *ents, int n, double entry_to, double attr_to)
{
	fuse_req_t r = ids_take(id);
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
		int64_t next = a[DIRENT_NEXT];
		const char *name = (const char *)(a + DIRENT_NAME);
		size_t sz;
		if (plus) {
			struct fuse_entry_param e;
			attr_entry(a, entry_to, attr_to, &e);
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
		if (sz > size - used) {
			if (plus)
				notify_entry_done((uint64_t)a[A_INO]);
			break;
		}
		used += sz;
		p = dirent_next(a);
	}
	if (fuse_reply_buf(r, buf, used) != 0 && plus)
		for (const uint8_t *q = ents; q != p; q = dirent_next((const int64_t *)q))
			notify_entry_done((uint64_t)((const int64_t *)q)[A_INO]);
	free(buf);
	return i;
}
