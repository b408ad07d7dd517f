/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <p11-kit/uri.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/check.h"
#include "agent/log.h"
#include "agent/mls.h"
#include "agent/ops-private.h"
#include "common/error.h"

int mk_agent_new(const mk_config *cfg, mk_agent **ret)
{
	mk_p11_options o = {
		.use_p11_kit = cfg->use_p11_kit,
		.module_paths = (const char *const *)cfg->modules,
		.max_sessions = MK_MAX(8u, cfg->workers + 2),
	};
	mk_agent *a;
	int r;

	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->cfg = cfg;
	pthread_mutex_init(&a->lock, NULL);
	pthread_mutex_init(&a->once, NULL);
	r = mk_p11_open(&o, &a->p11);
	if (r == 0)
		r = mk_login_start(a);
	if (r < 0) {
		mk_agent_free(a);
		return r;
	}
	*ret = a;
	return 0;
}

void mk_agent_set_notify(mk_agent *a, mk_agent_notify_fn fn, void *userdata)
{
	a->notify = fn;
	a->notify_ud = userdata;
}

void mk_agent_set_keys_notify(mk_agent *a, mk_agent_notify_fn fn, void *userdata)
{
	a->keys_notify = fn;
	a->keys_notify_ud = userdata;
}

static void cache_clear_locked(mk_agent *a)
{
	for (size_t i = 0; i < a->n_cache; i++) {
		free(a->cache[i].uri);
		mk_key_unref(a->cache[i].key);
	}
	free(a->cache);
	a->cache = NULL;
	a->n_cache = 0;
}

void mk_agent_cache_clear(mk_agent *a)
{
	pthread_mutex_lock(&a->lock);
	cache_clear_locked(a);
	pthread_mutex_unlock(&a->lock);
}

static void cache_drop(mk_agent *a, const char *uri)
{
	pthread_mutex_lock(&a->lock);
	for (size_t i = 0; i < a->n_cache; i++)
		if (strcmp(a->cache[i].uri, uri) == 0) {
			free(a->cache[i].uri);
			mk_key_unref(a->cache[i].key);
			a->cache[i] = a->cache[--a->n_cache];
			break;
		}
	pthread_mutex_unlock(&a->lock);
}

mk_agent *mk_agent_free(mk_agent *a)
{
	if (!a)
		return NULL;
	/* the thread first: it uses the token layer */
	mk_login_free(a);
	mk_agent_cache_clear(a);
	mk_agent_confirmations_forget(a, NULL);
	for (size_t i = 0; i < a->n_consumed; i++)
		free(a->consumed[i]);
	free(a->consumed);
	mk_p11_free(a->p11);
	free(a->token_state);
	pthread_mutex_destroy(&a->once);
	pthread_mutex_destroy(&a->lock);
	free(a);
	return NULL;
}

/*
 * A reference to the key uri names and the gate of its token: from the cache, else one
 * object search (and one gate lookup).
 */
static int key_get(mk_agent *a, const char *uri, bool *ret_cached, mk_key **ret, gate **ret_gate)
{
	mk_key *k = NULL;
	cached_key *grown;
	gate *g = NULL;
	int r;

	pthread_mutex_lock(&a->lock);
	for (size_t i = 0; i < a->n_cache; i++)
		if (strcmp(a->cache[i].uri, uri) == 0) {
			k = mk_key_ref(a->cache[i].key);
			g = a->cache[i].gate;
			break;
		}
	pthread_mutex_unlock(&a->lock);
	if (k) {
		*ret_cached = true;
		*ret = k;
		*ret_gate = g;
		return 0;
	}
	r = mk_p11_find_key(a->p11, uri, &k);
	if (r < 0)
		return r;
	g = mk_gate_get(a, mk_key_get_info(k)->token_uri);
	pthread_mutex_lock(&a->lock);
	for (size_t i = 0; i < a->n_cache; i++)
		if (strcmp(a->cache[i].uri, uri) == 0)
			goto out; /* another worker found it meanwhile: keep one entry */
	if (a->n_cache >= KEY_CACHE_MAX)
		cache_clear_locked(a);
	grown = realloc(a->cache, (a->n_cache + 1) * sizeof(*a->cache));
	if (grown) {
		a->cache = grown;
		a->cache[a->n_cache].uri = strdup(uri);
		a->cache[a->n_cache].gate = g;
		if (a->cache[a->n_cache].uri)
			a->cache[a->n_cache++].key = mk_key_ref(k);
	}
	/* no memory for the cache only costs a search next time */
out:
	pthread_mutex_unlock(&a->lock);
	*ret_cached = false;
	*ret = k;
	*ret_gate = g;
	return 0;
}

/* Compares the tokens with the last look and tells the bus when they differ. */
static void check_tokens(mk_agent *a, const mk_token_info *t, size_t n)
{
	char *state = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&state, &len);
	bool changed;

	if (!f)
		return;
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s|%d|%d\n", t[i].uri, t[i].present, t[i].pin_locked);
	if (fclose(f) != 0 || !state)
		return;
	pthread_mutex_lock(&a->lock);
	changed = a->token_state && strcmp(a->token_state, state) != 0;
	free(a->token_state);
	a->token_state = state;
	pthread_mutex_unlock(&a->lock);
	if (!changed)
		return;
	/* a token came or went: no cached key handle is to be trusted */
	mk_agent_cache_clear(a);
	if (a->notify)
		a->notify(a->notify_ud);
}

void mk_agent_refresh_tokens(mk_agent *a)
{
	mk_token_info *t = NULL;
	size_t n = 0;

	if (mk_p11_refresh(a->p11) < 0)
		return;
	if (mk_p11_list_tokens(a->p11, &t, &n) < 0)
		return;
	check_tokens(a, t, n);
	mk_token_info_array_free(t, n);
}

int mk_agent_token_get(mk_agent *a, const char *uri, mk_token_info *ret)
{
	_cleanup_free_ char *turi = NULL;
	int r;

	r = mk_uri_token_part(uri, &turi);
	if (r < 0)
		return r;
	r = mk_p11_get_token(a->p11, turi, ret);
	if (r == -ENODEV) {
		mk_agent_refresh_tokens(a);
		r = mk_p11_get_token(a->p11, turi, ret);
	}
	return r;
}

static const char *token_name(const mk_token_info *t)
{
	return t->label && t->label[0] ? t->label : "(no label)";
}

/* The token of a key that failed: is it gone? Then TokenAbsent, in words. */
static int token_gone(mk_agent *a, const char *uri, int r)
{
	mk_token_info t = { 0 };
	_cleanup_free_ char *turi = NULL;
	int q;

	mk_agent_refresh_tokens(a);
	if (mk_uri_token_part(uri, &turi) < 0)
		return r;
	q = mk_p11_get_token(a->p11, turi, &t);
	if (q == 0 && t.present) {
		mk_token_info_clear(&t);
		return r;
	}
	if (q == 0)
		r = mk_error(-ENOMEDIUM, "token \"%s\" was removed; insert it and retry",
			     token_name(&t));
	else
		r = mk_error(-ENOMEDIUM, "the token of this key was removed; insert it and retry");
	mk_token_info_clear(&t);
	return r;
}

void mk_agent_describe(char *buf, size_t n, const char *verb, const char *uri)
{
	_cleanup_free_ char *label = NULL;

	if (mk_uri_object_label(uri, &label) == 0 && label[0])
		snprintf(buf, n, "%s with key \"%.100s\"", verb, label);
	else
		snprintf(buf, n, "%s with a key", verb);
}

/* --- the policy (agent/policy.h) ---------------------------------------------------------- */

/* One use of a key by one call, as the policy sees it. */
typedef struct use {
	unsigned op;       /* MK_POLICY_* */
	const char *label; /* the MLS label, or NULL */
	bool confirmed;    /* the person allowed it in this call already */
} use;

static void confirmed_clear(confirmed *x)
{
	free(x->exe);
	free(x->key);
	free(x->token_uri);
	free(x->label);
}

void mk_agent_confirmations_forget(mk_agent *a, const char *token_uri)
{
	pthread_mutex_lock(&a->lock);
	for (size_t i = 0; i < a->n_confirmed;) {
		if (token_uri && strcmp(a->confirmed[i].token_uri, token_uri) != 0) {
			i++;
			continue;
		}
		confirmed_clear(&a->confirmed[i]);
		a->confirmed[i] = a->confirmed[--a->n_confirmed];
	}
	if (!a->n_confirmed) {
		free(a->confirmed);
		a->confirmed = NULL;
	}
	pthread_mutex_unlock(&a->lock);
}

/* What a confirmation is for. */
typedef struct ask_for {
	mk_agent *a;
	const mk_caller *c;
	const char *key, *token_uri; /* key: the key's URI, or the token's (GenerateKey) */
	const use *u;
} ask_for;

static bool confirmed_is(const confirmed *x, const ask_for *f)
{
	return x->pid == f->c->pid && x->start_time == f->c->start_time && x->op == f->u->op &&
	       !strcmp(x->exe, f->c->exe) && !strcmp(x->key, f->key) &&
	       (x->label ? f->u->label && !strcmp(x->label, f->u->label) : !f->u->label);
}

/* mk_login_confirm's `already`: was this allowed (confirm = first) since the last logout? */
static bool confirmed_has(void *userdata)
{
	ask_for *f = userdata;
	bool hit = false;

	pthread_mutex_lock(&f->a->lock);
	for (size_t i = 0; !hit && i < f->a->n_confirmed; i++)
		hit = confirmed_is(&f->a->confirmed[i], f);
	pthread_mutex_unlock(&f->a->lock);
	return hit;
}

/* Remembers an allowed use (confirm = first); without memory it is just asked again. */
static void confirmed_add(void *userdata)
{
	const ask_for *f = userdata;
	mk_agent *a = f->a;
	confirmed x = {
		.pid = f->c->pid,
		.start_time = f->c->start_time,
		.exe = strdup(f->c->exe),
		.key = strdup(f->key),
		.token_uri = strdup(f->token_uri),
		.op = f->u->op,
		.label = f->u->label ? strdup(f->u->label) : NULL,
	};
	confirmed *grown;

	if (!x.exe || !x.key || !x.token_uri || (f->u->label && !x.label)) {
		confirmed_clear(&x);
		return;
	}
	pthread_mutex_lock(&a->lock);
	grown = a->n_confirmed < KEY_CACHE_MAX
			? realloc(a->confirmed, (a->n_confirmed + 1) * sizeof(*grown))
			: NULL;
	if (grown) {
		a->confirmed = grown;
		a->confirmed[a->n_confirmed++] = x;
	}
	pthread_mutex_unlock(&a->lock);
	if (!grown)
		confirmed_clear(&x);
}

/* "sign an MLS KeyPackage", "sign with the label \"x\"", ... into buf. */
static void use_words(char *buf, size_t n, const use *u)
{
	const char *w = mk_policy_label_words(u->op, u->label);

	if (w)
		snprintf(buf, n, "%s", w);
	else if (u->op == MK_POLICY_SIGN)
		snprintf(buf, n, "sign with the label \"%.100s\"", u->label ? u->label : "");
	else if (u->op == MK_POLICY_DECRYPT)
		snprintf(buf, n, "decrypt with the label \"%.100s\"", u->label ? u->label : "");
	else if (u->op == MK_POLICY_HPKE_OPEN)
		snprintf(buf, n, "decrypt an HPKE message (HpkeOpen, no MLS label)");
	else if (u->op == MK_POLICY_GENERATE)
		snprintf(buf, n, "generate a new key");
	else if (u->op == MK_POLICY_KEYPACKAGE)
		snprintf(buf, n, "create an MLS KeyPackage (two new keys on the token, signed)");
	else if (u->op == MK_POLICY_CERTIFICATE)
		snprintf(buf, n, "store a certificate chain for the key");
	else
		snprintf(buf, n, "delete a key");
}

/* Asks the person whether f may go on; 0 or -EACCES / -ENOMEDIUM with a message. */
static int confirm(ask_for *f, const mk_key_info *k, mk_policy_confirm mode)
{
	mk_agent *a = f->a;
	const mk_caller *c = f->c;
	mk_token_info t = { 0 };
	char title[300], desc[1200], words[200];
	const char *exe = c->exe[0] ? c->exe : "an unknown program";
	const char *tok = "(unknown)";
	gate *g;
	int r;

	if (mode == MK_CONFIRM_FIRST && confirmed_has(f))
		return 0;
	g = mk_gate_get(a, f->token_uri);
	if (!g)
		return -ENOMEM;
	if (mk_p11_get_token(a->p11, f->token_uri, &t) == 0 && t.label && t.label[0])
		tok = t.label;
	use_words(words, sizeof(words), f->u);
	if (k) {
		const char *kl = k->label && k->label[0] ? k->label : "(no label)";

		snprintf(title, sizeof(title), "mlskey: allow the use of key \"%.100s\"?", kl);
		snprintf(desc, sizeof(desc),
			 "Allow %s (pid %d) to %s with '%s'?\n\nKey \"%s\" on token \"%s\".",
			 exe, (int)c->pid, words, kl, kl, tok);
	} else {
		snprintf(title, sizeof(title), "mlskey: allow a new key on token \"%.100s\"?", tok);
		snprintf(desc, sizeof(desc), "Allow %s (pid %d) to %s on token \"%s\"?", exe,
			 (int)c->pid, words, tok);
	}
	mk_log(LOG_INFO, "asking whether pid %d (%s) may %s (%s)", (int)c->pid, exe, words,
	       f->key);
	r = mk_login_confirm(a, g, title, desc, mode == MK_CONFIRM_FIRST ? confirmed_has : NULL,
			     mode == MK_CONFIRM_FIRST ? confirmed_add : NULL, f);
	if (r == -ECANCELED)
		r = mk_error(-EACCES, "the use was not allowed: the person at the desktop refused "
			     "to let %s %s (or the dialog was closed or timed out)", exe, words);
	mk_token_info_clear(&t);
	return r;
}

/*
 * The policy's decision on u by caller c with key k (NULL: not known yet, then only a
 * certain refusal counts) on token token_uri, and the confirmation it wants.
 */
static int policy_check(mk_agent *a, const mk_caller *c, use *u, const mk_key_info *k,
			const char *token_uri)
{
	mk_policy_request q = { c, u->op, u->label, k, token_uri };
	mk_policy_decision d;
	ask_for f = { a, c, k ? k->uri : token_uri, k ? k->token_uri : token_uri, u };
	int r;

	/* a step of an operation that was decided as a whole (mk_caller.granted) */
	if (u->op & c->granted)
		return 0;
	/* a refusal is logged with the call's result, like every error */
	r = mk_policy_decide(&a->cfg->policy, &q, &d);
	if (r < 0)
		return r;
	if (d.confirm == MK_CONFIRM_NEVER || d.tentative || u->confirmed || !f.key ||
	    !f.token_uri)
		return 0;
	r = confirm(&f, k, d.confirm);
	if (r == 0)
		u->confirmed = true;
	return r;
}

const char *mk_agent_key_reason(mk_agent *a, const mk_key_info *k)
{
	return mk_policy_key_reason(&a->cfg->policy, k);
}

/*
 * A key found while a Welcome used it up (single-use) can show the attributes of an object
 * half destroyed, which the policy refuses. Once that deletion is over (the `once` lock),
 * a key that is gone is NoSuchKey, not AccessDenied. Only on the path of a refusal.
 */
static int refused_key_gone(mk_agent *a, const char *uri, int r)
{
	_cleanup_(mk_key_unrefp) mk_key *k = NULL;
	char why[600];
	int q;

	snprintf(why, sizeof(why), "%s", mk_error_text(r));
	pthread_mutex_lock(&a->once);
	pthread_mutex_unlock(&a->once);
	q = mk_p11_find_key(a->p11, uri, &k);
	if (q == -ENOKEY)
		return q;
	return mk_error(r, "%s", why);
}

typedef int (*key_fn)(mk_key *k, void *userdata);

/*
 * Runs fn with the key uri names: from the cache, logging in once when the token asks
 * for it, and telling a removed token from other failures.
 */
static int with_key(mk_agent *a, const mk_caller *c, const char *uri, const char *verb,
		    use *u, key_fn fn, void *userdata)
{
	mk_call call = { .a = a, .c = c, .verb = verb, .uri = uri };
	long long t_call = c->t_call_ns ? c->t_call_ns : mk_agent_clock_ns();
	bool logged_in = false, searched_again = false;

	for (;;) {
		_cleanup_(mk_key_unrefp) mk_key *k = NULL;
		bool cached = false;
		gate *g = NULL;
		int r;

		mk_error_clear();
		r = key_get(a, uri, &cached, &k, &g);
		if (r == -ENODEV && !searched_again) {
			searched_again = true;
			mk_agent_refresh_tokens(a);
			continue;
		}
		/* the policy decides with the key's full info, before any use of it */
		if (r == 0 && u) {
			r = policy_check(a, c, u, mk_key_get_info(k), NULL);
			if (r == -EACCES && !cached)
				r = refused_key_gone(a, uri, r);
			if (r < 0)
				return r;
		}
		if (r == 0) {
			/* a key that wants the PIN for every use asks it through this call */
			mk_gate_enter(a, g);
			mk_p11_set_thread_auth(mk_login_context_pin, &call);
			r = fn(k, userdata);
			mk_p11_set_thread_auth(NULL, NULL);
			call.popup = mk_pinentry_popup_close(call.popup);
			mk_gate_leave(a, g);
		}
		if (r == -ENOMEDIUM || (cached && (r == -EIO || r == -ENOKEY || r == -ENODEV))) {
			cache_drop(a, uri);
			r = token_gone(a, uri, r);
			/* a stale handle of a present token: search once more */
			if (r != -ENOMEDIUM && r != -EIO && !searched_again) {
				searched_again = true;
				continue;
			}
			return r;
		}
		if (r != -ENOTCONN)
			return r;
		if (logged_in)
			return mk_error(-EACCES, "the token still asks for a login after a "
						 "successful one; lock it and retry");
		/* the key is hidden until login: refuse what no rule could allow before the PIN
		 * dialog; the full decision (and any confirmation) follows the login */
		if (u) {
			r = policy_check(a, c, u, NULL, NULL);
			if (r < 0)
				return r;
		}
		/* the dialog's words are only built when there is a dialog */
		char what[200];

		mk_agent_describe(what, sizeof(what), verb, uri);
		r = mk_login(a, c, uri, what, t_call);
		if (r < 0)
			return r;
		logged_in = true;
	}
}

int mk_agent_list_tokens(mk_agent *a, mk_token_info **ret, size_t *ret_n)
{
	mk_token_info *t = NULL;
	size_t n = 0;
	int r;

	(void)mk_p11_refresh(a->p11);
	r = mk_p11_list_tokens(a->p11, &t, &n);
	if (r < 0)
		return r;
	check_tokens(a, t, n);
	*ret = t;
	*ret_n = n;
	return 0;
}

int mk_agent_list_keys(mk_agent *a, mk_key_info **ret, size_t *ret_n)
{
	return mk_p11_list_keys(a->p11, NULL, ret, ret_n);
}

int mk_agent_generate(mk_agent *a, const mk_caller *c, const char *token_uri, mk_key_alg alg,
		      const char *label, unsigned flags, char **ret_uri)
{
	mk_token_info t = { 0 };
	use u = { MK_POLICY_GENERATE, NULL, false };
	unsigned p11_flags = 0;
	char what[200];
	gate *g;
	int r;

	r = mk_agent_token_get(a, token_uri, &t);
	if (r == -ENODEV)
		r = mk_error(-ENODEV, "no token matches %s; list tokens with 'mlskey tokens'",
			     token_uri);
	if (r < 0)
		return r;
	if (flags & ~MK_GENERATE_SINGLE_USE) {
		mk_token_info_clear(&t);
		return mk_error(-EINVAL, "unknown GenerateKey flags 0x%x", flags);
	}
	if ((flags & MK_GENERATE_SINGLE_USE) && mk_key_alg_is_signature(alg)) {
		mk_token_info_clear(&t);
		return mk_error(-EINVAL, "only hpke keys can be single-use, not a %s key",
				mk_key_alg_name(alg));
	}
	r = policy_check(a, c, &u, NULL, t.uri);
	if (r < 0) {
		mk_token_info_clear(&t);
		return r;
	}
	snprintf(what, sizeof(what), "generate a new %s key \"%.100s\"", mk_key_alg_name(alg),
		 label);
	if (flags & MK_GENERATE_SINGLE_USE)
		p11_flags |= MK_P11_GENERATE_SINGLE_USE;
	g = mk_gate_get(a, t.uri);
	mk_gate_enter(a, g);
	r = mk_p11_generate_key_flags(a->p11, t.uri, alg, label, p11_flags, ret_uri);
	if (r == -ENOTCONN) {
		r = mk_login(a, c, t.uri, what, c->t_call_ns ? c->t_call_ns : mk_agent_clock_ns());
		if (r == 0)
			r = mk_p11_generate_key_flags(a->p11, t.uri, alg, label, p11_flags,
						      ret_uri);
	}
	mk_gate_leave(a, g);
	mk_token_info_clear(&t);
	return r;
}

static int fn_noop(mk_key *k, void *userdata)
{
	(void)k;
	(void)userdata;
	return 0;
}

int mk_agent_authorize(mk_agent *a, const mk_caller *c, unsigned op, const char *key_uri,
		       const mk_key_info *k, const char *verb)
{
	use u = { op, NULL, false };

	if (k)
		return policy_check(a, c, &u, k, NULL);
	return with_key(a, c, key_uri, verb, &u, fn_noop, NULL);
}

int mk_agent_delete(mk_agent *a, const mk_caller *c, const char *key_uri)
{
	use u = { MK_POLICY_DELETE, NULL, false };
	char what[200];
	int r;

	/* the policy decides with the key's info when the key is there (a lone public
	 * object is judged by the caller and operation alone) */
	r = with_key(a, c, key_uri, "delete the key pair", &u, fn_noop, NULL);
	if (r == -ENOKEY)
		r = policy_check(a, c, &u, NULL, NULL);
	if (r < 0)
		return r;
	mk_agent_describe(what, sizeof(what), "delete the key pair", key_uri);
	r = mk_p11_delete_key(a->p11, key_uri);
	if (r == -ENOTCONN) {
		r = mk_login(a, c, key_uri, what, c->t_call_ns ? c->t_call_ns : mk_agent_clock_ns());
		if (r == 0)
			r = mk_p11_delete_key(a->p11, key_uri);
	}
	/* whatever happened, no cached reference may outlive the objects */
	mk_agent_cache_clear(a);
	return r;
}

static bool attr_matches(P11KitUri *u, CK_ATTRIBUTE_TYPE type, const void *v, size_t n)
{
	CK_ATTRIBUTE *at = p11_kit_uri_get_attribute(u, type);

	if (!at)
		return true;
	return at->ulValueLen == n && (n == 0 || memcmp(at->pValue, v, n) == 0);
}

/*
 * The listed key (as ListKeys sees it: no login) that uri names on its token, moved into
 * *ret (mk_key_info_clear). -ENOKEY when none is listed, -EINVAL when several match or
 * uri is malformed.
 */
static int key_from_list(mk_agent *a, const char *uri, mk_key_info *ret)
{
	_cleanup_free_ char *turi = NULL;
	mk_key_info *keys = NULL;
	size_t n = 0, hit = 0, hits = 0;
	P11KitUri *u;
	int r;

	r = mk_uri_token_part(uri, &turi);
	if (r < 0)
		return r;
	u = p11_kit_uri_new();
	if (!u)
		return -ENOMEM;
	if (p11_kit_uri_parse(uri, P11_KIT_URI_FOR_ANY, u) != P11_KIT_URI_OK) {
		p11_kit_uri_free(u);
		return mk_error(-EINVAL, "\"%.200s\" is no pkcs11: key URI", uri);
	}
	r = mk_p11_list_keys(a->p11, turi, &keys, &n);
	if (r == -ENODEV) {
		mk_agent_refresh_tokens(a);
		r = mk_p11_list_keys(a->p11, turi, &keys, &n);
	}
	for (size_t i = 0; r >= 0 && i < n; i++) {
		const char *l = keys[i].label ? keys[i].label : "";

		if (attr_matches(u, CKA_ID, keys[i].id, keys[i].id_len) &&
		    attr_matches(u, CKA_LABEL, l, strlen(l))) {
			hit = i;
			hits++;
		}
	}
	p11_kit_uri_free(u);
	if (r < 0)
		return r;
	if (hits == 1) {
		*ret = keys[hit];
		keys[hit] = (mk_key_info){ 0 };
	}
	mk_key_info_array_free(keys, n);
	if (hits > 1)
		return mk_error(-EINVAL, "several keys match \"%.200s\"; name the key by its id",
				uri);
	return hits == 1 ? 0 : -ENOKEY;
}

int mk_agent_key_info(mk_agent *a, const mk_caller *c, const char *uri, const char *what,
		      mk_key_info *ret)
{
	int r = key_from_list(a, uri, ret);

	if (r == -ENOKEY) {
		_cleanup_(mk_key_unrefp) mk_key *key = NULL;

		/* hidden until login, or not there: the token layer tells which */
		r = mk_p11_find_key(a->p11, uri, &key);
		if (r == -ENOTCONN)
			r = mk_login(a, c, uri, what,
				     c->t_call_ns ? c->t_call_ns : mk_agent_clock_ns());
		if (r == 0)
			r = key_from_list(a, uri, ret);
		if (r == -ENOKEY)
			r = mk_error(-ENOKEY, "no key matches \"%.200s\"; list the keys and check "
				     "the URI", uri);
	}
	return r;
}

/* The public key of the one listed key that uri names; -ENOKEY when it shows none. */
static int public_key_from_list(mk_agent *a, const char *uri, mk_bytes *ret)
{
	mk_key_info k = { 0 };
	int r = key_from_list(a, uri, &k);

	if (r == 0)
		r = k.public_key && k.public_key_len
			    ? mk_bytes_dup(k.public_key, k.public_key_len, ret)
			    : -ENOKEY;
	mk_key_info_clear(&k);
	return r;
}

static int fn_public_key(mk_key *k, void *userdata)
{
	const mk_key_info *i = mk_key_get_info(k);

	if (!i->public_key || !i->public_key_len)
		return mk_error(-EOPNOTSUPP, "the token does not show this key's public key");
	return mk_bytes_dup(i->public_key, i->public_key_len, userdata);
}

int mk_agent_public_key(mk_agent *a, const mk_caller *c, const char *key_uri, mk_bytes *ret)
{
	int r;

	/* the public object needs no PIN: only fall back to the private key if need be */
	r = public_key_from_list(a, key_uri, ret);
	if (r == 0 || r == -ENOMEM)
		return r;
	return with_key(a, c, key_uri, "read the public key", NULL, fn_public_key, ret);
}

typedef struct sign_args {
	uint16_t suite;
	const char *label;
	const uint8_t *content;
	size_t content_len;
	mk_bytes *ret;
} sign_args;

static int fn_sign(mk_key *k, void *userdata)
{
	sign_args *s = userdata;

	return mk_mls_sign_with_label(k, s->suite, s->label, s->content, s->content_len, s->ret);
}

int mk_agent_sign(mk_agent *a, const mk_caller *c, const char *key_uri, uint16_t suite,
		  const char *label, const uint8_t *content, size_t content_len, mk_bytes *ret_sig)
{
	sign_args s = { suite, label, content, content_len, ret_sig };
	use u = { MK_POLICY_SIGN, label, false };

	return with_key(a, c, key_uri, "sign (MLS SignWithLabel)", &u, fn_sign, &s);
}

typedef struct open_args {
	mk_agent *a;
	bool used_up; /* a single-use key was used for its Welcome and deleted */
	uint16_t suite, kdf, aead;
	const char *label;
	const uint8_t *context, *info, *aad, *enc, *ct;
	size_t context_len, info_len, aad_len, enc_len, ct_len;
	mk_bytes *ret;
} open_args;

static bool consumed_has(mk_agent *a, const char *uri)
{
	bool hit = false;

	pthread_mutex_lock(&a->lock);
	for (size_t i = 0; !hit && i < a->n_consumed; i++)
		hit = !strcmp(a->consumed[i], uri);
	pthread_mutex_unlock(&a->lock);
	return hit;
}

static void consumed_add(mk_agent *a, const char *uri)
{
	char *s = strdup(uri), **grown;

	if (!s)
		return; /* the key is gone from the token anyway: its handle fails */
	pthread_mutex_lock(&a->lock);
	grown = realloc(a->consumed, (a->n_consumed + 1) * sizeof(*grown));
	if (grown) {
		a->consumed = grown;
		a->consumed[a->n_consumed++] = s;
		s = NULL;
	}
	pthread_mutex_unlock(&a->lock);
	free(s);
}

/*
 * A Welcome with a single-use key: one at a time, and the key pair and its marker are
 * destroyed before the plaintext is given out; when they cannot be, it is not given out.
 */
static int decrypt_once(open_args *o, mk_key *k)
{
	const mk_key_info *i = mk_key_get_info(k);
	mk_agent *a = o->a;
	int r;

	pthread_mutex_lock(&a->once);
	if (consumed_has(a, i->uri)) {
		r = mk_error(-ENOKEY, "single-use key \"%s\" was used for a Welcome already and "
			     "is deleted; generate a new one", i->label ? i->label : "");
		goto out;
	}
	r = mk_mls_decrypt_with_label(k, o->suite, o->label, o->context, o->context_len, o->enc,
				      o->enc_len, o->ct, o->ct_len, o->ret);
	if (r < 0)
		goto out;
	r = mk_p11_delete_key(a->p11, i->uri);
	if (r < 0) {
		char why[300];

		snprintf(why, sizeof(why), "%s", mk_error_text(r));
		mk_bytes_clear(o->ret);
		r = mk_error(-EIO, "single-use key \"%s\" could not be deleted after its Welcome "
			     "(%s); the Welcome is not given out, retry", i->label ? i->label : "",
			     why);
		goto out;
	}
	consumed_add(a, i->uri);
	o->used_up = true;
	mk_log(LOG_NOTICE, "single-use key %s was used for its Welcome and deleted", i->uri);
out:
	pthread_mutex_unlock(&a->once);
	return r;
}

static int fn_decrypt(mk_key *k, void *userdata)
{
	open_args *o = userdata;

	if (mk_key_get_info(k)->single_use && !strcmp(o->label, "Welcome"))
		return decrypt_once(o, k);
	return mk_mls_decrypt_with_label(k, o->suite, o->label, o->context, o->context_len,
					 o->enc, o->enc_len, o->ct, o->ct_len, o->ret);
}

int mk_agent_decrypt(mk_agent *a, const mk_caller *c, const char *key_uri, uint16_t suite,
		     const char *label, const uint8_t *context, size_t context_len,
		     const uint8_t *kem_output, size_t kem_output_len, const uint8_t *ct,
		     size_t ct_len, mk_bytes *ret_pt)
{
	open_args o = {
		.a = a,
		.suite = suite,
		.label = label,
		.context = context,
		.context_len = context_len,
		.enc = kem_output,
		.enc_len = kem_output_len,
		.ct = ct,
		.ct_len = ct_len,
		.ret = ret_pt,
	};

	use u = { MK_POLICY_DECRYPT, label, false };
	int r;

	r = with_key(a, c, key_uri, "decrypt (MLS DecryptWithLabel)", &u, fn_decrypt, &o);
	if (o.used_up) {
		mk_agent_cache_clear(a);
		if (a->keys_notify)
			a->keys_notify(a->keys_notify_ud);
	}
	return r;
}

static int fn_hpke_open(mk_key *k, void *userdata)
{
	open_args *o = userdata;
	const mk_key_info *i = mk_key_get_info(k);
	int r;

	if (mk_key_alg_is_signature(i->alg) || i->alg == MK_ALG_NONE)
		return mk_error(-EOPNOTSUPP, "key \"%s\" is a %s key; HpkeOpen needs an hpke key",
				i->label ? i->label : "", mk_key_alg_name(i->alg));
	if (i->single_use)
		return mk_error(-EACCES, "key \"%s\" is a single-use key: HpkeOpen would open its "
				"Welcome without using it up; use DecryptWithLabel",
				i->label ? i->label : "");
	r = mk_check_point(i->alg, o->enc, o->enc_len);
	if (r < 0)
		return r;
	return mk_mls_hpke_open(k, o->kdf, o->aead, o->info, o->info_len, o->aad, o->aad_len,
				o->enc, o->enc_len, o->ct, o->ct_len, o->ret);
}

int mk_agent_hpke_open(mk_agent *a, const mk_caller *c, const char *key_uri, uint16_t kdf,
		       uint16_t aead, const uint8_t *info, size_t info_len, const uint8_t *aad,
		       size_t aad_len, const uint8_t *enc, size_t enc_len, const uint8_t *ct,
		       size_t ct_len, mk_bytes *ret_pt)
{
	open_args o = {
		.kdf = kdf,
		.aead = aead,
		.info = info,
		.info_len = info_len,
		.aad = aad,
		.aad_len = aad_len,
		.enc = enc,
		.enc_len = enc_len,
		.ct = ct,
		.ct_len = ct_len,
		.ret = ret_pt,
	};

	use u = { MK_POLICY_HPKE_OPEN, NULL, false };

	return with_key(a, c, key_uri, "decrypt (HPKE Open)", &u, fn_hpke_open, &o);
}

int mk_agent_lock(mk_agent *a, const char *token_uri)
{
	mk_token_info t = { 0 };
	int r;

	if (!token_uri[0]) {
		r = mk_p11_logout(a->p11, NULL);
		mk_login_forget(a, NULL);
		mk_agent_confirmations_forget(a, NULL);
	} else {
		r = mk_agent_token_get(a, token_uri, &t);
		if (r == 0) {
			r = mk_p11_logout(a->p11, t.uri);
			mk_login_forget(a, t.uri);
			mk_agent_confirmations_forget(a, t.uri);
		}
		mk_token_info_clear(&t);
	}
	/* the next operation finds its key again, after the next login */
	mk_agent_cache_clear(a);
	return r;
}
