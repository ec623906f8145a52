/*
 * mcfs local-disk confinement: every path the daemon acts on under its root path (or cache dir) is
 * resolved beneath a directory fd of that root without following any symlink, and the last component
 * is acted on with *at() calls that do not follow it either. A symlink a user stored is data, never a
 * path the daemon (root) follows; ".." cannot climb out; a directory swapped for a symlink between two
 * calls is refused (ELOOP) instead of followed.
 *
 * Paths are relative to the root fd ("a/b/c"; "." for the root itself) and may be longer than PATH_MAX
 * (see open_beneath). Every function returns >= 0 or -errno.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>
#include "beneath.h"
#include "keep-fd.h"

#define RESOLVE (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)

static int open_once(int dirfd, const char *rel, int flags, int mode)
{
	struct open_how how = { .flags = (uint64_t)(flags | O_CLOEXEC), .resolve = RESOLVE };
	if (flags & (O_CREAT | O_TMPFILE))
		how.mode = (uint64_t)mode & 07777;
	for (int tries = 0;; tries++) {
		long fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof how);
		if (fd >= 0)
			return (int)fd;
		/* EAGAIN: a concurrent rename raced the lookup; the kernel asks to try again. */
		if ((errno != EAGAIN && errno != EINTR) || tries > 16)
			return -errno;
	}
}

/*
 * openat2 beneath root. A path longer than PATH_MAX (deep trees are fine inside the mount, where the
 * kernel walks one name at a time) is opened a directory at a time: each prefix beneath the one before,
 * so beneath root too, since no symlink and no ".." is ever followed.
 */
static int open_beneath(int root, const char *rel, int flags, int mode)
{
	size_t len = strlen(rel);
	if (len < PATH_MAX)
		return open_once(root, rel, flags, mode);
	const char *cut = rel + PATH_MAX - 1;
	while (cut > rel && *cut != '/')
		cut--;
	if (cut == rel)
		return -ENAMETOOLONG;
	char *prefix = strndup(rel, (size_t)(cut - rel));
	if (!prefix)
		return -ENOMEM;
	int dir = open_once(root, prefix, O_PATH | O_DIRECTORY, 0);
	free(prefix);
	if (dir < 0)
		return dir;
	int fd = open_beneath(dir, cut + 1, flags, mode);
	close(dir);
	return fd;
}

/*
 * The directory holding rel's last component, opened beneath root, and that component's name (a
 * pointer into rel). A name of "", "." or ".." is refused: the last component must name an entry.
 */
static int parent_of(int root, const char *rel, const char **name)
{
	const char *slash = strrchr(rel, '/');
	*name = slash ? slash + 1 : rel;
	if (!**name || !strcmp(*name, ".") || !strcmp(*name, ".."))
		return -EINVAL;
	if (strlen(*name) > NAME_MAX)
		return -ENAMETOOLONG;
	if (!slash)
		return open_once(root, ".", O_PATH | O_DIRECTORY, 0);
	char *dir = strndup(rel, (size_t)(slash - rel));
	if (!dir)
		return -ENOMEM;
	int fd = open_beneath(root, dir, O_PATH | O_DIRECTORY, 0);
	free(dir);
	return fd;
}

#define WITH_PARENT(root, rel, call)                                   \
	do {                                                           \
		const char *name;                                      \
		int pfd = parent_of(root, rel, &name);                 \
		if (pfd < 0)                                           \
			return pfd;                                    \
		int rc_ = (call) < 0 ? -errno : 0;                     \
		close(pfd);                                            \
		return rc_;                                            \
	} while (0)

int mcfs_open_root(const char *path)
{
	int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int mcfs_openat_beneath(int root, const char *rel, int flags, int mode)
{
	return open_beneath(root, rel, flags, mode);
}

/* fd (opened with O_NONBLOCK) if it is a regular file, O_NONBLOCK cleared unless flags asked for it; else closed, -errno. */
static int regular_only(int fd, int flags)
{
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		int rc = S_ISREG(st.st_mode) ? -errno : -EUCLEAN;
		close(fd);
		return rc;
	}
	/* F_SETFL sets only the status flags (O_APPEND, O_DIRECT, O_NOATIME, ...): those asked for. */
	if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags) < 0) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

/*
 * Open a regular file's bytes. Anything else there (a directory, a FIFO left in the tree) is refused
 * with -EUCLEAN, never used; O_NONBLOCK while opening, so a FIFO cannot block the caller.
 */
int mcfs_open_regular_beneath(int root, const char *rel, int flags, int mode)
{
	int fd = open_beneath(root, rel, flags | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, mode);
	return fd < 0 ? fd : regular_only(fd, flags);
}

/*
 * mcfs_open_regular_beneath where the kernel's caches resolve the whole path (RESOLVE_CACHED): such an
 * open never waits on the disk or a directory lock, so it may run on any thread. -EAGAIN where it
 * would: a path not cached, a create or truncate, a path longer than PATH_MAX; and on kernels before
 * 5.12, which refuse RESOLVE_CACHED (EINVAL; mcfs_open_regular_beneath gives any other EINVAL).
 */
int mcfs_open_cached_beneath(int root, const char *rel, int flags)
{
	if ((flags & (O_CREAT | O_TRUNC | O_TMPFILE)) || strlen(rel) >= PATH_MAX)
		return -EAGAIN;
	struct open_how how = { .flags = (uint64_t)(flags | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC), .resolve = RESOLVE | RESOLVE_CACHED };
	long fd;
	while ((fd = syscall(SYS_openat2, root, rel, &how, sizeof how)) < 0 && errno == EINTR)
		;
	if (fd < 0)
		return errno == EINVAL ? -EAGAIN : -errno;
	return regular_only((int)fd, flags);
}

int mcfs_mkdirat_beneath(int root, const char *rel, int mode)
{
	WITH_PARENT(root, rel, mkdirat(pfd, name, (mode_t)mode));
}

/* flags: 0 or AT_REMOVEDIR. */
int mcfs_unlinkat_beneath(int root, const char *rel, int flags)
{
	WITH_PARENT(root, rel, unlinkat(pfd, name, flags));
}

int mcfs_symlinkat_beneath(int root, const char *target, const char *rel)
{
	WITH_PARENT(root, rel, symlinkat(target, pfd, name));
}

int mcfs_fchownat_beneath(int root, const char *rel, uint32_t uid, uint32_t gid)
{
	WITH_PARENT(root, rel, fchownat(pfd, name, uid, gid, AT_SYMLINK_NOFOLLOW));
}

int mcfs_utimensat_beneath(int root, const char *rel, int64_t asec, int64_t ansec, int64_t msec, int64_t mnsec)
{
	struct timespec ts[2] = { { .tv_sec = asec, .tv_nsec = ansec }, { .tv_sec = msec, .tv_nsec = mnsec } };
	WITH_PARENT(root, rel, utimensat(pfd, name, ts, AT_SYMLINK_NOFOLLOW));
}

int mcfs_readlinkat_beneath(int root, const char *rel, char *out, int size)
{
	const char *name;
	int pfd = parent_of(root, rel, &name);
	if (pfd < 0)
		return pfd;
	ssize_t n = readlinkat(pfd, name, out, (size_t)size);
	int rc = n < 0 ? -errno : (int)n;
	close(pfd);
	return rc;
}

/* Both ends' parents opened beneath root, then op on them; -errno on any failure. */
static int two_ends(int root, const char *from, const char *to, uint32_t flags, int link)
{
	const char *n1, *n2;
	int p1 = parent_of(root, from, &n1);
	if (p1 < 0)
		return p1;
	int p2 = parent_of(root, to, &n2);
	if (p2 < 0) {
		close(p1);
		return p2;
	}
	/* linkat without AT_SYMLINK_FOLLOW: a symlink at from is linked itself, never its target. */
	long r = link ? linkat(p1, n1, p2, n2, 0) : syscall(SYS_renameat2, p1, n1, p2, n2, flags);
	int rc = r < 0 ? -errno : 0;
	close(p1);
	close(p2);
	return rc;
}

/* flags as renameat2 (RENAME_NOREPLACE, RENAME_EXCHANGE). */
int mcfs_renameat_beneath(int root, const char *from, const char *to, uint32_t flags)
{
	return two_ends(root, from, to, flags, 0);
}

int mcfs_linkat_beneath(int root, const char *from, const char *to)
{
	return two_ends(root, from, to, 0, 1);
}

/* Times of a file through an fd it holds (the file may have no name left). */
int mcfs_futimens(int fd, int64_t asec, int64_t ansec, int64_t msec, int64_t mnsec)
{
	struct timespec ts[2] = { { .tv_sec = asec, .tv_nsec = ansec }, { .tv_sec = msec, .tv_nsec = mnsec } };
	return futimens(fd, ts) < 0 ? -errno : 0;
}

/* mcfs's own extended attributes of a file it keeps (its identity), through an fd it holds. */
int mcfs_fsetxattr(int fd, const char *name, const char *value, int size)
{
	return fsetxattr(fd, name, value, (size_t)size, 0) < 0 ? -errno : 0;
}

/* keep_fd (keep-fd.h), for JS. */
int mcfs_keep_fd(int fd, uint32_t uid, uint32_t gid, int mode, const char *mark_name, const char *mark)
{
	return keep_fd(fd, uid, gid, mode, mark_name, mark);
}

int mcfs_fgetxattr(int fd, const char *name, char *out, int size)
{
	ssize_t n = fgetxattr(fd, name, out, (size_t)size);
	return n < 0 ? -errno : (int)n;
}
