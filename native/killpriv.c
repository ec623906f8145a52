/*
 * FUSE_HANDLE_KILLPRIV_V2, which libfuse 3.14 cannot negotiate: without it the kernel asks for
 * security.capability before every write (a round trip: a 4 KiB write cost twice passthrough_ll's),
 * since FUSE sets SB_NOSEC only with it. With it the kernel leaves taking setuid and setgid away to the
 * filesystem, and says when in flags libfuse drops: FUSE_WRITE_KILL_SUIDGID on a write and
 * FATTR_KILL_SUIDGID on a truncate by a caller without CAP_FSETID (a chown always takes them, and
 * before a write or fallocate the kernel sends a setattr with nothing left in it: JS does both).
 *
 * libfuse's custom I/O hooks see the raw traffic (passthrough.c's negotiation and open replies go
 * through them too): the read hook notes whether the kernel offers the
 * flag and the kill flags of the request this thread is about to handle (each loop thread handles what
 * it read), and the writev hook adds the flag to the INIT reply. Writes that may have to take privileges
 * go to JS: those of a caller the kernel flagged, to a file whose mode, as last told to the kernel, had
 * setuid or setgid (a table that only ever gains files: a false hit costs a trip to JS, a miss would
 * keep a bit).
 */
#include "mcfs_fuse.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static int offered;
static _Atomic int negotiated;
static _Atomic uint64_t init_unique;
static _Thread_local int request_kills;

#define MAYBE_SLOTS (1u << 16)
static _Atomic uint8_t maybe[MAYBE_SLOTS];

static uint32_t slot_of(uint64_t ino) { return (uint32_t)((ino * 0x9E3779B97F4A7C15ull) >> 48); }

static ssize_t hook_read(int fd, void *buf, size_t len, void *userdata)
{
	(void)userdata;
	ssize_t n = read(fd, buf, len);
	int err = errno;
	request_kills = 0;
	errno = err;
	if (n < (ssize_t)sizeof(struct fuse_in_header))
		return n;
	const struct fuse_in_header *in = buf;
	const void *arg = in + 1;
	size_t arglen = (size_t)n - sizeof *in;
	switch (in->opcode) {
	case FUSE_INIT:
		if (arglen >= offsetof(struct fuse_init_in, flags) + sizeof(uint32_t)) {
			offered = (((const struct fuse_init_in *)arg)->flags & FUSE_HANDLE_KILLPRIV_V2) != 0;
			passthrough_offered(arg, arglen);
			atomic_store(&init_unique, in->unique);
		}
		break;
	case FUSE_WRITE:
		if (arglen >= sizeof(struct fuse_write_in))
			request_kills = (((const struct fuse_write_in *)arg)->write_flags & FUSE_WRITE_KILL_SUIDGID) != 0;
		break;
	case FUSE_SETATTR:
		if (arglen >= sizeof(struct fuse_setattr_in))
			request_kills = (((const struct fuse_setattr_in *)arg)->valid & FATTR_KILL_SUIDGID) != 0;
		break;
	}
	return n;
}

static ssize_t hook_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	(void)userdata;
	uint64_t init = atomic_load(&init_unique);
	if (init && count >= 2 && iov[0].iov_len >= sizeof(struct fuse_out_header)) {
		const struct fuse_out_header *out = iov[0].iov_base;
		if (out->unique == init && out->error == 0 && iov[1].iov_len >= offsetof(struct fuse_init_out, flags) + sizeof(uint32_t)) {
			atomic_store(&init_unique, 0);
			if (offered) {
				((struct fuse_init_out *)iov[1].iov_base)->flags |= FUSE_HANDLE_KILLPRIV_V2;
				atomic_store(&negotiated, 1);
			}
			passthrough_accept(iov[1].iov_base, iov[1].iov_len);
		}
	}
	passthrough_patch_reply(iov, count);
	return writev(fd, iov, count);
}

/* Replies from a backing fd keep going to /dev/fuse without a copy through user space. */
static ssize_t hook_splice_send(int fdin, off_t *offin, int fdout, off_t *offout, size_t len, unsigned int flags, void *userdata)
{
	(void)userdata;
	return splice(fdin, offin, fdout, offout, len, flags);
}

int killpriv_install(struct fuse_session *se)
{
	static const struct fuse_custom_io io = { .read = hook_read, .writev = hook_writev, .splice_send = hook_splice_send };
	offered = 0;
	atomic_store(&negotiated, 0);
	atomic_store(&init_unique, 0);
	return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}

int killpriv_request_kills(void) { return request_kills; }

void mcfs_killpriv_mark(uint64_t ino) { atomic_store(&maybe[slot_of(ino)], 1); }

void killpriv_told(uint64_t ino, uint32_t mode)
{
	if (S_ISREG(mode) && (mode & (S_ISUID | S_ISGID)))
		mcfs_killpriv_mark(ino);
}

int killpriv_may_hold(uint64_t ino) { return atomic_load(&maybe[slot_of(ino)]); }

int mcfs_killpriv(void) { return atomic_load(&negotiated); }
