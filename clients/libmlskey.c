/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libmlskey: org.mlskey.Agent1 over libdbus, one private connection per handle, blocking
 * calls. The software half (VerifyWithLabel, EncryptWithLabel) is the project's mk_crypto,
 * linked in statically and kept private by the version script (libmlskey.sym).
 */
#include <dbus/dbus.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"

#include "agent/keypackage.h"
#include "agent/mls.h"
#include "agent/suite.h"
#include "clients/mlskey.h"
#include "common/error.h"
#include "common/macros.h"
#include "common/secmem.h"

#define DEFAULT_TIMEOUT_MS 300000
#define CACHE_MAX 64
#define MAX_SUITES 16
#define LABEL_MAX 255

/* --- errors ------------------------------------------------------------------------------ */

static _Thread_local char err_name[128];
static _Thread_local char err_msg[1024];
static _Thread_local mlskey_error err_cur;

static void err_clear(void)
{
	err_name[0] = '\0';
	err_msg[0] = '\0';
	err_cur.code = 0;
}

/* Records the thread's error and returns r. name: a full D-Bus error name. */
_printf_(3, 4) static int err_set(int r, const char *name, const char *fmt, ...)
{
	va_list ap;

	snprintf(err_name, sizeof(err_name), "%s", name);
	va_start(ap, fmt);
	vsnprintf(err_msg, sizeof(err_msg), fmt, ap);
	va_end(ap);
	err_cur.code = r;
	return r;
}

/* Records an error of the mk_* layers (message from mk_error_text) under its agent name. */
static int err_from_mk(int r)
{
	char name[96];

	if (r == -ENOMEM)
		return err_set(r, DBUS_ERROR_NO_MEMORY, "out of memory");
	snprintf(name, sizeof(name), "org.mlskey.Error.%s", mk_error_name(r));
	return err_set(r, name, "%s", mk_error_text(r));
}

static int err_nomem(void)
{
	return err_set(-ENOMEM, DBUS_ERROR_NO_MEMORY, "out of memory");
}

_public_ const mlskey_error *mlskey_last_error(void)
{
	err_cur.name = err_name;
	err_cur.message = err_msg;
	return &err_cur;
}

static const struct {
	const char *name;
	int err;
} agent_errors[] = {
	{ "org.mlskey.Error.NoSuchKey", -ENOKEY },
	{ "org.mlskey.Error.NoSuchToken", -ENODEV },
	{ "org.mlskey.Error.TokenAbsent", -ENOMEDIUM },
	{ "org.mlskey.Error.Unsupported", -EOPNOTSUPP },
	{ "org.mlskey.Error.InvalidInput", -EINVAL },
	{ "org.mlskey.Error.PinIncorrect", -EKEYREJECTED },
	{ "org.mlskey.Error.PinLocked", -EKEYREVOKED },
	{ "org.mlskey.Error.Cancelled", -ECANCELED },
	{ "org.mlskey.Error.AccessDenied", -EACCES },
	{ "org.mlskey.Error.DecryptFailed", -EBADMSG },
	{ "org.mlskey.Error.TokenError", -EIO },
	{ "org.mlskey.Error.Busy", -EBUSY },
	/* The bus and libdbus: reaching the agent. */
	{ DBUS_ERROR_SERVICE_UNKNOWN, -ECONNREFUSED },
	{ DBUS_ERROR_NAME_HAS_NO_OWNER, -ECONNREFUSED },
	{ DBUS_ERROR_NO_SERVER, -ECONNREFUSED },
	{ DBUS_ERROR_FILE_NOT_FOUND, -ECONNREFUSED },
	{ DBUS_ERROR_NO_NETWORK, -ECONNREFUSED },
	{ DBUS_ERROR_SPAWN_EXEC_FAILED, -ECONNREFUSED },
	{ DBUS_ERROR_SPAWN_CHILD_EXITED, -ECONNREFUSED },
	{ DBUS_ERROR_SPAWN_CHILD_SIGNALED, -ECONNREFUSED },
	{ DBUS_ERROR_SPAWN_FAILED, -ECONNREFUSED },
	{ DBUS_ERROR_SPAWN_SERVICE_NOT_FOUND, -ECONNREFUSED },
	{ DBUS_ERROR_SPAWN_SERVICE_INVALID, -ECONNREFUSED },
	{ DBUS_ERROR_SPAWN_FILE_INVALID, -ECONNREFUSED },
	{ DBUS_ERROR_SPAWN_NO_MEMORY, -ECONNREFUSED },
	{ DBUS_ERROR_SPAWN_SETUP_FAILED, -ECONNREFUSED },
	{ DBUS_ERROR_SPAWN_CONFIG_INVALID, -ECONNREFUSED },
	{ DBUS_ERROR_SPAWN_PERMISSIONS_INVALID, -ECONNREFUSED },
	{ DBUS_ERROR_DISCONNECTED, -ECONNRESET },
	{ DBUS_ERROR_NO_REPLY, -ETIMEDOUT },
	{ DBUS_ERROR_TIMEOUT, -ETIMEDOUT },
	{ DBUS_ERROR_TIMED_OUT, -ETIMEDOUT },
	{ DBUS_ERROR_ACCESS_DENIED, -EACCES },
	{ DBUS_ERROR_AUTH_FAILED, -EACCES },
	{ DBUS_ERROR_LIMITS_EXCEEDED, -EBUSY },
	{ DBUS_ERROR_NO_MEMORY, -ENOMEM },
	{ DBUS_ERROR_BAD_ADDRESS, -EINVAL },
};

/* Translates a D-Bus error (name and message) into errno + the thread's error; returns it. */
static int err_from_dbus(const DBusError *e)
{
	int r = -EPROTO;

	for (size_t i = 0; i < ELEMENTSOF(agent_errors); i++)
		if (strcmp(e->name, agent_errors[i].name) == 0) {
			r = agent_errors[i].err;
			break;
		}
	switch (r) {
	case -ECONNREFUSED:
		return err_set(r, e->name, "the mlskey agent is not reachable: %s (is mlskeyd "
			       "running on this bus?)", e->message ? e->message : "");
	case -ECONNRESET:
		return err_set(r, e->name, "the connection to the bus was lost: %s",
			       e->message ? e->message : "");
	case -ETIMEDOUT:
		return err_set(r, e->name, "the mlskey agent did not answer in time: %s",
			       e->message ? e->message : "");
	default:
		return err_set(r, e->name, "%s", e->message ? e->message : e->name);
	}
}

/* --- suites and algorithms ---------------------------------------------------------------- */

static const struct {
	uint16_t suite;
	const char *sig, *kem;
	size_t sig_pub_len, kem_pub_len;
} suite_algs[] = {
	{ 1, "ed25519", "dhkem-x25519", 32, 32 },
	{ 2, "ecdsa-p256", "dhkem-p256", 65, 65 },
	{ 3, "ed25519", "dhkem-x25519", 32, 32 },
	{ 5, "ecdsa-p521", "dhkem-p521", 133, 133 },
	{ 7, "ecdsa-p384", "dhkem-p384", 97, 97 },
};

_public_ const char *mlskey_suite_algorithm(uint16_t suite, const char *purpose)
{
	for (size_t i = 0; i < ELEMENTSOF(suite_algs); i++) {
		if (suite_algs[i].suite != suite || !purpose)
			continue;
		if (strcmp(purpose, "signature") == 0)
			return suite_algs[i].sig;
		if (strcmp(purpose, "hpke") == 0)
			return suite_algs[i].kem;
	}
	return NULL;
}

/* The public key length of a key algorithm, or 0 if unknown. */
static size_t alg_pub_len(const char *alg)
{
	static const struct {
		const char *name;
		size_t len;
	} t[] = {
		{ "ecdsa-p256", 65 }, { "ecdsa-p384", 97 },   { "ecdsa-p521", 133 },
		{ "ed25519", 32 },    { "dhkem-p256", 65 },   { "dhkem-p384", 97 },
		{ "dhkem-p521", 133 }, { "dhkem-x25519", 32 },
	};

	for (size_t i = 0; alg && i < ELEMENTSOF(t); i++)
		if (strcmp(t[i].name, alg) == 0)
			return t[i].len;
	return 0;
}

static const char *alg_purpose(const char *alg)
{
	if (!alg_pub_len(alg))
		return NULL;
	return strncmp(alg, "dhkem-", 6) == 0 ? "hpke" : "signature";
}

/* --- the handle and its key cache --------------------------------------------------------- */

typedef struct key_entry {
	char *uri;
	char *algorithm; /* NULL when only GetPublicKey was asked */
	uint8_t *pub;
	size_t pub_len;
} key_entry;

struct mlskey_client {
	DBusConnection *conn;
	int timeout_ms;
	unsigned checks;
	key_entry cache[CACHE_MAX];
	size_t n_cache;
	size_t next_evict;
};

static void entry_clear(key_entry *e)
{
	free(e->uri);
	free(e->algorithm);
	free(e->pub);
	*e = (key_entry){ 0 };
}

static key_entry *cache_find(mlskey_client *c, const char *uri)
{
	for (size_t i = 0; i < c->n_cache; i++)
		if (strcmp(c->cache[i].uri, uri) == 0)
			return &c->cache[i];
	return NULL;
}

static void cache_drop(mlskey_client *c, const char *uri)
{
	key_entry *e = cache_find(c, uri);

	if (!e)
		return;
	entry_clear(e);
	*e = c->cache[--c->n_cache];
	c->cache[c->n_cache] = (key_entry){ 0 };
}

/* Stores (a copy of) uri's algorithm and public key, replacing an older entry. */
static int cache_put(mlskey_client *c, const char *uri, const char *alg, const uint8_t *pub,
		     size_t pub_len)
{
	key_entry n = { 0 }, *e;

	n.uri = strdup(uri);
	n.algorithm = alg ? strdup(alg) : NULL;
	n.pub = malloc(pub_len ? pub_len : 1);
	if (!n.uri || (alg && !n.algorithm) || !n.pub) {
		entry_clear(&n);
		return err_nomem();
	}
	memcpy(n.pub, pub, pub_len);
	n.pub_len = pub_len;

	e = cache_find(c, uri);
	if (!e) {
		if (c->n_cache < CACHE_MAX)
			e = &c->cache[c->n_cache++];
		else {
			e = &c->cache[c->next_evict];
			c->next_evict = (c->next_evict + 1) % CACHE_MAX;
		}
	}
	entry_clear(e);
	*e = n;
	return 0;
}

_public_ int mlskey_client_new(const char *address, mlskey_client **ret)
{
	DBusError e;
	DBusConnection *conn;
	mlskey_client *c;

	err_clear();
	if (!ret)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "ret is NULL");
	if (!dbus_threads_init_default())
		return err_nomem();
	c = calloc(1, sizeof(*c));
	if (!c)
		return err_nomem();
	c->timeout_ms = DEFAULT_TIMEOUT_MS;
	c->checks = MLSKEY_CHECK_ALL;

	dbus_error_init(&e);
	if (!address || strcmp(address, "session") == 0)
		conn = dbus_bus_get_private(DBUS_BUS_SESSION, &e);
	else if (strcmp(address, "system") == 0)
		conn = dbus_bus_get_private(DBUS_BUS_SYSTEM, &e);
	else {
		conn = dbus_connection_open_private(address, &e);
		if (conn) {
			/* A library must never exit its caller's process. */
			dbus_connection_set_exit_on_disconnect(conn, FALSE);
			if (!dbus_bus_register(conn, &e)) {
				dbus_connection_close(conn);
				dbus_connection_unref(conn);
				conn = NULL;
			}
		}
	}
	if (!conn) {
		int r = err_from_dbus(&e);

		if (r != -ENOMEM && r != -EINVAL) {
			r = -ECONNREFUSED;
			err_set(r, e.name, "cannot connect to the bus %s: %s", address ? address :
				"(session)", e.message);
		}
		dbus_error_free(&e);
		free(c);
		return r;
	}
	dbus_connection_set_exit_on_disconnect(conn, FALSE);
	c->conn = conn;
	*ret = c;
	return 0;
}

_public_ mlskey_client *mlskey_client_free(mlskey_client *c)
{
	if (!c)
		return NULL;
	if (c->conn) {
		dbus_connection_close(c->conn);
		dbus_connection_unref(c->conn);
	}
	for (size_t i = 0; i < c->n_cache; i++)
		entry_clear(&c->cache[i]);
	free(c);
	return NULL;
}

_public_ int mlskey_client_set_timeout(mlskey_client *c, int timeout_ms)
{
	err_clear();
	if (!c || timeout_ms < -1)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput",
			       "a timeout is -1 (forever) or a number of milliseconds");
	c->timeout_ms = timeout_ms < 0 ? DBUS_TIMEOUT_INFINITE : timeout_ms;
	return 0;
}

_public_ int mlskey_client_set_checks(mlskey_client *c, unsigned checks)
{
	err_clear();
	if (!c || (checks & ~MLSKEY_CHECK_ALL))
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "unknown check bits %#x",
			       checks & ~MLSKEY_CHECK_ALL);
	c->checks = checks;
	return 0;
}

_public_ void mlskey_free(void *p, size_t len)
{
	if (!p)
		return;
	mk_wipe(p, len);
	free(p);
}

_public_ const char *mlskey_version(void)
{
	return MK_VERSION;
}

/* --- calls -------------------------------------------------------------------------------- */

static void message_unrefp(DBusMessage **m)
{
	if (*m)
		dbus_message_unref(*m);
}
#define _cleanup_msg_ _cleanup_(message_unrefp)

static int new_call(const char *method, DBusMessage **ret)
{
	DBusMessage *m = dbus_message_new_method_call(MLSKEY_BUS_NAME, MLSKEY_OBJECT_PATH,
						      MLSKEY_INTERFACE, method);

	if (!m)
		return err_nomem();
	*ret = m;
	return 0;
}

/* Sends m and waits for the reply; translates a D-Bus error into errno + message. */
static int call(mlskey_client *c, DBusMessage *m, DBusMessage **ret_reply)
{
	DBusMessage *reply;
	DBusError e;
	int r;

	if (!dbus_connection_get_is_connected(c->conn))
		return err_set(-ECONNRESET, DBUS_ERROR_DISCONNECTED,
			       "the connection to the bus was lost; make a new client handle");
	dbus_error_init(&e);
	reply = dbus_connection_send_with_reply_and_block(c->conn, m, c->timeout_ms, &e);
	if (!reply) {
		r = err_from_dbus(&e);
		dbus_error_free(&e);
		return r;
	}
	*ret_reply = reply;
	return 0;
}

static int bad_reply(const char *method)
{
	return err_set(-EPROTO, "org.mlskey.Client.BadReply",
		       "the agent's reply to %s has an unexpected type; is it a newer or older "
		       "mlskeyd?", method);
}

/* Checks a string argument before libdbus sees it (it would refuse invalid UTF-8 loudly). */
static int check_string(const char *what, const char *s)
{
	if (!s)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "%s is missing", what);
	if (!dbus_validate_utf8(s, NULL))
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "%s is not valid UTF-8",
			       what);
	return 0;
}

static int check_bytes(const char *what, const uint8_t *p, size_t n)
{
	if (!p && n)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "%s is NULL", what);
	if (n > DBUS_MAXIMUM_ARRAY_LENGTH)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput",
			       "%s of %zu bytes is larger than D-Bus allows (%u)", what, n,
			       (unsigned)DBUS_MAXIMUM_ARRAY_LENGTH);
	return 0;
}

static int append_bytes(DBusMessageIter *it, const uint8_t *p, size_t n)
{
	static const uint8_t empty[1];
	DBusMessageIter sub;

	if (!p)
		p = empty;
	if (!dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, DBUS_TYPE_BYTE_AS_STRING, &sub))
		return err_nomem();
	if (!dbus_message_iter_append_fixed_array(&sub, DBUS_TYPE_BYTE, &p, (int)n)) {
		dbus_message_iter_abandon_container(it, &sub);
		return err_nomem();
	}
	if (!dbus_message_iter_close_container(it, &sub))
		return err_nomem();
	return 0;
}

static int append_basic(DBusMessageIter *it, int type, const void *v)
{
	return dbus_message_iter_append_basic(it, type, v) ? 0 : err_nomem();
}

static int append_string(DBusMessageIter *it, const char *s)
{
	return append_basic(it, DBUS_TYPE_STRING, &s);
}

/* Copies an `ay` at the iterator into *ret (malloc) / *ret_len. */
static int read_bytes(DBusMessageIter *it, uint8_t **ret, size_t *ret_len)
{
	DBusMessageIter sub;
	const uint8_t *p = NULL;
	uint8_t *out;
	int n = 0;

	if (dbus_message_iter_get_arg_type(it) != DBUS_TYPE_ARRAY ||
	    dbus_message_iter_get_element_type(it) != DBUS_TYPE_BYTE)
		return -EPROTO;
	dbus_message_iter_recurse(it, &sub);
	dbus_message_iter_get_fixed_array(&sub, &p, &n);
	out = malloc(n > 0 ? (size_t)n : 1);
	if (!out)
		return err_nomem();
	if (n > 0)
		memcpy(out, p, n);
	*ret = out;
	*ret_len = n;
	return 0;
}

/* A reply whose only value is an `ay`. */
static int reply_bytes(DBusMessage *reply, const char *method, uint8_t **ret, size_t *ret_len)
{
	DBusMessageIter it;
	int r;

	if (!dbus_message_iter_init(reply, &it) ||
	    strcmp(dbus_message_get_signature(reply), "ay") != 0)
		return bad_reply(method);
	r = read_bytes(&it, ret, ret_len);
	return r == -EPROTO ? bad_reply(method) : r;
}

_public_ int mlskey_ping(mlskey_client *c)
{
	_cleanup_msg_ DBusMessage *m = NULL, *reply = NULL;

	err_clear();
	if (!c)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "client is NULL");
	m = dbus_message_new_method_call(MLSKEY_BUS_NAME, MLSKEY_OBJECT_PATH,
					 DBUS_INTERFACE_PEER, "Ping");
	if (!m)
		return err_nomem();
	return call(c, m, &reply);
}

_public_ int mlskey_agent_version(mlskey_client *c, char **ret)
{
	_cleanup_msg_ DBusMessage *m = NULL, *reply = NULL;
	const char *iface = MLSKEY_INTERFACE, *prop = "Version", *v;
	DBusMessageIter it, var;
	char *s;
	int r;

	err_clear();
	if (!c || !ret)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "argument is NULL");
	m = dbus_message_new_method_call(MLSKEY_BUS_NAME, MLSKEY_OBJECT_PATH,
					 DBUS_INTERFACE_PROPERTIES, "Get");
	if (!m)
		return err_nomem();
	if (!dbus_message_append_args(m, DBUS_TYPE_STRING, &iface, DBUS_TYPE_STRING, &prop,
				      DBUS_TYPE_INVALID))
		return err_nomem();
	r = call(c, m, &reply);
	if (r < 0)
		return r;
	if (!dbus_message_iter_init(reply, &it) ||
	    dbus_message_iter_get_arg_type(&it) != DBUS_TYPE_VARIANT)
		return bad_reply("Get(Version)");
	dbus_message_iter_recurse(&it, &var);
	if (dbus_message_iter_get_arg_type(&var) != DBUS_TYPE_STRING)
		return bad_reply("Get(Version)");
	dbus_message_iter_get_basic(&var, &v);
	s = strdup(v);
	if (!s)
		return err_nomem();
	*ret = s;
	return 0;
}

/* --- listings ----------------------------------------------------------------------------- */

/* Reads the variant at `var` into *dst if it has the type; other types are ignored. */
static int dict_string(DBusMessageIter *var, char **dst)
{
	const char *v;
	char *s;

	if (dbus_message_iter_get_arg_type(var) != DBUS_TYPE_STRING)
		return 0;
	dbus_message_iter_get_basic(var, &v);
	s = strdup(v);
	if (!s)
		return err_nomem();
	free(*dst);
	*dst = s;
	return 0;
}

static void dict_bool(DBusMessageIter *var, bool *dst)
{
	dbus_bool_t b;

	if (dbus_message_iter_get_arg_type(var) != DBUS_TYPE_BOOLEAN)
		return;
	dbus_message_iter_get_basic(var, &b);
	*dst = b;
}

static void dict_int64(DBusMessageIter *var, int64_t *dst)
{
	dbus_int64_t v;

	if (dbus_message_iter_get_arg_type(var) != DBUS_TYPE_INT64)
		return;
	dbus_message_iter_get_basic(var, &v);
	*dst = v;
}

/* Empty strings for the fields an agent left out, so that callers never see NULL. */
static int fill_empty(char **fields[], size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!*fields[i] && !(*fields[i] = strdup("")))
			return err_nomem();
	return 0;
}

/* Calls a method returning a(sa{sv}); for each entry calls fn(uri, dict iterator, userdata). */
static int call_listing(mlskey_client *c, const char *method,
			int (*fn)(const char *uri, DBusMessageIter *dict, void *userdata),
			void *userdata)
{
	_cleanup_msg_ DBusMessage *m = NULL, *reply = NULL;
	DBusMessageIter it, arr;
	int r;

	r = new_call(method, &m);
	if (r < 0)
		return r;
	r = call(c, m, &reply);
	if (r < 0)
		return r;
	if (strcmp(dbus_message_get_signature(reply), "a(sa{sv})") != 0 ||
	    !dbus_message_iter_init(reply, &it))
		return bad_reply(method);
	dbus_message_iter_recurse(&it, &arr);
	while (dbus_message_iter_get_arg_type(&arr) == DBUS_TYPE_STRUCT) {
		DBusMessageIter st, dict;
		const char *uri;

		dbus_message_iter_recurse(&arr, &st);
		dbus_message_iter_get_basic(&st, &uri);
		dbus_message_iter_next(&st);
		dbus_message_iter_recurse(&st, &dict);
		r = fn(uri, &dict, userdata);
		if (r < 0)
			return r;
		dbus_message_iter_next(&arr);
	}
	return 0;
}

typedef struct token_list {
	mlskey_token *a;
	size_t n, cap;
} token_list;

_public_ void mlskey_tokens_free(mlskey_token *tokens, size_t n)
{
	for (size_t i = 0; tokens && i < n; i++) {
		free(tokens[i].uri);
		free(tokens[i].label);
		free(tokens[i].manufacturer);
		free(tokens[i].model);
		free(tokens[i].serial);
		free(tokens[i].module);
	}
	free(tokens);
}

static int grow(void **a, size_t *cap, size_t n, size_t size)
{
	void *p;
	size_t nc;

	if (n < *cap)
		return 0;
	nc = *cap ? *cap * 2 : 8;
	p = reallocarray(*a, nc, size);
	if (!p)
		return err_nomem();
	memset((char *)p + *cap * size, 0, (nc - *cap) * size);
	*a = p;
	*cap = nc;
	return 0;
}

/*
 * One entry of an a{sv} dict: the key and the variant's content, then moves on. False at
 * the dict's end. The key points into the message.
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

static int token_entry(const char *uri, DBusMessageIter *dict, void *userdata)
{
	token_list *l = userdata;
	mlskey_token *t;
	int r;

	r = grow((void **)&l->a, &l->cap, l->n, sizeof(*l->a));
	if (r < 0)
		return r;
	t = &l->a[l->n++];
	t->uri = strdup(uri);
	if (!t->uri)
		return err_nomem();
	for (;;) {
		DBusMessageIter var;
		const char *k;

		if (!dict_next(dict, &k, &var))
			break;
		r = 0;
		if (strcmp(k, "label") == 0)
			r = dict_string(&var, &t->label);
		else if (strcmp(k, "manufacturer") == 0)
			r = dict_string(&var, &t->manufacturer);
		else if (strcmp(k, "model") == 0)
			r = dict_string(&var, &t->model);
		else if (strcmp(k, "serial") == 0)
			r = dict_string(&var, &t->serial);
		else if (strcmp(k, "module") == 0)
			r = dict_string(&var, &t->module);
		else if (strcmp(k, "login_required") == 0)
			dict_bool(&var, &t->login_required);
		else if (strcmp(k, "write_protected") == 0)
			dict_bool(&var, &t->write_protected);
		else if (strcmp(k, "present") == 0)
			dict_bool(&var, &t->present);
		else if (strcmp(k, "logged_in") == 0)
			dict_bool(&var, &t->logged_in);
		else if (strcmp(k, "pin_count_low") == 0)
			dict_bool(&var, &t->pin_count_low);
		else if (strcmp(k, "pin_final_try") == 0)
			dict_bool(&var, &t->pin_final_try);
		else if (strcmp(k, "pin_locked") == 0)
			dict_bool(&var, &t->pin_locked);
		else if (strcmp(k, "protected_auth_path") == 0)
			dict_bool(&var, &t->protected_auth_path);
		if (r < 0)
			return r;
	}
	return fill_empty((char **[]){ &t->label, &t->manufacturer, &t->model, &t->serial,
				       &t->module },
			  5);
}

_public_ int mlskey_list_tokens(mlskey_client *c, mlskey_token **ret, size_t *ret_n)
{
	token_list l = { 0 };
	int r;

	err_clear();
	if (!c || !ret || !ret_n)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "argument is NULL");
	r = call_listing(c, "ListTokens", token_entry, &l);
	if (r < 0) {
		mlskey_tokens_free(l.a, l.n);
		return r;
	}
	*ret = l.a;
	*ret_n = l.n;
	return 0;
}

typedef struct key_list {
	mlskey_key *a;
	size_t n, cap;
} key_list;

_public_ void mlskey_keys_free(mlskey_key *keys, size_t n)
{
	for (size_t i = 0; keys && i < n; i++) {
		free(keys[i].uri);
		free(keys[i].label);
		free(keys[i].id);
		free(keys[i].token);
		free(keys[i].purpose);
		free(keys[i].algorithm);
		free(keys[i].cipher_suites);
		free(keys[i].public_key);
		free(keys[i].reason);
		free(keys[i].certificate_subject);
		free(keys[i].certificate_issuer);
	}
	free(keys);
}

static int dict_suites(DBusMessageIter *var, mlskey_key *k)
{
	DBusMessageIter sub;
	const uint16_t *p = NULL;
	uint16_t *a;
	int n = 0;

	if (dbus_message_iter_get_arg_type(var) != DBUS_TYPE_ARRAY ||
	    dbus_message_iter_get_element_type(var) != DBUS_TYPE_UINT16)
		return 0;
	dbus_message_iter_recurse(var, &sub);
	dbus_message_iter_get_fixed_array(&sub, &p, &n);
	a = malloc(n > 0 ? n * sizeof(*a) : 1);
	if (!a)
		return err_nomem();
	if (n > 0)
		memcpy(a, p, n * sizeof(*a));
	free(k->cipher_suites);
	k->cipher_suites = a;
	k->n_cipher_suites = n;
	return 0;
}

static int dict_bytes(DBusMessageIter *var, uint8_t **dst, size_t *dst_len)
{
	uint8_t *p;
	size_t n;
	int r;

	r = read_bytes(var, &p, &n);
	if (r == -EPROTO)
		return 0; /* another type: ignored like an unknown field */
	if (r < 0)
		return r;
	free(*dst);
	*dst = p;
	*dst_len = n;
	return 0;
}

static int key_entry_parse(const char *uri, DBusMessageIter *dict, void *userdata)
{
	key_list *l = userdata;
	mlskey_key *k;
	int r;

	r = grow((void **)&l->a, &l->cap, l->n, sizeof(*l->a));
	if (r < 0)
		return r;
	k = &l->a[l->n++];
	k->uri = strdup(uri);
	if (!k->uri)
		return err_nomem();
	for (;;) {
		DBusMessageIter var;
		const char *name;

		if (!dict_next(dict, &name, &var))
			break;
		r = 0;
		if (strcmp(name, "label") == 0)
			r = dict_string(&var, &k->label);
		else if (strcmp(name, "token") == 0)
			r = dict_string(&var, &k->token);
		else if (strcmp(name, "purpose") == 0)
			r = dict_string(&var, &k->purpose);
		else if (strcmp(name, "algorithm") == 0)
			r = dict_string(&var, &k->algorithm);
		else if (strcmp(name, "reason") == 0)
			r = dict_string(&var, &k->reason);
		else if (strcmp(name, "cipher_suites") == 0)
			r = dict_suites(&var, k);
		else if (strcmp(name, "public_key") == 0)
			r = dict_bytes(&var, &k->public_key, &k->public_key_len);
		else if (strcmp(name, "id") == 0)
			r = dict_bytes(&var, &k->id, &k->id_len);
		else if (strcmp(name, "usable") == 0)
			dict_bool(&var, &k->usable);
		else if (strcmp(name, "local") == 0)
			dict_bool(&var, &k->local);
		else if (strcmp(name, "never_extractable") == 0)
			dict_bool(&var, &k->never_extractable);
		else if (strcmp(name, "always_sensitive") == 0)
			dict_bool(&var, &k->always_sensitive);
		else if (strcmp(name, "always_authenticate") == 0)
			dict_bool(&var, &k->always_authenticate);
		else if (strcmp(name, "has_certificate") == 0)
			dict_bool(&var, &k->has_certificate);
		else if (strcmp(name, "certificate_subject") == 0)
			r = dict_string(&var, &k->certificate_subject);
		else if (strcmp(name, "certificate_issuer") == 0)
			r = dict_string(&var, &k->certificate_issuer);
		else if (strcmp(name, "certificate_not_before") == 0)
			dict_int64(&var, &k->certificate_not_before);
		else if (strcmp(name, "certificate_not_after") == 0)
			dict_int64(&var, &k->certificate_not_after);
		else if (strcmp(name, "single_use") == 0)
			dict_bool(&var, &k->single_use);
		if (r < 0)
			return r;
	}
	return fill_empty((char **[]){ &k->label, &k->token, &k->purpose, &k->algorithm,
				       &k->reason, &k->certificate_subject,
				       &k->certificate_issuer },
			  7);
}

/* ListKeys into *ret; the usable keys with a public key refresh the cache. */
static int list_keys(mlskey_client *c, mlskey_key **ret, size_t *ret_n)
{
	key_list l = { 0 };
	int r;

	r = call_listing(c, "ListKeys", key_entry_parse, &l);
	if (r < 0) {
		mlskey_keys_free(l.a, l.n);
		return r;
	}
	for (size_t i = 0; i < l.n; i++) {
		if (!l.a[i].public_key || !alg_pub_len(l.a[i].algorithm))
			continue;
		r = cache_put(c, l.a[i].uri, l.a[i].algorithm, l.a[i].public_key,
			      l.a[i].public_key_len);
		if (r < 0) {
			mlskey_keys_free(l.a, l.n);
			return r;
		}
	}
	*ret = l.a;
	*ret_n = l.n;
	return 0;
}

_public_ int mlskey_list_keys(mlskey_client *c, mlskey_key **ret, size_t *ret_n)
{
	err_clear();
	if (!c || !ret || !ret_n)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "argument is NULL");
	return list_keys(c, ret, ret_n);
}

/* --- keys --------------------------------------------------------------------------------- */

_public_ int mlskey_generate_key(mlskey_client *c, const char *token_uri, const char *purpose,
				 const char *algorithm, const char *label, char **ret_uri)
{
	return mlskey_generate_key_flags(c, token_uri, purpose, algorithm, label, 0, ret_uri);
}

/* Appends one a{sv} entry with a basic value of type (signature sig) at v. 0 or -ENOMEM. */
static int append_option(DBusMessageIter *d, const char *key, int type, const char *sig,
			 const void *v)
{
	DBusMessageIter e, var;

	if (!dbus_message_iter_open_container(d, DBUS_TYPE_DICT_ENTRY, NULL, &e) ||
	    !dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &key) ||
	    !dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, sig, &var) ||
	    !dbus_message_iter_append_basic(&var, type, v) ||
	    !dbus_message_iter_close_container(&e, &var) ||
	    !dbus_message_iter_close_container(d, &e))
		return err_nomem();
	return 0;
}

/* The a{sv} of a method with one boolean option: {name: true} when set, else empty. */
static int append_flag_options(DBusMessageIter *it, const char *name, bool set)
{
	DBusMessageIter opts;
	dbus_bool_t yes = TRUE;

	if (!dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "{sv}", &opts))
		return err_nomem();
	if (set && append_option(&opts, name, DBUS_TYPE_BOOLEAN, "b", &yes) < 0) {
		dbus_message_iter_abandon_container_if_open(it, &opts);
		return err_nomem();
	}
	if (!dbus_message_iter_close_container(it, &opts))
		return err_nomem();
	return 0;
}

_public_ int mlskey_generate_key_flags(mlskey_client *c, const char *token_uri,
				       const char *purpose, const char *algorithm,
				       const char *label, unsigned flags, char **ret_uri)
{
	_cleanup_msg_ DBusMessage *m = NULL, *reply = NULL;
	DBusMessageIter it;
	const char *uri;
	char *s;
	int r;

	err_clear();
	if (!c || !ret_uri)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "argument is NULL");
	if (flags & ~MLSKEY_GENERATE_SINGLE_USE)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput",
			       "unknown generate flags 0x%x (known: MLSKEY_GENERATE_SINGLE_USE)",
			       flags);
	if (!label)
		label = "";
	r = check_string("the token URI", token_uri);
	if (r == 0)
		r = check_string("the algorithm", algorithm);
	if (r == 0)
		r = check_string("the key label", label);
	if (r < 0)
		return r;
	if (!purpose)
		purpose = alg_purpose(algorithm);
	if (!purpose)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput",
			       "unknown key algorithm \"%s\" (ecdsa-p256, ecdsa-p384, ecdsa-p521, "
			       "ed25519, dhkem-p256, dhkem-p384, dhkem-p521, dhkem-x25519)",
			       algorithm);
	r = check_string("the purpose", purpose);
	if (r < 0)
		return r;

	r = new_call("GenerateKey", &m);
	if (r < 0)
		return r;
	dbus_message_iter_init_append(m, &it);
	if ((r = append_string(&it, token_uri)) < 0 || (r = append_string(&it, purpose)) < 0 ||
	    (r = append_string(&it, algorithm)) < 0 || (r = append_string(&it, label)) < 0)
		return r;
	r = append_flag_options(&it, "single_use", flags & MLSKEY_GENERATE_SINGLE_USE);
	if (r < 0)
		return r;
	r = call(c, m, &reply);
	if (r < 0)
		return r;
	if (!dbus_message_get_args(reply, NULL, DBUS_TYPE_STRING, &uri, DBUS_TYPE_INVALID))
		return bad_reply("GenerateKey");
	s = strdup(uri);
	if (!s)
		return err_nomem();
	*ret_uri = s;
	return 0;
}

/* A method with string arguments only and no reply values. */
static int call_strings(mlskey_client *c, const char *method, const char *what, const char *arg)
{
	_cleanup_msg_ DBusMessage *m = NULL, *reply = NULL;
	DBusMessageIter it;
	int r;

	r = check_string(what, arg);
	if (r < 0)
		return r;
	r = new_call(method, &m);
	if (r < 0)
		return r;
	dbus_message_iter_init_append(m, &it);
	r = append_string(&it, arg);
	if (r < 0)
		return r;
	return call(c, m, &reply);
}

_public_ int mlskey_delete_key(mlskey_client *c, const char *key_uri)
{
	int r;

	err_clear();
	if (!c)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "client is NULL");
	r = call_strings(c, "DeleteKey", "the key URI", key_uri);
	if (r == 0)
		cache_drop(c, key_uri);
	return r;
}

_public_ int mlskey_lock(mlskey_client *c, const char *token_uri)
{
	err_clear();
	if (!c)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "client is NULL");
	return call_strings(c, "Lock", "the token URI", token_uri ? token_uri : "");
}

/* GetPublicKey on the agent, into the cache (algorithm unknown unless already cached). */
static int fetch_public_key(mlskey_client *c, const char *uri, key_entry **ret)
{
	_cleanup_msg_ DBusMessage *m = NULL, *reply = NULL;
	_cleanup_free_ char *alg = NULL;
	DBusMessageIter it;
	key_entry *e;
	uint8_t *p = NULL;
	size_t n = 0;
	int r;

	r = check_string("the key URI", uri);
	if (r < 0)
		return r;
	r = new_call("GetPublicKey", &m);
	if (r < 0)
		return r;
	dbus_message_iter_init_append(m, &it);
	r = append_string(&it, uri);
	if (r < 0)
		return r;
	r = call(c, m, &reply);
	if (r < 0)
		return r;
	r = reply_bytes(reply, "GetPublicKey", &p, &n);
	if (r < 0)
		return r;
	e = cache_find(c, uri);
	if (e && e->algorithm && !(alg = strdup(e->algorithm))) {
		free(p);
		return err_nomem();
	}
	r = cache_put(c, uri, alg, p, n);
	free(p);
	if (r < 0)
		return r;
	*ret = cache_find(c, uri);
	return 0;
}

/*
 * What the handle knows of a key: from the cache, else from ListKeys (algorithm and public
 * key of every key at once), else (a URI that names the key differently from the listing)
 * from GetPublicKey.
 */
static int key_lookup(mlskey_client *c, const char *uri, key_entry **ret)
{
	mlskey_key *keys = NULL;
	size_t n = 0;
	key_entry *e;
	int r;

	r = check_string("the key URI", uri);
	if (r < 0)
		return r;
	e = cache_find(c, uri);
	if (e) {
		*ret = e;
		return 0;
	}
	r = list_keys(c, &keys, &n);
	mlskey_keys_free(keys, n);
	if (r < 0 && r != -EPROTO && r != -EIO && r != -ENOMEDIUM)
		return r;
	e = cache_find(c, uri);
	if (e) {
		*ret = e;
		return 0;
	}
	return fetch_public_key(c, uri, ret);
}

_public_ int mlskey_get_public_key(mlskey_client *c, const char *key_uri, uint8_t **ret,
				   size_t *ret_len)
{
	key_entry *e;
	uint8_t *p;
	int r;

	err_clear();
	if (!c || !ret || !ret_len)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "argument is NULL");
	e = cache_find(c, key_uri ? key_uri : "");
	if (!e) {
		r = fetch_public_key(c, key_uri, &e);
		if (r < 0)
			return r;
	}
	p = malloc(e->pub_len ? e->pub_len : 1);
	if (!p)
		return err_nomem();
	memcpy(p, e->pub, e->pub_len);
	*ret = p;
	*ret_len = e->pub_len;
	return 0;
}

/* --- credentials ------------------------------------------------------------------------- */

_public_ void mlskey_credential_free(mlskey_credential *cred)
{
	if (!cred)
		return;
	for (size_t i = 0; cred->certificates && i < cred->n_certificates; i++)
		free(cred->certificates[i]);
	free(cred->certificates);
	free(cred->certificate_lens);
	free(cred);
}

/* The (qaay) reply of GetCredential into a new credential. */
static int credential_parse(DBusMessage *reply, mlskey_credential **ret)
{
	DBusMessageIter it, list;
	mlskey_credential *cr;
	dbus_uint16_t type;
	size_t cap = 0, cap_lens = 0;
	int r = 0;

	if (!dbus_message_iter_init(reply, &it) ||
	    strcmp(dbus_message_get_signature(reply), "qaay") != 0)
		return bad_reply("GetCredential");
	dbus_message_iter_get_basic(&it, &type);
	dbus_message_iter_next(&it);
	cr = calloc(1, sizeof(*cr));
	if (!cr)
		return err_nomem();
	cr->credential_type = type;
	dbus_message_iter_recurse(&it, &list);
	while (r == 0 && dbus_message_iter_get_arg_type(&list) == DBUS_TYPE_ARRAY) {
		size_t n = cr->n_certificates;

		r = grow((void **)&cr->certificates, &cap, n, sizeof(*cr->certificates));
		if (r == 0)
			r = grow((void **)&cr->certificate_lens, &cap_lens, n,
				 sizeof(*cr->certificate_lens));
		if (r == 0)
			r = read_bytes(&list, &cr->certificates[n], &cr->certificate_lens[n]);
		if (r == 0)
			cr->n_certificates++;
		dbus_message_iter_next(&list);
	}
	if (r == 0 && cr->n_certificates == 0)
		r = bad_reply("GetCredential");
	if (r < 0) {
		mlskey_credential_free(cr);
		return r == -EPROTO ? bad_reply("GetCredential") : r;
	}
	*ret = cr;
	return 0;
}

_public_ int mlskey_get_credential(mlskey_client *c, const char *key_uri, unsigned flags,
				   mlskey_credential **ret)
{
	_cleanup_msg_ DBusMessage *m = NULL, *reply = NULL;
	DBusMessageIter it;
	int r;

	err_clear();
	if (!c || !ret)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "argument is NULL");
	if (flags & ~MLSKEY_CREDENTIAL_ALLOW_EXPIRED)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput",
			       "unknown flags 0x%x; the one flag is MLSKEY_CREDENTIAL_ALLOW_EXPIRED",
			       flags & ~MLSKEY_CREDENTIAL_ALLOW_EXPIRED);
	r = check_string("the key URI", key_uri);
	if (r < 0)
		return r;
	r = new_call("GetCredential", &m);
	if (r < 0)
		return r;
	dbus_message_iter_init_append(m, &it);
	r = append_string(&it, key_uri);
	if (r < 0)
		return r;
	r = append_flag_options(&it, "allow_expired", flags & MLSKEY_CREDENTIAL_ALLOW_EXPIRED);
	if (r < 0)
		return r;
	r = call(c, m, &reply);
	if (r < 0)
		return r;
	return credential_parse(reply, ret);
}

_public_ int mlskey_import_certificates(mlskey_client *c, const char *key_uri,
				       const uint8_t *const *certs, const size_t *lens, size_t n)
{
	_cleanup_msg_ DBusMessage *m = NULL, *reply = NULL;
	DBusMessageIter it, list;
	int r;

	err_clear();
	if (!c || (n && (!certs || !lens)))
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "argument is NULL");
	if (n == 0 || n > 10)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput",
			       "%zu certificates given; give 1 to 10, the key's certificate first",
			       n);
	r = check_string("the key URI", key_uri);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		r = check_bytes("a certificate", certs[i], lens[i]);
		if (r < 0)
			return r;
	}
	r = new_call("ImportCertificates", &m);
	if (r < 0)
		return r;
	dbus_message_iter_init_append(m, &it);
	r = append_string(&it, key_uri);
	if (r < 0)
		return r;
	if (!dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "ay", &list))
		return err_nomem();
	for (size_t i = 0; r == 0 && i < n; i++)
		r = append_bytes(&list, certs[i], lens[i]);
	if (r < 0) {
		dbus_message_iter_abandon_container(&it, &list);
		return r;
	}
	if (!dbus_message_iter_close_container(&it, &list))
		return err_nomem();
	return call(c, m, &reply);
}

/* --- checks ------------------------------------------------------------------------------- */

static int check_label(const char *label)
{
	int r = check_string("the MLS label", label);

	if (r < 0)
		return r;
	if (strlen(label) > LABEL_MAX)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput",
			       "the MLS label is %zu bytes long; at most %d are allowed",
			       strlen(label), LABEL_MAX);
	return 0;
}

/*
 * The suite must be known and the key must be the suite's algorithm for purpose. When the
 * agent's listing did not name the key (so its algorithm is unknown), its public key length
 * must at least be the suite's.
 */
static int check_fit(const key_entry *e, const char *uri, uint16_t suite, const char *purpose)
{
	const char *want = mlskey_suite_algorithm(suite, purpose);

	if (!want)
		return err_set(suite == 4 || suite == 6 ? -EOPNOTSUPP : -EINVAL,
			       suite == 4 || suite == 6 ? "org.mlskey.Error.Unsupported" :
			       "org.mlskey.Error.InvalidInput",
			       "MLS cipher suite %u is %s; mlskey supports 1, 2, 3, 5 and 7", suite,
			       suite == 4 || suite == 6 ? "not supported (X448/Ed448)" :
			       "not an assigned suite");
	if (e->algorithm && strcmp(e->algorithm, want) != 0)
		return err_set(-EOPNOTSUPP, "org.mlskey.Error.Unsupported",
			       "key %s is %s, but %s with suite %u needs a %s key; pick a key "
			       "that fits the suite (mlskey keys)", uri, e->algorithm,
			       strcmp(purpose, "hpke") == 0 ? "decryption" : "signing", suite,
			       want);
	if (!e->algorithm && e->pub_len != alg_pub_len(want))
		return err_set(-EOPNOTSUPP, "org.mlskey.Error.Unsupported",
			       "key %s has a %zu-byte public key, not a %s key as suite %u needs",
			       uri, e->pub_len, want, suite);
	return 0;
}

/* --- operations --------------------------------------------------------------------------- */

static int verify_cached(mlskey_client *c, const char *uri, uint16_t suite, const char *label,
			 const uint8_t *content, size_t content_len, const uint8_t *sig,
			 size_t sig_len)
{
	key_entry *e = cache_find(c, uri);
	int r = -EBADMSG;

	if (e)
		r = mk_mls_verify_with_label(suite, e->pub, e->pub_len, label, content,
					     content_len, sig, sig_len);
	if (r == 0)
		return 0;
	/* A stale cache entry is the innocent explanation: ask once more, then judge. */
	cache_drop(c, uri);
	r = fetch_public_key(c, uri, &e);
	if (r < 0)
		return r;
	r = mk_mls_verify_with_label(suite, e->pub, e->pub_len, label, content, content_len, sig,
				     sig_len);
	if (r < 0)
		return err_set(-EPROTO, "org.mlskey.Client.SignatureInvalid",
			       "the agent returned a signature from %s that does not verify under "
			       "the key's public key (%s); it was not used. The token or the agent "
			       "is faulty", uri, mk_error_text(r));
	return 0;
}

_public_ int mlskey_sign_with_label(mlskey_client *c, const char *key_uri, uint16_t suite,
				    const char *label, const uint8_t *content,
				    size_t content_len, uint8_t **ret_sig, size_t *ret_sig_len)
{
	_cleanup_msg_ DBusMessage *m = NULL, *reply = NULL;
	DBusMessageIter it;
	key_entry *e;
	uint8_t *sig = NULL;
	size_t sig_len = 0;
	int r;

	err_clear();
	if (!c || !ret_sig || !ret_sig_len)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "argument is NULL");
	r = check_string("the key URI", key_uri);
	if (r == 0)
		r = check_string("the MLS label", label);
	if (r == 0)
		r = check_bytes("the content", content, content_len);
	if (r < 0)
		return r;
	if (c->checks & MLSKEY_CHECK_INPUT) {
		r = check_label(label);
		if (r == 0)
			r = key_lookup(c, key_uri, &e);
		if (r == 0)
			r = check_fit(e, key_uri, suite, "signature");
		if (r < 0)
			return r;
	}

	r = new_call("SignWithLabel", &m);
	if (r < 0)
		return r;
	dbus_message_iter_init_append(m, &it);
	if ((r = append_string(&it, key_uri)) < 0 ||
	    (r = append_basic(&it, DBUS_TYPE_UINT16, &suite)) < 0 ||
	    (r = append_string(&it, label)) < 0 || (r = append_bytes(&it, content, content_len)) < 0)
		return r;
	r = call(c, m, &reply);
	if (r < 0)
		return r;
	r = reply_bytes(reply, "SignWithLabel", &sig, &sig_len);
	if (r < 0)
		return r;
	if (c->checks & MLSKEY_CHECK_SIGNATURE) {
		r = verify_cached(c, key_uri, suite, label, content, content_len, sig, sig_len);
		if (r < 0) {
			free(sig);
			return r;
		}
	}
	*ret_sig = sig;
	*ret_sig_len = sig_len;
	return 0;
}

_public_ int mlskey_decrypt_with_label(mlskey_client *c, const char *key_uri, uint16_t suite,
				       const char *label, const uint8_t *context,
				       size_t context_len, const uint8_t *kem_output,
				       size_t kem_output_len, const uint8_t *ct, size_t ct_len,
				       uint8_t **ret_pt, size_t *ret_pt_len)
{
	_cleanup_msg_ DBusMessage *m = NULL, *reply = NULL;
	DBusMessageIter it;
	key_entry *e;
	int r;

	err_clear();
	if (!c || !ret_pt || !ret_pt_len)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "argument is NULL");
	r = check_string("the key URI", key_uri);
	if (r == 0)
		r = check_string("the MLS label", label);
	if (r == 0)
		r = check_bytes("the context", context, context_len);
	if (r == 0)
		r = check_bytes("the kem_output", kem_output, kem_output_len);
	if (r == 0)
		r = check_bytes("the ciphertext", ct, ct_len);
	if (r < 0)
		return r;
	if (c->checks & MLSKEY_CHECK_INPUT) {
		const char *alg;

		r = check_label(label);
		if (r == 0)
			r = key_lookup(c, key_uri, &e);
		if (r == 0)
			r = check_fit(e, key_uri, suite, "hpke");
		if (r < 0)
			return r;
		alg = mlskey_suite_algorithm(suite, "hpke");
		if (kem_output_len != alg_pub_len(alg))
			return err_set(-EINVAL, "org.mlskey.Error.InvalidInput",
				       "the kem_output is %zu bytes long; suite %u (%s) needs %zu",
				       kem_output_len, suite, alg, alg_pub_len(alg));
		if (ct_len < 16)
			return err_set(-EINVAL, "org.mlskey.Error.InvalidInput",
				       "the ciphertext is %zu bytes long, shorter than its 16-byte "
				       "tag", ct_len);
	}

	r = new_call("DecryptWithLabel", &m);
	if (r < 0)
		return r;
	dbus_message_iter_init_append(m, &it);
	if ((r = append_string(&it, key_uri)) < 0 ||
	    (r = append_basic(&it, DBUS_TYPE_UINT16, &suite)) < 0 ||
	    (r = append_string(&it, label)) < 0 || (r = append_bytes(&it, context, context_len)) < 0 ||
	    (r = append_bytes(&it, kem_output, kem_output_len)) < 0 ||
	    (r = append_bytes(&it, ct, ct_len)) < 0)
		return r;
	r = call(c, m, &reply);
	if (r < 0)
		return r;
	return reply_bytes(reply, "DecryptWithLabel", ret_pt, ret_pt_len);
}

_public_ int mlskey_hpke_open(mlskey_client *c, const char *key_uri, uint16_t kdf,
			      uint16_t aead, const uint8_t *info, size_t info_len,
			      const uint8_t *aad, size_t aad_len, const uint8_t *enc,
			      size_t enc_len, const uint8_t *ct, size_t ct_len, uint8_t **ret_pt,
			      size_t *ret_pt_len)
{
	_cleanup_msg_ DBusMessage *m = NULL, *reply = NULL;
	DBusMessageIter it;
	key_entry *e;
	int r;

	err_clear();
	if (!c || !ret_pt || !ret_pt_len)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "argument is NULL");
	r = check_string("the key URI", key_uri);
	if (r == 0)
		r = check_bytes("the info", info, info_len);
	if (r == 0)
		r = check_bytes("the aad", aad, aad_len);
	if (r == 0)
		r = check_bytes("the enc", enc, enc_len);
	if (r == 0)
		r = check_bytes("the ciphertext", ct, ct_len);
	if (r < 0)
		return r;
	if (c->checks & MLSKEY_CHECK_INPUT) {
		if (kdf < 1 || kdf > 3)
			return err_set(-EINVAL, "org.mlskey.Error.InvalidInput",
				       "HPKE KDF %#06x is not assigned (1 HKDF-SHA256, 2 "
				       "HKDF-SHA384, 3 HKDF-SHA512)", kdf);
		if (aead == 0xffff)
			return err_set(-EOPNOTSUPP, "org.mlskey.Error.Unsupported",
				       "HPKE AEAD 0xffff is export-only: it cannot open a ciphertext");
		if (aead < 1 || aead > 3)
			return err_set(-EINVAL, "org.mlskey.Error.InvalidInput",
				       "HPKE AEAD %#06x is not assigned (1 AES-128-GCM, 2 "
				       "AES-256-GCM, 3 ChaCha20Poly1305)", aead);
		r = key_lookup(c, key_uri, &e);
		if (r < 0)
			return r;
		if (e->algorithm && strcmp(alg_purpose(e->algorithm), "hpke") != 0)
			return err_set(-EOPNOTSUPP, "org.mlskey.Error.Unsupported",
				       "key %s is a %s signature key, not an HPKE key", key_uri,
				       e->algorithm);
		if (enc_len != e->pub_len)
			return err_set(-EINVAL, "org.mlskey.Error.InvalidInput",
				       "enc is %zu bytes long; the key's KEM needs %zu", enc_len,
				       e->pub_len);
	}

	r = new_call("HpkeOpen", &m);
	if (r < 0)
		return r;
	dbus_message_iter_init_append(m, &it);
	if ((r = append_string(&it, key_uri)) < 0 ||
	    (r = append_basic(&it, DBUS_TYPE_UINT16, &kdf)) < 0 ||
	    (r = append_basic(&it, DBUS_TYPE_UINT16, &aead)) < 0 ||
	    (r = append_bytes(&it, info, info_len)) < 0 || (r = append_bytes(&it, aad, aad_len)) < 0 ||
	    (r = append_bytes(&it, enc, enc_len)) < 0 || (r = append_bytes(&it, ct, ct_len)) < 0)
		return r;
	r = call(c, m, &reply);
	if (r < 0)
		return r;
	return reply_bytes(reply, "HpkeOpen", ret_pt, ret_pt_len);
}

/* --- software operations ----------------------------------------------------------------- */

_public_ int mlskey_verify_with_label(uint16_t suite, const uint8_t *public_key,
				      size_t public_key_len, const char *label,
				      const uint8_t *content, size_t content_len, const uint8_t *sig,
				      size_t sig_len)
{
	int r;

	err_clear();
	mk_error_clear();
	if (!public_key || !sig || (!content && content_len))
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "argument is NULL");
	r = check_label(label);
	if (r < 0)
		return r;
	r = mk_mls_verify_with_label(suite, public_key, public_key_len, label,
				     content ? content : (const uint8_t *)"", content_len, sig,
				     sig_len);
	if (r == -EBADMSG)
		return err_set(r, "org.mlskey.Client.SignatureInvalid", "%s", mk_error_text(r));
	if (r < 0)
		return err_from_mk(r);
	return 0;
}

_public_ int mlskey_encrypt_with_label(uint16_t suite, const uint8_t *public_key,
				       size_t public_key_len, const char *label,
				       const uint8_t *context, size_t context_len, const uint8_t *pt,
				       size_t pt_len, uint8_t **ret_kem_output,
				       size_t *ret_kem_output_len, uint8_t **ret_ct,
				       size_t *ret_ct_len)
{
	_cleanup_bytes_ mk_bytes kem = MK_BYTES_NULL, ct = MK_BYTES_NULL;
	int r;

	err_clear();
	mk_error_clear();
	if (!public_key || (!context && context_len) || (!pt && pt_len) || !ret_kem_output ||
	    !ret_kem_output_len || !ret_ct || !ret_ct_len)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "argument is NULL");
	r = check_label(label);
	if (r < 0)
		return r;
	r = mk_mls_encrypt_with_label(suite, public_key, public_key_len, label,
				      context ? context : (const uint8_t *)"", context_len,
				      pt ? pt : (const uint8_t *)"", pt_len, &kem, &ct);
	if (r < 0)
		return err_from_mk(r);
	/* mk_bytes are malloc()ed: hand them over as they are. */
	*ret_kem_output = TAKE_PTR(kem.data);
	*ret_kem_output_len = kem.len;
	*ret_ct = TAKE_PTR(ct.data);
	*ret_ct_len = ct.len;
	kem.len = ct.len = 0;
	return 0;
}

/* --- KeyPackages --------------------------------------------------------------------------- */

_public_ void mlskey_key_package_clear(mlskey_key_package *kp)
{
	if (!kp)
		return;
	mlskey_free(kp->key_package, kp->key_package_len);
	mlskey_free(kp->ref, kp->ref_len);
	free(kp->init_key);
	free(kp->leaf_key);
	memset(kp, 0, sizeof(*kp));
}

/* An a(qay) entry. */
static int kp_dict_extensions(DBusMessageIter *d, const char *key, const mlskey_extension *x,
			      size_t n)
{
	DBusMessageIter e, var, arr;
	int r;

	if (!dbus_message_iter_open_container(d, DBUS_TYPE_DICT_ENTRY, NULL, &e) ||
	    !dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &key) ||
	    !dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, "a(qay)", &var) ||
	    !dbus_message_iter_open_container(&var, DBUS_TYPE_ARRAY, "(qay)", &arr))
		return err_nomem();
	for (size_t i = 0; i < n; i++) {
		DBusMessageIter st;

		r = check_bytes("extension data", x[i].data, x[i].data_len);
		if (r < 0)
			return r;
		if (!dbus_message_iter_open_container(&arr, DBUS_TYPE_STRUCT, NULL, &st) ||
		    !dbus_message_iter_append_basic(&st, DBUS_TYPE_UINT16, &x[i].type))
			return err_nomem();
		r = append_bytes(&st, x[i].data, x[i].data_len);
		if (r < 0)
			return r;
		if (!dbus_message_iter_close_container(&arr, &st))
			return err_nomem();
	}
	if (!dbus_message_iter_close_container(&var, &arr) ||
	    !dbus_message_iter_close_container(&e, &var) ||
	    !dbus_message_iter_close_container(d, &e))
		return err_nomem();
	return 0;
}

static int kp_append_options(DBusMessageIter *it, const mlskey_key_package_options *o)
{
	DBusMessageIter d;
	int r = 0;

	if (!dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, "{sv}", &d))
		return err_nomem();
	if (o && o->identity)
		r = append_option(&d, "identity", DBUS_TYPE_STRING, "s", &o->identity);
	if (r == 0 && o && o->not_before)
		r = append_option(&d, "not_before", DBUS_TYPE_UINT64, "t", &o->not_before);
	if (r == 0 && o && o->not_after)
		r = append_option(&d, "not_after", DBUS_TYPE_UINT64, "t", &o->not_after);
	if (r == 0 && o && o->lifetime_days)
		r = append_option(&d, "lifetime_days", DBUS_TYPE_UINT32, "u", &o->lifetime_days);
	if (r == 0 && o && o->n_extensions)
		r = kp_dict_extensions(&d, "extensions", o->extensions, o->n_extensions);
	if (r == 0 && o && o->n_leaf_extensions)
		r = kp_dict_extensions(&d, "leaf_extensions", o->leaf_extensions,
				       o->n_leaf_extensions);
	if (r == 0 && o && o->last_resort) {
		dbus_bool_t t = TRUE;

		r = append_option(&d, "last_resort", DBUS_TYPE_BOOLEAN, "b", &t);
	}
	if (r < 0) {
		dbus_message_iter_abandon_container(it, &d);
		return r;
	}
	return dbus_message_iter_close_container(it, &d) ? 0 : err_nomem();
}

/* The checks a receiver makes, on what the agent returned; -EPROTO when it fails. */
static int kp_check_reply(const mlskey_key_package *kp, uint16_t suite)
{
	mk_key_package *d = calloc(1, sizeof(*d));
	mk_kp_span inner;
	mk_bytes ref = MK_BYTES_NULL;
	uint64_t now = (uint64_t)time(NULL);
	int r;

	if (!d)
		return err_nomem();
	r = mk_kp_decode_message(kp->key_package, kp->key_package_len, d, &inner);
	if (r == 0 && d->cipher_suite != suite)
		r = mk_error(-EBADMSG, "it is for suite %u, not %u", d->cipher_suite, suite);
	if (r == 0)
		r = mk_kp_check(d, now < d->leaf.not_before ? d->leaf.not_before : now);
	if (r == 0)
		r = mk_kp_ref(suite, inner.p, inner.n, &ref);
	if (r == 0 && (ref.len != kp->ref_len || memcmp(ref.data, kp->ref, ref.len) != 0))
		r = mk_error(-EBADMSG, "its KeyPackageRef is not RefHash of it");
	mk_bytes_clear(&ref);
	free(d);
	if (r < 0)
		return err_set(-EPROTO, "org.mlskey.Client.KeyPackageInvalid",
			       "the agent returned a KeyPackage that a receiver would refuse (%s); "
			       "it was not used. The token or the agent is faulty",
			       mk_error_text(r));
	return 0;
}

_public_ int mlskey_create_key_package(mlskey_client *c, const char *signature_key_uri,
				       uint16_t suite, const mlskey_key_package_options *options,
				       mlskey_key_package *ret)
{
	_cleanup_msg_ DBusMessage *m = NULL, *reply = NULL;
	mlskey_key_package kp = { 0 };
	DBusMessageIter it;
	const char *s;
	key_entry *e;
	int r;

	err_clear();
	if (!c || !ret)
		return err_set(-EINVAL, "org.mlskey.Error.InvalidInput", "argument is NULL");
	r = check_string("the signature key URI", signature_key_uri);
	if (r == 0 && options && options->identity)
		r = check_string("the identity", options->identity);
	if (r < 0)
		return r;
	if (c->checks & MLSKEY_CHECK_INPUT) {
		r = key_lookup(c, signature_key_uri, &e);
		if (r == 0)
			r = check_fit(e, signature_key_uri, suite, "signature");
		if (r < 0)
			return r;
	}

	r = new_call("CreateKeyPackage", &m);
	if (r < 0)
		return r;
	dbus_message_iter_init_append(m, &it);
	if ((r = append_string(&it, signature_key_uri)) < 0 ||
	    (r = append_basic(&it, DBUS_TYPE_UINT16, &suite)) < 0 ||
	    (r = kp_append_options(&it, options)) < 0)
		return r;
	r = call(c, m, &reply);
	if (r < 0)
		return r;
	if (strcmp(dbus_message_get_signature(reply), "ayssay") != 0 ||
	    !dbus_message_iter_init(reply, &it))
		return bad_reply("CreateKeyPackage");
	r = read_bytes(&it, &kp.key_package, &kp.key_package_len);
	if (r == -EPROTO)
		r = bad_reply("CreateKeyPackage");
	if (r < 0)
		goto fail;
	dbus_message_iter_next(&it);
	dbus_message_iter_get_basic(&it, &s);
	kp.init_key = strdup(s);
	dbus_message_iter_next(&it);
	dbus_message_iter_get_basic(&it, &s);
	kp.leaf_key = strdup(s);
	dbus_message_iter_next(&it);
	if (!kp.init_key || !kp.leaf_key) {
		r = err_nomem();
		goto fail;
	}
	r = read_bytes(&it, &kp.ref, &kp.ref_len);
	if (r == -EPROTO)
		r = bad_reply("CreateKeyPackage");
	if (r < 0)
		goto fail;
	if (c->checks & MLSKEY_CHECK_SIGNATURE) {
		r = kp_check_reply(&kp, suite);
		if (r < 0)
			goto fail;
	}
	*ret = kp;
	return 0;
fail:
	mlskey_key_package_clear(&kp);
	return r;
}
