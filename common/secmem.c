/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdbool.h>
#include <string.h>

#include "common/secmem.h"

#define MK_SECRET_MAX ((size_t)64 << 20)

/*
 * Small secrets (DH results, HPKE keys, nonces, PINs) come from a pool of fixed-size slots
 * carved out of sodium_malloc()ed chunks: still locked in memory, excluded from core dumps,
 * fenced by guard pages around each chunk, and wiped when freed; but without the mmap,
 * mprotect and mlock system calls that sodium_malloc() makes for every block (about 25 us
 * per allocation and free, ten times per HPKE decryption). Larger secrets, and small ones
 * once the pool is at its cap, get their own sodium_malloc() block as before.
 */
#define SLOT_SIZE ((size_t)128)     /* holds an mk_secret of up to 120 bytes */
#define SLOTS_PER_CHUNK ((size_t)128) /* 16 KiB per chunk */
#define CHUNKS_MAX 64               /* at most 1 MiB of pooled secrets */
#define CHUNK_SIZE (SLOT_SIZE * SLOTS_PER_CHUNK)

typedef union slot {
	union slot *next; /* while free */
	uint8_t bytes[SLOT_SIZE];
} slot;

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_result;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *chunks[CHUNKS_MAX]; /* written under pool_lock, never freed */
static size_t nchunks;
static slot *free_slots;

static void do_init(void)
{
	init_result = sodium_init() < 0 ? -ENOMEM : 0;
}

int mk_secmem_init(void)
{
	pthread_once(&init_once, do_init);
	return init_result;
}

/* A zeroed slot, or NULL when the pool is full or out of memory. Called with pool_lock. */
static void *pool_get_locked(void)
{
	slot *s;

	if (!free_slots) {
		uint8_t *c;

		if (nchunks == CHUNKS_MAX)
			return NULL;
		c = sodium_malloc(CHUNK_SIZE);
		if (!c)
			return NULL;
		memset(c, 0, CHUNK_SIZE); /* sodium_malloc() fills with a pattern */
		for (size_t i = SLOTS_PER_CHUNK; i-- > 0;) {
			slot *n = (slot *)(c + i * SLOT_SIZE);

			n->next = free_slots;
			free_slots = n;
		}
		chunks[nchunks++] = c;
	}
	s = free_slots;
	free_slots = s->next;
	s->next = NULL; /* every other byte is zero already: slots are wiped when freed */
	return s;
}

/* Called with pool_lock. */
static bool in_pool_locked(const void *p)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < nchunks; i++)
		if (b >= chunks[i] && b < chunks[i] + CHUNK_SIZE)
			return true;
	return false;
}

int mk_secret_new(size_t len, mk_secret **ret)
{
	mk_secret *s = NULL;
	size_t total;
	int r;

	r = mk_secmem_init();
	if (r < 0)
		return r;
	if (len > MK_SECRET_MAX)
		return -EINVAL;
	/* sodium_malloc() places the block against a guard page, so round the size up to keep
	 * the header aligned. */
	total = (sizeof(mk_secret) + len + 15) & ~(size_t)15;
	if (total <= SLOT_SIZE) {
		pthread_mutex_lock(&pool_lock);
		s = pool_get_locked();
		pthread_mutex_unlock(&pool_lock);
	}
	if (!s) {
		s = sodium_malloc(total);
		if (!s)
			return -ENOMEM;
		memset(s, 0, total);
	}
	s->len = len;
	*ret = s;
	return 0;
}

int mk_secret_new_copy(const void *p, size_t len, mk_secret **ret)
{
	mk_secret *s;
	int r;

	r = mk_secret_new(len, &s);
	if (r < 0)
		return r;
	if (len)
		memcpy(s->data, p, len);
	*ret = s;
	return 0;
}

mk_secret *mk_secret_free(mk_secret *s)
{
	bool pooled;

	if (!s)
		return NULL;
	pthread_mutex_lock(&pool_lock);
	pooled = in_pool_locked(s);
	if (pooled) {
		slot *sl = (slot *)s;

		sodium_memzero(sl, SLOT_SIZE);
		sl->next = free_slots;
		free_slots = sl;
	}
	pthread_mutex_unlock(&pool_lock);
	if (!pooled)
		sodium_free(s); /* wipes before unmapping */
	return NULL;
}

void mk_wipe(void *p, size_t len)
{
	if (p && len)
		sodium_memzero(p, len);
}

int mk_memeq_ct(const void *a, const void *b, size_t len)
{
	if (len == 0)
		return 1;
	return sodium_memcmp(a, b, len) == 0;
}
