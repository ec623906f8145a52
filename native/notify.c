/*
 * Kernel cache invalidations run on their own thread: a notification can block until the kernel gets a
 * directory lock held by a request that only JS can answer, so JS must never make them itself. JS
 * queues them (mcfs_inval_*) and, when it must know they reached the kernel, waits for the done count
 * to reach the pushed count (mcfs_notes_*); the thread wakes JS each time it drains the queue.
 */
#include "mcfs_fuse.h"
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct note {
	struct note *next;
	uint64_t ino;
	uint64_t seq;
	int entry;
	/* Inode: only its attributes (its cached pages stay). */
	int attrs_only;
	char name[];
};

static struct fuse_session *se;
static uint64_t notes_pushed, notes_done;
static pthread_mutex_t nlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ncond = PTHREAD_COND_INITIALIZER;
static struct note *nhead, *ntail;
static int note_stop;
/* A batch is being queued: the thread is woken once, at its end (one wake-up, not one per note). */
static int notes_held;
/* JS waits for notes_done to reach this: the thread wakes it when it does, then clears it. */
static uint64_t notes_wanted;
static pthread_t note_thread;
static int note_running;

/*
 * The kernel makes the inode an entry reply names (a lookup's, a create's, a listing's) only once the
 * caller that reply wakes runs again. Until then an invalidation of that inode finds nothing (ENOENT)
 * and is lost, and the reply's attributes, read before another node's change, stay for the attribute
 * timeout after that change returned. So an invalidation of an inode an entry reply named within
 * REPLY_LANDS_US is tried again while it finds nothing, until that time has passed since the reply,
 * or the kernel forgot the inode (it had made it: an unlink's or a rename's drop of its last name
 * lets it go at once).
 * One slot per hash of the inode number: a slot another inode took since only loses the retry.
 */
#define REPLIED_BITS 14
#define REPLIED_SLOTS (1u << REPLIED_BITS)
#define REPLY_LANDS_US 100000
static _Atomic uint64_t replied_ino[REPLIED_SLOTS];
static _Atomic int64_t replied_us[REPLIED_SLOTS];

static int64_t mono_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static size_t replied_slot(uint64_t ino)
{
	return (size_t)((ino * 0x9E3779B97F4A7C15ull) >> (64 - REPLIED_BITS));
}

/*
 * An entry reply naming ino is about to go: from the shim as it sends one (attr_entry), and from JS
 * as it makes one (a change JS hears before sending it must not be lost either).
 */
void mcfs_entry_answering(uint64_t ino)
{
	if (!ino)
		return;
	size_t s = replied_slot(ino);
	atomic_store_explicit(&replied_us[s], mono_us(), memory_order_relaxed);
	atomic_store_explicit(&replied_ino[s], ino, memory_order_release);
}

/*
 * No reply naming ino is on its way any more: the kernel let the inode go (FORGET: it had made it),
 * or the reply never reached the kernel (its caller was interrupted). An invalidation finding nothing
 * is then not early, and is not tried again.
 */
void notify_entry_done(uint64_t ino)
{
	uint64_t was = ino;
	atomic_compare_exchange_strong(&replied_ino[replied_slot(ino)], &was, 0);
}

/* An entry reply named ino less than REPLY_LANDS_US ago: the kernel may not have made its inode yet. */
static int reply_landing(uint64_t ino)
{
	size_t s = replied_slot(ino);
	if (atomic_load_explicit(&replied_ino[s], memory_order_acquire) != ino)
		return 0;
	return mono_us() - atomic_load_explicit(&replied_us[s], memory_order_relaxed) < REPLY_LANDS_US;
}

static void inval_inode(uint64_t ino, int attrs_only)
{
	/* Short at first: a FORGET usually follows the drop that let the inode go within microseconds. */
	for (long pause_us = 50; fuse_lowlevel_notify_inval_inode(se, ino, attrs_only ? -1 : 0, 0) == -ENOENT && reply_landing(ino); pause_us = pause_us < 1000 ? pause_us * 2 : 1000) {
		struct timespec pause = { 0, pause_us * 1000 };
		nanosleep(&pause, NULL);
	}
}

static void *note_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&nlock);
	for (;;) {
		while (!nhead && !note_stop)
			pthread_cond_wait(&ncond, &nlock);
		if (note_stop)
			break;
		struct note *n = nhead;
		nhead = n->next;
		if (!nhead)
			ntail = NULL;
		pthread_mutex_unlock(&nlock);
		/* ENOENT: the kernel had nothing cached for it (an inode: or not yet, see inval_inode). */
		if (n->entry)
			fuse_lowlevel_notify_inval_entry(se, n->ino, n->name, strlen(n->name));
		else
			inval_inode(n->ino, n->attrs_only);
		uint64_t seq = n->seq;
		free(n);
		pthread_mutex_lock(&nlock);
		notes_done = seq;
		if (notes_wanted && notes_done >= notes_wanted) {
			notes_wanted = 0;
			pthread_mutex_unlock(&nlock);
			queue_wake();
			pthread_mutex_lock(&nlock);
		}
	}
	while (nhead) {
		struct note *n = nhead;
		nhead = n->next;
		free(n);
	}
	ntail = NULL;
	pthread_mutex_unlock(&nlock);
	return NULL;
}

/* Start the thread for session s; without it invalidations are refused (ENOTCONN). */
int notify_start(struct fuse_session *s)
{
	se = s;
	note_stop = 0;
	if (pthread_create(&note_thread, NULL, note_main, NULL) != 0)
		return -EAGAIN;
	note_running = 1;
	return 0;
}

/* Stop the thread, dropping what it has not done yet (the session is ending). */
void notify_stop(void)
{
	pthread_mutex_lock(&nlock);
	int joined_notes = note_running;
	note_running = 0;
	note_stop = 1;
	pthread_cond_signal(&ncond);
	pthread_mutex_unlock(&nlock);
	if (joined_notes)
		pthread_join(note_thread, NULL);
}

static int note_push(uint64_t ino, const char *name, int attrs_only)
{
	size_t l = name ? strlen(name) + 1 : 1;
	struct note *n = malloc(sizeof *n + l);
	if (!n)
		return -ENOMEM;
	n->next = NULL;
	n->ino = ino;
	n->entry = name != NULL;
	n->attrs_only = attrs_only;
	memcpy(n->name, name ? name : "", l);
	pthread_mutex_lock(&nlock);
	if (!note_running) {
		pthread_mutex_unlock(&nlock);
		free(n);
		return -ENOTCONN;
	}
	n->seq = ++notes_pushed;
	if (ntail) ntail->next = n; else nhead = n;
	ntail = n;
	if (!notes_held)
		pthread_cond_signal(&ncond);
	pthread_mutex_unlock(&nlock);
	return 0;
}

/* Forget the kernel's cached entry parent/name (queued); the shim's own goes at once. */
int mcfs_inval_entry(uint64_t parent, const char *name)
{
	mcfs_entry_drop(parent, name);
	return note_push(parent, name, 0);
}

/* Forget the kernel's cached attributes and pages of ino (queued); the shim's entries of it go at once. */
int mcfs_inval_inode(uint64_t ino)
{
	mcfs_entry_drop_inode(ino);
	return note_push(ino, NULL, 0);
}

/* Forget the kernel's cached attributes of ino, keeping its pages (queued); the shim's entries of it go at once. */
int mcfs_inval_attrs(uint64_t ino)
{
	mcfs_entry_drop_inode(ino);
	return note_push(ino, NULL, 1);
}

/*
 * Forget the kernel's cached attributes of directory ino now, on the caller's thread (JS's), waking
 * no thread: without pages to drop (no directory's are cached: no FOPEN_CACHE_DIR) the kernel takes no
 * lock a request may hold. The shim's own entries of it are left: JS dropped them before it learned
 * the change (and may have given the new attributes since). One the kernel has not made yet (an entry
 * reply naming it on its way) is queued for the thread, which tries it again.
 */
int mcfs_inval_dir_now(uint64_t ino)
{
	pthread_mutex_lock(&nlock);
	/* Under the lock: notify_stop waits for it, and the session outlives the thread. */
	int rc = note_running ? fuse_lowlevel_notify_inval_inode(se, ino, -1, 0) : -ENOTCONN;
	pthread_mutex_unlock(&nlock);
	if (rc == -ENOENT && reply_landing(ino))
		return note_push(ino, NULL, 1);
	return rc == -ENOENT ? 0 : rc;
}

/* Queue a batch of invalidations between these two: the thread starts on them at the release. */
void mcfs_notes_hold(void)
{
	pthread_mutex_lock(&nlock);
	notes_held = 1;
	pthread_mutex_unlock(&nlock);
}

void mcfs_notes_release(void)
{
	pthread_mutex_lock(&nlock);
	notes_held = 0;
	if (nhead)
		pthread_cond_signal(&ncond);
	pthread_mutex_unlock(&nlock);
}

/* How many invalidations were queued, and how many carried out (the kernel has them). */
uint64_t mcfs_notes_pushed(void)
{
	pthread_mutex_lock(&nlock);
	uint64_t n = notes_pushed;
	pthread_mutex_unlock(&nlock);
	return n;
}

/*
 * JS waits until the done count reaches up_to: 1 if it has already (no wake comes), else 0 and the
 * thread wakes JS once it has (the lowest count asked for; JS asks again for the rest). Checked and
 * set under one lock: the count cannot pass unseen between.
 */
int mcfs_notes_want(uint64_t up_to)
{
	pthread_mutex_lock(&nlock);
	int reached = notes_done >= up_to || !note_running;
	if (!reached && (!notes_wanted || up_to < notes_wanted))
		notes_wanted = up_to;
	pthread_mutex_unlock(&nlock);
	return reached;
}

uint64_t mcfs_notes_done(void)
{
	pthread_mutex_lock(&nlock);
	uint64_t n = notes_done;
	pthread_mutex_unlock(&nlock);
	return n;
}
