/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Modules, slots, tokens, the per-token session pool, login, and the one CK_RV
 * translation. Keys live in p11-key.c, signing and deriving in p11-ops.c.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/error.h"
#include "pkcs11/p11-private.h"

/* --- errors ------------------------------------------------------------------------------ */

bool mk_p11_rv_session_dead(CK_RV rv)
{
	switch (rv) {
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_TOKEN_NOT_RECOGNIZED:
	case CKR_SLOT_ID_INVALID:
	case CKR_CRYPTOKI_NOT_INITIALIZED:
		return true;
	default:
		return false;
	}
}

int mk_p11_error(CK_RV rv, const mk_token *t, const char *what)
{
	const char *tok = t && t->label ? t->label : "(unknown)";
	const char *why = p11_kit_strerror(rv);
	unsigned long code = (unsigned long)rv;

	switch (rv) {
	case CKR_OK:
		return 0;
	case CKR_USER_NOT_LOGGED_IN:
		return mk_error(-ENOTCONN, "token \"%s\" needs a login to %s; log in with its PIN and retry",
				tok, what);
	case CKR_PIN_INCORRECT:
	case CKR_PIN_INVALID:
	case CKR_PIN_LEN_RANGE:
		return mk_error(-EKEYREJECTED,
				"token \"%s\" rejected the PIN (%s); check it and retry, but mind that "
				"the token locks the PIN after a few wrong tries",
				tok, why);
	case CKR_PIN_LOCKED:
		return mk_error(-EKEYREVOKED,
				"the PIN of token \"%s\" is locked; unblock it with the PUK or SO PIN, "
				"or ask your administrator",
				tok);
	case CKR_PIN_EXPIRED:
	case CKR_USER_PIN_NOT_INITIALIZED:
		return mk_error(-EACCES, "the PIN of token \"%s\" must be set or changed first (%s); use "
				"the token's own tools", tok, why);
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_DEVICE_REMOVED:
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_SLOT_ID_INVALID:
	case CKR_TOKEN_NOT_RECOGNIZED:
		return mk_error(-ENOMEDIUM, "token \"%s\" was removed (%s while trying to %s); insert "
				"it and retry", tok, why, what);
	case CKR_KEY_HANDLE_INVALID:
	case CKR_OBJECT_HANDLE_INVALID:
		return mk_error(-ENOKEY, "the key is no longer on token \"%s\" (%s); list the keys "
				"and pick another", tok, why);
	case CKR_MECHANISM_INVALID:
	case CKR_MECHANISM_PARAM_INVALID:
	case CKR_KEY_TYPE_INCONSISTENT:
	case CKR_KEY_FUNCTION_NOT_PERMITTED:
	case CKR_FUNCTION_NOT_SUPPORTED:
	case CKR_DOMAIN_PARAMS_INVALID:
	case CKR_CURVE_NOT_SUPPORTED:
		return mk_error(-EOPNOTSUPP, "token \"%s\" cannot %s: %s; use another key, algorithm or "
				"token", tok, what, why);
	case CKR_ARGUMENTS_BAD:
	case CKR_DATA_INVALID:
	case CKR_DATA_LEN_RANGE:
	case CKR_ATTRIBUTE_VALUE_INVALID:
	case CKR_ATTRIBUTE_TYPE_INVALID:
	case CKR_TEMPLATE_INCOMPLETE:
	case CKR_TEMPLATE_INCONSISTENT:
	case CKR_KEY_SIZE_RANGE:
		return mk_error(-EINVAL, "token \"%s\" refused the input to %s: %s", tok, what, why);
	case CKR_TOKEN_WRITE_PROTECTED:
	case CKR_SESSION_READ_ONLY:
		return mk_error(-EACCES, "token \"%s\" is write-protected, cannot %s; use another token",
				tok, what);
	case CKR_USER_ANOTHER_ALREADY_LOGGED_IN:
	case CKR_USER_TYPE_INVALID:
		return mk_error(-EACCES, "token \"%s\" has another user logged in (%s); log them out "
				"and retry", tok, why);
	case CKR_SESSION_COUNT:
	case CKR_OPERATION_ACTIVE:
	case CKR_SESSION_PARALLEL_NOT_SUPPORTED:
		return mk_error(-EBUSY, "token \"%s\" is busy (%s); close other programs using it "
				"and retry", tok, why);
	case CKR_FUNCTION_CANCELED:
		return mk_error(-ECANCELED, "the operation to %s was cancelled on token \"%s\"", what,
				tok);
	case CKR_HOST_MEMORY:
		return mk_error(-ENOMEM, "out of memory while trying to %s on token \"%s\"", what, tok);
	case CKR_DEVICE_MEMORY:
		return mk_error(-EIO, "token \"%s\" is full, cannot %s; delete keys you no longer use",
				tok, what);
	default:
		return mk_error(-EIO, "token \"%s\" failed to %s: %s (CK_RV 0x%lx); retry, or "
				"reinsert the token", tok, what, why, code);
	}
}

/* --- small helpers ----------------------------------------------------------------------- */

char *mk_p11_strdup_field(const unsigned char *field, size_t n)
{
	char *s;

	/* Blank-padded; some tokens pad with NULs instead. */
	while (n > 0 && (field[n - 1] == ' ' || field[n - 1] == '\0'))
		n--;
	s = malloc(n + 1);
	if (!s)
		return NULL;
	memcpy(s, field, n);
	s[n] = '\0';
	return s;
}

static bool token_identity_eq(const CK_TOKEN_INFO *a, const CK_TOKEN_INFO *b)
{
	return memcmp(a->label, b->label, sizeof(a->label)) == 0 &&
	       memcmp(a->manufacturerID, b->manufacturerID, sizeof(a->manufacturerID)) == 0 &&
	       memcmp(a->model, b->model, sizeof(a->model)) == 0 &&
	       memcmp(a->serialNumber, b->serialNumber, sizeof(a->serialNumber)) == 0;
}

static int token_uri_format(const CK_TOKEN_INFO *ti, char **ret)
{
	P11KitUri *u = p11_kit_uri_new();
	CK_TOKEN_INFO *dst;
	char *s = NULL;
	int r;

	if (!u)
		return -ENOMEM;
	dst = p11_kit_uri_get_token_info(u);
	memcpy(dst->label, ti->label, sizeof(dst->label));
	memcpy(dst->manufacturerID, ti->manufacturerID, sizeof(dst->manufacturerID));
	memcpy(dst->model, ti->model, sizeof(dst->model));
	memcpy(dst->serialNumber, ti->serialNumber, sizeof(dst->serialNumber));
	r = p11_kit_uri_format(u, P11_KIT_URI_FOR_TOKEN, &s);
	p11_kit_uri_free(u);
	if (r != P11_KIT_URI_OK)
		return -ENOMEM;
	*ret = s;
	return 0;
}

/* --- who is inside a module ------------------------------------------------------------- */

/*
 * A module may be re-initialised (C_Finalize, C_Initialize) to see new tokens; no other call
 * may be in it then. Every stretch of token work (a borrowed session) and every call outside
 * one that is not made under mk_p11.lock counts as a user; a re-initialisation (always under
 * mk_p11.lock) waits for none: it happens only when there are no users, and new users wait
 * for it to end.
 */
struct mk_module_state {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned users;
	bool reiniting;
	int wait_events;    /* C_WaitForSlotEvent(CKF_DONT_BLOCK): 0 not tried, 1 works, -1 not */
	CK_SLOT_ID *seen;   /* the slots with a token at the last look, sorted */
	CK_ULONG n_seen;
	bool *seen_hw;      /* CKF_HW_SLOT of each */
	bool looked;        /* seen is valid */
	/*
	 * Slots whose card the module could not read (CKR_TOKEN_NOT_RECOGNIZED), under
	 * mk_p11.lock: not asked again until the card goes (the slot leaves the list of slots
	 * with a token, or its reader reports it removed). OpenSC tries every card driver on
	 * each C_GetTokenInfo, seconds of APDUs for a card it will never know.
	 */
	struct unrecognized {
		CK_SLOT_ID slot;
		char *desc;
	} *unrecog;
	size_t n_unrecog;
	bool pcsc_backed; /* every hardware slot is a watched PC/SC reader (under mk_p11.lock) */
	bool pcsc_dirty;  /* a PC/SC event since its last scan (under mk_p11.lock) */
	/* pcsc_backed: its slots as read when the readers changed, with what the last scan
	 * found in them; ListSlots answers from here (under mk_p11.lock) */
	mk_slot_info *slots;
	size_t n_slots;
};

long long mk_p11_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + 1;
}

static void module_enter(const mk_module *m)
{
	mk_module_state *st = m->st;

	pthread_mutex_lock(&st->lock);
	while (st->reiniting)
		pthread_cond_wait(&st->cond, &st->lock);
	st->users++;
	pthread_mutex_unlock(&st->lock);
}

static void module_leave(const mk_module *m)
{
	mk_module_state *st = m->st;

	pthread_mutex_lock(&st->lock);
	st->users--;
	pthread_mutex_unlock(&st->lock);
}

static mk_module_state *module_state_new(void)
{
	mk_module_state *st = calloc(1, sizeof(*st));

	if (!st)
		return NULL;
	pthread_mutex_init(&st->lock, NULL);
	pthread_cond_init(&st->cond, NULL);
	return st;
}

static void module_state_free(mk_module_state *st)
{
	if (!st)
		return;
	pthread_cond_destroy(&st->cond);
	pthread_mutex_destroy(&st->lock);
	free(st->seen);
	free(st->seen_hw);
	for (size_t i = 0; i < st->n_unrecog; i++)
		free(st->unrecog[i].desc);
	free(st->unrecog);
	mk_slot_info_array_free(st->slots, st->n_slots);
	free(st);
}

/* Under mk_p11.lock. */
static bool unrecognized_has(const mk_module_state *st, CK_SLOT_ID slot)
{
	for (size_t i = 0; i < st->n_unrecog; i++)
		if (st->unrecog[i].slot == slot)
			return true;
	return false;
}

/* Under mk_p11.lock: remembers that the card in slot cannot be read (no memory: forgets). */
static void unrecognized_add(const mk_module *m, CK_SLOT_ID slot)
{
	mk_module_state *st = m->st;
	struct unrecognized *a;
	CK_SLOT_INFO si;

	if (unrecognized_has(st, slot))
		return;
	a = realloc(st->unrecog, (st->n_unrecog + 1) * sizeof(*a));
	if (!a)
		return;
	st->unrecog = a;
	a[st->n_unrecog].slot = slot;
	a[st->n_unrecog].desc = m->f->C_GetSlotInfo(slot, &si) == CKR_OK
					? mk_p11_strdup_field(si.slotDescription,
							      sizeof(si.slotDescription))
					: NULL;
	st->n_unrecog++;
}

static void unrecognized_drop(mk_module_state *st, size_t i)
{
	free(st->unrecog[i].desc);
	st->unrecog[i] = st->unrecog[--st->n_unrecog];
}

/* Under mk_p11.lock: forgets the slots that have no card any more (slots: those with one). */
static void unrecognized_keep_only(mk_module_state *st, const CK_SLOT_ID *slots, CK_ULONG n)
{
	for (size_t i = 0; i < st->n_unrecog;) {
		bool listed = false;

		for (CK_ULONG j = 0; j < n && !listed; j++)
			listed = slots[j] == st->unrecog[i].slot;
		if (listed)
			i++;
		else
			unrecognized_drop(st, i);
	}
}

/* --- watched calls ----------------------------------------------------------------------- */

struct mk_p11_watch {
	pthread_mutex_t lock;
	mk_token *tok;     /* the token of the stretch under way (a reference), or NULL */
	unsigned gen;      /* its generation when the stretch began */
	long long since_ms;
	unsigned long long seq;
	unsigned depth;    /* nested borrows on this thread */
	bool given_up;
	bool stuck;        /* given up as not answering: counted in tok->stuck */
};

static __thread mk_p11_watch *thread_watch;

int mk_p11_watch_new(mk_p11_watch **ret)
{
	mk_p11_watch *w = calloc(1, sizeof(*w));

	if (!w)
		return -ENOMEM;
	pthread_mutex_init(&w->lock, NULL);
	*ret = w;
	return 0;
}

mk_p11_watch *mk_p11_watch_free(mk_p11_watch *w)
{
	if (!w)
		return NULL;
	if (thread_watch == w)
		thread_watch = NULL;
	mk_token_unref(w->tok);
	pthread_mutex_destroy(&w->lock);
	free(w);
	return NULL;
}

void mk_p11_watch_attach(mk_p11_watch *w)
{
	thread_watch = w;
}

/* A stretch of work on t begins on this thread (a session was borrowed). */
static void watch_begin(mk_token *t, unsigned gen)
{
	mk_p11_watch *w = thread_watch;

	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	if (w->depth++ == 0) {
		w->tok = mk_token_ref(t);
		w->gen = gen;
		w->since_ms = mk_p11_now_ms();
		w->seq++;
		w->given_up = w->stuck = false;
	}
	pthread_mutex_unlock(&w->lock);
}

/* The stretch on t ends (the session is back); a stuck one stops counting against t. */
static void watch_end(mk_token *t)
{
	mk_p11_watch *w = thread_watch;
	mk_token *done = NULL;
	bool stuck = false;

	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	if (w->depth > 0 && --w->depth == 0) {
		done = w->tok;
		stuck = w->stuck;
		w->tok = NULL;
		w->since_ms = 0;
		w->stuck = false;
	}
	pthread_mutex_unlock(&w->lock);
	if (done && stuck) {
		pthread_mutex_lock(&done->lock);
		if (done->stuck > 0)
			done->stuck--;
		pthread_mutex_unlock(&done->lock);
	}
	(void)t;
	mk_token_unref(done);
}

void mk_p11_watch_get(mk_p11_watch *w, mk_p11_watch_state *ret)
{
	mk_p11_watch_state st = { 0 };

	pthread_mutex_lock(&w->lock);
	if (w->tok && !w->given_up) {
		mk_token *t = w->tok;

		st.since_ms = w->since_ms;
		st.seq = w->seq;
		snprintf(st.token, sizeof(st.token), "%s", t->label);
		snprintf(st.serial, sizeof(st.serial), "%s", t->serial);
		pthread_mutex_lock(&t->lock);
		st.gone = !t->present || t->gen != w->gen;
		pthread_mutex_unlock(&t->lock);
	}
	pthread_mutex_unlock(&w->lock);
	*ret = st;
}

bool mk_p11_watch_give_up(mk_p11_watch *w, unsigned long long seq, bool stuck)
{
	bool ok = false;

	pthread_mutex_lock(&w->lock);
	if (w->tok && w->seq == seq && !w->given_up) {
		w->given_up = true;
		ok = true;
		if (stuck) {
			w->stuck = true;
			pthread_mutex_lock(&w->tok->lock);
			if (w->tok->stuck++ == 0)
				w->tok->stuck_since_ms = w->since_ms;
			pthread_mutex_unlock(&w->tok->lock);
		}
	}
	pthread_mutex_unlock(&w->lock);
	return ok;
}

/* --- tokens and their session pools ------------------------------------------------------ */

mk_token *mk_token_ref(mk_token *t)
{
	if (t)
		__atomic_add_fetch(&t->n_ref, 1, __ATOMIC_RELAXED);
	return t;
}

void mk_token_unref(mk_token *t)
{
	if (!t || __atomic_sub_fetch(&t->n_ref, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->lock);
	free(t->idle);
	free(t->label);
	free(t->manufacturer);
	free(t->model);
	free(t->serial);
	free(t->uri);
	free(t->module_name);
	free(t->slot_desc);
	mk_key_info_array_free(t->keys, t->n_keys);
	free(t);
}

void mk_token_array_unref(mk_token **a, size_t n)
{
	for (size_t i = 0; i < n; i++)
		mk_token_unref(a[i]);
	free(a);
}

/* Reads the description and kind of the token's slot (under t->lock or before t is shared). */
static int token_read_slot(mk_token *t, CK_SLOT_ID slot)
{
	CK_SLOT_INFO si;
	char *desc;

	if (t->f->C_GetSlotInfo(slot, &si) != CKR_OK)
		return 0; /* keep what we had */
	desc = mk_p11_strdup_field(si.slotDescription, sizeof(si.slotDescription));
	if (!desc)
		return -ENOMEM;
	free(t->slot_desc);
	t->slot_desc = desc;
	t->hw_slot = si.flags & CKF_HW_SLOT;
	return 0;
}

static int token_new(const mk_module *mod, CK_SLOT_ID slot, const CK_TOKEN_INFO *ti,
		     unsigned max_sessions, mk_token **ret)
{
	mk_token *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->n_ref = 1;
	t->f = mod->f;
	t->mod = mod;
	t->ti = *ti;
	t->slot = slot;
	t->present = true;
	t->rw = !(ti->flags & CKF_WRITE_PROTECTED);
	t->max = max_sessions;
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);
	t->idle = calloc(max_sessions, sizeof(*t->idle));
	t->label = mk_p11_strdup_field(ti->label, sizeof(ti->label));
	t->manufacturer = mk_p11_strdup_field(ti->manufacturerID, sizeof(ti->manufacturerID));
	t->model = mk_p11_strdup_field(ti->model, sizeof(ti->model));
	t->serial = mk_p11_strdup_field(ti->serialNumber, sizeof(ti->serialNumber));
	t->module_name = strdup(mod->name ? mod->name : mod->path ? mod->path : "");
	if (!t->idle || !t->label || !t->manufacturer || !t->model || !t->serial ||
	    !t->module_name || token_uri_format(ti, &t->uri) < 0 || token_read_slot(t, slot) < 0) {
		mk_token_unref(t);
		return -ENOMEM;
	}
	*ret = t;
	return 0;
}

/* Closes the idle sessions; the caller holds t->lock and the module is still loaded. */
static void token_drop_idle_locked(mk_token *t)
{
	for (size_t i = 0; i < t->n_idle; i++)
		t->f->C_CloseSession(t->idle[i]);
	t->n_open -= t->n_idle;
	t->n_idle = 0;
}

/* Under t->lock: the error for a token that cannot lend a session now, or 0. */
static int token_unusable_locked(mk_token *t)
{
	if (t->closed)
		return mk_error(-ENODEV, "token \"%s\" is no longer loaded; open the token layer "
				"again", t->label);
	if (!t->present)
		return mk_error(-ENOMEDIUM, "token \"%s\" is not present; insert it and retry",
				t->label);
	if (t->stuck > 0)
		return mk_error(-ETIMEDOUT, "token \"%s\" (serial %s) has not answered a call for "
				"%lld s; remove and reinsert it, or wait and retry",
				t->label, t->serial, (mk_p11_now_ms() - t->stuck_since_ms) / 1000);
	return 0;
}

int mk_token_borrow(mk_token *t, mk_session *ret)
{
	const mk_module *mod;
	CK_FLAGS flags;
	CK_SLOT_ID slot;
	CK_SESSION_HANDLE h;
	unsigned gen;
	CK_RV rv;
	int r;

	pthread_mutex_lock(&t->lock);
	r = token_unusable_locked(t);
	mod = t->mod;
	pthread_mutex_unlock(&t->lock);
	if (r < 0)
		return r;
	/* waits while the module is being re-initialised */
	module_enter(mod);

	pthread_mutex_lock(&t->lock);
	for (;;) {
		r = token_unusable_locked(t);
		if (r < 0) {
			pthread_mutex_unlock(&t->lock);
			module_leave(mod);
			return r;
		}
		if (t->n_idle > 0) {
			ret->h = t->idle[--t->n_idle];
			ret->gen = t->gen;
			pthread_mutex_unlock(&t->lock);
			watch_begin(t, ret->gen);
			return 0;
		}
		if (t->n_open < t->max)
			break;
		pthread_cond_wait(&t->cond, &t->lock);
	}
	/* Reserve a place, then open outside the lock. */
	t->n_open++;
	slot = t->slot;
	gen = t->gen;
	flags = CKF_SERIAL_SESSION | (t->rw ? CKF_RW_SESSION : 0);
	pthread_mutex_unlock(&t->lock);

	/* opening a session is token work too: a token that hangs here is watched as well */
	watch_begin(t, gen);
	rv = t->f->C_OpenSession(slot, flags, NULL, NULL, &h);
	if (rv == CKR_TOKEN_WRITE_PROTECTED && (flags & CKF_RW_SESSION)) {
		rv = t->f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &h);
		if (rv == CKR_OK) {
			pthread_mutex_lock(&t->lock);
			t->rw = false;
			pthread_mutex_unlock(&t->lock);
		}
	}
	if (rv != CKR_OK) {
		pthread_mutex_lock(&t->lock);
		t->n_open--;
		/* The token allows fewer sessions than we thought: wait for ours next time. */
		if (rv == CKR_SESSION_COUNT && t->n_open > 0)
			t->max = t->n_open;
		pthread_cond_signal(&t->cond);
		pthread_mutex_unlock(&t->lock);
		watch_end(t);
		module_leave(mod);
		return mk_p11_error(rv, t, "open a session");
	}
	ret->h = h;
	ret->gen = gen;
	return 0;
}

void mk_token_return(mk_token *t, mk_session *s, bool discard)
{
	const mk_module *mod;

	pthread_mutex_lock(&t->lock);
	mod = t->mod;
	if (t->closed) {
		/* The module is gone with its sessions; only the count is left to fix. */
		t->n_open--;
	} else if (discard || !t->present || s->gen != t->gen || t->n_idle >= t->max) {
		t->f->C_CloseSession(s->h);
		t->n_open--;
	} else {
		t->idle[t->n_idle++] = s->h;
	}
	s->h = CK_INVALID_HANDLE;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->lock);
	watch_end(t);
	if (mod)
		module_leave(mod);
}

bool mk_token_logged_in(mk_token *t, CK_SESSION_HANDLE s)
{
	CK_SESSION_INFO si;

	if (t->f->C_GetSessionInfo(s, &si) != CKR_OK)
		return false;
	return si.state == CKS_RO_USER_FUNCTIONS || si.state == CKS_RW_USER_FUNCTIONS;
}

/* --- modules ----------------------------------------------------------------------------- */

/*
 * Every module is loaded through p11-kit as a managed module, registered or by path. p11-kit
 * then calls its C_Initialize with CKF_OS_LOCKING_OK and mutex callbacks (checked on 0.24.1
 * with a module that prints its arguments), so the module may be called from several threads
 * at once, and it counts initialisations, so another user of the same module in the process
 * (tests/p11-import.c, a second mk_p11) does not finalise it under us.
 */

static char *resolve_path(const char *path)
{
	char buf[PATH_MAX];

	if (!path)
		return NULL;
	if (realpath(path, buf))
		return strdup(buf);
	return strdup(path);
}

static bool module_is_duplicate(const mk_p11 *p, const mk_module *m)
{
	for (size_t i = 0; i < p->n_modules; i++) {
		const mk_module *o = &p->modules[i];

		if (o->f == m->f)
			return true;
		if (o->path && m->path && strcmp(o->path, m->path) == 0)
			return true;
	}
	return false;
}

static int module_describe(CK_FUNCTION_LIST *f, const char *path, mk_module *ret)
{
	mk_module m = { .f = f };

	if (f->C_GetInfo(&m.info) != CKR_OK)
		memset(&m.info, ' ', sizeof(m.info));
	m.name = mk_p11_strdup_field(m.info.libraryDescription,
				     sizeof(m.info.libraryDescription));
	m.path = resolve_path(path);
	if (!m.name || (path && !m.path)) {
		free(m.name);
		free(m.path);
		return -ENOMEM;
	}
	if (!m.name[0] && m.path) {
		free(m.name);
		m.name = strdup(m.path);
		if (!m.name) {
			free(m.path);
			return -ENOMEM;
		}
	}
	*ret = m;
	return 0;
}

/*
 * Modules known to see tokens that other processes create (or bring back) only at their
 * next C_Initialize, by CK_INFO.manufacturerID. SoftHSM 2 reads its token directory once.
 */
static bool module_needs_reinit(const CK_INFO *info)
{
	static const char *const known[] = { "SoftHSM" };

	for (size_t i = 0; i < ELEMENTSOF(known); i++) {
		size_t n = strlen(known[i]);

		if (memcmp(info->manufacturerID, known[i], n) == 0 &&
		    (info->manufacturerID[n] == ' ' || info->manufacturerID[n] == '\0'))
			return true;
	}
	return false;
}

static int module_append(mk_p11 *p, const mk_module *m)
{
	mk_module *a = realloc(p->modules, (p->n_modules + 1) * sizeof(*a));
	mk_module_state *st;

	if (!a)
		return -ENOMEM;
	p->modules = a;
	st = module_state_new();
	if (!st)
		return -ENOMEM;
	p->modules[p->n_modules] = *m;
	p->modules[p->n_modules].st = st;
	p->modules[p->n_modules].needs_reinit = module_needs_reinit(&m->info);
	p->n_modules++;
	return 0;
}

static int load_registered(mk_p11 *p)
{
	p->registered = p11_kit_modules_load_and_initialize(0);
	if (!p->registered)
		return mk_error(-ENOENT, "p11-kit could not load its registered modules: %s",
				p11_kit_message() ? p11_kit_message() : "unknown error");
	for (size_t i = 0; p->registered[i]; i++) {
		CK_FUNCTION_LIST *f = p->registered[i];
		char *file = p11_kit_module_get_filename(f);
		char *trust = p11_kit_config_option(f, "trust-policy");
		mk_module m;
		int r;

		r = module_describe(f, file, &m);
		free(file);
		if (r < 0) {
			free(trust);
			return r;
		}
		m.registered = true;
		/* Trust-policy modules hold certificate anchors, never keys. */
		m.skip = trust && (strcmp(trust, "yes") == 0 || strcmp(trust, "true") == 0);
		free(trust);
		if (module_is_duplicate(p, &m)) {
			free(m.name);
			free(m.path);
			continue;
		}
		r = module_append(p, &m);
		if (r < 0) {
			free(m.name);
			free(m.path);
			return r;
		}
	}
	return 0;
}

/* Loads one module by path. Returns 0, or a negative errno with a message (caller skips it). */
static int load_path(mk_p11 *p, const char *path)
{
	CK_FUNCTION_LIST *f;
	mk_module m;
	char *real = resolve_path(path);
	CK_RV rv;
	int r;

	if (!real)
		return -ENOMEM;
	/* The same file registered with p11-kit or named twice: use it once. */
	for (size_t i = 0; i < p->n_modules; i++)
		if (p->modules[i].path && strcmp(p->modules[i].path, real) == 0) {
			free(real);
			return 0;
		}
	free(real);

	f = p11_kit_module_load(path, 0);
	if (!f)
		return mk_error(-ENOENT, "cannot load PKCS#11 module %s: %s; check the path in the "
				"configuration", path, p11_kit_message() ? p11_kit_message() : "");
	rv = p11_kit_module_initialize(f);
	if (rv != CKR_OK) {
		p11_kit_module_release(f);
		return mk_error(-EIO, "cannot initialise PKCS#11 module %s: %s", path,
				p11_kit_strerror(rv));
	}
	r = module_describe(f, path, &m);
	if (r >= 0 && module_is_duplicate(p, &m)) {
		free(m.name);
		free(m.path);
		r = 1;
	} else if (r >= 0) {
		r = module_append(p, &m);
		if (r < 0) {
			free(m.name);
			free(m.path);
		}
	}
	if (r != 0) {
		p11_kit_module_finalize(f);
		p11_kit_module_release(f);
	}
	return r < 0 ? r : 0;
}

/* --- slots and tokens -------------------------------------------------------------------- */

static int token_append(mk_p11 *p, mk_token *t)
{
	mk_token **a = realloc(p->tokens, (p->n_tokens + 1) * sizeof(*a));

	if (!a)
		return -ENOMEM;
	p->tokens = a;
	p->tokens[p->n_tokens++] = t;
	return 0;
}

/* The module's slots: with a token (present) or all of them. */
static int slot_list(const mk_module *m, bool present, CK_SLOT_ID **ret, CK_ULONG *ret_n)
{
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0;
	CK_RV rv;

	for (int tries = 0; tries < 4; tries++) {
		rv = m->f->C_GetSlotList(present ? CK_TRUE : CK_FALSE, NULL, &n);
		if (rv != CKR_OK)
			break;
		if (n > MK_P11_MAX_SLOTS)
			n = MK_P11_MAX_SLOTS;
		free(slots);
		slots = calloc(n ? n : 1, sizeof(*slots));
		if (!slots)
			return -ENOMEM;
		rv = m->f->C_GetSlotList(present ? CK_TRUE : CK_FALSE, slots, &n);
		if (rv != CKR_BUFFER_TOO_SMALL)
			break;
	}
	if (rv != CKR_OK) {
		free(slots);
		return mk_error(-EIO, "PKCS#11 module %s cannot list its slots: %s", m->name,
				p11_kit_strerror(rv));
	}
	*ret = slots;
	*ret_n = n;
	return 0;
}

/* Finds the entry for a token seen in slot `slot` of module m: same slot and identity first,
 * then same identity in another slot (re-inserted elsewhere, or the module was
 * re-initialised and numbers its slots anew). */
static mk_token *token_lookup(mk_p11 *p, const mk_module *m, CK_SLOT_ID slot,
			      const CK_TOKEN_INFO *ti)
{
	mk_token *other = NULL;

	for (size_t i = 0; i < p->n_tokens; i++) {
		mk_token *t = p->tokens[i];

		if (t->mod != m || !token_identity_eq(&t->ti, ti) || t->scan == p->scan)
			continue;
		pthread_mutex_lock(&t->lock);
		if (t->slot == slot) {
			pthread_mutex_unlock(&t->lock);
			return t;
		}
		if ((!t->present || t->rebind) && !other)
			other = t;
		pthread_mutex_unlock(&t->lock);
	}
	return other;
}

static mk_token *token_in_slot_locked(mk_p11 *p, const mk_module *m, CK_SLOT_ID slot);

/* Under p->lock, after a scan of a PC/SC-backed module: what is in each of its slots now
 * (present: the slots with a token, uninit: those of them with an uninitialised one). */
static void slots_cache_update(mk_p11 *p, const mk_module *m, const CK_SLOT_ID *present,
			       CK_ULONG n, const bool *uninit)
{
	mk_module_state *st = m->st;

	for (size_t i = 0; i < st->n_slots; i++) {
		mk_slot_info *s = &st->slots[i];
		mk_token *t;
		CK_ULONG j;

		for (j = 0; j < n && present[j] != s->id; j++)
			;
		free(s->token_uri);
		s->token_uri = NULL;
		s->token_present = j < n;
		if (j == n)
			s->state = "empty";
		else if ((t = token_in_slot_locked(p, m, s->id)) &&
			 (s->token_uri = strdup(t->uri)))
			s->state = "token";
		else if (unrecognized_has(st, s->id))
			s->state = "unrecognized";
		else
			s->state = uninit[j] ? "uninitialized" : "error";
	}
}

static bool reader_backs(const char *desc, const char *reader);

/*
 * Under p->lock, for a PC/SC-backed module: adds to the slots with a token those whose
 * reader has a card by PC/SC when the module agrees once asked directly (C_GetSlotInfo).
 */
static int probe_carded_slots(mk_p11 *p, const mk_module *m, CK_SLOT_ID **slots, CK_ULONG *n)
{
	mk_module_state *st = m->st;

	for (size_t i = 0; i < st->n_slots; i++) {
		const mk_slot_info *s = &st->slots[i];
		bool listed = false, carded = false;
		CK_SLOT_INFO si;
		CK_SLOT_ID *a;

		for (CK_ULONG j = 0; j < *n && !listed; j++)
			listed = (*slots)[j] == s->id;
		for (size_t k = 0; k < p->n_pcsc_readers && !listed && !carded; k++)
			carded = p->pcsc_cards[k] && reader_backs(s->description, p->pcsc_readers[k]);
		if (listed || !carded || m->f->C_GetSlotInfo(s->id, &si) != CKR_OK ||
		    !(si.flags & CKF_TOKEN_PRESENT))
			continue;
		a = realloc(*slots, (*n + 1) * sizeof(*a));
		if (!a)
			return -ENOMEM;
		a[(*n)++] = s->id;
		*slots = a;
	}
	return 0;
}

static int scan_module(mk_p11 *p, const mk_module *m)
{
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0;
	bool *uninit;
	int r;

	r = slot_list(m, true, &slots, &n);
	if (r < 0)
		return r;
	if (m->st->pcsc_backed) {
		r = probe_carded_slots(p, m, &slots, &n);
		if (r < 0) {
			free(slots);
			return r;
		}
	}
	uninit = calloc(n + 1, sizeof(*uninit));
	if (!uninit) {
		free(slots);
		return -ENOMEM;
	}
	unrecognized_keep_only(m->st, slots, n);
	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO ti;
		mk_token *t;
		CK_RV rv;

		if (unrecognized_has(m->st, slots[i]))
			continue; /* the same card the module could not read last time */
		rv = m->f->C_GetTokenInfo(slots[i], &ti);
		if (rv == CKR_TOKEN_NOT_RECOGNIZED)
			unrecognized_add(m, slots[i]);
		if (rv != CKR_OK)
			continue; /* e.g. SoftHSM after its token was deleted */
		if (!(ti.flags & CKF_TOKEN_INITIALIZED)) {
			uninit[i] = true;
			continue;
		}
		t = token_lookup(p, m, slots[i], &ti);
		if (t) {
			pthread_mutex_lock(&t->lock);
			if (!t->present || t->rebind) {
				/* back (a re-initialisation already moved the generation on) */
				if (!t->present)
					t->gen++;
				t->present = true;
				t->rebind = false;
				t->slot = slots[i];
				r = token_read_slot(t, slots[i]);
			}
			pthread_mutex_unlock(&t->lock);
			if (r < 0) {
				free(uninit);
				free(slots);
				return r;
			}
		} else {
			r = token_new(m, slots[i], &ti, p->max_sessions, &t);
			if (r >= 0) {
				r = token_append(p, t);
				if (r < 0)
					mk_token_unref(t);
			}
			if (r < 0) {
				free(uninit);
				free(slots);
				return r;
			}
		}
		t->scan = p->scan;
	}
	if (m->st->pcsc_backed)
		slots_cache_update(p, m, slots, n, uninit);
	free(uninit);
	free(slots);
	return 0;
}

/* Under t->lock. */
static void token_mark_absent_locked(mk_token *t)
{
	if (t->present) {
		t->present = false;
		t->gen++;
		token_drop_idle_locked(t);
		pthread_cond_broadcast(&t->cond);
	}
	t->rebind = false;
}

static void token_mark_absent(mk_token *t)
{
	pthread_mutex_lock(&t->lock);
	token_mark_absent_locked(t);
	pthread_mutex_unlock(&t->lock);
}

/* Under p->lock: does a token of m have a call in it that was given up as not answering? */
static bool module_has_stuck_locked(mk_p11 *p, const mk_module *m)
{
	bool stuck = false;

	for (size_t j = 0; j < p->n_tokens && !stuck; j++) {
		mk_token *t = p->tokens[j];

		if (t->mod != m)
			continue;
		pthread_mutex_lock(&t->lock);
		stuck = t->stuck > 0;
		pthread_mutex_unlock(&t->lock);
	}
	return stuck;
}

/* Under p->lock: the module's tokens keep their last state in this scan. */
static void module_keep_locked(mk_p11 *p, const mk_module *m)
{
	for (size_t j = 0; j < p->n_tokens; j++)
		if (p->tokens[j]->mod == m)
			p->tokens[j]->scan = p->scan;
}

static int refresh_locked(mk_p11 *p)
{
	int r;

	p->scan++;
	for (size_t i = 0; i < p->n_modules; i++) {
		const mk_module *m = &p->modules[i];

		if (m->skip)
			continue;
		/* a module with a call that hangs may hang on the next one too: leave it be;
		 * a smartcard module changes only with a PC/SC event: until then, too */
		if (module_has_stuck_locked(p, m) || (m->st->pcsc_backed && !m->st->pcsc_dirty)) {
			module_keep_locked(p, m);
			continue;
		}
		m->st->pcsc_dirty = false;
		r = scan_module(p, m);
		if (r == -ENOMEM)
			return r;
		if (r < 0) /* A module that cannot list its slots keeps its tokens' last state. */
			module_keep_locked(p, m);
	}
	for (size_t j = 0; j < p->n_tokens; j++)
		if (p->tokens[j]->scan != p->scan)
			token_mark_absent(p->tokens[j]);
	mk_error_clear();
	return 0;
}

int mk_p11_refresh(mk_p11 *p)
{
	int r;

	if (!p)
		return mk_error(-EINVAL, "no token layer");
	pthread_mutex_lock(&p->lock);
	r = refresh_locked(p);
	pthread_mutex_unlock(&p->lock);
	return r;
}

/* --- slot events ------------------------------------------------------------------------- */

/* Under p->lock: the present token of m in slot, or NULL. */
static mk_token *token_in_slot_locked(mk_p11 *p, const mk_module *m, CK_SLOT_ID slot)
{
	for (size_t j = 0; j < p->n_tokens; j++) {
		mk_token *t = p->tokens[j];
		bool hit;

		if (t->mod != m)
			continue;
		pthread_mutex_lock(&t->lock);
		hit = t->present && t->slot == slot;
		pthread_mutex_unlock(&t->lock);
		if (hit)
			return t;
	}
	return NULL;
}

/*
 * Under p->lock: re-initialises m (C_Finalize, C_Initialize) and rescans it, when nothing is
 * inside it and none of its tokens is logged in. -EBUSY when it may not now.
 */
static int module_reinit_locked(mk_p11 *p, const mk_module *m, bool *changed)
{
	mk_module_state *st = m->st;
	size_t n_before = p->n_tokens;
	bool *was = NULL, busy = false;
	int r = 0;

	pthread_mutex_lock(&st->lock);
	if (st->users > 0) {
		pthread_mutex_unlock(&st->lock);
		return -EBUSY;
	}
	st->reiniting = true; /* from here on nobody enters */
	pthread_mutex_unlock(&st->lock);

	for (size_t j = 0; j < n_before && !busy; j++) {
		mk_token *t = p->tokens[j];

		if (t->mod != m)
			continue;
		pthread_mutex_lock(&t->lock);
		busy = t->present && t->n_idle > 0 && mk_token_logged_in(t, t->idle[0]);
		pthread_mutex_unlock(&t->lock);
	}
	if (busy) {
		r = -EBUSY;
		goto out;
	}
	was = calloc(n_before ? n_before : 1, sizeof(*was));
	if (!was) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t j = 0; j < n_before; j++) {
		mk_token *t = p->tokens[j];

		pthread_mutex_lock(&t->lock);
		was[j] = t->present;
		if (t->mod == m) {
			/* its sessions and object handles end with the module's state */
			token_drop_idle_locked(t);
			if (t->present) {
				t->gen++;
				t->rebind = true;
			}
		}
		pthread_mutex_unlock(&t->lock);
	}
	p11_kit_module_finalize(m->f);
	p->scan++;
	if (p11_kit_module_initialize(m->f) == CKR_OK)
		r = scan_module(p, m);
	if (r == -ENOMEM)
		goto out;
	r = 0;
	for (size_t j = 0; j < p->n_tokens; j++) {
		mk_token *t = p->tokens[j];
		bool now;

		if (t->mod == m && t->scan != p->scan)
			token_mark_absent(t);
		pthread_mutex_lock(&t->lock);
		t->rebind = false;
		now = t->present;
		pthread_mutex_unlock(&t->lock);
		if (j < n_before ? was[j] != now : now)
			*changed = true;
	}
	st->looked = false;
out:
	pthread_mutex_lock(&st->lock);
	st->reiniting = false;
	pthread_cond_broadcast(&st->cond);
	pthread_mutex_unlock(&st->lock);
	free(was);
	mk_error_clear();
	return r;
}

static int slot_cmp(const void *a, const void *b)
{
	CK_SLOT_ID x = *(const CK_SLOT_ID *)a, y = *(const CK_SLOT_ID *)b;

	return x < y ? -1 : x > y;
}

/* Under p->lock: the cheap look at one module (see mk_p11_check_slots). */
static int check_module_locked(mk_p11 *p, const mk_module *m, bool *changed)
{
	mk_module_state *st = m->st;
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0;
	int r;

	if (st->wait_events >= 0) {
		for (int i = 0; i < 16; i++) {
			CK_SLOT_ID s;
			CK_RV rv = m->f->C_WaitForSlotEvent(CKF_DONT_BLOCK, &s, NULL);

			if (rv == CKR_OK) {
				st->wait_events = 1;
				*changed = true;
				continue;
			}
			st->wait_events = rv == CKR_NO_EVENT ? 1 : -1;
			break;
		}
	}
	r = slot_list(m, true, &slots, &n);
	if (r < 0)
		return r == -ENOMEM ? r : 0;
	qsort(slots, n, sizeof(*slots), slot_cmp);
	if (!st->looked || n != st->n_seen || memcmp(slots, st->seen, n * sizeof(*slots)) != 0) {
		bool *hw = calloc(n ? n : 1, sizeof(*hw));

		if (!hw) {
			free(slots);
			return -ENOMEM;
		}
		for (CK_ULONG i = 0; i < n; i++) {
			CK_SLOT_INFO si;

			/* in doubt a slot counts as hardware: it is then never asked for its token */
			hw[i] = m->f->C_GetSlotInfo(slots[i], &si) != CKR_OK ||
				(si.flags & CKF_HW_SLOT);
		}
		if (st->looked)
			*changed = true;
		free(st->seen);
		free(st->seen_hw);
		st->seen = slots;
		st->seen_hw = hw;
		st->n_seen = n;
		st->looked = true;
	} else {
		free(slots);
	}
	unrecognized_keep_only(st, st->seen, st->n_seen);
	/* a token we think present in a slot that has none any more */
	for (size_t j = 0; j < p->n_tokens && !*changed; j++) {
		mk_token *t = p->tokens[j];
		bool listed = false, present;
		CK_SLOT_ID slot;

		if (t->mod != m)
			continue;
		pthread_mutex_lock(&t->lock);
		present = t->present;
		slot = t->slot;
		pthread_mutex_unlock(&t->lock);
		for (CK_ULONG i = 0; present && i < st->n_seen && !listed; i++)
			listed = st->seen[i] == slot;
		if (present && !listed)
			*changed = true;
	}
	/* software slots: nothing to touch, so ask for the token (deleted, or another one) */
	for (CK_ULONG i = 0; i < st->n_seen && !*changed; i++) {
		CK_TOKEN_INFO ti;
		mk_token *t;
		bool there;

		if (st->seen_hw[i])
			continue;
		there = m->f->C_GetTokenInfo(st->seen[i], &ti) == CKR_OK &&
			(ti.flags & CKF_TOKEN_INITIALIZED);
		t = token_in_slot_locked(p, m, st->seen[i]);
		if (there != (t != NULL) || (t && !token_identity_eq(&t->ti, &ti)))
			*changed = true;
	}
	return 0;
}

int mk_p11_check_slots(mk_p11 *p, bool *ret_changed)
{
	bool changed = false;
	int r = 0;

	if (!p || !ret_changed)
		return mk_error(-EINVAL, "missing argument to check the slots");
	pthread_mutex_lock(&p->lock);
	for (size_t i = 0; i < p->n_modules && r >= 0; i++) {
		const mk_module *m = &p->modules[i];

		if (m->skip || m->st->pcsc_backed || module_has_stuck_locked(p, m))
			continue;
		if (m->needs_reinit) {
			r = module_reinit_locked(p, m, &changed);
			if (r == 0 || r == -ENOMEM)
				continue;
			r = 0; /* busy: the cheap look still sees a token vanish */
		}
		r = check_module_locked(p, m, &changed);
	}
	pthread_mutex_unlock(&p->lock);
	mk_error_clear();
	if (r < 0)
		return r;
	*ret_changed = changed;
	return 0;
}

/*
 * Whether a slot described as desc is in the PC/SC reader named reader: the same name, or
 * the name cut to the 64 bytes of CK_SLOT_INFO, or the name and a suffix of the module's.
 */
static bool reader_backs(const char *desc, const char *reader)
{
	size_t d = strlen(desc), n = strlen(reader);

	if (d == 0 || n == 0)
		return false;
	if (d <= n)
		return strncmp(desc, reader, d) == 0 && (d == n || (n >= 64 && d >= 56));
	return strncmp(desc, reader, n) == 0 && desc[n] == ' ';
}

static bool reader_listed(const char *desc, const char *const *readers, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (reader_backs(desc, readers[i]))
			return true;
	return false;
}

static int slot_info_read(const mk_module *m, CK_SLOT_ID slot, const CK_SLOT_INFO *si,
			  mk_slot_info *ret);

/*
 * Under p->lock: whether every hardware slot of m is one of the readers (and it has one);
 * if so, its slots go to the module's cache, to be filled by the next scan.
 */
static bool module_pcsc_backed_locked(const mk_module *m, const char *const *readers,
				      size_t n)
{
	mk_module_state *st = m->st;
	CK_SLOT_ID *slots = NULL;
	mk_slot_info *cache = NULL;
	CK_ULONG ns = 0;
	size_t hw = 0, backed = 0, nc = 0;

	mk_slot_info_array_free(st->slots, st->n_slots);
	st->slots = NULL;
	st->n_slots = 0;
	if (n == 0 || slot_list(m, false, &slots, &ns) < 0)
		return false;
	cache = calloc(ns + 1, sizeof(*cache));
	for (CK_ULONG i = 0; cache && i < ns; i++) {
		CK_SLOT_INFO si;
		char *desc;

		if (m->f->C_GetSlotInfo(slots[i], &si) != CKR_OK) {
			hw++; /* in doubt: not ours to skip */
			continue;
		}
		if (slot_info_read(m, slots[i], &si, &cache[nc]) == 0)
			nc++;
		if (!(si.flags & CKF_HW_SLOT))
			continue;
		hw++;
		desc = mk_p11_strdup_field(si.slotDescription, sizeof(si.slotDescription));
		if (desc && reader_listed(desc, readers, n))
			backed++;
		free(desc);
	}
	free(slots);
	if (!cache || hw == 0 || backed != hw) {
		mk_slot_info_array_free(cache, nc);
		return false;
	}
	st->slots = cache;
	st->n_slots = nc;
	return true;
}

int mk_p11_pcsc_update(mk_p11 *p, const char *const *readers, const bool *cards, size_t n)
{
	bool same, *c;
	char **copy = NULL;

	if (!p || (n && (!readers || !cards)))
		return mk_error(-EINVAL, "missing argument to update the PC/SC readers");
	c = calloc(n + 1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	memcpy(c, cards, n * sizeof(*c));
	pthread_mutex_lock(&p->lock);
	free(p->pcsc_cards);
	p->pcsc_cards = c;
	same = n == p->n_pcsc_readers;
	for (size_t i = 0; same && i < n; i++) {
		bool found = false;

		for (size_t j = 0; j < n && !found; j++)
			if (strcmp(p->pcsc_readers[i], readers[j]) == 0) {
				found = true;
				c[i] = cards[j]; /* in the order kept */
			}
		same = found;
	}
	if (!same)
		memcpy(c, cards, n * sizeof(*c));
	if (!same) {
		copy = calloc(n + 1, sizeof(*copy));
		for (size_t i = 0; copy && i < n; i++)
			if (!(copy[i] = strdup(readers[i]))) {
				while (i > 0)
					free(copy[--i]);
				free(copy);
				copy = NULL;
			}
		if (!copy) {
			pthread_mutex_unlock(&p->lock);
			return -ENOMEM;
		}
		for (size_t i = 0; i < p->n_pcsc_readers; i++)
			free(p->pcsc_readers[i]);
		free(p->pcsc_readers);
		p->pcsc_readers = copy;
		p->n_pcsc_readers = n;
		for (size_t i = 0; i < p->n_modules; i++)
			if (!p->modules[i].skip)
				p->modules[i].st->pcsc_backed = module_pcsc_backed_locked(
					&p->modules[i], readers, n);
	}
	/* a reader or card event: the smartcard modules are scanned at the next refresh */
	for (size_t i = 0; i < p->n_modules; i++)
		p->modules[i].st->pcsc_dirty = true;
	pthread_mutex_unlock(&p->lock);
	mk_error_clear();
	return 0;
}

int mk_p11_reader_removed(mk_p11 *p, const char *reader)
{
	int n = 0;

	if (!p || !reader)
		return mk_error(-EINVAL, "missing argument to mark a reader empty");
	pthread_mutex_lock(&p->lock);
	for (size_t i = 0; i < p->n_modules; i++) {
		mk_module_state *st = p->modules[i].st;

		for (size_t k = 0; k < st->n_unrecog;)
			if (st->unrecog[k].desc && reader_backs(st->unrecog[k].desc, reader))
				unrecognized_drop(st, k);
			else
				k++;
	}
	for (size_t j = 0; j < p->n_tokens; j++) {
		mk_token *t = p->tokens[j];

		pthread_mutex_lock(&t->lock);
		if (t->present && t->hw_slot && t->slot_desc && reader_backs(t->slot_desc, reader)) {
			token_mark_absent_locked(t);
			n++;
		}
		pthread_mutex_unlock(&t->lock);
	}
	pthread_mutex_unlock(&p->lock);
	return n;
}

int mk_p11_present_tokens(mk_p11 *p, char ***ret, size_t *ret_n)
{
	char **a;
	size_t n = 0;

	if (!p || !ret || !ret_n)
		return mk_error(-EINVAL, "missing argument to list present tokens");
	pthread_mutex_lock(&p->lock);
	a = calloc(p->n_tokens + 1, sizeof(*a));
	for (size_t j = 0; a && j < p->n_tokens; j++) {
		mk_token *t = p->tokens[j];
		bool present;

		pthread_mutex_lock(&t->lock);
		present = t->present;
		pthread_mutex_unlock(&t->lock);
		if (!present)
			continue;
		a[n] = strdup(t->uri);
		if (!a[n]) {
			while (n > 0)
				free(a[--n]);
			free(a);
			a = NULL;
			break;
		}
		n++;
	}
	pthread_mutex_unlock(&p->lock);
	if (!a)
		return -ENOMEM;
	*ret = a;
	*ret_n = n;
	return 0;
}

/* --- slots, listed --------------------------------------------------------------------------- */

void mk_slot_info_array_free(mk_slot_info *a, size_t n)
{
	if (!a)
		return;
	for (size_t i = 0; i < n; i++) {
		free(a[i].uri);
		free(a[i].description);
		free(a[i].manufacturer);
		free(a[i].module);
		free(a[i].token_uri);
	}
	free(a);
}

static int slot_uri_format(const mk_module *m, const CK_SLOT_INFO *si, CK_SLOT_ID slot,
			   char **ret)
{
	P11KitUri *u = p11_kit_uri_new();
	char *s = NULL;
	int r;

	if (!u)
		return -ENOMEM;
	memcpy(p11_kit_uri_get_module_info(u), &m->info, sizeof(m->info));
	memcpy(p11_kit_uri_get_slot_info(u), si, sizeof(*si));
	p11_kit_uri_set_slot_id(u, slot);
	r = p11_kit_uri_format(u, P11_KIT_URI_FOR_MODULE | P11_KIT_URI_FOR_SLOT, &s);
	p11_kit_uri_free(u);
	if (r != P11_KIT_URI_OK)
		return -ENOMEM;
	*ret = s;
	return 0;
}

/* A slot's description from its CK_SLOT_INFO (si NULL: it could not be read); nothing of
 * the token in it yet. 0 or -ENOMEM. */
static int slot_info_read(const mk_module *m, CK_SLOT_ID slot, const CK_SLOT_INFO *si,
			  mk_slot_info *ret)
{
	mk_slot_info s = { .id = slot, .state = "error" };
	CK_SLOT_INFO blank;

	if (!si) {
		memset(&blank, ' ', sizeof(blank));
		blank.flags = 0;
		si = &blank;
	} else {
		s.hardware = si->flags & CKF_HW_SLOT;
		s.removable = si->flags & CKF_REMOVABLE_DEVICE;
		s.token_present = si->flags & CKF_TOKEN_PRESENT;
		s.state = s.token_present ? "unknown" : "empty";
	}
	s.module = strdup(m->name ? m->name : m->path ? m->path : "");
	s.description = mk_p11_strdup_field(si->slotDescription, sizeof(si->slotDescription));
	s.manufacturer = mk_p11_strdup_field(si->manufacturerID, sizeof(si->manufacturerID));
	if (!s.module || !s.description || !s.manufacturer ||
	    slot_uri_format(m, si, slot, &s.uri) < 0) {
		free(s.uri);
		free(s.description);
		free(s.manufacturer);
		free(s.module);
		return -ENOMEM;
	}
	*ret = s;
	return 0;
}

static int slot_info_copy(const mk_slot_info *a, mk_slot_info *ret)
{
	mk_slot_info s = *a;

	s.uri = strdup(a->uri);
	s.description = strdup(a->description);
	s.manufacturer = strdup(a->manufacturer);
	s.module = strdup(a->module);
	s.token_uri = a->token_uri ? strdup(a->token_uri) : NULL;
	if (!s.uri || !s.description || !s.manufacturer || !s.module ||
	    (a->token_uri && !s.token_uri)) {
		free(s.uri);
		free(s.description);
		free(s.manufacturer);
		free(s.module);
		free(s.token_uri);
		return -ENOMEM;
	}
	*ret = s;
	return 0;
}

/* One slot of m (inside the module); 0 or -ENOMEM. */
static int slot_info_fill(mk_p11 *p, const mk_module *m, CK_SLOT_ID slot, mk_slot_info *ret)
{
	mk_slot_info s;
	CK_SLOT_INFO si;
	CK_TOKEN_INFO ti;
	mk_token *t;
	int r;

	r = slot_info_read(m, slot, m->f->C_GetSlotInfo(slot, &si) == CKR_OK ? &si : NULL, &s);
	if (r < 0)
		return r;
	if (s.token_present) {
		pthread_mutex_lock(&p->lock);
		t = token_in_slot_locked(p, m, slot);
		if (t) {
			s.token_uri = strdup(t->uri);
			s.state = "token";
		} else if (unrecognized_has(m->st, slot)) {
			s.state = "unrecognized"; /* and not asked again */
		}
		pthread_mutex_unlock(&p->lock);
		if (t && !s.token_uri)
			goto oom;
	}
	if (s.token_present && !s.token_uri && strcmp(s.state, "unrecognized") != 0) {
		s.state = "error";
		/* a card mlskey has no token for: ask what the module makes of it */
		CK_RV rv = m->f->C_GetTokenInfo(slot, &ti);

		if (rv == CKR_OK && (ti.flags & CKF_TOKEN_INITIALIZED)) {
			s.state = "token";
			if (token_uri_format(&ti, &s.token_uri) < 0)
				goto oom;
		} else if (rv == CKR_OK) {
			s.state = "uninitialized";
		} else if (rv == CKR_TOKEN_NOT_RECOGNIZED) {
			s.state = "unrecognized";
			pthread_mutex_lock(&p->lock);
			unrecognized_add(m, slot);
			pthread_mutex_unlock(&p->lock);
		} else if (rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_DEVICE_REMOVED) {
			s.state = "empty";
			s.token_present = false;
		}
	}
	*ret = s;
	return 0;
oom:
	free(s.uri);
	free(s.description);
	free(s.manufacturer);
	free(s.module);
	free(s.token_uri);
	return -ENOMEM;
}

int mk_p11_list_slots(mk_p11 *p, mk_slot_info **ret, size_t *ret_n)
{
	mk_slot_info *a = NULL;
	size_t n = 0;
	int r = 0;

	if (!p || !ret || !ret_n)
		return mk_error(-EINVAL, "missing argument to list slots");
	for (size_t i = 0; i < p->n_modules && r >= 0; i++) {
		const mk_module *m = &p->modules[i];
		CK_SLOT_ID *slots = NULL;
		CK_ULONG ns = 0;
		mk_slot_info *grown;

		if (m->skip)
			continue;
		/* a smartcard module: as the last PC/SC event left it, without asking it again */
		pthread_mutex_lock(&p->lock);
		if (m->st->pcsc_backed) {
			grown = realloc(a, (n + m->st->n_slots + 1) * sizeof(*a));
			if (!grown)
				r = -ENOMEM;
			else
				a = grown;
			for (size_t j = 0; r >= 0 && j < m->st->n_slots; j++) {
				r = slot_info_copy(&m->st->slots[j], &a[n]);
				if (r >= 0)
					n++;
			}
			pthread_mutex_unlock(&p->lock);
			continue;
		}
		pthread_mutex_unlock(&p->lock);
		module_enter(m);
		r = slot_list(m, false, &slots, &ns);
		if (r < 0) {
			module_leave(m);
			r = r == -ENOMEM ? r : 0;
			continue;
		}
		grown = realloc(a, (n + ns + 1) * sizeof(*a));
		if (!grown)
			r = -ENOMEM;
		else
			a = grown;
		for (CK_ULONG j = 0; r >= 0 && j < ns; j++) {
			r = slot_info_fill(p, m, slots[j], &a[n]);
			if (r >= 0)
				n++;
		}
		module_leave(m);
		free(slots);
	}
	mk_error_clear();
	if (r < 0) {
		mk_slot_info_array_free(a, n);
		return r;
	}
	*ret = a ? a : calloc(1, sizeof(*a));
	if (!*ret)
		return -ENOMEM;
	*ret_n = n;
	return 0;
}

/* --- open and free ----------------------------------------------------------------------- */

static pthread_mutex_t hook_lock = PTHREAD_MUTEX_INITIALIZER;
static mk_p11_hook_fn hook_fn;
static void *hook_userdata;

void mk_p11_set_hook(mk_p11_hook_fn fn, void *userdata)
{
	pthread_mutex_lock(&hook_lock);
	hook_fn = fn;
	hook_userdata = userdata;
	pthread_mutex_unlock(&hook_lock);
}

static void run_hook(mk_p11 *p, bool opened)
{
	mk_p11_hook_fn fn;
	void *ud;

	pthread_mutex_lock(&hook_lock);
	fn = hook_fn;
	ud = hook_userdata;
	pthread_mutex_unlock(&hook_lock);
	if (fn)
		fn(p, opened, ud);
}

int mk_p11_open(const mk_p11_options *opts, mk_p11 **ret)
{
	mk_p11 *p;
	int r, first_err = 0;
	size_t n_paths = 0;

	if (!opts || !ret)
		return mk_error(-EINVAL, "no options given to open the token layer");
	if (opts->module_paths)
		while (opts->module_paths[n_paths])
			n_paths++;
	if (!opts->use_p11_kit && n_paths == 0)
		return mk_error(-ENOENT, "no PKCS#11 module to load; enable p11-kit or name a module "
				"path in the configuration");
	if (opts->max_sessions > 1024)
		return mk_error(-EINVAL, "max_sessions %u is too large", opts->max_sessions);

	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	p->max_sessions = opts->max_sessions ? opts->max_sessions : MK_P11_DEFAULT_SESSIONS;

	if (opts->use_p11_kit) {
		r = load_registered(p);
		if (r == -ENOMEM)
			goto fail;
		if (r < 0)
			first_err = r;
	}
	for (size_t i = 0; i < n_paths; i++) {
		r = load_path(p, opts->module_paths[i]);
		if (r == -ENOMEM)
			goto fail;
		if (r < 0 && !first_err)
			first_err = r;
	}
	if (p->n_modules == 0) {
		r = first_err ? first_err : mk_error(-ENOENT, "no PKCS#11 module could be loaded");
		if (r != -ENOENT)
			r = mk_error(-ENOENT, "no PKCS#11 module could be loaded: %s",
				     mk_error_message() ? mk_error_message() : "unknown error");
		goto fail;
	}
	r = mk_p11_refresh(p);
	if (r < 0)
		goto fail;
	mk_error_clear();
	run_hook(p, true);
	*ret = p;
	return 0;
fail:
	mk_p11_free(p);
	return r;
}

mk_p11 *mk_p11_free(mk_p11 *p)
{
	if (!p)
		return NULL;
	run_hook(p, false);
	for (size_t i = 0; i < p->n_tokens; i++) {
		mk_token *t = p->tokens[i];

		pthread_mutex_lock(&t->lock);
		if (t->n_idle > 0)
			t->f->C_Logout(t->idle[0]);
		token_drop_idle_locked(t);
		t->closed = true;
		t->present = false;
		t->mod = NULL;
		pthread_cond_broadcast(&t->cond);
		pthread_mutex_unlock(&t->lock);
		mk_token_unref(t);
	}
	free(p->tokens);
	for (size_t i = 0; i < p->n_modules; i++) {
		mk_module *m = &p->modules[i];

		if (!m->registered) {
			p11_kit_module_finalize(m->f);
			p11_kit_module_release(m->f);
		}
		free(m->name);
		free(m->path);
		module_state_free(m->st);
	}
	free(p->modules);
	for (size_t i = 0; i < p->n_pcsc_readers; i++)
		free(p->pcsc_readers[i]);
	free(p->pcsc_readers);
	free(p->pcsc_cards);
	if (p->registered)
		p11_kit_modules_finalize_and_release(p->registered);
	pthread_mutex_destroy(&p->lock);
	free(p);
	return NULL;
}

/* --- token lookup by URI ----------------------------------------------------------------- */

static int uri_parse(const char *uri, P11KitUri **ret)
{
	P11KitUri *u;
	int r;

	if (!uri)
		return mk_error(-EINVAL, "no URI given");
	u = p11_kit_uri_new();
	if (!u)
		return -ENOMEM;
	r = p11_kit_uri_parse(uri, P11_KIT_URI_FOR_ANY, u);
	if (r != P11_KIT_URI_OK) {
		p11_kit_uri_free(u);
		return mk_error(-EINVAL, "\"%.100s\" is not a valid pkcs11: URI (%s)", uri,
				p11_kit_uri_message(r));
	}
	if (p11_kit_uri_any_unrecognized(u)) {
		p11_kit_uri_free(u);
		return mk_error(-EINVAL, "the URI \"%.100s\" has attributes mlskey does not know; "
				"use token, manufacturer, model, serial, id, object, type", uri);
	}
	*ret = u;
	return 0;
}

int mk_p11_match_tokens(mk_p11 *p, const char *uri, mk_token ***ret, size_t *ret_n,
			P11KitUri **ret_uri)
{
	P11KitUri *u = NULL;
	mk_token **a;
	size_t n = 0;
	int r;

	if (!p)
		return mk_error(-EINVAL, "no token layer");
	r = uri_parse(uri, &u);
	if (r < 0)
		return r;
	pthread_mutex_lock(&p->lock);
	a = calloc(p->n_tokens ? p->n_tokens : 1, sizeof(*a));
	if (!a) {
		pthread_mutex_unlock(&p->lock);
		p11_kit_uri_free(u);
		return -ENOMEM;
	}
	for (size_t i = 0; i < p->n_tokens; i++) {
		mk_token *t = p->tokens[i];
		CK_SLOT_INFO si;
		bool match;

		match = p11_kit_uri_match_token_info(u, &t->ti) &&
			(!t->mod || p11_kit_uri_match_module_info(u, &t->mod->info));
		if (match && p11_kit_uri_get_slot_id(u) != (CK_SLOT_ID)-1) {
			pthread_mutex_lock(&t->lock);
			match = p11_kit_uri_get_slot_id(u) == t->slot;
			pthread_mutex_unlock(&t->lock);
		}
		if (match && p11_kit_uri_get_slot_info(u)) {
			/* Slot description etc.: ask the module (cheap, and rare in URIs). */
			CK_SLOT_ID slot;

			pthread_mutex_lock(&t->lock);
			slot = t->slot;
			pthread_mutex_unlock(&t->lock);
			if (t->f->C_GetSlotInfo(slot, &si) == CKR_OK)
				match = p11_kit_uri_match_slot_info(u, &si);
		}
		if (match)
			a[n++] = mk_token_ref(t);
	}
	pthread_mutex_unlock(&p->lock);
	if (ret_uri)
		*ret_uri = u;
	else
		p11_kit_uri_free(u);
	*ret = a;
	*ret_n = n;
	return 0;
}

static bool token_is_present(mk_token *t)
{
	bool b;

	pthread_mutex_lock(&t->lock);
	b = t->present;
	pthread_mutex_unlock(&t->lock);
	return b;
}

int mk_p11_resolve_token(mk_p11 *p, const char *uri, mk_token **ret)
{
	mk_token **a = NULL, *found = NULL;
	size_t n = 0, n_present = 0;
	int r;

	r = mk_p11_match_tokens(p, uri, &a, &n, NULL);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		if (token_is_present(a[i])) {
			if (!found)
				found = a[i];
			n_present++;
		}
	if (n == 0)
		r = mk_error(-ENODEV, "no token matches \"%.200s\"; list the tokens and check the URI",
			     uri);
	else if (n_present > 1)
		r = mk_error(-EINVAL, "%zu tokens match \"%.200s\"; add token= and serial= to pick "
			     "one", n_present, uri);
	else if (n_present == 0)
		r = mk_error(-ENOMEDIUM, "token \"%s\" is not present; insert it and retry",
			     a[0]->label);
	else
		*ret = mk_token_ref(found);
	mk_token_array_unref(a, n);
	return r;
}

/* --- token info -------------------------------------------------------------------------- */

void mk_token_info_clear(mk_token_info *t)
{
	if (!t)
		return;
	free(t->uri);
	free(t->label);
	free(t->manufacturer);
	free(t->model);
	free(t->serial);
	free(t->module);
	memset(t, 0, sizeof(*t));
}

void mk_token_info_array_free(mk_token_info *a, size_t n)
{
	if (!a)
		return;
	for (size_t i = 0; i < n; i++)
		mk_token_info_clear(&a[i]);
	free(a);
}

static int token_info_fill(mk_token *t, mk_token_info *ret)
{
	mk_token_info info = { 0 };
	const mk_module *mod;
	CK_TOKEN_INFO ti;
	CK_SLOT_ID slot;
	bool present, stuck;
	mk_session s;

	pthread_mutex_lock(&t->lock);
	mod = t->closed ? NULL : t->mod;
	present = t->present;
	stuck = t->stuck > 0;
	slot = t->slot;
	pthread_mutex_unlock(&t->lock);

	ti = t->ti;
	/* a token that does not answer is not asked again: its flags as first read */
	if (present && mod && !stuck) {
		CK_RV rv;

		module_enter(mod);
		rv = t->f->C_GetTokenInfo(slot, &ti);
		module_leave(mod);
		if (rv != CKR_OK) {
			/* Gone since the last refresh: report it absent now, refresh will follow. */
			present = false;
			ti = t->ti;
		}
	}
	info.present = present;
	info.login_required = ti.flags & CKF_LOGIN_REQUIRED;
	info.pin_count_low = ti.flags & CKF_USER_PIN_COUNT_LOW;
	info.pin_final_try = ti.flags & CKF_USER_PIN_FINAL_TRY;
	info.pin_locked = ti.flags & CKF_USER_PIN_LOCKED;
	info.protected_auth_path = ti.flags & CKF_PROTECTED_AUTHENTICATION_PATH;
	info.write_protected = ti.flags & CKF_WRITE_PROTECTED;
	if (present && !stuck && mk_token_borrow(t, &s) >= 0) {
		info.logged_in = mk_token_logged_in(t, s.h);
		mk_token_return(t, &s, false);
	}
	mk_error_clear();
	info.uri = strdup(t->uri);
	info.label = strdup(t->label);
	info.manufacturer = strdup(t->manufacturer);
	info.model = strdup(t->model);
	info.serial = strdup(t->serial);
	info.module = strdup(t->module_name);
	if (!info.uri || !info.label || !info.manufacturer || !info.model || !info.serial ||
	    !info.module) {
		mk_token_info_clear(&info);
		return -ENOMEM;
	}
	*ret = info;
	return 0;
}

static int tokens_snapshot(mk_p11 *p, mk_token ***ret, size_t *ret_n)
{
	mk_token **a;
	size_t n;

	pthread_mutex_lock(&p->lock);
	n = p->n_tokens;
	a = calloc(n ? n : 1, sizeof(*a));
	if (a)
		for (size_t i = 0; i < n; i++)
			a[i] = mk_token_ref(p->tokens[i]);
	pthread_mutex_unlock(&p->lock);
	if (!a)
		return -ENOMEM;
	*ret = a;
	*ret_n = n;
	return 0;
}

int mk_p11_list_tokens(mk_p11 *p, mk_token_info **ret, size_t *ret_n)
{
	mk_token **toks = NULL;
	mk_token_info *a;
	size_t n = 0;
	int r;

	if (!p || !ret || !ret_n)
		return mk_error(-EINVAL, "missing argument to list tokens");
	r = tokens_snapshot(p, &toks, &n);
	if (r < 0)
		return r;
	a = calloc(n ? n : 1, sizeof(*a));
	if (!a) {
		mk_token_array_unref(toks, n);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		r = token_info_fill(toks[i], &a[i]);
		if (r < 0) {
			mk_token_info_array_free(a, i);
			mk_token_array_unref(toks, n);
			return r;
		}
	}
	mk_token_array_unref(toks, n);
	*ret = a;
	*ret_n = n;
	return 0;
}

int mk_p11_get_token(mk_p11 *p, const char *uri, mk_token_info *ret)
{
	mk_token **a = NULL;
	mk_token *t = NULL;
	size_t n = 0;
	int r;

	if (!ret)
		return mk_error(-EINVAL, "missing argument to get a token");
	r = mk_p11_resolve_token(p, uri, &t);
	if (r == -ENOMEDIUM) {
		/* An absent token still has info to show. */
		r = mk_p11_match_tokens(p, uri, &a, &n, NULL);
		if (r < 0)
			return r;
		t = n ? mk_token_ref(a[0]) : NULL;
		mk_token_array_unref(a, n);
		if (!t)
			return mk_error(-ENODEV, "no token matches \"%.200s\"", uri);
	} else if (r < 0) {
		return r;
	}
	r = token_info_fill(t, ret);
	mk_token_unref(t);
	return r;
}

/* --- login ------------------------------------------------------------------------------- */

int mk_p11_login(mk_p11 *p, const char *token_uri, const uint8_t *pin, size_t pin_len)
{
	mk_token *t = NULL;
	mk_session s;
	CK_RV rv;
	int r;

	if (!p || (!pin && pin_len > 0))
		return mk_error(-EINVAL, "missing argument to log in");
	if (pin_len > MK_P11_MAX_PIN)
		return mk_error(-EINVAL, "the PIN is longer than %u bytes", MK_P11_MAX_PIN);
	r = mk_p11_resolve_token(p, token_uri, &t);
	if (r < 0)
		return r;
	r = mk_token_borrow(t, &s);
	if (r < 0) {
		mk_token_unref(t);
		return r;
	}
	/* Login is per token: any of its sessions carries it for all. */
	rv = t->f->C_Login(s.h, CKU_USER, pin_len ? (CK_UTF8CHAR *)pin : NULL, pin_len);
	mk_token_return(t, &s, mk_p11_rv_session_dead(rv));
	if (rv == CKR_USER_ALREADY_LOGGED_IN)
		rv = CKR_OK;
	r = mk_p11_error(rv, t, "log in");
	mk_token_unref(t);
	return r;
}

static int token_logout(mk_token *t)
{
	mk_session s;
	CK_RV rv;
	int r;

	r = mk_token_borrow(t, &s);
	if (r == -ENOMEDIUM) {
		mk_error_clear();
		return 0; /* nothing to log out of */
	}
	if (r < 0)
		return r;
	rv = t->f->C_Logout(s.h);
	mk_token_return(t, &s, mk_p11_rv_session_dead(rv));
	if (rv == CKR_USER_NOT_LOGGED_IN || mk_p11_rv_session_dead(rv))
		rv = CKR_OK;
	return mk_p11_error(rv, t, "log out");
}

int mk_p11_logout(mk_p11 *p, const char *token_uri)
{
	mk_token **a = NULL;
	size_t n = 0;
	int r, ret = 0;

	if (!p)
		return mk_error(-EINVAL, "no token layer");
	if (token_uri) {
		mk_token *t = NULL;

		r = mk_p11_resolve_token(p, token_uri, &t);
		if (r == -ENOMEDIUM) {
			mk_error_clear();
			return 0;
		}
		if (r < 0)
			return r;
		r = token_logout(t);
		mk_token_unref(t);
		return r;
	}
	r = tokens_snapshot(p, &a, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		r = token_logout(a[i]);
		if (r < 0 && ret == 0)
			ret = r;
	}
	mk_token_array_unref(a, n);
	return ret;
}
