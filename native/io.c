/*
 * The fast path. When JS opens a file whose bytes are on the local disk it attaches the backing fd to
 * the file handle (mcfs_reply_open/create); reads, writes, lseek and fallocate on that handle are then
 * served here with pread/pwrite/splice, without a round trip through JS. A dirty flag per handle tells
 * JS at flush/fsync/release whether there is anything to publish; the counters feed its metrics.
 * A handle may also follow a copy still arriving (mcfs_follow_fh): only reads of bytes already there
 * are served here, the rest go to JS, which waits for them.
 */
#include "mcfs_fuse.h"
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#define MAX_FH (1u << 20)

static _Atomic int fh_fd[MAX_FH];
static _Atomic uint8_t fh_dirty[MAX_FH];
/* A sticky handle's file at its last flush: size, mtime and ctime (ns). */
static uint64_t fh_seen[MAX_FH][3];
/* Bytes from the start of the fd that may be read: WHOLE for a file's own fd or a finished copy. */
static _Atomic uint64_t fh_ready[MAX_FH];
#define WHOLE UINT64_MAX
static _Atomic uint64_t io_count_of[IO_N];
/* Writes are refused (ENOSPC) where they would leave less than this free on their disk: 0, never. */
static _Atomic uint64_t space_floor;

void io_reset(void)
{
	for (uint32_t i = 0; i < MAX_FH; i++)
		atomic_store(&fh_fd[i], -1);
}

static int fd_of(uint64_t fh)
{
	return fh < MAX_FH ? atomic_load(&fh_fd[fh]) : -1;
}

/* ready before fd: a thread that sees the fd sees what may be read of it. */
static void attach(uint64_t fh, int fd, int dirty, uint64_t ready)
{
	if (fh < MAX_FH) {
		atomic_store(&fh_dirty[fh], dirty == IO_STICKY ? IO_STICKY : dirty ? 1 : 0);
		fh_seen[fh][0] = fh_seen[fh][1] = fh_seen[fh][2] = UINT64_MAX;
		atomic_store(&fh_ready[fh], ready);
		atomic_store(&fh_fd[fh], fd);
	}
}

void io_attach(uint64_t fh, int fd, int dirty) { attach(fh, fd, dirty, WHOLE); }

/* The fd of a whole file: writes, lseek and fallocate need one (a copy on its way has holes). */
static int whole_fd_of(uint64_t fh)
{
	int fd = fd_of(fh);
	return fd >= 0 && atomic_load(&fh_ready[fh]) == WHOLE ? fd : -1;
}

/*
 * fh (a read-only handle without an fd) follows a copy on its way: fd is the copy's, read-only, and
 * its first ready bytes are there (WHOLE: all). Called again as more arrive; JS closes the fd after
 * mcfs_clear_fh at release.
 */
void mcfs_follow_fh(uint64_t fh, int fd, uint64_t ready)
{
	if (fh >= MAX_FH)
		return;
	if (fd_of(fh) == fd)
		atomic_store(&fh_ready[fh], ready);
	else
		attach(fh, fd, 0, ready);
}

int io_served(uint64_t fh) { return fd_of(fh) >= 0; }

int io_dirty(uint64_t fh) { return fh < MAX_FH && atomic_load(&fh_dirty[fh]); }

/*
 * What a sticky handle's file is now, noted for its release; into seen (if given) too: size, mtime,
 * ctime of this fstat, zeros if it failed. Handed back rather than read again from fh_seen, which
 * another thread's look at the same handle (a duplicate closed at once) may be writing.
 */
static int seen_changed(uint64_t fh, uint64_t *seen)
{
	struct stat st;
	int fd = fd_of(fh);
	if (fd < 0 || fstat(fd, &st) != 0) {
		fh_seen[fh][0] = fh_seen[fh][1] = fh_seen[fh][2] = UINT64_MAX;
		return 1;
	}
	uint64_t now[3] = { (uint64_t)st.st_size, (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec,
			    (uint64_t)st.st_ctim.tv_sec * 1000000000ull + (uint64_t)st.st_ctim.tv_nsec };
	int changed = now[0] != fh_seen[fh][0] || now[1] != fh_seen[fh][1] || now[2] != fh_seen[fh][2];
	fh_seen[fh][0] = now[0];
	fh_seen[fh][1] = now[1];
	fh_seen[fh][2] = now[2];
	if (seen)
		memcpy(seen, now, sizeof now);
	return changed;
}

int io_take_dirty(uint64_t fh, uint64_t *seen)
{
	if (seen)
		seen[0] = seen[1] = seen[2] = 0;
	if (fh >= MAX_FH)
		return 0;
	if (atomic_load(&fh_dirty[fh]) == IO_STICKY) {
		(void)seen_changed(fh, seen);
		return 1;
	}
	return atomic_exchange(&fh_dirty[fh], 0) != 0;
}

int io_take_dirty_at_release(uint64_t fh, uint64_t *seen)
{
	if (seen)
		seen[0] = seen[1] = seen[2] = 0;
	if (fh < MAX_FH && atomic_load(&fh_dirty[fh]) == IO_STICKY)
		return seen_changed(fh, seen);
	return io_take_dirty(fh, seen);
}

/* Marked written, a sticky flag left as it is. */
static void mark_dirty(uint64_t fh)
{
	uint8_t clean = 0;
	(void)atomic_compare_exchange_strong(&fh_dirty[fh], &clean, 1);
}

void io_count(int counter) { atomic_fetch_add(&io_count_of[counter], 1); }

int io_try_read(fuse_req_t req, uint64_t fh, size_t size, off_t off)
{
	int fd = fd_of(fh);
	if (fd < 0)
		return 0;
	/* A short reply would tell the kernel the file ends there: only bytes already arrived. */
	if ((uint64_t)off + size > atomic_load(&fh_ready[fh]))
		return 0;
	struct stat st;
	/* What the read returns: up to the end of the file (the kernel asks in whole pages). */
	if (fstat(fd, &st) == 0 && st.st_size > off)
		atomic_fetch_add(&io_count_of[IO_READ_BYTES], (uint64_t)st.st_size - (uint64_t)off < size ? (uint64_t)st.st_size - (uint64_t)off : size);
	atomic_fetch_add(&io_count_of[IO_READ_OPS], 1);
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = fd;
	buf.buf[0].pos = off;
	fuse_reply_data(req, &buf, 0);
	return 1;
}

void mcfs_space_floor(uint64_t bytes) { atomic_store(&space_floor, bytes); }

int io_room_for(int fd, uint64_t len)
{
	uint64_t floor = atomic_load(&space_floor);
	struct statfs s;
	return floor == 0 || fstatfs(fd, &s) != 0 || (uint64_t)s.f_bavail * (uint64_t)s.f_bsize >= floor + len;
}

int io_try_write(fuse_req_t req, uint64_t fh, struct fuse_bufvec *in, off_t off)
{
	int fd = whole_fd_of(fh);
	if (fd < 0)
		return 0;
	if (!io_room_for(fd, fuse_buf_size(in))) {
		fuse_reply_err(req, ENOSPC);
		return 1;
	}
	struct fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
	out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	out.buf[0].fd = fd;
	out.buf[0].pos = off;
	ssize_t n = fuse_buf_copy(&out, in, 0);
	if (n < 0) {
		fuse_reply_err(req, (int)-n);
		return 1;
	}
	mark_dirty(fh);
	atomic_fetch_add(&io_count_of[IO_WRITE_OPS], 1);
	atomic_fetch_add(&io_count_of[IO_WRITE_BYTES], (uint64_t)n);
	fuse_reply_write(req, (size_t)n);
	return 1;
}

void io_fallocate(fuse_req_t req, uint64_t fh, int mode, off_t off, off_t len)
{
	int fd = whole_fd_of(fh);
	if (fd < 0) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	if (!(mode & FALLOC_FL_PUNCH_HOLE) && !io_room_for(fd, (uint64_t)len)) {
		fuse_reply_err(req, ENOSPC);
		return;
	}
	int r = fallocate(fd, mode, off, len);
	if (r == 0)
		mark_dirty(fh);
	fuse_reply_err(req, r == 0 ? 0 : errno);
}

void io_lseek(fuse_req_t req, uint64_t fh, off_t off, int whence)
{
	int fd = whole_fd_of(fh);
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

/* fh's fd, if it is of a whole file (a writer's own, or a finished copy); else -1. */
int io_whole_fd(uint64_t fh) { return whole_fd_of(fh); }

/* Detach the backing fd from fh (JS closes the fd itself afterwards). */
void mcfs_clear_fh(uint64_t fh) { io_attach(fh, -1, 0); }

/* JS changed the file of fh itself (a truncate through it): its next flush goes to JS, as after a write here. */
void mcfs_dirty_fh(uint64_t fh)
{
	if (fh < MAX_FH)
		mark_dirty(fh);
}

/* Whether fh was written since its last flush or release (at a stop: a handle whose release the kernel never sent). */
int mcfs_fh_written(uint64_t fh) { return io_take_dirty_at_release(fh, NULL); }

/* Reads and writes served from local fds so far, in the order of IO_*. */
void mcfs_io_counters(uint64_t *out)
{
	for (int i = 0; i < IO_N; i++)
		out[i] = atomic_load(&io_count_of[i]);
}
