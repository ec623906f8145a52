/*
 * A file mcfs keeps for an inode (open as fd) given the inode's owner, its mode (exact: not the
 * daemon's umask; the kernel had applied the caller's) and its identity mark, the extended attribute
 * mark_name (best effort: a filesystem without them keeps no mark). 0, or -errno. Shared by the
 * confinement library (files JS makes) and the FUSE shim (files it makes itself).
 */
#ifndef MCFS_KEEP_FD_H
#define MCFS_KEEP_FD_H
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

static inline int keep_fd(int fd, uint32_t uid, uint32_t gid, int mode, const char *mark_name, const char *mark)
{
	/*
	 * Only what differs is changed: most files are made with the owner and mode they get (a root
	 * caller, a mode the umask leaves alone), and each change rewrites the inode (two of a create's
	 * few syscalls). A chown clears set-ID bits, so the mode follows any chown.
	 */
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	int chown_it = st.st_uid != (uid_t)uid || st.st_gid != (gid_t)gid;
	if (chown_it && fchown(fd, (uid_t)uid, (gid_t)gid) < 0)
		return -errno;
	if ((chown_it || (st.st_mode & 07777) != ((mode_t)mode & 07777)) && fchmod(fd, (mode_t)mode & 07777) < 0)
		return -errno;
	(void)fsetxattr(fd, mark_name, mark, strlen(mark), 0);
	return 0;
}
#endif
