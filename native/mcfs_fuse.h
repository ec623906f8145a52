/*
 * What the shim's files share: libfuse's low-level API, the layout JS reads and writes (mcfs_abi.h,
 * generated from src/fuse/abi.ts with the mcfs_* functions JS calls), and each file's functions for the
 * others. The shim is one .so whose version script exports only mcfs_*, so nothing internal is named so.
 *
 * Request path: libfuse thread -> ops.c handler -> io.c (served from a local fd) or queue.c (copied,
 * given an id by ids.c, JS woken by callback) -> JS drains with mcfs_poll -> replies through reply.c by id.
 */
#ifndef MCFS_FUSE_H
#define MCFS_FUSE_H
#define FUSE_USE_VERSION 312
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fuse_lowlevel.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <time.h>
#include <linux/fuse.h>
#include "mcfs_abi.h"

/* session.c: the time ms from now on clock, for timed waits; and ms after t. */
struct timespec deadline_after(clockid_t clock, int ms);
struct timespec time_after(struct timespec t, int ms);

/* ops.c: the low-level handlers the session runs. */
extern const struct fuse_lowlevel_ops ll_ops;
int ops_close_notes(void); /* a node whose closes nobody else waits for: JS publishes them after answering (mcfs_flush_notes) */

/* ids.c: reply ids (slot|generation) for queued requests, so each is answered exactly once. */
void ids_reset(void);
uint32_t ids_put(fuse_req_t req); /* 0 when the table is full */
fuse_req_t ids_take(uint32_t id); /* NULL for a stale, repeated or unknown id */
void ids_fail_all(int err);       /* answer every request still waiting for JS: its session is going */

/* queue.c: requests waiting for JS, the callback that wakes it, and the pipe that tells it the session ended. */
int queue_open(void (*wake)(void)); /* the pipe's read end for JS, or -errno */
void queue_close(void);
void queue_wake(void);
void queue_stop_waking(void); /* once the session's threads are gone: JS may free the callback */
void queue_end(void);         /* the session ended: a byte down the pipe */
/* Copy h (op and arguments set) with its strings and data into the queue, or answer the request with an error. */
void queue_put(fuse_req_t req, struct mcfs_req *h, const char *s1, const char *s2, const void *data, size_t dlen);
/* A record with id 0, for a request the caller answers itself after (ctx: its caller's); -errno. */
int queue_note(const struct fuse_ctx *ctx, struct mcfs_req *h, const char *s1);

/* io.c: reads and writes served from the local fd JS attached to a file handle. */
void io_reset(void);
void io_attach(uint64_t fh, int fd, int dirty); /* fd -1 detaches; dirty: the first flush goes to JS (IO_STICKY: every one) */
#define IO_STICKY 2
int io_try_read(fuse_req_t req, uint64_t fh, size_t size, off_t off);    /* 1: answered here */
/* Whether fd's disk keeps the space floor free after len more bytes (mcfs_space_floor: the room kept for metadata). */
int io_room_for(int fd, uint64_t len);
int io_try_write(fuse_req_t req, uint64_t fh, struct fuse_bufvec *in, off_t off);
int io_served(uint64_t fh);      /* an fd serves this handle */
int io_whole_fd(uint64_t fh);    /* its fd, if of a whole file; else -1 */
int io_dirty(uint64_t fh);       /* written through it since the last io_take_dirty */
/* The dirty flag, cleared (a passthrough writer's stays: its writes go unseen); seen (NULL, or 3):
 * a passthrough writer's file as found now (size, mtime, ctime; fstat), zeros for any other handle. */
int io_take_dirty(uint64_t fh, uint64_t *seen);
int io_take_dirty_at_release(uint64_t fh, uint64_t *seen); /* the same; a passthrough writer's file changed since its last flush */
void io_count(int counter);      /* one more of IO_* */
void io_fallocate(fuse_req_t req, uint64_t fh, int mode, off_t off, off_t len);
void io_lseek(fuse_req_t req, uint64_t fh, off_t off, int whence);

/* reply.c: an entry reply's parameters from an attribute array. */
void attr_entry(const int64_t *a, double entry_to, double attr_to, struct fuse_entry_param *e);
/* A file's open about to be answered: fd attached to fh, in passthrough if allowed (OPEN_* flags; ino 0: a directory's). */
void open_attach(uint64_t ino, uint64_t fh, int fd, uint32_t flags);
void open_undone(uint64_t ino, uint64_t fh); /* its reply failed: the kernel never had the handle */
/* The entry after a, in the entries' layout of abi.ts (DIRENT_*): attributes, next, name length, name padded to 8. */
static inline const uint8_t *dirent_next(const int64_t *a)
{
	return (const uint8_t *)a + (size_t)DIRENT_NAME * 8 + (((size_t)a[DIRENT_NAME_LEN] + 7) & ~(size_t)7);
}

/* entries.c: names answered without JS (see there). */
int entries_try_lookup(fuse_req_t req, uint64_t parent, const char *name); /* 1: answered here */
int entries_try_getattr(fuse_req_t req, uint64_t ino);                     /* 1: answered here */
void entries_dir_touched(uint64_t dir, int64_t sec, int64_t nsec);          /* the shim made a file in dir at that time */

/* listings.c: a sole node's complete listings: names surely not there, answered ENOENT without JS (see there). */
int listing_try_absent(fuse_req_t req, uint64_t parent, const char *name); /* 1: answered here */
/*
 * name, missing from parent's listing, is put in it for a file the shim makes: 1 and a dup of the
 * directory's local fd (the caller closes it), its mode and gid; 0 when the shim cannot make it there.
 */
int listing_claim(uint64_t parent, const char *name, int *dirfd, uint32_t *mode, uint32_t *gid);
void listing_unclaim(uint64_t parent, const char *name); /* the file was not made after all */
void listings_allow_unlisted(void); /* a node of a cluster: directories handed to make files in, without names */
int listing_trusted(void);          /* what this node watches is shown current now (mcfs_listing_trust_for) */

/* grants.c: read-only opens answered without JS, of files JS granted (see there). */
int grants_try_open(fuse_req_t req, uint64_t ino, struct fuse_file_info *fi); /* 1: answered here */
void grants_reset(void);

/* creates.c: creates answered without JS (see there). */
int creates_try(fuse_req_t req, uint64_t parent, const char *name, mode_t mode, struct fuse_file_info *fi);
int creates_try_setattr(fuse_req_t req, uint64_t ino, const struct stat *st, int to_set, struct fuse_file_info *fi); /* 1: answered here */
void creates_claimed(uint64_t fh); /* JS took the note of the file made with handle fh */

/* killpriv.c: FUSE_HANDLE_KILLPRIV_V2 negotiated through libfuse's I/O hooks (see there). */
int killpriv_install(struct fuse_session *se);     /* once mounted, before the loop: 0 or -errno */
int killpriv_request_kills(void);                   /* the kernel asked this thread's request to take setuid/setgid */
void killpriv_told(uint64_t ino, uint32_t mode);    /* attributes of ino going to the kernel */
int killpriv_may_hold(uint64_t ino);                /* ino may have setuid or setgid */

/* passthrough.c: FUSE passthrough, negotiated and counted per inode (see there). */
void passthrough_reset(int dev_fd);                                 /* at mount: nothing open, not negotiated */
void passthrough_offered(const struct fuse_init_in *in, size_t len);  /* the kernel's INIT */
void passthrough_accept(struct fuse_init_out *out, size_t len);       /* the INIT reply, before it goes */
/* A file handle fh of nodeid opens (allowed: JS lets it pass through): its backing id, or -1 (not through). */
int passthrough_open(uint64_t nodeid, uint64_t fh, int fd, int allowed);
void passthrough_reply_done(void);                                  /* after the open's reply went, or failed */
void passthrough_patch_reply(struct iovec *iov, int count);         /* an open reply going out: flag and id */
void passthrough_release(uint64_t fh);
/* notify.c: kernel cache invalidations, made on their own thread. */
int notify_start(struct fuse_session *se);
void notify_stop(void);
void notify_entry_done(uint64_t ino);    /* no entry reply naming ino can still make its inode: FORGET, or a reply that never got there */

#endif
