/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dbus/dbus.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "agent/audit.h"
#include "agent/caller.h"
#include "agent/check.h"
#include "agent/keypackage-op.h"
#include "agent/log.h"
#include "agent/tokens.h"
#include "agent/workers.h"
#include "common/error.h"
#include "config.h"
#include "ipc/bus.h"
#include "ipc/introspect-xml.h" /* mk_interface_xml: ipc/org.mlskey.Agent1.xml */

#define PEER_BUCKETS 256
#define PEER_MAX 4096

typedef struct peer {
	struct peer *next;
	char *name; /* unique bus name */
	mk_caller caller;
	gid_t *gids; /* its groups (for allow-groups), n_gids of them */
	size_t n_gids;
} peer;

typedef struct tmo {
	DBusTimeout *t;
	long long due_ms; /* CLOCK_MONOTONIC; -1 when disabled */
} tmo;

typedef struct job job;

struct mk_bus {
	const mk_config *cfg;
	DBusConnection *conn;
	mk_agent *agent;
	mk_workers *workers;
	int efd; /* eventfd: a job finished, or tokens changed */
	int sfd; /* signalfd: stop */
	DBusWatch **watches;
	size_t n_watches;
	tmo *timeouts;
	size_t n_timeouts;
	atomic_bool tokens_changed;
	peer *peers[PEER_BUCKETS];
	size_t n_peers;
	char *introspect;
	uid_t uid;
	bool quit;
	int quit_r;
	/* the system bus, for logind's Lock and PrepareForSleep (watch_lock_signals) */
	pthread_t sysbus;
	bool sysbus_started;
	atomic_bool sysbus_stop;
	/* cards and tokens that come and go, calls whose token hangs (agent/tokens.h) */
	mk_tokens *tokens;
	atomic_bool keys_changed;
	/* the audit trail (agent/audit.h): every call, allowed or refused */
	mk_audit *audit;
};

typedef struct method method;

typedef struct blob {
	const uint8_t *p;
	size_t n;
} blob;

struct job {
	mk_bus *bus;
	const method *m;
	DBusMessage *msg; /* referenced: the borrowed arguments below point into it */
	DBusMessage *reply;
	mk_caller caller;
	bool caller_known; /* the bus said who called (for the audit) */
	bool checked;      /* the arguments passed their checks (the input is hashed) */
	char *queue;      /* the token's worker queue */
	const char *uri;  /* key or token */
	const char *s1, *s2, *label;
	uint16_t q1, q2;
	mk_key_alg alg;
	blob ay[4];
	blob *certs; /* ImportCertificates: n_certs DER certificates, borrowed from msg */
	size_t n_certs;
	bool allow_expired; /* GetCredential's option */
	unsigned flags;   /* GenerateKey: MK_GENERATE_* from its options */
	int result;
	bool keys_changed;
	mk_tokens_call *call; /* registered with the token watchdog while queued and running */
};

struct method {
	const char *name;
	const char *in_sig;
	const char *out_sig;
	/* bus thread: reads and checks the arguments into j; 0 or a negative errno */
	int (*check)(mk_bus *b, job *j);
	/* worker: the token work; sets j->reply, or j->result < 0 */
	void (*run)(job *j);
};

/* --- errors ------------------------------------------------------------------------------ */

const char *mk_bus_error_name(int r)
{
	static const struct {
		const char *short_name, *full;
	} names[] = {
		{ "NoSuchKey", MK_BUS_ERROR_PREFIX "NoSuchKey" },
		{ "NoSuchToken", MK_BUS_ERROR_PREFIX "NoSuchToken" },
		{ "TokenAbsent", MK_BUS_ERROR_PREFIX "TokenAbsent" },
		{ "Unsupported", MK_BUS_ERROR_PREFIX "Unsupported" },
		{ "InvalidInput", MK_BUS_ERROR_PREFIX "InvalidInput" },
		{ "PinIncorrect", MK_BUS_ERROR_PREFIX "PinIncorrect" },
		{ "PinLocked", MK_BUS_ERROR_PREFIX "PinLocked" },
		{ "Cancelled", MK_BUS_ERROR_PREFIX "Cancelled" },
		{ "AccessDenied", MK_BUS_ERROR_PREFIX "AccessDenied" },
		{ "DecryptFailed", MK_BUS_ERROR_PREFIX "DecryptFailed" },
		{ "TokenError", MK_BUS_ERROR_PREFIX "TokenError" },
		{ "Busy", MK_BUS_ERROR_PREFIX "Busy" },
		{ "NoMemory", DBUS_ERROR_NO_MEMORY },
	};
	const char *n = mk_error_name(r);

	for (size_t i = 0; i < ELEMENTSOF(names); i++)
		if (strcmp(n, names[i].short_name) == 0)
			return names[i].full;
	return MK_BUS_ERROR_PREFIX "TokenError";
}

static DBusMessage *error_reply(DBusMessage *msg, int r)
{
	return dbus_message_new_error(msg, mk_bus_error_name(r), mk_error_text(r));
}

/* --- the event loop: libdbus watches and timeouts on our own poll() ------------------------ */

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static dbus_bool_t add_watch(DBusWatch *w, void *data)
{
	mk_bus *b = data;
	DBusWatch **n = realloc(b->watches, (b->n_watches + 1) * sizeof(*n));

	if (!n)
		return FALSE;
	b->watches = n;
	b->watches[b->n_watches++] = w;
	return TRUE;
}

static void remove_watch(DBusWatch *w, void *data)
{
	mk_bus *b = data;

	for (size_t i = 0; i < b->n_watches; i++)
		if (b->watches[i] == w) {
			b->watches[i] = b->watches[--b->n_watches];
			return;
		}
}

static void toggle_watch(DBusWatch *w, void *data)
{
	/* the loop reads dbus_watch_get_enabled() each round */
	(void)w, (void)data;
}

static void arm(tmo *t)
{
	t->due_ms = dbus_timeout_get_enabled(t->t) ? now_ms() + dbus_timeout_get_interval(t->t)
						   : -1;
}

static dbus_bool_t add_timeout(DBusTimeout *t, void *data)
{
	mk_bus *b = data;
	tmo *n = realloc(b->timeouts, (b->n_timeouts + 1) * sizeof(*n));

	if (!n)
		return FALSE;
	b->timeouts = n;
	b->timeouts[b->n_timeouts].t = t;
	arm(&b->timeouts[b->n_timeouts++]);
	return TRUE;
}

static void remove_timeout(DBusTimeout *t, void *data)
{
	mk_bus *b = data;

	for (size_t i = 0; i < b->n_timeouts; i++)
		if (b->timeouts[i].t == t) {
			b->timeouts[i] = b->timeouts[--b->n_timeouts];
			return;
		}
}

static void toggle_timeout(DBusTimeout *t, void *data)
{
	mk_bus *b = data;

	for (size_t i = 0; i < b->n_timeouts; i++)
		if (b->timeouts[i].t == t)
			arm(&b->timeouts[i]);
}

static void poke(mk_bus *b)
{
	uint64_t one = 1;

	if (write(b->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		mk_log(LOG_ERR, "cannot wake the bus thread: %m");
}

static void wakeup_main(void *data)
{
	poke(data);
}

/* --- callers ----------------------------------------------------------------------------- */

static unsigned hash_name(const char *s)
{
	unsigned h = 5381;

	while (*s)
		h = h * 33 + (unsigned char)*s++;
	return h % PEER_BUCKETS;
}

static void peer_free(peer *p)
{
	free(p->name);
	free(p->gids);
	free(p);
}

static void peers_clear(mk_bus *b)
{
	for (size_t i = 0; i < PEER_BUCKETS; i++) {
		peer *p;

		while ((p = b->peers[i])) {
			b->peers[i] = p->next;
			peer_free(p);
		}
	}
	b->n_peers = 0;
}

static void peer_forget(mk_bus *b, const char *name)
{
	peer **pp = &b->peers[hash_name(name)];

	for (; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->name, name) == 0) {
			peer *p = *pp;

			*pp = p->next;
			peer_free(p);
			b->n_peers--;
			return;
		}
}

/* The credentials GetConnectionCredentials gave: uid, pid, groups, a pidfd (dbus-broker). */
typedef struct creds {
	bool have_uid, have_gids;
	uid_t uid;
	pid_t pid;
	gid_t gids[MK_CALLER_MAX_GROUPS];
	size_t n_gids;
	int pidfd;
} creds;

/*
 * One entry of an a{sv} dict (options, credentials): the key and the variant's content, then
 * moves on. False when the dict is at its end. The strings point into the message.
 */
static bool dict_next(DBusMessageIter *dict, const char **ret_key, DBusMessageIter *ret_v)
{
	DBusMessageIter e;

	if (dbus_message_iter_get_arg_type(dict) != DBUS_TYPE_DICT_ENTRY)
		return false;
	dbus_message_iter_recurse(dict, &e);
	dbus_message_iter_get_basic(&e, ret_key);
	dbus_message_iter_next(&e);
	dbus_message_iter_recurse(&e, ret_v);
	dbus_message_iter_next(dict);
	return true;
}

/*
 * Options of a method that knows one boolean option `name` (GenerateKey's single_use,
 * GetCredential's allow_expired): *ret gets its value (false when absent). Any other option,
 * or another type, is -EINVAL in words that name the method.
 */
static int get_bool_option(DBusMessageIter *opts, const char *method_name, const char *name,
			   bool *ret)
{
	DBusMessageIter v;
	const char *key;
	dbus_bool_t b;

	*ret = false;
	while (dict_next(opts, &key, &v)) {
		if (strcmp(key, name) != 0)
			return mk_error(-EINVAL, "%s option \"%.64s\" is unknown; the one option is "
					"%s (b)", method_name, key, name);
		if (dbus_message_iter_get_arg_type(&v) != DBUS_TYPE_BOOLEAN)
			return mk_error(-EINVAL, "%s option %s must be a boolean (b)", method_name, name);
		dbus_message_iter_get_basic(&v, &b);
		*ret = b;
	}
	return 0;
}

static void creds_parse(DBusMessage *reply, creds *c)
{
	DBusMessageIter it, arr;

	dbus_message_iter_init(reply, &it);
	if (dbus_message_iter_get_arg_type(&it) != DBUS_TYPE_ARRAY)
		return;
	dbus_message_iter_recurse(&it, &arr);
	for (;;) {
		DBusMessageIter v;
		const char *key;
		int type;

		if (!dict_next(&arr, &key, &v))
			break;
		type = dbus_message_iter_get_arg_type(&v);
		if (type == DBUS_TYPE_UINT32) {
			dbus_uint32_t u;

			dbus_message_iter_get_basic(&v, &u);
			if (strcmp(key, "UnixUserID") == 0) {
				c->uid = (uid_t)u;
				c->have_uid = true;
			} else if (strcmp(key, "ProcessID") == 0) {
				c->pid = (pid_t)u;
			}
		} else if (type == DBUS_TYPE_ARRAY && strcmp(key, "UnixGroupIDs") == 0) {
			DBusMessageIter g;

			dbus_message_iter_recurse(&v, &g);
			c->have_gids = true;
			while (dbus_message_iter_get_arg_type(&g) == DBUS_TYPE_UINT32 &&
			       c->n_gids < MK_CALLER_MAX_GROUPS) {
				dbus_uint32_t u;

				dbus_message_iter_get_basic(&g, &u);
				c->gids[c->n_gids++] = (gid_t)u;
				dbus_message_iter_next(&g);
			}
		} else if (type == DBUS_TYPE_UNIX_FD && strcmp(key, "ProcessFD") == 0 &&
			   c->pidfd < 0) {
			/* libdbus hands out a duplicate: ours to close */
			dbus_message_iter_get_basic(&v, &c->pidfd);
		}
	}
}

/*
 * Asks the bus who `name` is (uid, pid, groups, and a pidfd where the bus gives one), then
 * the kernel (agent/caller.h: executable, unit, Flatpak app id, start time); once per
 * connection. *ret stays valid until the next peer_lookup or peer_forget. *seen gets the
 * caller as far as it is known, also when the lookup fails (for the audit trail), and
 * *seen_known whether the bus said who it is. Bus thread only.
 */
static int peer_lookup(mk_bus *b, const char *name, mk_caller *seen, bool *seen_known,
		       const peer **ret)
{
	DBusMessage *call, *reply;
	DBusError err;
	_cleanup_free_ creds *c = NULL;
	peer *p;
	unsigned h = hash_name(name);
	int r;

	for (p = b->peers[h]; p; p = p->next)
		if (strcmp(p->name, name) == 0) {
			*seen = p->caller;
			*seen_known = true;
			*ret = p;
			return 0;
		}
	call = dbus_message_new_method_call(DBUS_SERVICE_DBUS, DBUS_PATH_DBUS, DBUS_INTERFACE_DBUS,
					    "GetConnectionCredentials");
	if (!call || !dbus_message_append_args(call, DBUS_TYPE_STRING, &name, DBUS_TYPE_INVALID)) {
		if (call)
			dbus_message_unref(call);
		return -ENOMEM;
	}
	dbus_error_init(&err);
	reply = dbus_connection_send_with_reply_and_block(b->conn, call, 5000, &err);
	dbus_message_unref(call);
	if (!reply) {
		r = mk_error(-EACCES, "cannot identify the caller %s: %s", name, err.message);
		dbus_error_free(&err);
		return r;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		dbus_message_unref(reply);
		return -ENOMEM;
	}
	c->pidfd = -1;
	creds_parse(reply, c);
	dbus_message_unref(reply);
	if (!c->have_uid) {
		if (c->pidfd >= 0)
			close(c->pidfd);
		return mk_error(-EACCES, "the bus did not say which user %s is", name);
	}
	p = calloc(1, sizeof(*p));
	if (!p || !(p->name = strdup(name))) {
		free(p);
		if (c->pidfd >= 0)
			close(c->pidfd);
		return -ENOMEM;
	}
	p->caller.uid = c->uid;
	p->caller.pid = c->pid;
	/* without UnixGroupIDs from the bus, the groups come from /proc/PID/status */
	r = mk_caller_identify("/proc", c->pid, c->pidfd, &p->caller,
			       c->have_gids ? NULL : c->gids, MK_CALLER_MAX_GROUPS, &c->n_gids);
	if (c->pidfd >= 0)
		close(c->pidfd);
	*seen = p->caller;
	*seen_known = true;
	if (r == 0 && c->n_gids > 0) {
		p->gids = malloc(c->n_gids * sizeof(gid_t));
		if (!p->gids)
			r = -ENOMEM;
		else
			memcpy(p->gids, c->gids, c->n_gids * sizeof(gid_t));
		p->n_gids = c->n_gids;
	}
	if (r < 0) {
		peer_free(p);
		return r;
	}
	if (b->n_peers >= PEER_MAX)
		peers_clear(b);
	p->next = b->peers[h];
	b->peers[h] = p;
	b->n_peers++;
	*ret = p;
	return 0;
}

/* --- argument helpers (bus thread) ---------------------------------------------------------- */

static int check_key_uri(job *j, const char *uri)
{
	j->uri = uri;
	return mk_check_key_uri(uri, &j->queue);
}

static int get_ay(mk_bus *b, DBusMessageIter *it, const char *what, blob *ret)
{
	DBusMessageIter sub;
	int n = 0;

	dbus_message_iter_recurse(it, &sub);
	if (dbus_message_iter_get_arg_type(&sub) == DBUS_TYPE_BYTE)
		dbus_message_iter_get_fixed_array(&sub, &ret->p, &n);
	else
		ret->p = NULL;
	ret->n = n > 0 ? (size_t)n : 0;
	dbus_message_iter_next(it);
	return mk_check_array(b->cfg, what, ret->n);
}

static const char *get_s(DBusMessageIter *it)
{
	const char *s;

	dbus_message_iter_get_basic(it, &s);
	dbus_message_iter_next(it);
	return s;
}

static uint16_t get_q(DBusMessageIter *it)
{
	dbus_uint16_t q;

	dbus_message_iter_get_basic(it, &q);
	dbus_message_iter_next(it);
	return q;
}

/* --- reply helpers (workers) --------------------------------------------------------------- */

static bool append_ay(DBusMessageIter *it, const uint8_t *p, size_t n)
{
	DBusMessageIter a;
	const uint8_t *q = p ? p : (const uint8_t *)"";

	return dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "y", &a) &&
	       dbus_message_iter_append_fixed_array(&a, DBUS_TYPE_BYTE, &q, (int)n) &&
	       dbus_message_iter_close_container(it, &a);
}

static void reply_ay(job *j, const mk_bytes *v)
{
	DBusMessageIter it;

	if (v->len > INT_MAX) {
		j->result = mk_error(-EIO, "the result is too large for D-Bus");
		return;
	}
	j->reply = dbus_message_new_method_return(j->msg);
	if (!j->reply)
		return;
	dbus_message_iter_init_append(j->reply, &it);
	if (!append_ay(&it, v->data, v->len)) {
		dbus_message_unref(j->reply);
		j->reply = NULL;
	}
}

static void reply_empty(job *j)
{
	j->reply = dbus_message_new_method_return(j->msg);
}

typedef struct dict {
	DBusMessageIter *parent;
	bool ok;
} dict;

/* One a{sv} entry; sig is the variant's signature, val points to a basic value. */
static void dict_basic(dict *d, const char *key, int type, const char *sig, const void *val)
{
	DBusMessageIter e, v;

	if (!d->ok)
		return;
	d->ok = dbus_message_iter_open_container(d->parent, DBUS_TYPE_DICT_ENTRY, NULL, &e) &&
		dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &key) &&
		dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, sig, &v) &&
		dbus_message_iter_append_basic(&v, type, val) &&
		dbus_message_iter_close_container(&e, &v) &&
		dbus_message_iter_close_container(d->parent, &e);
}

static void dict_s(dict *d, const char *key, const char *s)
{
	const char *v = s ? s : "";

	dict_basic(d, key, DBUS_TYPE_STRING, "s", &v);
}

static void dict_b(dict *d, const char *key, bool b)
{
	dbus_bool_t v = b;

	dict_basic(d, key, DBUS_TYPE_BOOLEAN, "b", &v);
}

static void dict_array(dict *d, const char *key, int type, const char *sig, const void *p,
		       size_t n)
{
	DBusMessageIter e, v, a;

	if (!d->ok)
		return;
	d->ok = dbus_message_iter_open_container(d->parent, DBUS_TYPE_DICT_ENTRY, NULL, &e) &&
		dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &key) &&
		dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, sig, &v) &&
		dbus_message_iter_open_container(&v, DBUS_TYPE_ARRAY, sig + 1, &a) &&
		dbus_message_iter_append_fixed_array(&a, type, &p, (int)n) &&
		dbus_message_iter_close_container(&v, &a) &&
		dbus_message_iter_close_container(&e, &v) &&
		dbus_message_iter_close_container(d->parent, &e);
}

/* Starts one (sa{sv}) entry of a listing; returns the dict to fill, or d.ok false. */
static bool entry_open(DBusMessageIter *list, DBusMessageIter *st, DBusMessageIter *dm,
		       const char *uri)
{
	const char *u = uri ? uri : "";

	return dbus_message_iter_open_container(list, DBUS_TYPE_STRUCT, NULL, st) &&
	       dbus_message_iter_append_basic(st, DBUS_TYPE_STRING, &u) &&
	       dbus_message_iter_open_container(st, DBUS_TYPE_ARRAY, "{sv}", dm);
}

static bool entry_close(DBusMessageIter *list, DBusMessageIter *st, DBusMessageIter *dm)
{
	return dbus_message_iter_close_container(st, dm) &&
	       dbus_message_iter_close_container(list, st);
}

/* --- the methods --------------------------------------------------------------------------- */

static int check_none(mk_bus *b, job *j)
{
	(void)b;
	j->queue = strdup("");
	return j->queue ? 0 : -ENOMEM;
}

/*
 * The a(sa{sv}) reply that ListTokens, ListKeys and ListSlots build: list_begin() makes the
 * reply and opens its array (l->ok says whether that worked); list_end() closes it, or, when
 * anything failed, drops the half-built reply and sets -ENOMEM.
 */
typedef struct list_reply {
	DBusMessageIter it, list;
	bool ok;
} list_reply;

static void list_begin(job *j, list_reply *l)
{
	j->reply = dbus_message_new_method_return(j->msg);
	l->ok = j->reply != NULL;
	if (l->ok) {
		dbus_message_iter_init_append(j->reply, &l->it);
		l->ok = dbus_message_iter_open_container(&l->it, DBUS_TYPE_ARRAY, "(sa{sv})",
							 &l->list);
	}
}

static void list_end(job *j, list_reply *l)
{
	if (l->ok)
		l->ok = dbus_message_iter_close_container(&l->it, &l->list);
	if (!l->ok && j->reply) {
		dbus_message_iter_abandon_container_if_open(&l->it, &l->list);
		dbus_message_unref(j->reply);
		j->reply = NULL;
	}
	if (!l->ok)
		j->result = -ENOMEM;
}

static void run_list_tokens(job *j)
{
	mk_token_info *t = NULL;
	size_t n = 0;
	list_reply l;

	j->result = mk_agent_list_tokens(j->bus->agent, &t, &n);
	if (j->result < 0)
		return;
	list_begin(j, &l);
	for (size_t i = 0; l.ok && i < n; i++) {
		DBusMessageIter st, dm;
		dict d = { &dm, true };

		l.ok = entry_open(&l.list, &st, &dm, t[i].uri);
		if (!l.ok)
			break;
		dict_s(&d, "label", t[i].label);
		dict_s(&d, "manufacturer", t[i].manufacturer);
		dict_s(&d, "model", t[i].model);
		dict_s(&d, "serial", t[i].serial);
		dict_s(&d, "module", t[i].module);
		dict_b(&d, "present", t[i].present);
		dict_b(&d, "logged_in", t[i].logged_in);
		dict_b(&d, "login_required", t[i].login_required);
		dict_b(&d, "pin_count_low", t[i].pin_count_low);
		dict_b(&d, "pin_final_try", t[i].pin_final_try);
		dict_b(&d, "pin_locked", t[i].pin_locked);
		dict_b(&d, "protected_auth_path", t[i].protected_auth_path);
		dict_b(&d, "write_protected", t[i].write_protected);
		l.ok = d.ok && entry_close(&l.list, &st, &dm);
	}
	list_end(j, &l);
	mk_token_info_array_free(t, n);
}

static const char *utf8_or_empty(const char *s)
{
	return s && mk_utf8_valid(s, strlen(s)) ? s : "";
}

static void run_list_keys(job *j)
{
	mk_key_info *k = NULL;
	size_t n = 0;
	list_reply l;

	j->result = mk_agent_list_keys(j->bus->agent, &k, &n);
	if (j->result < 0)
		return;
	list_begin(j, &l);
	for (size_t i = 0; l.ok && i < n; i++) {
		DBusMessageIter st, dm;
		dict d = { &dm, true };
		uint16_t suites[8];
		size_t ns = mk_key_alg_suites(k[i].alg, suites, ELEMENTSOF(suites));
		const char *purpose = k[i].alg == MK_ALG_NONE		    ? ""
				      : mk_key_alg_is_signature(k[i].alg) ? "signature"
									    : "hpke";

		l.ok = entry_open(&l.list, &st, &dm, k[i].uri);
		if (!l.ok)
			break;
		dict_s(&d, "label", k[i].label);
		dict_array(&d, "id", DBUS_TYPE_BYTE, "ay", k[i].id, k[i].id ? k[i].id_len : 0);
		dict_s(&d, "token", k[i].token_uri);
		dict_s(&d, "purpose", purpose);
		dict_s(&d, "algorithm", mk_key_alg_name(k[i].alg));
		dict_array(&d, "cipher_suites", DBUS_TYPE_UINT16, "aq", suites, ns);
		dict_array(&d, "public_key", DBUS_TYPE_BYTE, "ay", k[i].public_key,
			   k[i].public_key ? k[i].public_key_len : 0);
		/* the policy's view: the token layer's reasons, the provenance gate, ... */
		const char *why = mk_agent_key_reason(j->bus->agent, &k[i]);

		dict_b(&d, "usable", k[i].alg != MK_ALG_NONE && !why);
		dict_s(&d, "reason", why);
		dict_b(&d, "local", k[i].local);
		dict_b(&d, "never_extractable", k[i].never_extractable);
		dict_b(&d, "always_sensitive", k[i].always_sensitive);
		dict_b(&d, "always_authenticate", k[i].always_authenticate);
		dict_b(&d, "has_certificate", k[i].has_certificate);
		if (k[i].has_certificate) {
			dbus_int64_t nb = k[i].cert_not_before, na = k[i].cert_not_after;

			/* OpenSSL escapes non-ASCII in RFC 2253; checked anyway, D-Bus wants UTF-8 */
			dict_s(&d, "certificate_subject", utf8_or_empty(k[i].cert_subject));
			dict_s(&d, "certificate_issuer", utf8_or_empty(k[i].cert_issuer));
			dict_basic(&d, "certificate_not_before", DBUS_TYPE_INT64, "x", &nb);
			dict_basic(&d, "certificate_not_after", DBUS_TYPE_INT64, "x", &na);
		}
		dict_b(&d, "single_use", k[i].single_use);
		l.ok = d.ok && entry_close(&l.list, &st, &dm);
	}
	list_end(j, &l);
	mk_key_info_array_free(k, n);
}

static int check_generate(mk_bus *b, job *j)
{
	DBusMessageIter it, opts;
	bool single_use;
	int r;

	dbus_message_iter_init(j->msg, &it);
	j->uri = get_s(&it);
	j->s1 = get_s(&it);
	j->s2 = get_s(&it);
	j->label = get_s(&it);
	r = mk_check_token_uri(j->uri, false);
	if (r < 0)
		return r;
	r = mk_check_algorithm(j->s1, j->s2, &j->alg);
	if (r < 0)
		return r;
	r = mk_check_label(b->cfg, "the key label", j->label);
	if (r < 0)
		return r;
	dbus_message_iter_recurse(&it, &opts);
	r = get_bool_option(&opts, "GenerateKey", "single_use", &single_use);
	if (r < 0)
		return r;
	if (single_use && mk_key_alg_is_signature(j->alg))
		return mk_error(-EINVAL, "only hpke keys can be single-use (an init key for one "
				"Welcome), not a %s key", mk_key_alg_name(j->alg));
	if (single_use)
		j->flags |= MK_GENERATE_SINGLE_USE;
	return mk_uri_token_part(j->uri, &j->queue);
}

static void run_generate(job *j)
{
	_cleanup_free_ char *uri = NULL;

	j->result = mk_agent_generate(j->bus->agent, &j->caller, j->uri, j->alg, j->label, j->flags,
				      &uri);
	if (j->result < 0)
		return;
	j->keys_changed = true;
	j->reply = dbus_message_new_method_return(j->msg);
	if (j->reply &&
	    !dbus_message_append_args(j->reply, DBUS_TYPE_STRING, &uri, DBUS_TYPE_INVALID)) {
		dbus_message_unref(j->reply);
		j->reply = NULL;
	}
	if (j->reply)
		mk_log(LOG_NOTICE, "generated %s%s key %s", j->flags & MK_GENERATE_SINGLE_USE ?
		       "single-use " : "", mk_key_alg_name(j->alg), uri);
}

static int check_key_only(mk_bus *b, job *j)
{
	DBusMessageIter it;

	(void)b;
	dbus_message_iter_init(j->msg, &it);
	return check_key_uri(j, get_s(&it));
}

static void run_delete(job *j)
{
	j->result = mk_agent_delete(j->bus->agent, &j->caller, j->uri);
	if (j->result < 0)
		return;
	j->keys_changed = true;
	reply_empty(j);
}

static void run_public_key(job *j)
{
	_cleanup_bytes_ mk_bytes pub = MK_BYTES_NULL;

	j->result = mk_agent_public_key(j->bus->agent, &j->caller, j->uri, &pub);
	if (j->result == 0)
		reply_ay(j, &pub);
}

/* SignWithLabel's and DecryptWithLabel's first arguments: key, cipher suite, MLS label. */
static int check_key_suite_label(mk_bus *b, job *j, DBusMessageIter *it, const mk_suite **s)
{
	int r;

	dbus_message_iter_init(j->msg, it);
	r = check_key_uri(j, get_s(it));
	if (r < 0)
		return r;
	j->q1 = get_q(it);
	j->label = get_s(it);
	r = mk_check_suite(j->q1, s);
	if (r < 0)
		return r;
	return mk_check_label(b->cfg, "the label", j->label);
}

static int check_sign(mk_bus *b, job *j)
{
	DBusMessageIter it;
	const mk_suite *s;
	int r;

	r = check_key_suite_label(b, j, &it, &s);
	if (r < 0)
		return r;
	return get_ay(b, &it, "the content", &j->ay[0]);
}

static void run_sign(job *j)
{
	_cleanup_bytes_ mk_bytes sig = MK_BYTES_NULL;

	j->result = mk_agent_sign(j->bus->agent, &j->caller, j->uri, j->q1, j->label, j->ay[0].p,
				  j->ay[0].n, &sig);
	if (j->result == 0)
		reply_ay(j, &sig);
}

static int check_decrypt(mk_bus *b, job *j)
{
	static const char *const what[] = { "the context", "the KEM output", "the ciphertext" };
	DBusMessageIter it;
	const mk_suite *s;
	int r;

	r = check_key_suite_label(b, j, &it, &s);
	if (r < 0)
		return r;
	for (size_t i = 0; i < 3; i++) {
		r = get_ay(b, &it, what[i], &j->ay[i]);
		if (r < 0)
			return r;
	}
	/* the suite fixes the KEM: a bad point never reaches a worker, let alone the token */
	return mk_check_point(s->kem_alg, j->ay[1].p, j->ay[1].n);
}

static void run_decrypt(job *j)
{
	_cleanup_bytes_ mk_bytes pt = MK_BYTES_NULL;

	j->result = mk_agent_decrypt(j->bus->agent, &j->caller, j->uri, j->q1, j->label,
				     j->ay[0].p, j->ay[0].n, j->ay[1].p, j->ay[1].n, j->ay[2].p,
				     j->ay[2].n, &pt);
	if (j->result == 0)
		reply_ay(j, &pt);
}

static int check_hpke_open(mk_bus *b, job *j)
{
	static const char *const what[] = { "the info", "the aad", "the enc", "the ciphertext" };
	DBusMessageIter it;
	int r;

	dbus_message_iter_init(j->msg, &it);
	r = check_key_uri(j, get_s(&it));
	if (r < 0)
		return r;
	j->q1 = get_q(&it);
	j->q2 = get_q(&it);
	r = mk_check_hpke_ids(j->q1, j->q2);
	if (r < 0)
		return r;
	for (size_t i = 0; i < 4; i++) {
		r = get_ay(b, &it, what[i], &j->ay[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

static void run_hpke_open(job *j)
{
	_cleanup_bytes_ mk_bytes pt = MK_BYTES_NULL;

	j->result = mk_agent_hpke_open(j->bus->agent, &j->caller, j->uri, j->q1, j->q2,
				       j->ay[0].p, j->ay[0].n, j->ay[1].p, j->ay[1].n, j->ay[2].p,
				       j->ay[2].n, j->ay[3].p, j->ay[3].n, &pt);
	if (j->result == 0)
		reply_ay(j, &pt);
}

static int check_lock(mk_bus *b, job *j)
{
	DBusMessageIter it;
	int r;

	(void)b;
	dbus_message_iter_init(j->msg, &it);
	j->uri = get_s(&it);
	r = mk_check_token_uri(j->uri, true);
	if (r < 0)
		return r;
	if (!j->uri[0])
		return check_none(b, j);
	return mk_uri_token_part(j->uri, &j->queue);
}

static void run_lock(job *j)
{
	j->result = mk_agent_lock(j->bus->agent, j->uri);
	if (j->result == 0)
		reply_empty(j);
}

/* --- CreateKeyPackage (agent/keypackage-op.h) ------------------------------------------------- */

/* The options of one CreateKeyPackage, borrowed from the message. */
typedef struct kp_opts {
	mk_kp_options o;
	mk_kp_extension ext[MK_KP_OPTION_EXTENSIONS_MAX], leaf_ext[MK_KP_OPTION_EXTENSIONS_MAX];
} kp_opts;

/* An a(qay) option into e[] (at most MK_KP_OPTION_EXTENSIONS_MAX). */
static int kp_get_extensions(DBusMessageIter *v, const char *key, mk_kp_extension *e,
			     size_t *ret_n)
{
	DBusMessageIter arr;
	size_t n = 0;

	dbus_message_iter_recurse(v, &arr);
	while (dbus_message_iter_get_arg_type(&arr) == DBUS_TYPE_STRUCT) {
		DBusMessageIter st, bytes;
		dbus_uint16_t type;
		const uint8_t *p = NULL;
		int len = 0;

		if (n >= MK_KP_OPTION_EXTENSIONS_MAX)
			return mk_error(-EINVAL, "option %s: more than %d extensions", key,
					MK_KP_OPTION_EXTENSIONS_MAX);
		dbus_message_iter_recurse(&arr, &st);
		dbus_message_iter_get_basic(&st, &type);
		dbus_message_iter_next(&st);
		dbus_message_iter_recurse(&st, &bytes);
		if (dbus_message_iter_get_arg_type(&bytes) == DBUS_TYPE_BYTE)
			dbus_message_iter_get_fixed_array(&bytes, &p, &len);
		e[n++] = (mk_kp_extension){ type, { p, len > 0 ? (size_t)len : 0 } };
		dbus_message_iter_next(&arr);
	}
	*ret_n = n;
	return 0;
}

/*
 * CreateKeyPackage's a{sv} (at `opts`) into *k, each option of its one type: identity (ay
 * or s), not_before / not_after (t), lifetime_days (u), extensions / leaf_extensions
 * (a(qay)), last_resort (b). Unknown options and other types are refused.
 */
static int kp_parse_options(DBusMessageIter *opts, kp_opts *k)
{
	DBusMessageIter arr;

	memset(k, 0, sizeof(*k));
	k->o.extensions = k->ext;
	k->o.leaf_extensions = k->leaf_ext;
	dbus_message_iter_recurse(opts, &arr);
	for (;;) {
		DBusMessageIter v;
		const char *key;
		char *sig;
		bool ok;
		int r = 0;

		if (!dict_next(&arr, &key, &v))
			break;
		sig = dbus_message_iter_get_signature(&v);
		if (!sig)
			return -ENOMEM;
		if (strcmp(key, "identity") == 0 && strcmp(sig, "ay") == 0) {
			DBusMessageIter b;
			const uint8_t *p = NULL;
			int len = 0;

			dbus_message_iter_recurse(&v, &b);
			if (dbus_message_iter_get_arg_type(&b) == DBUS_TYPE_BYTE)
				dbus_message_iter_get_fixed_array(&b, &p, &len);
			k->o.identity = p ? p : (const uint8_t *)"";
			k->o.identity_len = len > 0 ? (size_t)len : 0;
			ok = true;
		} else if (strcmp(key, "identity") == 0 && strcmp(sig, "s") == 0) {
			const char *str;

			dbus_message_iter_get_basic(&v, &str);
			k->o.identity = (const uint8_t *)str;
			k->o.identity_len = strlen(str);
			ok = true;
		} else if ((strcmp(key, "not_before") == 0 || strcmp(key, "not_after") == 0) &&
			   strcmp(sig, "t") == 0) {
			dbus_uint64_t t;

			dbus_message_iter_get_basic(&v, &t);
			*(key[4] == 'b' ? &k->o.not_before : &k->o.not_after) = t;
			ok = true;
		} else if (strcmp(key, "lifetime_days") == 0 && strcmp(sig, "u") == 0) {
			dbus_uint32_t d;

			dbus_message_iter_get_basic(&v, &d);
			if (d == 0)
				r = mk_error(-EINVAL, "lifetime_days must be at least 1");
			k->o.lifetime_days = d;
			ok = true;
		} else if (strcmp(key, "extensions") == 0 && strcmp(sig, "a(qay)") == 0) {
			r = kp_get_extensions(&v, key, k->ext, &k->o.n_extensions);
			ok = true;
		} else if (strcmp(key, "leaf_extensions") == 0 && strcmp(sig, "a(qay)") == 0) {
			r = kp_get_extensions(&v, key, k->leaf_ext, &k->o.n_leaf_extensions);
			ok = true;
		} else if (strcmp(key, "last_resort") == 0 && strcmp(sig, "b") == 0) {
			dbus_bool_t b;

			dbus_message_iter_get_basic(&v, &b);
			k->o.last_resort = b;
			ok = true;
		} else {
			ok = false;
		}
		if (!ok)
			r = mk_error(-EINVAL,
				     "CreateKeyPackage option \"%.64s\" of type %s is unknown; known: "
				     "identity (ay or s), not_before (t), not_after (t), lifetime_days "
				     "(u), extensions (a(qay)), leaf_extensions (a(qay)), last_resort "
				     "(b)",
				     key, sig);
		dbus_free(sig);
		if (r < 0)
			return r;
	}
	return mk_kp_options_check(&k->o);
}

static int check_create_key_package(mk_bus *b, job *j)
{
	DBusMessageIter it;
	const mk_suite *s;
	kp_opts k;
	int r;

	(void)b;
	dbus_message_iter_init(j->msg, &it);
	r = check_key_uri(j, get_s(&it));
	if (r < 0)
		return r;
	j->q1 = get_q(&it);
	r = mk_check_suite(j->q1, &s);
	if (r < 0)
		return r;
	return kp_parse_options(&it, &k);
}

static void run_create_key_package(job *j)
{
	mk_kp_created out = { 0 };
	DBusMessageIter it;
	kp_opts k;

	dbus_message_iter_init(j->msg, &it);
	dbus_message_iter_next(&it);
	dbus_message_iter_next(&it);
	/* checked on the bus thread already: this only finds the borrowed values again */
	j->result = kp_parse_options(&it, &k);
	if (j->result == 0)
		j->result = mk_agent_create_key_package(j->bus->agent, &j->caller, j->uri, j->q1,
							&k.o, &out);
	if (j->result < 0)
		return;
	j->keys_changed = true;
	j->reply = dbus_message_new_method_return(j->msg);
	if (j->reply)
		dbus_message_iter_init_append(j->reply, &it);
	if (j->reply && !(append_ay(&it, out.message.data, out.message.len) &&
			  dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &out.init_key_uri) &&
			  dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &out.leaf_key_uri) &&
			  append_ay(&it, out.ref.data, out.ref.len))) {
		dbus_message_unref(j->reply);
		j->reply = NULL;
	}
	if (j->reply)
		mk_log(LOG_NOTICE, "created a KeyPackage for suite %u: init key %s, leaf key %s",
		       j->q1, out.init_key_uri, out.leaf_key_uri);
	mk_kp_created_clear(&out);
}

/* ListSlots: every slot of every module, with what is in it (agent/tokens.h). */
static void run_list_slots(job *j)
{
	mk_slot_info *s = NULL;
	size_t n = 0;
	list_reply l;

	j->result = mk_tokens_list_slots(j->bus->tokens, &s, &n);
	if (j->result < 0)
		return;
	list_begin(j, &l);
	for (size_t i = 0; l.ok && i < n; i++) {
		DBusMessageIter st, dm;
		dict d = { &dm, true };
		dbus_uint64_t id = s[i].id;

		l.ok = entry_open(&l.list, &st, &dm, s[i].uri);
		if (!l.ok)
			break;
		dict_s(&d, "description", s[i].description);
		dict_s(&d, "manufacturer", s[i].manufacturer);
		dict_s(&d, "module", s[i].module);
		dict_basic(&d, "slot_id", DBUS_TYPE_UINT64, "t", &id);
		dict_b(&d, "hardware", s[i].hardware);
		dict_b(&d, "removable", s[i].removable);
		dict_b(&d, "token_present", s[i].token_present);
		dict_s(&d, "state", s[i].state);
		dict_s(&d, "token", s[i].token_uri);
		l.ok = d.ok && entry_close(&l.list, &st, &dm);
	}
	list_end(j, &l);
	mk_slot_info_array_free(s, n);
}

/* GetCredential(s key, a{sv} options): the one option is allow_expired (b). */
static int check_get_credential(mk_bus *b, job *j)
{
	DBusMessageIter it, opts;
	int r;

	(void)b;
	dbus_message_iter_init(j->msg, &it);
	r = check_key_uri(j, get_s(&it));
	if (r < 0)
		return r;
	dbus_message_iter_recurse(&it, &opts);
	return get_bool_option(&opts, "GetCredential", "allow_expired", &j->allow_expired);
}

static void run_get_credential(job *j)
{
	DBusMessageIter it, list;
	mk_bytes *certs = NULL;
	size_t n = 0;
	dbus_uint16_t type = 2; /* RFC 9420 CredentialType x509 */
	bool ok;

	j->result = mk_agent_credential(j->bus->agent, &j->caller, j->uri, j->allow_expired,
					&certs, &n);
	if (j->result < 0)
		return;
	j->reply = dbus_message_new_method_return(j->msg);
	ok = j->reply != NULL;
	if (ok) {
		dbus_message_iter_init_append(j->reply, &it);
		ok = dbus_message_iter_append_basic(&it, DBUS_TYPE_UINT16, &type) &&
		     dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "ay", &list);
		for (size_t i = 0; ok && i < n; i++)
			ok = append_ay(&list, certs[i].data, certs[i].len);
		if (ok)
			ok = dbus_message_iter_close_container(&it, &list);
		else
			dbus_message_iter_abandon_container_if_open(&it, &list);
	}
	if (!ok && j->reply) {
		dbus_message_unref(j->reply);
		j->reply = NULL;
	}
	mk_bytes_array_free(certs, n);
}

/* ImportCertificates(s key, aay certificates): bounds, and each one must parse. */
static int check_import_certificates(mk_bus *b, job *j)
{
	DBusMessageIter it, list;
	int r;

	dbus_message_iter_init(j->msg, &it);
	r = check_key_uri(j, get_s(&it));
	if (r < 0)
		return r;
	dbus_message_iter_recurse(&it, &list);
	while (dbus_message_iter_get_arg_type(&list) == DBUS_TYPE_ARRAY) {
		blob *grown;
		char what[64];

		if (j->n_certs >= MK_X509_CHAIN_MAX)
			return mk_error(-EINVAL, "more than %d certificates given; give the key's "
						 "certificate and the CA certificates above it",
					MK_X509_CHAIN_MAX);
		grown = realloc(j->certs, (j->n_certs + 1) * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		j->certs = grown;
		snprintf(what, sizeof(what), "certificate %zu", j->n_certs + 1);
		r = get_ay(b, &list, what, &j->certs[j->n_certs]);
		if (r < 0)
			return r;
		if (j->certs[j->n_certs].n > MK_X509_MAX_DER)
			return mk_error(-EINVAL, "%s has %zu bytes; at most %u are accepted", what,
					j->certs[j->n_certs].n, MK_X509_MAX_DER);
		/* parsed only: signatures are checked on the worker */
		if (mk_x509_check(j->certs[j->n_certs].p, j->certs[j->n_certs].n) < 0)
			return mk_error(-EINVAL, "%s is no DER X.509 certificate (or has bytes "
						 "after it); convert PEM to DER first",
					what);
		j->n_certs++;
	}
	if (j->n_certs == 0)
		return mk_error(-EINVAL, "no certificate given; give the key's certificate first, "
					 "then the CA certificates that issued it");
	return 0;
}

static void run_import_certificates(job *j)
{
	mk_bytes *certs = calloc(j->n_certs, sizeof(*certs));

	if (!certs) {
		j->result = -ENOMEM;
		return;
	}
	/* borrowed views of the message's bytes: only read, never cleared */
	for (size_t i = 0; i < j->n_certs; i++)
		certs[i] = (mk_bytes){ (uint8_t *)j->certs[i].p, j->certs[i].n };
	j->result = mk_agent_import_certificates(j->bus->agent, &j->caller, j->uri, certs,
						 j->n_certs);
	free(certs);
	if (j->result < 0)
		return;
	j->keys_changed = true;
	reply_empty(j);
}

/* The interface, one line per method (docs/API.md, ipc/org.mlskey.Agent1.xml). */
static const method methods[] = {
	{ "ListTokens", "", "a(sa{sv})", check_none, run_list_tokens },
	{ "ListKeys", "", "a(sa{sv})", check_none, run_list_keys },
	{ "GenerateKey", "ssssa{sv}", "s", check_generate, run_generate },
	{ "DeleteKey", "s", "", check_key_only, run_delete },
	{ "GetPublicKey", "s", "ay", check_key_only, run_public_key },
	{ "SignWithLabel", "sqsay", "ay", check_sign, run_sign },
	{ "DecryptWithLabel", "sqsayayay", "ay", check_decrypt, run_decrypt },
	{ "HpkeOpen", "sqqayayayay", "ay", check_hpke_open, run_hpke_open },
	{ "Lock", "s", "", check_lock, run_lock },
	{ "ListSlots", "", "a(sa{sv})", check_none, run_list_slots },
	{ "CreateKeyPackage", "sqa{sv}", "ayssay", check_create_key_package,
	  run_create_key_package },
	{ "GetCredential", "sa{sv}", "qaay", check_get_credential, run_get_credential },
	{ "ImportCertificates", "saay", "", check_import_certificates, run_import_certificates },
};

/* --- jobs ---------------------------------------------------------------------------------- */

static void job_free(job *j)
{
	if (j->msg)
		dbus_message_unref(j->msg);
	if (j->reply)
		dbus_message_unref(j->reply);
	free(j->queue);
	free(j->certs);
	free(j);
}

/*
 * What the audit trail records of a method beyond its caller, URI and result (docs/AUDIT.md):
 * whether j->label is an MLS label, which j->ay[] is "the input" whose SHA-256 is logged,
 * and whether it only reads (logged at a lower priority). Methods not listed: none, none, no.
 */
static const struct audit_shape {
	const char *method;
	bool mls_label;
	int input; /* index into j->ay, -1: none */
	bool read_only;
} audit_shapes[] = {
	{ "ListTokens", false, -1, true },   { "ListKeys", false, -1, true },
	{ "ListSlots", false, -1, true },    { "GetPublicKey", false, -1, true },
	{ "GetCredential", false, -1, true },
	{ "SignWithLabel", true, 0, false }, /* the content */
	{ "DecryptWithLabel", true, 2, false }, /* the ciphertext */
	{ "HpkeOpen", false, 3, false },     /* the ciphertext */
};

/* One audit record for the job with result r (any thread; r < 0 carries its message). */
static void job_audit(job *j, int r)
{
	const struct audit_shape *shape = NULL;
	mk_audit_event e = {
		.caller = j->caller_known ? &j->caller : NULL,
		.method = j->m->name,
		.uri = j->uri,
		.error_name = r < 0 ? mk_bus_error_name(r) : NULL,
		.error_text = r < 0 ? mk_error_text(r) : NULL,
	};

	for (size_t i = 0; i < ELEMENTSOF(audit_shapes); i++)
		if (strcmp(j->m->name, audit_shapes[i].method) == 0)
			shape = &audit_shapes[i];
	if (shape) {
		e.label = shape->mls_label ? j->label : NULL;
		e.read_only = shape->read_only;
		/* an input is hashed only once the arguments passed their checks */
		if (shape->input >= 0 && j->checked) {
			e.input = j->ay[shape->input].p;
			e.input_len = j->ay[shape->input].n;
			e.has_input = true;
		}
	}
	mk_audit_log(j->bus->audit, &e);
}

static void job_log(job *j)
{
	job_audit(j, j->result);
}

static void emit(mk_bus *b, const char *signal)
{
	DBusMessage *m = dbus_message_new_signal(MK_BUS_PATH, MK_BUS_INTERFACE, signal);

	if (!m)
		return;
	dbus_connection_send(b->conn, m, NULL);
	dbus_message_unref(m);
}

/*
 * Worker thread: runs the job, builds the reply and sends it. libdbus is thread-safe
 * (dbus_threads_init_default) and writes the reply at once when the bus thread is not in
 * the middle of I/O; otherwise it queues it and wakes the bus thread (wakeup_main), which
 * writes it. Handing every reply back to the bus thread instead cost a second thread hop
 * per call and made the bus thread the bottleneck with 8 clients (measured with mlskey
 * bench: 250-370 us from the end of the token work to the send, against 6-50 us here).
 * A caller that went away meanwhile just never sees the reply: the bus drops it.
 */
static void job_run(void *p, int status)
{
	job *j = p;
	mk_bus *b = j->bus;
	bool go = mk_tokens_call_begin(j->call);

	mk_error_clear();
	if (!go)
		; /* the watchdog answered it while it waited behind a token that hangs */
	else if (status < 0)
		j->result = mk_error(-EBUSY, "mlskeyd is stopping; retry");
	else
		j->m->run(j);
	if (!mk_tokens_call_end(j->call)) {
		/* answered already (TokenError, TokenAbsent): the late result goes nowhere */
		j->call = NULL;
		if (go)
			mk_log(LOG_INFO, "%s uid=%u pid=%d uri=%s: ended after its caller was answered",
			       j->m->name, (unsigned)j->caller.uid, (int)j->caller.pid,
			       j->uri ? j->uri : "-");
		if (j->keys_changed)
			emit(b, "KeysChanged");
		job_free(j);
		return;
	}
	j->call = NULL;
	if (!j->reply && j->result == 0)
		j->result = -ENOMEM;
	if (j->result < 0) {
		if (j->reply)
			dbus_message_unref(j->reply);
		j->reply = error_reply(j->msg, j->result);
	}
	/* The caller waits for the reply, not for the log line: send first, then log. */
	if (j->reply)
		dbus_connection_send(b->conn, j->reply, NULL);
	job_log(j);
	if (j->keys_changed)
		emit(b, "KeysChanged");
	job_free(j);
}

/* Bus thread, after a poke: signals to emit, and replies libdbus could not write at once. */
static void on_poke(mk_bus *b)
{
	uint64_t v;

	if (read(b->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		mk_log(LOG_ERR, "eventfd: %m");
	if (atomic_exchange(&b->tokens_changed, false))
		emit(b, "TokensChanged");
	if (atomic_exchange(&b->keys_changed, false))
		emit(b, "KeysChanged");
	if (dbus_connection_has_messages_to_send(b->conn))
		dbus_connection_read_write(b->conn, 0);
}

static void tokens_changed(void *userdata)
{
	mk_bus *b = userdata;

	atomic_store(&b->tokens_changed, true);
	poke(b);
}

/* A worker: the agent deleted a key by itself (a used-up single-use key). */
static void keys_changed(void *userdata)
{
	mk_bus *b = userdata;

	atomic_store(&b->keys_changed, true);
	poke(b);
}

/* --- cards and tokens that come and go (agent/tokens.h) -------------------------------------- */

/* Any thread: the watcher saw tokens or keys change; the bus thread emits the signals. */
static void tokens_event(unsigned what, void *userdata)
{
	mk_bus *b = userdata;

	if (what & MK_TOKENS_CHANGED)
		atomic_store(&b->tokens_changed, true);
	if (what & MK_KEYS_CHANGED)
		atomic_store(&b->keys_changed, true);
	poke(b);
}

/*
 * The watchdog thread: the job's token did not answer in time, or was removed while the job
 * was in it; answer now, the worker drops its late result. libdbus is thread-safe.
 */
static void answer_early(void *p, int r, void *userdata)
{
	job *j = p;
	mk_bus *b = userdata;
	DBusMessage *e = NULL;

	if (!dbus_message_get_no_reply(j->msg))
		e = error_reply(j->msg, r);
	if (e) {
		dbus_connection_send(b->conn, e, NULL);
		dbus_message_unref(e);
	}
	job_audit(j, r);
}

/* --- dispatch (bus thread) ------------------------------------------------------------------ */

static void reply_error_now(mk_bus *b, DBusMessage *msg, const char *name, const char *text)
{
	DBusMessage *e;

	if (dbus_message_get_no_reply(msg))
		return;
	e = dbus_message_new_error(msg, name, text);
	if (e) {
		dbus_connection_send(b->conn, e, NULL);
		dbus_message_unref(e);
	}
}

static void reply_errno_now(mk_bus *b, DBusMessage *msg, int r)
{
	reply_error_now(b, msg, mk_bus_error_name(r), mk_error_text(r));
}

static void send_reply(mk_bus *b, DBusMessage *reply)
{
	if (reply) {
		dbus_connection_send(b->conn, reply, NULL);
		dbus_message_unref(reply);
	}
}

static int build_introspect(mk_bus *b)
{
	static const char std[] =
		"  <interface name=\"org.freedesktop.DBus.Introspectable\">\n"
		"    <method name=\"Introspect\">\n"
		"      <arg name=\"xml_data\" type=\"s\" direction=\"out\"/>\n"
		"    </method>\n"
		"  </interface>\n"
		"  <interface name=\"org.freedesktop.DBus.Properties\">\n"
		"    <method name=\"Get\">\n"
		"      <arg name=\"interface_name\" type=\"s\" direction=\"in\"/>\n"
		"      <arg name=\"property_name\" type=\"s\" direction=\"in\"/>\n"
		"      <arg name=\"value\" type=\"v\" direction=\"out\"/>\n"
		"    </method>\n"
		"    <method name=\"GetAll\">\n"
		"      <arg name=\"interface_name\" type=\"s\" direction=\"in\"/>\n"
		"      <arg name=\"props\" type=\"a{sv}\" direction=\"out\"/>\n"
		"    </method>\n"
		"    <method name=\"Set\">\n"
		"      <arg name=\"interface_name\" type=\"s\" direction=\"in\"/>\n"
		"      <arg name=\"property_name\" type=\"s\" direction=\"in\"/>\n"
		"      <arg name=\"value\" type=\"v\" direction=\"in\"/>\n"
		"    </method>\n"
		"    <signal name=\"PropertiesChanged\">\n"
		"      <arg name=\"interface_name\" type=\"s\"/>\n"
		"      <arg name=\"changed_properties\" type=\"a{sv}\"/>\n"
		"      <arg name=\"invalidated_properties\" type=\"as\"/>\n"
		"    </signal>\n"
		"  </interface>\n"
		"  <interface name=\"org.freedesktop.DBus.Peer\">\n"
		"    <method name=\"Ping\"/>\n"
		"    <method name=\"GetMachineId\">\n"
		"      <arg name=\"machine_uuid\" type=\"s\" direction=\"out\"/>\n"
		"    </method>\n"
		"  </interface>\n";
	const char *end = strstr(mk_interface_xml, "</node>");

	if (!end)
		return -EINVAL;
	if (asprintf(&b->introspect, "%.*s%s%s", (int)(end - mk_interface_xml), mk_interface_xml,
		     std, end) < 0) {
		b->introspect = NULL;
		return -ENOMEM;
	}
	return 0;
}

static bool is_method(DBusMessage *msg, const char *iface, const char *member)
{
	const char *i = dbus_message_get_interface(msg);

	return (!i || strcmp(i, iface) == 0) && strcmp(dbus_message_get_member(msg), member) == 0;
}

static void handle_properties(mk_bus *b, DBusMessage *msg)
{
	const char *member = dbus_message_get_member(msg), *iface = NULL, *prop = NULL;
	const char *version = MK_VERSION;
	DBusMessage *reply;
	DBusMessageIter it, v;
	dict d;

	if (strcmp(member, "Get") == 0 && dbus_message_has_signature(msg, "ss")) {
		dbus_message_get_args(msg, NULL, DBUS_TYPE_STRING, &iface, DBUS_TYPE_STRING, &prop,
				      DBUS_TYPE_INVALID);
		if (strcmp(iface, MK_BUS_INTERFACE) != 0 || strcmp(prop, "Version") != 0) {
			reply_error_now(b, msg, DBUS_ERROR_UNKNOWN_PROPERTY,
					"no such property; org.mlskey.Agent1 has Version");
			return;
		}
		reply = dbus_message_new_method_return(msg);
		if (!reply)
			return;
		dbus_message_iter_init_append(reply, &it);
		if (!dbus_message_iter_open_container(&it, DBUS_TYPE_VARIANT, "s", &v) ||
		    !dbus_message_iter_append_basic(&v, DBUS_TYPE_STRING, &version) ||
		    !dbus_message_iter_close_container(&it, &v)) {
			dbus_message_unref(reply);
			return;
		}
		send_reply(b, reply);
		return;
	}
	if (strcmp(member, "GetAll") == 0 && dbus_message_has_signature(msg, "s")) {
		DBusMessageIter a;

		dbus_message_get_args(msg, NULL, DBUS_TYPE_STRING, &iface, DBUS_TYPE_INVALID);
		reply = dbus_message_new_method_return(msg);
		if (!reply)
			return;
		dbus_message_iter_init_append(reply, &it);
		if (!dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &a)) {
			dbus_message_unref(reply);
			return;
		}
		d = (dict){ &a, true };
		if (iface[0] == '\0' || strcmp(iface, MK_BUS_INTERFACE) == 0)
			dict_s(&d, "Version", version);
		if (!d.ok || !dbus_message_iter_close_container(&it, &a)) {
			dbus_message_unref(reply);
			return;
		}
		send_reply(b, reply);
		return;
	}
	if (strcmp(member, "Set") == 0) {
		reply_error_now(b, msg, DBUS_ERROR_PROPERTY_READ_ONLY, "Version is read-only");
		return;
	}
	if (strcmp(member, "Get") == 0 || strcmp(member, "GetAll") == 0) {
		reply_error_now(b, msg, DBUS_ERROR_INVALID_ARGS,
				"Get takes (ss), GetAll takes (s)");
		return;
	}
	reply_error_now(b, msg, DBUS_ERROR_UNKNOWN_METHOD,
			"org.freedesktop.DBus.Properties has Get, GetAll and Set");
}

/* Checks the call and queues it; every path ends in a reply or a queued job. */
static void handle_call(mk_bus *b, DBusMessage *msg, const method *m)
{
	const char *sender = dbus_message_get_sender(msg);
	job *j;
	int r;

	mk_error_clear();
	j = calloc(1, sizeof(*j));
	if (!j) {
		reply_errno_now(b, msg, -ENOMEM);
		return;
	}
	j->bus = b;
	j->m = m;
	j->msg = dbus_message_ref(msg);
	/* who first (another user learns nothing, not even about its arguments), then what */
	{
		const peer *p = NULL;

		r = peer_lookup(b, sender ? sender : "", &j->caller, &j->caller_known, &p);
		if (r == 0)
			r = mk_caller_access(b->cfg, b->uid, p->caller.uid, p->gids, p->n_gids);
	}
	j->caller.t_call_ns = mk_agent_clock_ns(); /* waiting calls share a PIN dialog's end */
	if (r == 0 && !dbus_message_has_signature(msg, m->in_sig))
		r = mk_error(-EINVAL, "%s takes arguments (%s), not (%s); see docs/API.md", m->name,
			     m->in_sig, dbus_message_get_signature(msg));
	if (r == 0)
		r = m->check(b, j);
	j->checked = r == 0;
	/* watched from here on: a token that hangs gets its callers answered anyway */
	if (r == 0)
		r = mk_tokens_call_new(b->tokens, j, j->queue ? j->queue : "", &j->call);
	if (r == 0) {
		r = mk_workers_submit(b->workers, j->queue ? j->queue : "", job_run, j);
		if (r < 0 && mk_tokens_call_drop(j->call)) {
			j->call = NULL;
			job_free(j); /* the watchdog answered it meanwhile */
			return;
		}
		if (r < 0)
			j->call = NULL;
	}
	if (r == -EBUSY)
		r = mk_error(-EBUSY, "too many calls are waiting for this token; retry later");
	else if (r == -ECANCELED)
		r = mk_error(-EBUSY, "mlskeyd is stopping; retry");
	if (r < 0) {
		j->result = r;
		job_log(j);
		reply_errno_now(b, msg, r);
		job_free(j);
	}
}

static DBusHandlerResult on_object(DBusConnection *conn, DBusMessage *msg, void *data)
{
	mk_bus *b = data;
	const char *iface = dbus_message_get_interface(msg);
	const char *member = dbus_message_get_member(msg);

	(void)conn;
	if (dbus_message_get_type(msg) != DBUS_MESSAGE_TYPE_METHOD_CALL)
		return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
	if (is_method(msg, DBUS_INTERFACE_INTROSPECTABLE, "Introspect")) {
		DBusMessage *reply = dbus_message_new_method_return(msg);

		if (reply && !dbus_message_append_args(reply, DBUS_TYPE_STRING, &b->introspect,
						       DBUS_TYPE_INVALID)) {
			dbus_message_unref(reply);
			reply = NULL;
		}
		send_reply(b, reply);
		return DBUS_HANDLER_RESULT_HANDLED;
	}
	if (iface && strcmp(iface, DBUS_INTERFACE_PROPERTIES) == 0) {
		handle_properties(b, msg);
		return DBUS_HANDLER_RESULT_HANDLED;
	}
	if (iface && strcmp(iface, MK_BUS_INTERFACE) != 0) {
		char text[300];

		snprintf(text, sizeof(text), "%s has no interface %.200s", MK_BUS_PATH, iface);
		reply_error_now(b, msg, DBUS_ERROR_UNKNOWN_INTERFACE, text);
		return DBUS_HANDLER_RESULT_HANDLED;
	}
	for (size_t i = 0; i < ELEMENTSOF(methods); i++)
		if (strcmp(member, methods[i].name) == 0) {
			handle_call(b, msg, &methods[i]);
			return DBUS_HANDLER_RESULT_HANDLED;
		}
	{
		char text[300];

		snprintf(text, sizeof(text), "%s has no method %.200s; see docs/API.md",
			 MK_BUS_INTERFACE, member);
		reply_error_now(b, msg, DBUS_ERROR_UNKNOWN_METHOD, text);
	}
	return DBUS_HANDLER_RESULT_HANDLED;
}

/* "/", "/org", "/org/mlskey": introspectable parents, so that busctl tree finds the agent. */
static DBusHandlerResult on_fallback(DBusConnection *conn, DBusMessage *msg, void *data)
{
	static const struct {
		const char *path, *child;
	} parents[] = { { "/", "org" }, { "/org", "mlskey" }, { "/org/mlskey", "Agent1" } };
	mk_bus *b = data;
	const char *path = dbus_message_get_path(msg);

	(void)conn;
	if (dbus_message_get_type(msg) != DBUS_MESSAGE_TYPE_METHOD_CALL)
		return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
	for (size_t i = 0; path && i < ELEMENTSOF(parents); i++)
		if (strcmp(path, parents[i].path) == 0 &&
		    is_method(msg, DBUS_INTERFACE_INTROSPECTABLE, "Introspect")) {
			char xml[512];
			const char *x = xml;
			DBusMessage *reply = dbus_message_new_method_return(msg);

			snprintf(xml, sizeof(xml),
				 "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object "
				 "Introspection 1.0//EN\"\n \"http://www.freedesktop.org/standards/"
				 "dbus/1.0/introspect.dtd\">\n<node>\n  <node name=\"%s\"/>\n</node>\n",
				 parents[i].child);
			if (reply && !dbus_message_append_args(reply, DBUS_TYPE_STRING, &x,
							       DBUS_TYPE_INVALID)) {
				dbus_message_unref(reply);
				reply = NULL;
			}
			send_reply(b, reply);
			return DBUS_HANDLER_RESULT_HANDLED;
		}
	reply_error_now(b, msg, DBUS_ERROR_UNKNOWN_OBJECT,
			"no such object; mlskeyd serves /org/mlskey/Agent1");
	return DBUS_HANDLER_RESULT_HANDLED;
}

/* NameOwnerChanged: forget callers that left the bus. */
static DBusHandlerResult on_filter(DBusConnection *conn, DBusMessage *msg, void *data)
{
	mk_bus *b = data;
	const char *name, *old_owner, *new_owner;

	(void)conn;
	if (dbus_message_is_signal(msg, DBUS_INTERFACE_DBUS, "NameOwnerChanged") &&
	    dbus_message_get_args(msg, NULL, DBUS_TYPE_STRING, &name, DBUS_TYPE_STRING,
				  &old_owner, DBUS_TYPE_STRING, &new_owner, DBUS_TYPE_INVALID) &&
	    name[0] == ':' && new_owner[0] == '\0')
		peer_forget(b, name);
	if (dbus_message_is_signal(msg, DBUS_INTERFACE_LOCAL, "Disconnected")) {
		b->quit = true;
		b->quit_r = -ECONNRESET;
		mk_log(LOG_ERR, "the bus connection was closed; stopping");
		return DBUS_HANDLER_RESULT_HANDLED;
	}
	return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
}

/* --- the session's lock and suspend signals: log out (issue 5) ------------------------------ */

#define LOGIN1_NAME "org.freedesktop.login1"
#define LOGIN1_SESSION LOGIN1_NAME ".Session"
#define LOGIN1_MANAGER LOGIN1_NAME ".Manager"

/* Why a signal means "log out of every token", or NULL when it does not. */
static const char *lock_signal_reason(DBusMessage *msg)
{
	dbus_bool_t on = FALSE;

	if (dbus_message_is_signal(msg, LOGIN1_SESSION, "Lock"))
		return "the session was locked";
	if ((dbus_message_is_signal(msg, "org.freedesktop.ScreenSaver", "ActiveChanged") ||
	     dbus_message_is_signal(msg, "org.gnome.ScreenSaver", "ActiveChanged")) &&
	    dbus_message_get_args(msg, NULL, DBUS_TYPE_BOOLEAN, &on, DBUS_TYPE_INVALID) && on)
		return "the screensaver started";
	if (dbus_message_is_signal(msg, LOGIN1_MANAGER, "PrepareForSleep") &&
	    dbus_message_get_args(msg, NULL, DBUS_TYPE_BOOLEAN, &on, DBUS_TYPE_INVALID) && on)
		return "the machine is going to sleep";
	return NULL;
}

/* The agent's own bus (bus thread): hand the logout to the agent's thread, never wait. */
static DBusHandlerResult on_lock_signal(DBusConnection *conn, DBusMessage *msg, void *data)
{
	mk_bus *b = data;
	const char *why = lock_signal_reason(msg), *sender = dbus_message_get_sender(msg);

	(void)conn;
	/* on the system bus another user's session lock is not ours to act on */
	if (why && !(b->cfg->system_mode && dbus_message_is_signal(msg, LOGIN1_SESSION, "Lock"))) {
		mk_log(LOG_INFO, "%s (a signal from %s): logging out", why, sender ? sender : "?");
		mk_agent_request_lock(b->agent, why);
	}
	return DBUS_HANDLER_RESULT_NOT_YET_HANDLED;
}

/* Does the logind session at path belong to the agent's user? */
static bool session_is_ours(DBusConnection *c, const char *path)
{
	const char *iface = LOGIN1_SESSION, *prop = "User";
	DBusMessage *m, *r;
	DBusMessageIter it, v, st;
	dbus_uint32_t uid = (dbus_uint32_t)-1;

	m = dbus_message_new_method_call(LOGIN1_NAME, path, DBUS_INTERFACE_PROPERTIES, "Get");
	if (!m || !dbus_message_append_args(m, DBUS_TYPE_STRING, &iface, DBUS_TYPE_STRING, &prop,
					    DBUS_TYPE_INVALID)) {
		if (m)
			dbus_message_unref(m);
		return false;
	}
	r = dbus_connection_send_with_reply_and_block(c, m, 2000, NULL);
	dbus_message_unref(m);
	if (!r)
		return false;
	/* User is (uo): the uid and the user's object */
	if (dbus_message_iter_init(r, &it) && dbus_message_iter_get_arg_type(&it) == DBUS_TYPE_VARIANT) {
		dbus_message_iter_recurse(&it, &v);
		if (dbus_message_iter_get_arg_type(&v) == DBUS_TYPE_STRUCT) {
			dbus_message_iter_recurse(&v, &st);
			if (dbus_message_iter_get_arg_type(&st) == DBUS_TYPE_UINT32)
				dbus_message_iter_get_basic(&st, &uid);
		}
	}
	dbus_message_unref(r);
	return uid == (dbus_uint32_t)getuid();
}

/*
 * A thread of its own on the system bus (when there is one): logind's Session.Lock for the
 * agent user's sessions and Manager.PrepareForSleep(true). It never touches the agent's bus
 * connection, and it stops within 250 ms of sysbus_stop.
 */
static void *sysbus_main(void *userdata)
{
	mk_bus *b = userdata;
	DBusConnection *c;
	DBusError err;

	dbus_error_init(&err);
	c = dbus_bus_get_private(DBUS_BUS_SYSTEM, &err);
	if (!c) {
		mk_log(LOG_INFO, "no system bus (%s): logind's Lock and PrepareForSleep are not "
		       "watched there", err.message ? err.message : "?");
		dbus_error_free(&err);
		return NULL;
	}
	dbus_connection_set_exit_on_disconnect(c, FALSE);
	dbus_bus_add_match(c, "type='signal',sender='" LOGIN1_NAME "',interface='" LOGIN1_SESSION
			   "',member='Lock'", NULL);
	dbus_bus_add_match(c, "type='signal',sender='" LOGIN1_NAME "',interface='" LOGIN1_MANAGER
			   "',member='PrepareForSleep'", NULL);
	while (!atomic_load(&b->sysbus_stop) && dbus_connection_read_write(c, 250)) {
		DBusMessage *m;

		while ((m = dbus_connection_pop_message(c))) {
			const char *why = lock_signal_reason(m);

			if (why && (!dbus_message_is_signal(m, LOGIN1_SESSION, "Lock") ||
				    session_is_ours(c, dbus_message_get_path(m)))) {
				mk_log(LOG_INFO, "%s (logind): logging out", why);
				mk_agent_request_lock(b->agent, why);
			}
			dbus_message_unref(m);
		}
	}
	dbus_connection_close(c);
	dbus_connection_unref(c);
	return NULL;
}

/*
 * Logs out of every token when the session locks or the machine suspends: the signals are
 * watched on the agent's own bus (a screensaver's ActiveChanged on the session bus; logind's
 * Lock and PrepareForSleep too, so that a test can send them on a private bus) and on the
 * system bus, where logind sends them. An agent on the system bus (an HSM service) only
 * follows suspend. Failing to watch is logged, never fatal.
 */
static void watch_lock_signals(mk_bus *b)
{
	static const char *const session_rules[] = {
		"type='signal',interface='" LOGIN1_SESSION "',member='Lock'",
		"type='signal',interface='org.freedesktop.ScreenSaver',member='ActiveChanged'",
		"type='signal',interface='org.gnome.ScreenSaver',member='ActiveChanged'",
		"type='signal',interface='" LOGIN1_MANAGER "',member='PrepareForSleep'",
	};
	static const char *const system_rules[] = {
		"type='signal',sender='" LOGIN1_NAME "',interface='" LOGIN1_MANAGER
		"',member='PrepareForSleep'",
	};
	bool sys = b->cfg->system_mode;
	const char *const *rules = sys ? system_rules : session_rules;
	size_t n = sys ? ELEMENTSOF(system_rules) : ELEMENTSOF(session_rules);
	int r;

	if (!dbus_connection_add_filter(b->conn, on_lock_signal, b, NULL)) {
		mk_log(LOG_WARNING, "cannot watch for the session being locked: no memory");
		return;
	}
	for (size_t i = 0; i < n; i++)
		dbus_bus_add_match(b->conn, rules[i], NULL); /* not waited for */
	if (sys)
		return;
	r = pthread_create(&b->sysbus, NULL, sysbus_main, b);
	if (r != 0)
		mk_log(LOG_WARNING, "cannot watch logind on the system bus: %s", strerror(r));
	b->sysbus_started = r == 0;
}

static void unwatch_lock_signals(mk_bus *b)
{
	if (!b->sysbus_started)
		return;
	atomic_store(&b->sysbus_stop, true);
	pthread_join(b->sysbus, NULL);
	b->sysbus_started = false;
}

/* --- setup and the loop ---------------------------------------------------------------------- */

int mk_bus_global_init(void)
{
	return dbus_threads_init_default() ? 0 : -ENOMEM;
}

void mk_bus_global_done(void)
{
	dbus_shutdown();
}

int mk_bus_connect(const mk_config *cfg, mk_bus **ret)
{
	mk_bus *b;
	DBusError err;
	int r;

	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->cfg = cfg;
	b->efd = b->sfd = -1;
	b->uid = getuid();
	dbus_error_init(&err);
	if (cfg->bus == MK_BUS_ADDRESS) {
		b->conn = dbus_connection_open_private(cfg->address, &err);
		if (b->conn && !dbus_bus_register(b->conn, &err)) {
			dbus_connection_close(b->conn);
			dbus_connection_unref(b->conn);
			b->conn = NULL;
		}
	} else {
		const char *starter = getenv("DBUS_STARTER_BUS_TYPE");
		DBusBusType type = cfg->bus == MK_BUS_SYSTEM ? DBUS_BUS_SYSTEM : DBUS_BUS_SESSION;

		/* started by D-Bus activation: answer on the bus that started us */
		if (starter && getenv("DBUS_STARTER_ADDRESS") &&
		    strcmp(starter, cfg->bus == MK_BUS_SYSTEM ? "system" : "session") == 0)
			type = DBUS_BUS_STARTER;
		b->conn = dbus_bus_get_private(type, &err);
	}
	if (!b->conn) {
		r = mk_error(-ECONNREFUSED, "cannot connect to the %s bus: %s",
			     cfg->bus == MK_BUS_SYSTEM    ? "system"
			     : cfg->bus == MK_BUS_ADDRESS ? "given"
							  : "session",
			     err.message ? err.message : "unknown error");
		dbus_error_free(&err);
		mk_bus_free(b);
		return r;
	}
	dbus_connection_set_exit_on_disconnect(b->conn, FALSE);
	if (dbus_bus_name_has_owner(b->conn, MK_BUS_NAME, NULL)) {
		mk_bus_free(b);
		return mk_error(-EEXIST, "another mlskeyd already owns %s on this bus", MK_BUS_NAME);
	}
	/* before the agent exists: the watcher hooks into the token layer it opens */
	{
		mk_tokens_settings ts;

		mk_tokens_settings_from_config(b->cfg, &ts);
		r = mk_tokens_new(&ts, &b->tokens);
		if (r < 0) {
			mk_bus_free(b);
			return r;
		}
	}
	*ret = b;
	return 0;
}

static int setup(mk_bus *b, const sigset_t *stop)
{
	static const DBusObjectPathVTable object_vtable = { .message_function = on_object };
	static const DBusObjectPathVTable fallback_vtable = { .message_function = on_fallback };
	DBusError err;
	int r;

	r = build_introspect(b);
	if (r < 0)
		return r;
	b->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (b->efd < 0)
		return -errno;
	b->sfd = signalfd(-1, stop, SFD_CLOEXEC | SFD_NONBLOCK);
	if (b->sfd < 0)
		return -errno;
	r = mk_workers_new(b->cfg->workers, b->cfg->max_queue, &b->workers);
	if (r < 0)
		return r;
	mk_workers_set_spin(b->workers, b->cfg->worker_spin_us);
	mk_agent_set_notify(b->agent, tokens_changed, b);
	mk_agent_set_keys_notify(b->agent, keys_changed, b);
	r = mk_tokens_start(b->tokens, b->agent, tokens_event, answer_early, b);
	if (r < 0)
		return r;
	if (!dbus_connection_set_watch_functions(b->conn, add_watch, remove_watch, toggle_watch,
						 b, NULL) ||
	    !dbus_connection_set_timeout_functions(b->conn, add_timeout, remove_timeout,
						   toggle_timeout, b, NULL))
		return -ENOMEM;
	dbus_connection_set_wakeup_main_function(b->conn, wakeup_main, b, NULL);
	if (!dbus_connection_add_filter(b->conn, on_filter, b, NULL) ||
	    !dbus_connection_register_object_path(b->conn, MK_BUS_PATH, &object_vtable, b) ||
	    !dbus_connection_register_fallback(b->conn, "/", &fallback_vtable, b))
		return -ENOMEM;
	dbus_error_init(&err);
	dbus_bus_add_match(b->conn,
			   "type='signal',sender='" DBUS_SERVICE_DBUS "',interface='" DBUS_INTERFACE_DBUS
			   "',member='NameOwnerChanged'",
			   &err);
	if (dbus_error_is_set(&err)) {
		mk_log(LOG_WARNING, "cannot watch callers leave the bus: %s", err.message);
		dbus_error_free(&err);
	}
	watch_lock_signals(b);
	r = dbus_bus_request_name(b->conn, MK_BUS_NAME, DBUS_NAME_FLAG_DO_NOT_QUEUE, &err);
	if (r < 0) {
		r = mk_error(-EACCES, "cannot own %s on this bus: %s", MK_BUS_NAME, err.message);
		dbus_error_free(&err);
		return r;
	}
	if (r != DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER)
		return mk_error(-EEXIST, "another mlskeyd already owns %s on this bus", MK_BUS_NAME);
	/* once the name is ours (a second agent must not write a "start" record), before the first call */
	return mk_audit_open(b->cfg->audit_file, &b->audit);
}

static void dispatch_all(mk_bus *b)
{
	while (dbus_connection_get_dispatch_status(b->conn) == DBUS_DISPATCH_DATA_REMAINS)
		dbus_connection_dispatch(b->conn);
}

static bool watch_alive(mk_bus *b, DBusWatch *w)
{
	for (size_t i = 0; i < b->n_watches; i++)
		if (b->watches[i] == w)
			return true;
	return false;
}

static bool timeout_alive(mk_bus *b, DBusTimeout *t, tmo **ret)
{
	for (size_t i = 0; i < b->n_timeouts; i++)
		if (b->timeouts[i].t == t) {
			*ret = &b->timeouts[i];
			return true;
		}
	return false;
}

static int loop_once(mk_bus *b)
{
	size_t nw = b->n_watches, npfd = 0;
	_cleanup_free_ struct pollfd *pfd = calloc(nw + 2, sizeof(*pfd));
	_cleanup_free_ DBusWatch **pw = calloc(nw + 2, sizeof(*pw));
	long long due = -1, now;
	int timeout, n;

	if (!pfd || !pw)
		return -ENOMEM;
	pfd[npfd++] = (struct pollfd){ .fd = b->efd, .events = POLLIN };
	pfd[npfd++] = (struct pollfd){ .fd = b->sfd, .events = POLLIN };
	for (size_t i = 0; i < nw; i++) {
		DBusWatch *w = b->watches[i];
		unsigned f;

		if (!dbus_watch_get_enabled(w))
			continue;
		f = dbus_watch_get_flags(w);
		pw[npfd] = w;
		pfd[npfd++] = (struct pollfd){
			.fd = dbus_watch_get_unix_fd(w),
			.events = (short)((f & DBUS_WATCH_READABLE ? POLLIN : 0) |
					  (f & DBUS_WATCH_WRITABLE ? POLLOUT : 0)),
		};
	}
	for (size_t i = 0; i < b->n_timeouts; i++)
		if (b->timeouts[i].due_ms >= 0 && (due < 0 || b->timeouts[i].due_ms < due))
			due = b->timeouts[i].due_ms;
	now = now_ms();
	timeout = due < 0 ? -1 : due <= now ? 0 : (int)MK_MIN(due - now, 60000LL);
	n = poll(pfd, npfd, timeout);
	if (n < 0 && errno != EINTR)
		return -errno;
	if (n > 0 && (pfd[1].revents & POLLIN)) {
		struct signalfd_siginfo si;

		if (read(b->sfd, &si, sizeof(si)) == sizeof(si))
			mk_log(LOG_NOTICE, "signal %u: stopping", si.ssi_signo);
		b->quit = true;
	}
	for (size_t i = 2; n > 0 && i < npfd; i++) {
		unsigned f = 0;

		if (!pfd[i].revents || !watch_alive(b, pw[i]))
			continue;
		if (pfd[i].revents & POLLIN)
			f |= DBUS_WATCH_READABLE;
		if (pfd[i].revents & POLLOUT)
			f |= DBUS_WATCH_WRITABLE;
		if (pfd[i].revents & POLLERR)
			f |= DBUS_WATCH_ERROR;
		if (pfd[i].revents & POLLHUP)
			f |= DBUS_WATCH_HANGUP;
		dbus_watch_handle(pw[i], f);
	}
	now = now_ms();
	for (size_t i = 0; i < b->n_timeouts; i++) {
		tmo *t = &b->timeouts[i];
		DBusTimeout *dt = t->t;

		if (t->due_ms < 0 || t->due_ms > now)
			continue;
		dbus_timeout_handle(dt);
		/* handling may add or remove timeouts: find it again */
		if (timeout_alive(b, dt, &t))
			arm(t);
	}
	if (n > 0 && (pfd[0].revents & POLLIN))
		on_poke(b);
	dispatch_all(b);
	if (!dbus_connection_get_is_connected(b->conn) && !b->quit) {
		b->quit = true;
		b->quit_r = -ECONNRESET;
	}
	return 0;
}

int mk_bus_run(mk_bus *b, mk_agent *agent, const sigset_t *stop)
{
	int r;

	b->agent = agent;
	r = setup(b, stop);
	if (r < 0)
		return r;
	mk_log(LOG_NOTICE, "mlskeyd %s serving %s on %s (%u workers per token)", MK_VERSION,
	       MK_BUS_NAME, dbus_bus_get_unique_name(b->conn), b->cfg->workers);
	dispatch_all(b);
	while (!b->quit) {
		r = loop_once(b);
		if (r < 0) {
			mk_log(LOG_ERR, "event loop: %s", strerror(-r));
			b->quit_r = r;
			break;
		}
	}
	/* stop: let a new agent take the name, end dialogs, finish or answer every call */
	if (dbus_connection_get_is_connected(b->conn))
		dbus_bus_release_name(b->conn, MK_BUS_NAME, NULL);
	mk_agent_abort_dialogs(agent);
	unwatch_lock_signals(b);
	b->workers = mk_workers_free(b->workers);
	on_poke(b);
	if (dbus_connection_get_is_connected(b->conn))
		dbus_connection_flush(b->conn);
	mk_log(LOG_NOTICE, "stopped");
	return b->quit_r;
}

mk_bus *mk_bus_free(mk_bus *b)
{
	if (!b)
		return NULL;
	unwatch_lock_signals(b);
	b->workers = mk_workers_free(b->workers);
	b->tokens = mk_tokens_free(b->tokens); /* no call is left: the workers are done */
	b->audit = mk_audit_close(b->audit);    /* after the last call's record */
	if (b->conn) {
		dbus_connection_close(b->conn);
		dbus_connection_unref(b->conn);
	}
	peers_clear(b);
	free(b->watches);
	free(b->timeouts);
	free(b->introspect);
	if (b->efd >= 0)
		close(b->efd);
	if (b->sfd >= 0)
		close(b->sfd);
	free(b);
	return NULL;
}
