/*
 * Reply ids. JS never holds a fuse_req_t: it gets an id of slot|generation, and a reply with an id whose
 * request was already answered (or belongs to an earlier use of the slot) is refused instead of
 * touching a freed request. This is what makes "reply exactly once" hold whatever JS does.
 */
#include "mcfs_fuse.h"
#include <pthread.h>

#define MAX_REQS (1u << 16)
#define SLOT_MASK (MAX_REQS - 1)

static pthread_mutex_t rlock = PTHREAD_MUTEX_INITIALIZER;
static fuse_req_t reqs[MAX_REQS];
static uint32_t gens[MAX_REQS];
static uint32_t free_list[MAX_REQS];
static uint32_t free_top;

void ids_reset(void)
{
	for (uint32_t i = 0; i < MAX_REQS - 1; i++)
		free_list[i] = MAX_REQS - 1 - i; /* slot 0 unused: id 0 means "no request" */
	free_top = MAX_REQS - 1;
}

uint32_t ids_put(fuse_req_t req)
{
	pthread_mutex_lock(&rlock);
	if (free_top == 0) {
		pthread_mutex_unlock(&rlock);
		return 0;
	}
	uint32_t slot = free_list[--free_top];
	reqs[slot] = req;
	uint32_t gen = ++gens[slot] & 0x7fff;
	if (gen == 0)
		gen = gens[slot] = 1;
	pthread_mutex_unlock(&rlock);
	return (gen << 16) | slot;
}

void ids_fail_all(int err)
{
	for (uint32_t slot = 1; slot < MAX_REQS; slot++) {
		pthread_mutex_lock(&rlock);
		fuse_req_t req = reqs[slot];
		if (req) {
			reqs[slot] = NULL;
			free_list[free_top++] = slot;
		}
		pthread_mutex_unlock(&rlock);
		if (req)
			fuse_reply_err(req, err);
	}
}

fuse_req_t ids_take(uint32_t id)
{
	uint32_t slot = id & SLOT_MASK, gen = id >> 16;
	fuse_req_t req = NULL;
	pthread_mutex_lock(&rlock);
	if (reqs[slot] && (gens[slot] & 0x7fff) == gen) {
		req = reqs[slot];
		reqs[slot] = NULL;
		free_list[free_top++] = slot;
	}
	pthread_mutex_unlock(&rlock);
	return req;
}
