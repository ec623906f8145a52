/*
 * The hand-off to JS. Bun cannot block in the session loop, so handlers copy each request into this
 * queue and wake JS through a threadsafe callback, which queues a task on Bun's event loop; JS then
 * drains whole records in batches with mcfs_poll. One wake per batch: none while one is pending. The
 * callback costs half the CPU of waking a pipe reader (measured here: 27 against 63 us a wake, each
 * stream read re-arming epoll and reading twice); the pipe only tells JS the session ended, and its
 * pending read keeps Bun's event loop alive, which the callback does not.
 *
 * Records the kernel has had its answer to already (queue_note: a release with nothing written since
 * its flush, a sole node's flush, a file the shim made) wake nobody: JS takes them with the next
 * request, in order, or at most LATE_MS later (the late thread's wake).
 */
#include "mcfs_fuse.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct qitem {
	struct qitem *next;
	struct mcfs_req r;
	/* strings and data follow */
};

static int wake_r = -1, wake_w = -1;
/* Called, and cleared, under wlock: once queue_stop_waking returns, no thread calls into JS any more. */
static void (*waker)(void);
static pthread_mutex_t wlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static struct qitem *qhead, *qtail;
static int wake_pending;
/* Records queued without a wake wait at most this long for one. */
#define LATE_MS 20
static pthread_cond_t late_cond = PTHREAD_COND_INITIALIZER;
/*
 * Under qlock: a record queued without a wake is waiting (since late_since); the late thread's state.
 * The late thread is signalled only from its untimed wait: a record taken in time costs it nothing,
 * and a stream of them one timed wait in LATE_MS, not a wake each.
 */
static int late_pending, late_stop, late_running, late_idle;
static struct timespec late_since;
static pthread_t late_thread;

static int reached(const struct timespec *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > t->tv_sec || (now.tv_sec == t->tv_sec && now.tv_nsec >= t->tv_nsec);
}

static void *late_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&qlock);
	while (!late_stop) {
		if (!late_pending) {
			late_idle = 1;
			pthread_cond_wait(&late_cond, &qlock);
			late_idle = 0;
			continue;
		}
		struct timespec until = time_after(late_since, LATE_MS);
		if (!reached(&until)) {
			pthread_cond_timedwait(&late_cond, &qlock, &until);
			/* Taken meanwhile, or a newer record's wait (late_since moved): looked at again. */
			continue;
		}
		late_pending = 0;
		int need_wake = !wake_pending;
		wake_pending = 1;
		pthread_mutex_unlock(&qlock);
		if (need_wake)
			queue_wake();
		pthread_mutex_lock(&qlock);
	}
	pthread_mutex_unlock(&qlock);
	return NULL;
}

static void late_start(void)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(&late_cond, &a);
	pthread_condattr_destroy(&a);
	late_stop = 0;
	late_idle = 0;
	late_pending = 0;
	late_running = pthread_create(&late_thread, NULL, late_main, NULL) == 0;
}

static void late_end(void)
{
	pthread_mutex_lock(&qlock);
	int running = late_running;
	late_running = 0;
	late_stop = 1;
	pthread_cond_signal(&late_cond);
	pthread_mutex_unlock(&qlock);
	if (running)
		pthread_join(late_thread, NULL);
}

int queue_open(void (*wake)(void))
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	/* Non-blocking both ways: Bun then waits on the read end in its event loop instead of blocking. */
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	fcntl(p[1], F_SETFL, O_NONBLOCK);
	wake_r = p[0];
	wake_w = p[1];
	pthread_mutex_lock(&wlock);
	waker = wake;
	pthread_mutex_unlock(&wlock);
	late_start();
	return wake_r;
}

void queue_stop_waking(void)
{
	late_end();
	pthread_mutex_lock(&wlock);
	waker = NULL;
	pthread_mutex_unlock(&wlock);
}

/* Close the pipe again when the mount failed and JS never saw it. */
void queue_close(void)
{
	queue_stop_waking();
	close(wake_r);
	close(wake_w);
	wake_r = wake_w = -1;
}

void queue_wake(void)
{
	pthread_mutex_lock(&wlock);
	if (waker)
		waker();
	pthread_mutex_unlock(&wlock);
}

void queue_end(void)
{
	char c = 1;
	while (write(wake_w, &c, 1) < 0 && errno == EINTR)
		;
}

/* A record for JS: id 0 when the request is answered already (JS replies to nothing). */
static struct qitem *record(uint32_t id, const struct fuse_ctx *ctx, struct mcfs_req *h, const char *s1, const char *s2, const void *data, size_t dlen)
{
	size_t l1 = s1 ? strlen(s1) + 1 : 0, l2 = s2 ? strlen(s2) + 1 : 0;
	size_t len = (sizeof(struct mcfs_req) + l1 + l2 + dlen + 7) & ~(size_t)7;
	struct qitem *q = malloc(sizeof(struct qitem) - sizeof(struct mcfs_req) + len);
	if (!q)
		return NULL;
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
	if (l1) { memcpy(p, s1, l1); p += l1; }
	if (l2) { memcpy(p, s2, l2); p += l2; }
	if (dlen) memcpy(p, data, dlen);
	q->next = NULL;
	return q;
}

/* Append q; wake JS unless late (then the late thread does, if nothing else has by LATE_MS). */
static void append(struct qitem *q, int late)
{
	pthread_mutex_lock(&qlock);
	if (qtail) qtail->next = q; else qhead = q;
	qtail = q;
	int need_wake = 0;
	if (late && late_running) {
		/* A wake on its way, or a late one owed already, takes this record too. */
		if (!wake_pending && !late_pending) {
			late_pending = 1;
			clock_gettime(CLOCK_MONOTONIC, &late_since);
			if (late_idle)
				pthread_cond_signal(&late_cond);
		}
	} else {
		need_wake = !wake_pending;
		wake_pending = 1;
	}
	pthread_mutex_unlock(&qlock);
	if (need_wake)
		queue_wake();
}

void queue_put(fuse_req_t req, struct mcfs_req *h, const char *s1, const char *s2, const void *data, size_t dlen)
{
	uint32_t id = ids_put(req);
	if (!id) {
		fuse_reply_err(req, EAGAIN);
		return;
	}
	struct qitem *q = record(id, fuse_req_ctx(req), h, s1, s2, data, dlen);
	if (!q) {
		ids_take(id);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	append(q, 0);
}

int queue_note(const struct fuse_ctx *ctx, struct mcfs_req *h, const char *s1)
{
	struct qitem *q = record(0, ctx, h, s1, NULL, NULL, 0);
	if (!q)
		return -ENOMEM;
	append(q, 1);
	return 0;
}

/* Copy queued requests into buf (whole records only). Returns bytes written. */
int mcfs_poll(uint8_t *buf, int cap)
{
	int used = 0;
	pthread_mutex_lock(&qlock);
	while (qhead && used + (int)qhead->r.len <= cap) {
		struct qitem *q = qhead;
		qhead = q->next;
		if (!qhead)
			qtail = NULL;
		memcpy(buf + used, &q->r, q->r.len);
		used += (int)q->r.len;
		if (q->r.op == OP_CREATED)
			creates_claimed(q->r.fh);
		free(q);
	}
	wake_pending = qhead != NULL;
	/* Taken with the others: no late wake is owed for them any more (the late thread sees it when its wait ends). */
	if (!qhead)
		late_pending = 0;
	pthread_mutex_unlock(&qlock);
	if (wake_pending)
		queue_wake();
	return used;
}
