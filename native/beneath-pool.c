/*
 * Opens, unlinks, copies between descriptors and write-outs of file ranges off the JS thread. Either can wait: on a directory's lock behind a create, on the
 * disk for a directory or inode block that is not cached, or for a big file's blocks to be freed. JS
 * hands them to these threads and goes on serving requests; the results come back through
 * mcfs_pool_poll, JS woken by a threadsafe callback once per batch (as the FUSE queue wakes it).
 *
 * The pool lives as long as the process. JS keeps a root's descriptor open while calls beneath it are
 * queued, so that the number cannot name another directory meanwhile.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/sendfile.h>
#include <unistd.h>
#include "beneath.h"

int mcfs_pool_start(void (*wake)(void));
int mcfs_pool_open(uint32_t token, int root, const char *rel, int flags, int mode, int keep, uint32_t uid, uint32_t gid, const char *mark_name, const char *mark);
int mcfs_pool_unlink(uint32_t token, int root, const char *rel);
int mcfs_pool_copy(uint32_t token, int src, int dst, double size);
int mcfs_pool_write_out(uint32_t token, int fd, double offset, double length, int drop);
int mcfs_pool_poll(int32_t *out, int cap);

#define THREADS 4

enum { JOB_OPEN, JOB_UNLINK, JOB_COPY, JOB_WRITE_OUT };

struct job {
	struct job *next;
	uint32_t token;
	/* JOB_COPY: root is the source, flags the destination. JOB_WRITE_OUT: root is the file, at the offset, mode whether to drop the range. */
	int op, root, flags, mode, keep;
	off_t size, at;
	uint32_t uid, gid;
	char *mark_name, *mark; /* point into text, after rel */
	char text[];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work = PTHREAD_COND_INITIALIZER;
static struct job *head, *tail;
/* Results not yet polled: token, result pairs. Room for every job in flight is made when it is
   submitted, so a worker never allocates and no result is ever dropped. */
static int32_t *done;
static size_t ndone, inflight, room;
static void (*waker)(void);
static int wake_pending;

/* size bytes of src from its start to dst at its offset, in the kernel (a memfd's pages into a file). 0 or -errno; -EIO if src is shorter. */
static int copy_fd(int src, int dst, off_t size)
{
	for (off_t at = 0; at < size;) {
		ssize_t n = sendfile(dst, src, &at, (size_t)(size - at));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
	}
	return 0;
}

/*
 * Write length bytes of fd at offset to disk and wait for them: a failure of the kernel's own write-back
 * of them since fd was opened is reported too. Then, if drop, drop them from the page cache. 0 or -errno.
 */
static int write_out(int fd, off_t offset, off_t length, int drop)
{
	if (sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) < 0)
		return -errno;
	return drop ? -posix_fadvise(fd, offset, length, POSIX_FADV_DONTNEED) : 0;
}

static int run_job(struct job *j)
{
	switch (j->op) {
	case JOB_COPY:
		return copy_fd(j->root, j->flags, j->size);
	case JOB_WRITE_OUT:
		return write_out(j->root, j->at, j->size, j->mode);
	case JOB_UNLINK:
		return mcfs_unlinkat_beneath(j->root, j->text, 0);
	default:
		return mcfs_open_regular_beneath(j->root, j->text, j->flags, j->mode);
	}
}

static void *worker(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&lock);
		while (!head)
			pthread_cond_wait(&work, &lock);
		struct job *j = head;
		head = j->next;
		if (!head)
			tail = NULL;
		pthread_mutex_unlock(&lock);
		int rc = run_job(j);
		if (rc >= 0 && j->keep) {
			int k = mcfs_keep_fd(rc, j->uid, j->gid, j->mode, j->mark_name, j->mark);
			if (k < 0) {
				close(rc);
				rc = k;
			}
		}
		pthread_mutex_lock(&lock);
		done[2 * ndone] = (int32_t)j->token;
		done[2 * ndone + 1] = rc;
		ndone++;
		inflight--;
		int wake = !wake_pending;
		wake_pending = 1;
		pthread_mutex_unlock(&lock);
		free(j);
		if (wake)
			waker();
	}
	return NULL;
}

/* Start the threads once; wake is called from them when results wait. 0 or -errno. */
int mcfs_pool_start(void (*wake)(void))
{
	pthread_mutex_lock(&lock);
	int rc = 0;
	if (!waker) {
		waker = wake;
		for (int i = 0; i < THREADS && rc == 0; i++) {
			pthread_t t;
			rc = -pthread_create(&t, NULL, worker, NULL);
			if (rc == 0)
				pthread_detach(t);
		}
	}
	pthread_mutex_unlock(&lock);
	return rc;
}

/* Queue j (its op and arguments set), for root; its result comes with token. 0 or -ENOMEM (j freed). */
static int submit(struct job *j, uint32_t token, int root)
{
	j->next = NULL;
	j->token = token;
	j->root = root;
	pthread_mutex_lock(&lock);
	if (ndone + inflight + 1 > room) {
		size_t want = room ? 2 * room : 64;
		int32_t *grown = realloc(done, want * 2 * sizeof *done);
		if (!grown) {
			pthread_mutex_unlock(&lock);
			free(j);
			return -ENOMEM;
		}
		done = grown;
		room = want;
	}
	inflight++;
	if (tail)
		tail->next = j;
	else
		head = j;
	tail = j;
	pthread_cond_signal(&work);
	pthread_mutex_unlock(&lock);
	return 0;
}

/*
 * Queue an open of rel beneath root (mcfs_open_regular_beneath); its result comes with token. keep: then
 * mcfs_keep_fd on the same thread. 0 or -errno.
 */
int mcfs_pool_open(uint32_t token, int root, const char *rel, int flags, int mode, int keep, uint32_t uid, uint32_t gid, const char *mark_name, const char *mark)
{
	size_t len = strlen(rel), nlen = strlen(mark_name), mlen = strlen(mark);
	struct job *j = malloc(sizeof *j + len + 1 + nlen + 1 + mlen + 1);
	if (!j)
		return -ENOMEM;
	j->op = JOB_OPEN;
	j->flags = flags;
	j->mode = mode;
	j->keep = keep;
	j->uid = uid;
	j->gid = gid;
	memcpy(j->text, rel, len + 1);
	j->mark_name = j->text + len + 1;
	memcpy(j->mark_name, mark_name, nlen + 1);
	j->mark = j->mark_name + nlen + 1;
	memcpy(j->mark, mark, mlen + 1);
	return submit(j, token, root);
}

/* A job of op with text (its path, or "") and no file to keep; NULL if out of memory. */
static struct job *new_job(int op, const char *text)
{
	size_t len = strlen(text);
	struct job *j = malloc(sizeof *j + len + 1);
	if (!j)
		return NULL;
	j->op = op;
	j->keep = 0;
	memcpy(j->text, text, len + 1);
	return j;
}

/* Queue an unlink of rel (not a directory) beneath root; its result comes with token. 0 or -errno. */
int mcfs_pool_unlink(uint32_t token, int root, const char *rel)
{
	struct job *j = new_job(JOB_UNLINK, rel);
	if (!j)
		return -ENOMEM;
	return submit(j, token, root);
}

/* Queue a copy of size bytes of src (from its start) to dst (at its offset); both stay open until the result comes with token. 0 or -errno. */
int mcfs_pool_copy(uint32_t token, int src, int dst, double size)
{
	if (size < 0)
		return -EINVAL;
	struct job *j = new_job(JOB_COPY, "");
	if (!j)
		return -ENOMEM;
	j->flags = dst;
	j->size = (off_t)size;
	return submit(j, token, src);
}

/* Queue a write-out of length bytes of fd at offset (write_out); fd stays open until the result comes with token. 0 or -errno. */
int mcfs_pool_write_out(uint32_t token, int fd, double offset, double length, int drop)
{
	if (offset < 0 || length <= 0)
		return -EINVAL;
	struct job *j = new_job(JOB_WRITE_OUT, "");
	if (!j)
		return -ENOMEM;
	j->mode = drop;
	j->at = (off_t)offset;
	j->size = (off_t)length;
	return submit(j, token, fd);
}

/* Move up to cap results (token, result pairs) into out. Returns how many pairs. */
int mcfs_pool_poll(int32_t *out, int cap)
{
	pthread_mutex_lock(&lock);
	size_t n = ndone < (size_t)cap ? ndone : (size_t)cap;
	if (n) {
		memcpy(out, done, n * 2 * sizeof *done);
		memmove(done, done + 2 * n, (ndone - n) * 2 * sizeof *done);
		ndone -= n;
	}
	wake_pending = ndone > 0;
	int again = wake_pending;
	pthread_mutex_unlock(&lock);
	if (again)
		waker();
	return (int)n;
}
