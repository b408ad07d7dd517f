/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The agent's PIN flow (issue 5). A PIN reaches a token only when a person typed it for
 * that very attempt (or the operator put it in the token's pin-file), lives in wiping
 * memory only until its one C_Login returns, and is never kept: the token stays logged in
 * until the agent logs out (idle timeout, Lock, session lock, suspend, removal).
 *
 * Per token one gate (ops-private.h): its dialog mutex makes one login at a time, and what
 * that login ended with is shared with every call that waited for it, so that twenty calls
 * give one dialog, and one Cancel cancels all twenty.
 */
#include <errno.h>
#include <fcntl.h>
#include <p11-kit/uri.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "agent/log.h"
#include "agent/ops-private.h"
#include "common/error.h"

long long mk_now_ms(void)
{
	return mk_agent_clock_ns() / 1000000;
}

long long mk_agent_clock_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static const char *token_name(const mk_token_info *t)
{
	return t->label && t->label[0] ? t->label : "(no label)";
}

static const char *token_serial(const mk_token_info *t)
{
	return t->serial && t->serial[0] ? t->serial : "?";
}

/* Does the pkcs11: URI pattern match the token whose own URI is token_uri? */
static bool uri_matches_token(P11KitUri *pattern, const char *token_uri)
{
	P11KitUri *t = p11_kit_uri_new();
	bool match = false;

	if (t && p11_kit_uri_parse(token_uri, P11_KIT_URI_FOR_TOKEN, t) == P11_KIT_URI_OK)
		match = p11_kit_uri_match_token_info(pattern, p11_kit_uri_get_token_info(t));
	p11_kit_uri_free(t);
	return match;
}

/* --- gates ------------------------------------------------------------------------------- */

gate *mk_gate_get(mk_agent *a, const char *token_uri)
{
	gate *g;

	pthread_mutex_lock(&a->lock);
	for (g = a->gates; g; g = g->next)
		if (strcmp(g->uri, token_uri) == 0)
			break;
	if (!g && (g = calloc(1, sizeof(*g)))) {
		g->uri = strdup(token_uri);
		g->cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (!g->uri || g->cancel_fd < 0) {
			if (g->cancel_fd >= 0)
				close(g->cancel_fd);
			free(g->uri);
			free(g);
			g = NULL;
		} else {
			pthread_mutex_init(&g->dialog, NULL);
			if (a->aborting)
				(void)eventfd_write(g->cancel_fd, 1);
			g->next = a->gates;
			a->gates = g;
		}
	}
	pthread_mutex_unlock(&a->lock);
	return g;
}

void mk_gate_enter(mk_agent *a, gate *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&a->lock);
	g->busy++;
	pthread_mutex_unlock(&a->lock);
}

void mk_gate_leave(mk_agent *a, gate *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&a->lock);
	g->busy--;
	g->last_use_ms = mk_now_ms();
	pthread_mutex_unlock(&a->lock);
}

void mk_login_forget(mk_agent *a, const char *token_uri)
{
	pthread_mutex_lock(&a->lock);
	for (gate *g = a->gates; g; g = g->next)
		if (!token_uri || strcmp(g->uri, token_uri) == 0)
			g->logged_in = false;
	pthread_mutex_unlock(&a->lock);
}

static void gate_logged_in(mk_agent *a, gate *g)
{
	pthread_mutex_lock(&a->lock);
	g->logged_in = true;
	g->last_use_ms = mk_now_ms();
	/* the idle timer starts: the agent thread may be sleeping without a due time */
	pthread_cond_signal(&a->cond);
	pthread_mutex_unlock(&a->lock);
}

void mk_agent_abort_dialogs(mk_agent *a)
{
	pthread_mutex_lock(&a->lock);
	a->aborting = true;
	for (gate *g = a->gates; g; g = g->next)
		if (eventfd_write(g->cancel_fd, 1) < 0)
			mk_log(LOG_WARNING, "cannot end the PIN dialog of token %s: %m", g->uri);
	pthread_mutex_unlock(&a->lock);
}

/* Before a dialog: forgets an old removal; -ECANCELED once the agent stops. */
static int dialog_begin(mk_agent *a, gate *g)
{
	eventfd_t v;

	pthread_mutex_lock(&a->lock);
	if (a->aborting) {
		pthread_mutex_unlock(&a->lock);
		return mk_error(-ECANCELED, "mlskeyd is stopping; retry");
	}
	(void)eventfd_read(g->cancel_fd, &v);
	g->gone = false;
	pthread_mutex_unlock(&a->lock);
	return 0;
}

/* A dialog ended with -ECANCELED: because its token was removed? Then TokenAbsent. */
static int dialog_cancelled(mk_agent *a, gate *g, const mk_token_info *t, int r)
{
	bool gone;

	pthread_mutex_lock(&a->lock);
	gone = g->gone;
	pthread_mutex_unlock(&a->lock);
	if (r == -ECANCELED && gone)
		return mk_error(-ENOMEDIUM, "token \"%s\" (serial %s) was removed while its PIN was "
				"asked; insert it and retry", token_name(t), token_serial(t));
	return r;
}

/* --- what the person is told ------------------------------------------------------------- */

static int pin_locked_error(const mk_token_info *t)
{
	return mk_error(-EKEYREVOKED,
			"the PIN of token \"%s\" (serial %s) is locked; unblock it with the PUK "
			"(or the SO PIN) using the token's own tools, or ask your administrator",
			token_name(t), token_serial(t));
}

/* After n wrong PINs: PinIncorrect with the tries left as the token tells them. */
static int pin_rejected(mk_agent *a, const mk_token_info *t, unsigned n)
{
	mk_token_info now = { 0 };
	const char *hint = "";
	char times[32] = "";

	if (mk_p11_get_token(a->p11, t->uri, &now) == 0) {
		bool locked = now.pin_locked;

		if (now.pin_final_try)
			hint = "; one try is left before the PIN locks";
		else if (now.pin_count_low)
			hint = "; few tries are left before the PIN locks";
		mk_token_info_clear(&now);
		if (locked)
			return pin_locked_error(t);
	}
	if (n > 1)
		snprintf(times, sizeof(times), " %u times", n);
	return mk_error(-EKEYREJECTED, "the PIN for token \"%s\" (serial %s) was incorrect%s%s; "
			"retry with the right PIN", token_name(t), token_serial(t), times, hint);
}

/* One question to the person. */
typedef struct ask_ctx {
	const mk_caller *c;
	const mk_token_info *t; /* with fresh flags */
	const char *what;       /* the operation, e.g. sign (...) with key "alice" */
	const char *key_label;  /* a context login: the key that wants the PIN; else NULL */
	unsigned attempt, attempts;
} ask_ctx;

/* "Requested by: ... Operation: ..." */
static void who_what(char *buf, size_t n, const ask_ctx *x)
{
	const mk_caller *c = x->c;

	snprintf(buf, n, "Requested by: %s (pid %d)\nOperation: %s",
		 c->exe[0] ? c->exe : "an unknown program", (int)c->pid, x->what);
}

/*
 * Asks the person for one PIN for token x->t: a yes/no question first when the token has
 * one try left; a notice (*ret_popup, *ret_pin NULL) instead of a PIN field for a PIN pad.
 * No dialog at all when the PIN is locked. Under the gate's dialog mutex.
 */
static int ask(mk_agent *a, gate *g, const ask_ctx *x, mk_secret **ret_pin,
	       mk_pinentry_popup **ret_popup)
{
	const mk_token_info *t = x->t;
	char title[300], desc[1600], who[700], err[200];
	const char *note = "";
	mk_pinentry_request req = {
		.program = a->cfg->pinentry,
		.title = title,
		.description = desc,
		.timeout_s = a->cfg->pinentry_timeout,
		.cancel_fd = g->cancel_fd,
	};
	int r;

	if (t->pin_locked)
		return pin_locked_error(t);
	r = dialog_begin(a, g);
	if (r < 0)
		return r;
	who_what(who, sizeof(who), x);
	if (x->key_label)
		snprintf(title, sizeof(title), "mlskey: PIN to use key \"%.100s\"", x->key_label);
	else
		snprintf(title, sizeof(title), "mlskey: PIN for token \"%.100s\"", token_name(t));

	if (t->pin_final_try) {
		snprintf(desc, sizeof(desc),
			 "Token \"%s\" (serial %s) has one PIN try left: if the next PIN is wrong, "
			 "the PIN is locked, and only the PUK or your administrator can unblock "
			 "it.\n\n%s\n\nDo you want to enter the PIN?",
			 token_name(t), token_serial(t), who);
		req.ok = "Enter the PIN";
		req.cancel = "Cancel";
		mk_log(LOG_NOTICE, "token \"%s\" has one PIN try left: asking pid %d whether to "
		       "use it", token_name(t), (int)x->c->pid);
		r = mk_pinentry_confirm(&req);
		if (r == -ECANCELED) {
			char why[300];

			snprintf(why, sizeof(why), "%s", mk_error_text(r));
			r = mk_error(-ECANCELED, "the last PIN try of token \"%s\" (serial %s) was "
				     "not used: %s", token_name(t), token_serial(t), why);
		}
		if (r < 0)
			return dialog_cancelled(a, g, t, r);
		req.ok = req.cancel = NULL;
		note = "\n\nThis is the last try before the PIN locks.";
	} else if (t->pin_count_low) {
		note = "\n\nThe token says few tries are left before the PIN locks.";
	}
	if (x->attempt > 1) {
		snprintf(err, sizeof(err), "Wrong PIN (attempt %u of %u)", x->attempt, x->attempts);
		req.error = err;
	}

	if (t->protected_auth_path) {
		snprintf(desc, sizeof(desc),
			 "Please enter the PIN of token \"%s\" (serial %s) on the reader's "
			 "keypad.%s%s\n\n%s",
			 token_name(t), token_serial(t), x->key_label ? " This key needs it for "
			 "every use." : "", note, who);
		mk_log(LOG_INFO, "token \"%s\" has a PIN pad: asking pid %d to type the PIN there "
		       "(attempt %u of %u)", token_name(t), (int)x->c->pid, x->attempt, x->attempts);
		/* without the notice the reader still asks: log it and go on */
		r = mk_pinentry_popup_open(&req, ret_popup);
		if (r < 0) {
			mk_log(LOG_WARNING, "cannot show the PIN pad notice: %s", mk_error_text(r));
			*ret_popup = NULL;
		}
		*ret_pin = NULL;
		return 0;
	}

	if (x->key_label)
		snprintf(desc, sizeof(desc),
			 "Key \"%s\" on token \"%s\" (serial %s) needs the PIN for every use."
			 "%s\n\n%s",
			 x->key_label, token_name(t), token_serial(t), note, who);
	else
		snprintf(desc, sizeof(desc),
			 "Please enter the PIN of token \"%s\" (serial %s).%s\n\n%s",
			 token_name(t), token_serial(t), note, who);
	req.prompt = "PIN:";
	mk_log(LOG_INFO, "asking for the PIN of token \"%s\" for pid %d: %s (attempt %u of %u)",
	       token_name(t), (int)x->c->pid, x->what, x->attempt, x->attempts);
	r = mk_pinentry_get_pin(&req, ret_pin);
	if (r < 0)
		return dialog_cancelled(a, g, t, r);
	return 0;
}

/* --- pin-files --------------------------------------------------------------------------- */

/* The first [token] entry of the configuration that matches the token t. */
static const mk_config_token *token_entry(mk_agent *a, const mk_token_info *t)
{
	for (size_t i = 0; i < a->cfg->n_tokens; i++) {
		const mk_config_token *e = &a->cfg->tokens[i];
		P11KitUri *u = p11_kit_uri_new();
		bool match;

		if (!u)
			return NULL;
		match = p11_kit_uri_parse(e->uri, P11_KIT_URI_FOR_TOKEN, u) == P11_KIT_URI_OK &&
			uri_matches_token(u, t->uri);
		p11_kit_uri_free(u);
		if (match)
			return e;
	}
	return NULL;
}

static bool same_file(const struct stat *x, const struct stat *y)
{
	return x->st_dev == y->st_dev && x->st_ino == y->st_ino && x->st_size == y->st_size &&
	       x->st_mtim.tv_sec == y->st_mtim.tv_sec && x->st_mtim.tv_nsec == y->st_mtim.tv_nsec &&
	       x->st_ctim.tv_sec == y->st_ctim.tv_sec && x->st_ctim.tv_nsec == y->st_ctim.tv_nsec;
}

/*
 * Reads the PIN from path into wiping memory: a regular file of the daemon's user that
 * nobody else may read or write, holding the PIN and at most a line end. Everything that
 * is wrong with it is -EACCES with what to do.
 */
static int pin_file_read(const char *path, const mk_token_info *t, mk_secret **ret,
			 struct stat *ret_st)
{
	_cleanup_secret_ mk_secret *buf = NULL;
	struct stat st;
	size_t n = 0;
	int fd, r = 0;

	/* O_NONBLOCK: a FIFO in its place must not hang the agent */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return mk_error(-EACCES, "cannot open the pin-file %s of token \"%s\": %s; fix it "
				"or the path in mlskeyd.conf", path, token_name(t), strerror(errno));
	if (fstat(fd, &st) < 0)
		r = mk_error(-EACCES, "cannot check the pin-file %s: %s", path, strerror(errno));
	else if (!S_ISREG(st.st_mode))
		r = mk_error(-EACCES, "the pin-file %s of token \"%s\" is not a regular file",
			     path, token_name(t));
	else if (st.st_uid != geteuid())
		r = mk_error(-EACCES, "the pin-file %s of token \"%s\" belongs to uid %u, not to "
			     "mlskeyd's user %u; mlskey does not use it until it does (chown)",
			     path, token_name(t), (unsigned)st.st_uid, (unsigned)geteuid());
	else if (st.st_mode & 077)
		r = mk_error(-EACCES, "the pin-file %s of token \"%s\" can be read or written by "
			     "its group or others (mode %04o); mlskey does not use it until it is "
			     "owner-only (chmod 600)", path, token_name(t),
			     (unsigned)(st.st_mode & 07777));
	else
		r = mk_secret_new(MK_PIN_MAX + 3, &buf);
	while (r == 0 && n < buf->len) {
		ssize_t k = read(fd, buf->data + n, buf->len - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			r = mk_error(-EACCES, "cannot read the pin-file %s: %s", path,
				     strerror(errno));
		else if (k == 0)
			break;
		else
			n += (size_t)k;
	}
	close(fd);
	if (r < 0)
		return r;
	/* the PIN and at most a line end, as `echo PIN > file` writes it */
	while (n > 0 && (buf->data[n - 1] == '\n' || buf->data[n - 1] == '\r'))
		n--;
	if (n == 0)
		return mk_error(-EACCES, "the pin-file %s of token \"%s\" is empty", path,
				token_name(t));
	if (n > MK_PIN_MAX)
		return mk_error(-EACCES, "the pin-file %s of token \"%s\" holds more than %d bytes; "
				"it must hold the PIN alone", path, token_name(t), MK_PIN_MAX);
	r = mk_secret_new_copy(buf->data, n, ret);
	if (r == 0)
		*ret_st = st;
	return r;
}

/* The PIN from the token's pin-file, unless the token is disabled or the PIN locked. */
static int pin_file_get(mk_agent *a, gate *g, const mk_token_info *t, const char *path,
			mk_secret **ret, struct stat *ret_st)
{
	struct stat then, now;
	bool disabled;
	int r;

	pthread_mutex_lock(&a->lock);
	disabled = g->disabled;
	then = g->disabled_st;
	pthread_mutex_unlock(&a->lock);
	if (disabled) {
		if (stat(path, &now) == 0 && same_file(&now, &then))
			return mk_error(-EKEYREJECTED,
					"token \"%s\" (serial %s) is disabled: it refused the PIN in "
					"the pin-file %s; fix the file (mlskey tries it again once it "
					"changed) or restart mlskeyd",
					token_name(t), token_serial(t), path);
		mk_log(LOG_NOTICE, "the pin-file %s of token \"%s\" changed since the token refused "
		       "it: trying it once", path, token_name(t));
		pthread_mutex_lock(&a->lock);
		g->disabled = false;
		pthread_mutex_unlock(&a->lock);
	}
	if (t->pin_locked)
		return pin_locked_error(t);
	if (t->pin_final_try)
		return mk_error(-EKEYREJECTED,
				"token \"%s\" (serial %s) has one PIN try left; mlskey does not spend "
				"it on the pin-file %s without a person: check the file, then reset "
				"the retry counter with the token's tools",
				token_name(t), token_serial(t), path);
	r = pin_file_read(path, t, ret, ret_st);
	if (r < 0)
		mk_log(LOG_WARNING, "%s", mk_error_text(r));
	return r;
}

/* The token refused the PIN of its pin-file (as st was when read): disable it. */
static int pin_file_refused(mk_agent *a, gate *g, const mk_token_info *t, const char *path,
			    const struct stat *st)
{
	pthread_mutex_lock(&a->lock);
	g->disabled = true;
	g->disabled_st = *st;
	pthread_mutex_unlock(&a->lock);
	mk_log(LOG_ERR, "token \"%s\" (serial %s) refused the PIN in the pin-file %s: the token is "
	       "disabled, and mlskey will not log in to it until the file changes or mlskeyd "
	       "restarts", token_name(t), token_serial(t), path);
	return mk_error(-EKEYREJECTED,
			"token \"%s\" (serial %s) refused the PIN in the pin-file %s; mlskey "
			"disabled the token and does not try that file again: the operator must fix "
			"the file (mlskey tries it once more when it changed) or restart mlskeyd",
			token_name(t), token_serial(t), path);
}

static int login_pin_file(mk_agent *a, gate *g, const mk_token_info *t, const char *path)
{
	_cleanup_secret_ mk_secret *pin = NULL;
	struct stat st;
	int r;

	r = pin_file_get(a, g, t, path, &pin, &st);
	if (r < 0)
		return r;
	r = mk_p11_login(a->p11, t->uri, pin->data, pin->len);
	pin = mk_secret_free(pin);
	if (r == -EKEYREJECTED)
		return pin_file_refused(a, g, t, path, &st);
	if (r == -EKEYREVOKED)
		return pin_locked_error(t);
	if (r == 0)
		mk_log(LOG_INFO, "logged in to token \"%s\" with its pin-file", token_name(t));
	return r;
}

/* --- logging in -------------------------------------------------------------------------- */

/* Up to pin-attempts dialogs, each PIN used for exactly one C_Login. */
static int login_dialogs(mk_agent *a, gate *g, const mk_caller *c, const mk_token_info *t0,
			 const char *what)
{
	unsigned max = a->cfg->pin_attempts;
	mk_token_info t = { 0 };
	int r = 0;

	for (unsigned i = 1; i <= max; i++) {
		_cleanup_secret_ mk_secret *pin = NULL;
		mk_pinentry_popup *popup = NULL;
		ask_ctx x = { c, t0, what, NULL, i, max };

		if (i > 1) {
			/* the flags after a wrong PIN: count low, final try, locked */
			mk_token_info_clear(&t);
			r = mk_p11_get_token(a->p11, t0->uri, &t);
			if (r < 0)
				break;
			x.t = &t;
		}
		r = ask(a, g, &x, &pin, &popup);
		if (r < 0)
			break;
		r = mk_p11_login(a->p11, t0->uri, pin ? pin->data : NULL, pin ? pin->len : 0);
		pin = mk_secret_free(pin);
		popup = mk_pinentry_popup_close(popup);
		if (r != -EKEYREJECTED)
			break;
		mk_log(LOG_NOTICE, "token \"%s\" refused the PIN typed for pid %d (attempt %u of %u)",
		       token_name(t0), (int)c->pid, i, max);
		if (i == max)
			r = pin_rejected(a, t0, max);
	}
	if (r == -EKEYREVOKED)
		r = pin_locked_error(t0);
	if (r == 0)
		mk_log(LOG_INFO, "logged in to token \"%s\"", token_name(t0));
	mk_token_info_clear(&t);
	return r;
}

int mk_login(mk_agent *a, const mk_caller *c, const char *uri, const char *what,
	     long long t_call_ns)
{
	mk_token_info t = { 0 }, fresh = { 0 };
	const mk_config_token *e;
	char *shared = NULL;
	int shared_r = 0, r;
	gate *g;

	r = mk_agent_token_get(a, uri, &t);
	if (r < 0)
		return r;
	g = mk_gate_get(a, t.uri);
	if (!g) {
		mk_token_info_clear(&t);
		return -ENOMEM;
	}
	pthread_mutex_lock(&g->dialog);
	/* a dialog for this token ended badly while this call waited: that is its answer */
	pthread_mutex_lock(&a->lock);
	if (g->outcome < 0 && g->outcome_ns > t_call_ns) {
		shared_r = g->outcome;
		shared = g->outcome_msg ? strdup(g->outcome_msg) : NULL;
	}
	pthread_mutex_unlock(&a->lock);
	if (shared_r < 0) {
		mk_error_clear();
		r = shared ? mk_error(shared_r, "%s", shared) : shared_r;
		free(shared);
		goto out;
	}
	r = mk_p11_get_token(a->p11, t.uri, &fresh);
	if (r < 0)
		goto out;
	if (fresh.logged_in) {
		/* another call logged in while this one waited */
		gate_logged_in(a, g);
		goto out;
	}
	e = token_entry(a, &fresh);
	if (e && e->pin_file)
		r = login_pin_file(a, g, &fresh, e->pin_file);
	else
		r = login_dialogs(a, g, c, &fresh, what);
	pthread_mutex_lock(&a->lock);
	g->outcome = r;
	g->outcome_ns = mk_agent_clock_ns();
	free(g->outcome_msg);
	g->outcome_msg = r < 0 ? strdup(mk_error_text(r)) : NULL;
	pthread_mutex_unlock(&a->lock);
	if (r == 0)
		gate_logged_in(a, g);
out:
	pthread_mutex_unlock(&g->dialog);
	mk_token_info_clear(&fresh);
	mk_token_info_clear(&t);
	return r;
}

int mk_login_context_pin(void *userdata, const mk_key_info *key, unsigned attempt,
			 int last_error, mk_secret **ret_pin)
{
	mk_call *x = userdata;
	mk_agent *a = x->a;
	mk_token_info t = { 0 };
	const mk_config_token *e;
	char what[200];
	gate *g;
	int r;

	(void)last_error;
	/* the PIN pad notice of the previous attempt has served */
	x->popup = mk_pinentry_popup_close(x->popup);
	r = mk_p11_get_token(a->p11, key->token_uri, &t);
	if (r < 0)
		return r;
	g = mk_gate_get(a, t.uri);
	if (!g) {
		r = -ENOMEM;
		goto out;
	}
	e = token_entry(a, &t);
	if (e && e->pin_file) {
		if (attempt > 1)
			r = pin_file_refused(a, g, &t, e->pin_file, &x->file_st);
		else
			r = pin_file_get(a, g, &t, e->pin_file, ret_pin, &x->file_st);
		goto out;
	}
	if (attempt > 1)
		mk_log(LOG_NOTICE, "token \"%s\" refused the PIN typed for one use of key \"%s\" for "
		       "pid %d (attempt %u of %u)", token_name(&t), key->label, (int)x->c->pid,
		       attempt - 1, a->cfg->pin_attempts);
	if (attempt > a->cfg->pin_attempts) {
		r = pin_rejected(a, &t, attempt - 1);
		goto out;
	}
	mk_agent_describe(what, sizeof(what), x->verb, x->uri);
	{
		ask_ctx ac = { x->c, &t, what, key->label ? key->label : "", attempt,
			       a->cfg->pin_attempts };

		/* one dialog per token at a time, also for keys that want the PIN each time */
		pthread_mutex_lock(&g->dialog);
		r = ask(a, g, &ac, ret_pin, &x->popup);
		pthread_mutex_unlock(&g->dialog);
	}
out:
	mk_token_info_clear(&t);
	return r;
}

/* --- confirmations ---------------------------------------------------------------------- */

int mk_login_confirm(mk_agent *a, gate *g, const char *title, const char *desc,
		     bool (*already)(void *userdata), void (*allowed)(void *userdata),
		     void *userdata)
{
	mk_pinentry_request req = {
		.program = a->cfg->pinentry,
		.title = title,
		.description = desc,
		.ok = "Allow",
		.cancel = "Deny",
		.timeout_s = a->cfg->pinentry_timeout,
		.cancel_fd = g->cancel_fd,
	};
	int r;

	pthread_mutex_lock(&g->dialog);
	/* another call waiting for the same question may have had it answered meanwhile */
	if (already && already(userdata)) {
		pthread_mutex_unlock(&g->dialog);
		return 0;
	}
	r = dialog_begin(a, g);
	if (r == 0) {
		r = mk_pinentry_confirm(&req);
		if (r == -ECANCELED) {
			bool gone;

			pthread_mutex_lock(&a->lock);
			gone = g->gone;
			pthread_mutex_unlock(&a->lock);
			if (gone)
				r = mk_error(-ENOMEDIUM, "the token was removed while the use of its "
					     "key was asked; insert it and retry");
		}
	}
	if (r == 0 && allowed)
		allowed(userdata);
	pthread_mutex_unlock(&g->dialog);
	return r;
}

/* --- logging out: the agent's thread ----------------------------------------------------- */

static void logout_token(mk_agent *a, const char *uri, const char *why)
{
	int r = mk_p11_logout(a->p11, uri);

	mk_login_forget(a, uri);
	mk_agent_confirmations_forget(a, uri);
	mk_agent_cache_clear(a);
	if (r < 0)
		mk_log(LOG_WARNING, "cannot log out of token %s (%s): %s", uri, why,
		       mk_error_text(r));
	else
		mk_log(LOG_NOTICE, "logged out of token %s: %s", uri, why);
}

static void logout_all(mk_agent *a, const char *why)
{
	int r = mk_p11_logout(a->p11, NULL);

	mk_login_forget(a, NULL);
	mk_agent_confirmations_forget(a, NULL);
	mk_agent_cache_clear(a);
	if (r < 0)
		mk_log(LOG_WARNING, "cannot log out of every token (%s): %s", why,
		       mk_error_text(r));
	else
		mk_log(LOG_NOTICE, "logged out of every token: %s", why);
}

/* After a removal: rescan, and log out of the tokens that are gone. */
static void logout_gone(mk_agent *a)
{
	gate **gs = NULL;
	size_t n = 0;

	mk_agent_refresh_tokens(a);
	pthread_mutex_lock(&a->lock);
	for (gate *g = a->gates; g; g = g->next)
		n++;
	gs = calloc(n ? n : 1, sizeof(*gs));
	n = 0;
	for (gate *g = a->gates; gs && g; g = g->next)
		gs[n++] = g; /* gates live as long as the agent */
	pthread_mutex_unlock(&a->lock);
	for (size_t i = 0; i < n; i++) {
		mk_token_info t = { 0 };
		bool present = mk_p11_get_token(a->p11, gs[i]->uri, &t) == 0 && t.present;
		bool reported, was_in;

		mk_token_info_clear(&t);
		pthread_mutex_lock(&a->lock);
		reported = gs[i]->removed;
		gs[i]->removed = false;
		was_in = gs[i]->logged_in;
		if (!present) {
			gs[i]->gone = true;
			(void)eventfd_write(gs[i]->cancel_fd, 1);
		}
		pthread_mutex_unlock(&a->lock);
		/* a reported removal of a token that is still there (a PKCS#11 module that has
		 * not noticed yet) is believed: log out of it all the same */
		if (reported || (!present && was_in))
			logout_token(a, gs[i]->uri, "it was removed");
	}
	mk_error_clear();
	free(gs);
}

static void *agent_thread(void *userdata)
{
	mk_agent *a = userdata;
	long long idle = (long long)a->cfg->idle_logout * 1000;

	pthread_mutex_lock(&a->lock);
	while (!a->stop) {
		long long now = mk_now_ms(), due = -1;
		char *uri = NULL;

		if (a->lock_pending) {
			char why[sizeof(a->lock_why)];

			a->lock_pending = false;
			memcpy(why, a->lock_why, sizeof(why));
			pthread_mutex_unlock(&a->lock);
			logout_all(a, why);
			pthread_mutex_lock(&a->lock);
			continue;
		}
		if (a->rescan) {
			a->rescan = false;
			pthread_mutex_unlock(&a->lock);
			logout_gone(a);
			pthread_mutex_lock(&a->lock);
			continue;
		}
		for (gate *g = a->gates; idle && g; g = g->next) {
			/* a running operation is a use that has not ended yet */
			long long d = (g->busy ? now : g->last_use_ms) + idle;

			if (!g->logged_in)
				continue;
			if (d <= now) {
				uri = strdup(g->uri);
				g->logged_in = false; /* never twice, even without memory */
				break;
			}
			if (due < 0 || d < due)
				due = d;
		}
		if (uri) {
			char why[64];

			pthread_mutex_unlock(&a->lock);
			snprintf(why, sizeof(why), "not used for %u s", a->cfg->idle_logout);
			logout_token(a, uri, why);
			free(uri);
			pthread_mutex_lock(&a->lock);
			continue;
		}
		if (due < 0) {
			pthread_cond_wait(&a->cond, &a->lock);
		} else {
			struct timespec ts = { .tv_sec = due / 1000,
					       .tv_nsec = (due % 1000) * 1000000 };

			pthread_cond_timedwait(&a->cond, &a->lock, &ts);
		}
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

int mk_login_start(mk_agent *a)
{
	pthread_condattr_t ca;
	int r;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&a->cond, &ca);
	pthread_condattr_destroy(&ca);
	r = pthread_create(&a->thread, NULL, agent_thread, a);
	if (r != 0) {
		pthread_cond_destroy(&a->cond);
		return mk_error(-r, "cannot start the agent's thread: %s", strerror(r));
	}
	a->thread_started = true;
	return 0;
}

void mk_login_free(mk_agent *a)
{
	gate *g;

	if (a->thread_started) {
		pthread_mutex_lock(&a->lock);
		a->stop = true;
		pthread_cond_signal(&a->cond);
		pthread_mutex_unlock(&a->lock);
		pthread_join(a->thread, NULL);
		pthread_cond_destroy(&a->cond);
		a->thread_started = false;
	}
	while ((g = a->gates)) {
		a->gates = g->next;
		pthread_mutex_destroy(&g->dialog);
		close(g->cancel_fd);
		free(g->outcome_msg);
		free(g->uri);
		free(g);
	}
}

void mk_agent_request_lock(mk_agent *a, const char *why)
{
	pthread_mutex_lock(&a->lock);
	a->lock_pending = true;
	snprintf(a->lock_why, sizeof(a->lock_why), "%s", why ? why : "requested");
	pthread_cond_signal(&a->cond);
	pthread_mutex_unlock(&a->lock);
}

void mk_agent_token_gone(mk_agent *a, const char *token_uri)
{
	P11KitUri *u = NULL;

	if (token_uri && token_uri[0]) {
		u = p11_kit_uri_new();
		if (u && p11_kit_uri_parse(token_uri, P11_KIT_URI_FOR_TOKEN, u) != P11_KIT_URI_OK) {
			p11_kit_uri_free(u);
			u = NULL;
		}
	}
	pthread_mutex_lock(&a->lock);
	for (gate *g = a->gates; u && g; g = g->next)
		if (uri_matches_token(u, g->uri)) {
			/* end its dialog now; the thread logs out once it rescanned */
			g->gone = true;
			g->removed = true;
			(void)eventfd_write(g->cancel_fd, 1);
		}
	a->rescan = true;
	pthread_cond_signal(&a->cond);
	pthread_mutex_unlock(&a->lock);
	p11_kit_uri_free(u);
}
