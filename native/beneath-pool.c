/*
 * Opens, unlinks, copies between descriptors and write-outs of file ranges off the JS thread. Either can wait: on a directory's lock behind a create, on the
 * disk for a directory or inode block that is not cached, or for a big file's blocks to be freed. JS
 * hands them to these threads and goes on serving requests; the results come back through
 * mcfs_pool_poll, JS woken by a threadsafe callback once per batch (as the FUSE queue wakes it).
 * Sends of file ranges to a peer's socket, and receives of them, run on threads of their own: a peer
 * slow to take or give them must not hold up the opens.
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
#include <poll.h>
#include <sys/socket.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <time.h>
#include <sys/sendfile.h>
#include <unistd.h>
#include "beneath.h"

void mcfs_pool_start(void (*wake)(void), int send_threads, int receive_threads);
int mcfs_pool_open(uint32_t token, int root, const char *rel, int flags, int mode, int keep, uint32_t uid, uint32_t gid, const char *mark_name, const char *mark);
int mcfs_pool_unlink(uint32_t token, int root, const char *rel);
int mcfs_pool_copy(uint32_t token, int src, int dst, double size);
int mcfs_pool_write_out(uint32_t token, int fd, double offset, double length, int drop);
int mcfs_pool_send(uint32_t token, int sock, const uint8_t *head, int head_len, int file, double offset, int length, int timeout_ms);
int mcfs_pool_dial(uint32_t token, const char *host, int port, const uint8_t *request, int request_len, int timeout_ms);
int mcfs_pool_receive(uint32_t token, int sock, int first, int file, double offset, int max, int timeout_ms);
int mcfs_pool_poll(int32_t *out, int cap);
int mcfs_pool_cut(int sock);
int mcfs_pool_close(int fd);
int mcfs_pool_close_many(const int32_t *fds, int n);

#define THREADS 4

enum { JOB_OPEN, JOB_UNLINK, JOB_COPY, JOB_WRITE_OUT, JOB_CLOSE, JOB_CLOSE_MANY, JOB_SEND, JOB_DIAL, JOB_RECEIVE };
/*
 * Queues, each with threads of its own. A send or receive may wait long on its peer: JS keeps no more
 * of them under way than each lane has threads (FilePool.stream), so none waits behind another: two
 * nodes streaming to each other both ways never wait on each other's queues.
 */
enum { LANE_FILES, LANE_SENDS, LANE_RECEIVES, LANES };
/* What a receive found (its extra result): see mcfs_pool_receive. */
enum { GOT_DATA, GOT_END, GOT_FAILURE, GOT_FOREIGN, GOT_WRITE_ERROR, GOT_NOTHING };

struct job {
	struct job *next;
	uint32_t token;
	/* JOB_COPY: root is the source, flags the destination. JOB_WRITE_OUT: root is the file, at the offset, mode whether to drop the range. */
	int op, root, flags, mode, keep;
	off_t size, at;
	uint32_t uid, gid;
	/* JOB_SEND: root is the file, flags the socket (a duplicate, closed by the job), mode the timeout in ms.
	   JOB_RECEIVE: the same, keep whether the answer's magic comes first, size the most bytes taken.
	   JOB_DIAL: text is the host, then the request (head_len bytes); flags the port. */
	uint8_t head[8];
	int head_len;
	/* JOB_DIAL: the request, in text after the host. */
	uint8_t *head_data;
	/* A second result, for JS with the first. */
	int32_t extra;
	char *mark_name, *mark; /* point into text, after rel */
	char text[];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/* Each lane's threads start with its first job: a process that never sends starts no send threads. */
static struct lane {
	pthread_cond_t work;
	struct job *head, *tail;
	const char *name;
	int threads, started;
} lanes[LANES] = {
	{ PTHREAD_COND_INITIALIZER, NULL, NULL, "mcfs-files", THREADS, 0 },
	{ PTHREAD_COND_INITIALIZER, NULL, NULL, "mcfs-send", 0, 0 },
	{ PTHREAD_COND_INITIALIZER, NULL, NULL, "mcfs-receive", 0, 0 },
};
/* Results not yet polled: token, result, extra triples. Room for every job in flight is made when it is
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

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Until sock is ready for events: 0, -ETIMEDOUT past deadline (now_ms), or -errno. An error or hang-up is reported by the next call on it. */
static int wait_for(int sock, short events, int64_t deadline)
{
	struct pollfd p = { .fd = sock, .events = events };
	for (;;) {
		int64_t left = deadline - now_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		int r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r > 0)
			return 0;
	}
}

/*
 * After a call on sock that returned k (< 0: errno says why): 0 when k stands, 1 to call again (it was
 * interrupted, or sock is ready for events now), or -errno (-ETIMEDOUT past deadline).
 */
static int again(int sock, ssize_t k, short events, int64_t deadline)
{
	if (k >= 0)
		return 0;
	if (errno == EINTR)
		return 1;
	if (errno != EAGAIN && errno != EWOULDBLOCK)
		return -errno;
	int w = wait_for(sock, events, deadline);
	return w ? w : 1;
}

/* Up to len bytes (at least one) into buf: how many, or -errno; -ECONNRESET at the connection's end. */
static ssize_t recv_some(int sock, void *buf, size_t len, int64_t deadline)
{
	for (;;) {
		ssize_t k = recv(sock, buf, len, MSG_DONTWAIT);
		int a = again(sock, k, POLLIN, deadline);
		if (a < 0)
			return a;
		if (a == 0)
			return k > 0 ? k : -ECONNRESET;
	}
}

static int recv_all(int sock, void *buf, size_t len, int64_t deadline)
{
	while (len) {
		ssize_t k = recv_some(sock, buf, len, deadline);
		if (k < 0)
			return (int)k;
		buf = (char *)buf + k;
		len -= (size_t)k;
	}
	return 0;
}

static int send_all(int sock, const void *buf, size_t len, int more, int64_t deadline)
{
	while (len) {
		ssize_t k = send(sock, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT | (more ? MSG_MORE : 0));
		int a = again(sock, k, POLLOUT, deadline);
		if (a < 0)
			return a;
		if (a)
			continue;
		buf = (const char *)buf + k;
		len -= (size_t)k;
	}
	return 0;
}

/* Bytes a send reads from its file, or a receive takes off its socket, at a time, into its thread's own buffer. */
#define PIECE (64 << 10)

/*
 * head, then length bytes of file at offset, to sock: a frame whole whatever happens to the file, its
 * bytes past the file's end (it was cut meanwhile) sent as zeros. How many bytes came from the file,
 * or -errno (the frame is then cut short: the connection cannot carry another).
 *
 * Read into a buffer, never spliced (sendfile): a splice queues references to the file's cached
 * pages, and a write after the send returned would still change bytes the reader has not taken yet.
 * The caller's check after the send must cover every byte of the frame.
 */
static int send_range(int sock, const uint8_t *head, int head_len, int file, off_t offset, int length, int timeout_ms)
{
	static __thread uint8_t *buf;
	if (!buf && !(buf = malloc(PIECE)))
		return -ENOMEM;
	int64_t deadline = now_ms() + timeout_ms;
	int rc = send_all(sock, head, (size_t)head_len, length > 0, deadline);
	if (rc)
		return rc;
	off_t at = offset;
	int left = length, got = 0, eof = 0;
	while (left > 0) {
		int want = left < PIECE ? left : PIECE, n = 0;
		while (!eof && n < want) {
			ssize_t k = pread(file, buf + n, (size_t)(want - n), at + n);
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0)
				return -errno;
			if (k == 0)
				eof = 1;
			n += (int)k;
		}
		memset(buf + n, 0, (size_t)(want - n));
		rc = send_all(sock, buf, (size_t)want, left > want, deadline);
		if (rc)
			return rc;
		at += want;
		left -= want;
		got += n;
	}
	return got;
}

/* A connection to host:port that has sent request: its descriptor (non-blocking), or -errno. */
static int dial(const char *host, int port, const uint8_t *request, int request_len, int timeout_ms)
{
	char service[16];
	snprintf(service, sizeof service, "%d", port);
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *found;
	int g = getaddrinfo(host, service, &hints, &found);
	if (g)
		return g == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
	int rc = -EHOSTUNREACH;
	int64_t deadline = now_ms() + timeout_ms;
	for (struct addrinfo *a = found; a; a = a->ai_next) {
		int s = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
		if (s < 0) {
			rc = -errno;
			continue;
		}
		int c = connect(s, a->ai_addr, a->ai_addrlen);
		if (c < 0 && errno == EINPROGRESS) {
			c = wait_for(s, POLLOUT, deadline);
			int err = 0;
			socklen_t l = sizeof err;
			if (c == 0 && getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &l) == 0 && err)
				c = -err;
		} else if (c < 0)
			c = -errno;
		if (c == 0) {
			int one = 1;
			setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
			c = send_all(s, request, (size_t)request_len, 0, deadline);
		}
		if (c == 0) {
			freeaddrinfo(found);
			return s;
		}
		close(s);
		rc = c;
	}
	freeaddrinfo(found);
	return rc;
}

/*
 * One frame of a bulk answer off sock (the answer's magic first if first): a frame of data is
 * written to file at offset, at most max bytes of it. The result is what was found (j->extra):
 * GOT_DATA, its length; GOT_END, 0; GOT_FAILURE, the holder's errno; GOT_FOREIGN, 0 (no bulk answer);
 * GOT_WRITE_ERROR, the errno of the write to file. -errno: the connection failed (GOT_NOTHING with
 * it: it ended before the answer's first byte), the holder sent more than max (-EPROTO), or the frame
 * took longer than the timeout (-ETIMEDOUT: a holder that trickles holds no thread for long).
 */
static int receive_frame(struct job *j)
{
	int sock = j->flags;
	int64_t deadline = now_ms() + j->mode;
	uint8_t b[4];
	int rc;
	if (j->keep) {
		/* The connection's end before any byte of the answer: no bulk server (an older node's HTTP/2 closes it). */
		ssize_t k = recv_some(sock, b, 1, deadline);
		if (k < 0) {
			j->extra = k == -ECONNRESET ? GOT_NOTHING : 0;
			return (int)k;
		}
		rc = recv_all(sock, b + 1, 3, deadline);
		if (rc)
			return rc;
		if (memcmp(b, "MCFB", 4)) {
			j->extra = GOT_FOREIGN;
			return 0;
		}
	}
	rc = recv_all(sock, b, 4, deadline);
	if (rc)
		return rc;
	int32_t n = (int32_t)((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24);
	if (n <= 0) {
		j->extra = n == 0 ? GOT_END : GOT_FAILURE;
		return n == 0 ? 0 : (n < -4095 ? EIO : -n);
	}
	if (n > j->size)
		return -EPROTO;
	/* The thread's own, kept: small enough to stay in the CPU's cache between the receive and the write. */
	static __thread uint8_t *buf;
	if (!buf && !(buf = malloc(PIECE)))
		return -ENOMEM;
	off_t at = j->at;
	for (int left = n; left > 0;) {
		ssize_t k = recv_some(sock, buf, (size_t)(left < PIECE ? left : PIECE), deadline);
		if (k < 0)
			return (int)k;
		for (ssize_t w = 0; w < k;) {
			ssize_t put = pwrite(j->root, buf + w, (size_t)(k - w), at + w);
			if (put < 0 && errno == EINTR)
				continue;
			if (put <= 0) {
				j->extra = GOT_WRITE_ERROR;
				return put < 0 ? errno : EIO;
			}
			w += put;
		}
		at += k;
		left -= (int)k;
	}
	j->extra = GOT_DATA;
	return n;
}

static int run_job(struct job *j)
{
	switch (j->op) {
	case JOB_DIAL:
		return dial(j->text, j->flags, j->head_data, j->head_len, j->mode);
	case JOB_RECEIVE:
		return receive_frame(j);
	case JOB_SEND: {
		int rc = send_range(j->flags, j->head, j->head_len, j->root, j->at, (int)j->size, j->mode);
		close(j->flags);
		return rc;
	}
	case JOB_COPY:
		return copy_fd(j->root, j->flags, j->size);
	case JOB_WRITE_OUT:
		return write_out(j->root, j->at, j->size, j->mode);
	case JOB_UNLINK:
		return mcfs_unlinkat_beneath(j->root, j->text, 0);
	case JOB_CLOSE:
		close(j->root);
		return 0;
	case JOB_CLOSE_MANY:
		for (off_t i = 0; i < j->size; i++) {
			int32_t fd;
			memcpy(&fd, j->text + i * (off_t)sizeof fd, sizeof fd);
			close(fd);
		}
		return 0;
	default:
		return mcfs_open_regular_beneath(j->root, j->text, j->flags, j->mode);
	}
}

static void *worker(void *arg)
{
	struct lane *q = arg;
	for (;;) {
		pthread_mutex_lock(&lock);
		while (!q->head)
			pthread_cond_wait(&q->work, &lock);
		struct job *j = q->head;
		q->head = j->next;
		if (!q->head)
			q->tail = NULL;
		pthread_mutex_unlock(&lock);
		int rc = run_job(j);
		if (j->op == JOB_CLOSE || j->op == JOB_CLOSE_MANY) {
			/* Nobody waits for a close: no result, no wake. */
			pthread_mutex_lock(&lock);
			inflight--;
			pthread_mutex_unlock(&lock);
			free(j);
			continue;
		}
		if (rc >= 0 && j->keep && j->op == JOB_OPEN) {
			int k = mcfs_keep_fd(rc, j->uid, j->gid, j->mode, j->mark_name, j->mark);
			if (k < 0) {
				close(rc);
				rc = k;
			}
		}
		pthread_mutex_lock(&lock);
		done[3 * ndone] = (int32_t)j->token;
		done[3 * ndone + 1] = rc;
		done[3 * ndone + 2] = j->extra;
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

/* Set up once (THREADS for files, and as many as asked for sends and receives, each lane's started with its first job); wake is called from them when results wait. */
void mcfs_pool_start(void (*wake)(void), int send_threads, int receive_threads)
{
	pthread_mutex_lock(&lock);
	if (!waker) {
		waker = wake;
		lanes[LANE_SENDS].threads = send_threads;
		lanes[LANE_RECEIVES].threads = receive_threads;
	}
	pthread_mutex_unlock(&lock);
}

/* q's threads, at its first job (lock held). 0, or -errno if not even one could start. */
static int start_lane(struct lane *q)
{
	while (q->started < q->threads) {
		pthread_t t;
		int rc = pthread_create(&t, NULL, worker, q);
		if (rc)
			return q->started ? 0 : -rc;
		pthread_setname_np(t, q->name);
		pthread_detach(t);
		q->started++;
	}
	return 0;
}

/* Queue j (its op and arguments set), for root; its result comes with token. 0 or -errno (j freed). */
static int submit(struct job *j, uint32_t token, int root)
{
	j->next = NULL;
	j->token = token;
	j->root = root;
	pthread_mutex_lock(&lock);
	if (ndone + inflight + 1 > room) {
		size_t want = room ? 2 * room : 64;
		int32_t *grown = realloc(done, want * 3 * sizeof *done);
		if (!grown) {
			pthread_mutex_unlock(&lock);
			free(j);
			return -ENOMEM;
		}
		done = grown;
		room = want;
	}
	struct lane *q = &lanes[j->op == JOB_SEND ? LANE_SENDS : j->op >= JOB_DIAL ? LANE_RECEIVES : LANE_FILES];
	int started = q->started ? 0 : start_lane(q);
	if (started) {
		pthread_mutex_unlock(&lock);
		free(j);
		return started;
	}
	inflight++;
	if (q->tail)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
	pthread_cond_signal(&q->work);
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
	j->extra = 0;
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
	j->extra = 0;
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

/*
 * Queue a send of head (up to 8 bytes), then length bytes of file at offset, to sock (send_range); sock
 * is duplicated here, file stays open until the result comes with token. Waits for the socket at most
 * timeout_ms for the frame. 0 or -errno.
 */
int mcfs_pool_send(uint32_t token, int sock, const uint8_t *head, int head_len, int file, double offset, int length, int timeout_ms)
{
	if (head_len < 0 || head_len > 8 || offset < 0 || length < 0)
		return -EINVAL;
	struct job *j = new_job(JOB_SEND, "");
	if (!j)
		return -ENOMEM;
	/* Its own: the connection may be closed by JS while the send runs, and the number given to another file. */
	int dup = fcntl(sock, F_DUPFD_CLOEXEC, 0);
	if (dup < 0) {
		int e = errno;
		free(j);
		return -e;
	}
	memcpy(j->head, head, (size_t)head_len);
	j->head_len = head_len;
	j->flags = dup;
	j->at = (off_t)offset;
	j->size = length;
	j->mode = timeout_ms;
	int rc = submit(j, token, file);
	if (rc < 0)
		close(dup);
	return rc;
}

/*
 * Queue a connection to host:port (a name or an address) that sends request first; the result is its
 * descriptor (non-blocking; JS closes it), or -errno. Waits at most timeout_ms in all.
 */
int mcfs_pool_dial(uint32_t token, const char *host, int port, const uint8_t *request, int request_len, int timeout_ms)
{
	if (request_len < 0 || port <= 0 || port > 65535)
		return -EINVAL;
	size_t len = strlen(host);
	struct job *j = malloc(sizeof *j + len + 1 + (size_t)request_len);
	if (!j)
		return -ENOMEM;
	j->op = JOB_DIAL;
	j->keep = 0;
	j->extra = 0;
	memcpy(j->text, host, len + 1);
	j->head_data = (uint8_t *)j->text + len + 1;
	memcpy(j->head_data, request, (size_t)request_len);
	j->head_len = request_len;
	j->flags = port;
	j->mode = timeout_ms;
	return submit(j, token, -1);
}

/*
 * Queue a receive of one frame of a bulk answer off sock into file (receive_frame): its result comes
 * with token, what it found as the extra result. sock and file stay open until then.
 */
int mcfs_pool_receive(uint32_t token, int sock, int first, int file, double offset, int max, int timeout_ms)
{
	if (offset < 0 || max < 0)
		return -EINVAL;
	struct job *j = new_job(JOB_RECEIVE, "");
	if (!j)
		return -ENOMEM;
	j->flags = sock;
	j->keep = first;
	j->at = (off_t)offset;
	j->size = max;
	j->mode = timeout_ms;
	return submit(j, token, file);
}

/* Move up to cap results (token, result, extra triples) into out. Returns how many triples. */
int mcfs_pool_poll(int32_t *out, int cap)
{
	pthread_mutex_lock(&lock);
	size_t n = ndone < (size_t)cap ? ndone : (size_t)cap;
	if (n) {
		memcpy(out, done, n * 3 * sizeof *done);
		memmove(done, done + 3 * n, (ndone - n) * 3 * sizeof *done);
		ndone -= n;
	}
	wake_pending = ndone > 0;
	int again = wake_pending;
	pthread_mutex_unlock(&lock);
	if (again)
		waker();
	return (int)n;
}

/*
 * Close fd on a files thread, with no result: a last close that frees an unlinked file's blocks (a
 * big one takes long) holds up no one. 0, or -errno when it could not be queued (fd is still open).
 */
int mcfs_pool_close(int fd)
{
	if (fd < 0)
		return -EBADF;
	struct job *j = new_job(JOB_CLOSE, "");
	if (!j)
		return -ENOMEM;
	return submit(j, 0, fd);
}

/* The n fds closed on one files thread, one after another, as mcfs_pool_close closes one: one handoff for them all. */
int mcfs_pool_close_many(const int32_t *fds, int n)
{
	if (n <= 0)
		return -EINVAL;
	struct job *j = malloc(sizeof *j + (size_t)n * sizeof *fds);
	if (!j)
		return -ENOMEM;
	memset(j, 0, sizeof *j);
	j->op = JOB_CLOSE_MANY;
	j->size = n;
	memcpy(j->text, fds, (size_t)n * sizeof *fds);
	return submit(j, 0, -1);
}

/* A receive or send under way on sock (or a duplicate of it) returns at once: the reader gave up. */
int mcfs_pool_cut(int sock)
{
	return shutdown(sock, SHUT_RDWR) ? -errno : 0;
}
