/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <grp.h>
#include <ini.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent-config.h"
#include "agent/check.h"
#include "agent/log.h"
#include "common/error.h"

int mk_config_init(mk_config *c)
{
	memset(c, 0, sizeof(*c));
	c->bus = MK_BUS_SESSION;
	c->pinentry = strdup("pinentry");
	if (!c->pinentry)
		return -ENOMEM;
	c->pinentry_timeout = 120;
	c->use_p11_kit = true;
	c->log_level = LOG_INFO;
	c->max_array_bytes = MK_CONFIG_DEFAULT_MAX_ARRAY;
	c->max_label_bytes = 255;
	c->workers = 4;
	c->max_queue = 256;
	c->worker_spin_us = 200;
	c->token_timeout_s = 30;
	c->slot_poll_ms = 2000;
	c->pcsc = true;
	c->pin_attempts = 3;
	c->idle_logout = 15 * 60;
	mk_policy_init(&c->policy);
	return 0;
}

void mk_config_clear_modules(mk_config *c)
{
	for (size_t i = 0; i < c->n_modules; i++) {
		free(c->modules[i]);
		c->modules[i] = NULL;
	}
	c->n_modules = 0;
}

void mk_config_clear(mk_config *c)
{
	mk_config_clear_modules(c);
	for (size_t i = 0; i < c->n_tokens; i++) {
		free(c->tokens[i].uri);
		free(c->tokens[i].pin_file);
	}
	free(c->tokens);
	free(c->allow_users);
	free(c->allow_groups);
	free(c->audit_file);
	mk_policy_clear(&c->policy);
	free(c->address);
	free(c->pinentry);
	memset(c, 0, sizeof(*c));
}

int mk_config_add_module(mk_config *c, const char *path)
{
	char *p;

	if (!path[0])
		return mk_error(-EINVAL, "an empty module path was given");
	if (c->n_modules >= MK_CONFIG_MAX_MODULES)
		return mk_error(-E2BIG, "more than %d PKCS#11 modules were given",
				MK_CONFIG_MAX_MODULES);
	p = strdup(path);
	if (!p)
		return -ENOMEM;
	c->modules[c->n_modules++] = p;
	c->modules[c->n_modules] = NULL;
	return 0;
}

static int parse_bool(const char *key, const char *v, bool *ret)
{
	if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "on")) {
		*ret = true;
		return 0;
	}
	if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "off")) {
		*ret = false;
		return 0;
	}
	return mk_error(-EINVAL, "%s must be yes or no, not \"%s\"", key, v);
}

static int parse_uint(const char *key, const char *v, unsigned long long min,
		      unsigned long long max, unsigned long long *ret)
{
	unsigned long long n;
	char *end;

	errno = 0;
	if (v[0] < '0' || v[0] > '9')
		goto bad;
	n = strtoull(v, &end, 10);
	if (errno || *end || n < min || n > max)
		goto bad;
	*ret = n;
	return 0;
bad:
	return mk_error(-EINVAL, "%s must be a number from %llu to %llu, not \"%s\"", key, min,
			max, v);
}

static int set_modules(mk_config *c, const char *value)
{
	_cleanup_free_ char *copy = strdup(value);
	char *save = NULL, *tok;
	int r;

	if (!copy)
		return -ENOMEM;
	mk_config_clear_modules(c);
	for (tok = strtok_r(copy, ";,", &save); tok; tok = strtok_r(NULL, ";,", &save)) {
		char *end;

		while (*tok == ' ' || *tok == '\t')
			tok++;
		end = tok + strlen(tok);
		while (end > tok && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';
		if (!*tok)
			continue;
		r = mk_config_add_module(c, tok);
		if (r < 0)
			return r;
	}
	return 0;
}

/* A uid or gid: all digits, below the "no id" value (uid_t)-1. */
static bool parse_id(const char *s, unsigned long *ret)
{
	unsigned long v;
	char *end;

	if (s[0] < '0' || s[0] > '9')
		return false;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v >= (unsigned long)(uid_t)-1)
		return false;
	*ret = v;
	return true;
}

/*
 * allow-users / allow-groups: names or numbers, space or comma separated, appended to the
 * list. Names are resolved now, so that a typo stops the agent instead of locking out a user.
 */
static int set_allow(mk_config *c, const char *key, const char *value, bool groups)
{
	_cleanup_free_ char *copy = strdup(value);
	char *save = NULL, *tok;
	size_t *n = groups ? &c->n_allow_groups : &c->n_allow_users;

	if (!copy)
		return -ENOMEM;
	if (!c->system_mode)
		return mk_error(-EINVAL, "%s is only for an agent that serves other users (mlskeyd "
				"--system); in session mode only the session's own user may call "
				"the agent, so remove this line",
				key);
	for (tok = strtok_r(copy, " \t,", &save); tok; tok = strtok_r(NULL, " \t,", &save)) {
		unsigned long id;
		void *a;

		if (!parse_id(tok, &id)) {
			if (groups) {
				struct group *g = getgrnam(tok);

				if (!g)
					return mk_error(-EINVAL, "%s: there is no group \"%.64s\" on "
							"this system", key, tok);
				id = g->gr_gid;
			} else {
				struct passwd *p = getpwnam(tok);

				if (!p)
					return mk_error(-EINVAL, "%s: there is no user \"%.64s\" on "
							"this system", key, tok);
				id = p->pw_uid;
			}
		}
		if (*n >= MK_CONFIG_MAX_ALLOW)
			return mk_error(-E2BIG, "%s: more than %d entries", key, MK_CONFIG_MAX_ALLOW);
		if (groups) {
			a = realloc(c->allow_groups, (*n + 1) * sizeof(gid_t));
			if (!a)
				return -ENOMEM;
			c->allow_groups = a;
			c->allow_groups[*n] = (gid_t)id;
		} else {
			a = realloc(c->allow_users, (*n + 1) * sizeof(uid_t));
			if (!a)
				return -ENOMEM;
			c->allow_users = a;
			c->allow_users[*n] = (uid_t)id;
		}
		(*n)++;
	}
	return 0;
}

int mk_config_set(mk_config *c, const char *key, const char *value)
{
	unsigned long long n;
	int r;

	if (!strcmp(key, "pinentry")) {
		char *p;

		if (!value[0])
			return mk_error(-EINVAL, "pinentry must name a program");
		p = strdup(value);
		if (!p)
			return -ENOMEM;
		free(c->pinentry);
		c->pinentry = p;
		return 0;
	}
	if (!strcmp(key, "pinentry-timeout")) {
		r = parse_uint(key, value, 1, 3600, &n);
		if (r == 0)
			c->pinentry_timeout = (unsigned)n;
		return r;
	}
	if (!strcmp(key, "p11-kit"))
		return parse_bool(key, value, &c->use_p11_kit);
	if (!strcmp(key, "modules"))
		return set_modules(c, value);
	if (!strcmp(key, "log-level")) {
		r = mk_log_level_from_name(value);
		if (r < 0)
			return mk_error(-EINVAL,
					"log-level must be err, warning, notice, info or debug, "
					"not \"%s\"",
					value);
		c->log_level = r;
		return 0;
	}
	if (!strcmp(key, "max-array-bytes")) {
		r = parse_uint(key, value, 1, 64u * 1024 * 1024, &n);
		if (r == 0)
			c->max_array_bytes = (size_t)n;
		return r;
	}
	if (!strcmp(key, "max-label-bytes")) {
		r = parse_uint(key, value, 0, 255, &n);
		if (r == 0)
			c->max_label_bytes = (size_t)n;
		return r;
	}
	if (!strcmp(key, "workers")) {
		r = parse_uint(key, value, 1, MK_CONFIG_MAX_WORKERS, &n);
		if (r == 0)
			c->workers = (unsigned)n;
		return r;
	}
	if (!strcmp(key, "max-queue")) {
		r = parse_uint(key, value, 1, 65536, &n);
		if (r == 0)
			c->max_queue = (unsigned)n;
		return r;
	}
	if (!strcmp(key, "token-timeout")) {
		r = parse_uint(key, value, 0, 3600, &n);
		if (r == 0)
			c->token_timeout_s = (unsigned)n;
		return r;
	}
	if (!strcmp(key, "slot-poll-ms")) {
		r = parse_uint(key, value, 0, 3600000, &n);
		if (r == 0)
			c->slot_poll_ms = n && n < 50 ? 50 : (unsigned)n;
		return r;
	}
	if (!strcmp(key, "pcsc"))
		return parse_bool(key, value, &c->pcsc);
	if (!strcmp(key, "worker-spin-us")) {
		r = parse_uint(key, value, 0, 10000, &n);
		if (r == 0)
			c->worker_spin_us = (unsigned)n;
		return r;
	}
	if (!strcmp(key, "pin-attempts")) {
		r = parse_uint(key, value, 1, MK_CONFIG_MAX_PIN_ATTEMPTS, &n);
		if (r == 0)
			c->pin_attempts = (unsigned)n;
		return r;
	}
	if (!strcmp(key, "idle-logout")) {
		r = parse_uint(key, value, 0, 7 * 24 * 3600, &n);
		if (r == 0)
			c->idle_logout = (unsigned)n;
		return r;
	}
	if (!strcmp(key, "allow-users"))
		return set_allow(c, key, value, false);
	if (!strcmp(key, "allow-groups"))
		return set_allow(c, key, value, true);
	if (!strcmp(key, "audit-file")) {
		char *p;

		if (value[0] != '/')
			return mk_error(-EINVAL, "audit-file must be an absolute path, not \"%s\"",
					value);
		p = strdup(value);
		if (!p)
			return -ENOMEM;
		free(c->audit_file);
		c->audit_file = p;
		return 0;
	}
	return mk_error(-EINVAL,
			"unknown setting \"%s\" (known: pinentry, pinentry-timeout, p11-kit, "
			"modules, log-level, max-array-bytes, max-label-bytes, workers, max-queue, "
			"worker-spin-us, pin-attempts, idle-logout, token-timeout, slot-poll-ms, pcsc, "
			"allow-users, allow-groups, audit-file)",
			key);
}

/* The section of uri (exactly as written), created when missing. */
static int token_section(mk_config *c, const char *uri, mk_config_token **ret)
{
	mk_config_token *a;
	int r;

	for (size_t i = 0; i < c->n_tokens; i++)
		if (!strcmp(c->tokens[i].uri, uri)) {
			*ret = &c->tokens[i];
			return 0;
		}
	r = mk_check_token_uri(uri, false);
	if (r < 0) {
		char why[300];

		/* the message lives in the buffer the next mk_error() writes */
		snprintf(why, sizeof(why), "%s", mk_error_text(r));
		return mk_error(r, "[token] uri = %.200s: %s", uri, why);
	}
	if (c->n_tokens >= MK_CONFIG_MAX_TOKENS)
		return mk_error(-E2BIG, "more than %d [token] sections", MK_CONFIG_MAX_TOKENS);
	a = realloc(c->tokens, (c->n_tokens + 1) * sizeof(*a));
	if (!a)
		return -ENOMEM;
	c->tokens = a;
	a = &c->tokens[c->n_tokens];
	*a = (mk_config_token){ .uri = strdup(uri) };
	if (!a->uri)
		return -ENOMEM;
	c->n_tokens++;
	*ret = a;
	return 0;
}

int mk_config_set_token(mk_config *c, const char *uri, const char *key, const char *value)
{
	mk_config_token *t;
	char *p;
	int r;

	if (!strcmp(key, "uri"))
		return token_section(c, uri, &t);
	if (strcmp(key, "pin-file") != 0)
		return mk_error(-EINVAL, "unknown setting \"%s\" in a [token] section (known: "
				"uri, pin-file)", key);
	if (value[0] != '/')
		return mk_error(-EINVAL, "pin-file must be an absolute path, not \"%s\"", value);
	r = token_section(c, uri, &t);
	if (r < 0)
		return r;
	p = strdup(value);
	if (!p)
		return -ENOMEM;
	free(t->pin_file);
	t->pin_file = p;
	return 0;
}


typedef struct load_state {
	mk_config *c;
	const char *path;
	int r;
	char msg[512];
	size_t token; /* 1 + the index of the [token] entry the last uri= started; 0: none */
} load_state;

static int on_token_entry(load_state *st, const char *name, const char *value)
{
	int r;

	if (!strcmp(name, "uri")) {
		r = mk_config_set_token(st->c, value, "uri", value);
		if (r < 0)
			return r;
		for (size_t i = 0; i < st->c->n_tokens; i++)
			if (!strcmp(st->c->tokens[i].uri, value))
				st->token = i + 1;
		return 0;
	}
	if (!st->token)
		return mk_error(-EINVAL, "%s before uri: each entry of a [token] section starts "
				"with uri = pkcs11:...", name);
	return mk_config_set_token(st->c, st->c->tokens[st->token - 1].uri, name, value);
}

static int on_entry(void *userdata, const char *section, const char *name, const char *value)
{
	load_state *st = userdata;
	int r;

	if (st->r < 0)
		return 0;
	if (strcmp(section, "agent") == 0) {
		r = mk_config_set(st->c, name, value);
	} else if (strcmp(section, "token") == 0) {
		r = on_token_entry(st, name, value);
	} else if (strcmp(section, "policy") == 0) {
		r = mk_policy_set(&st->c->policy, name, value);
	} else if (strcmp(section, "rule") == 0) {
		r = mk_policy_set_rule(&st->c->policy, name, value);
	} else {
		st->r = -EINVAL;
		snprintf(st->msg, sizeof(st->msg), "unknown section [%s] (known: [agent], [token], "
			 "[policy], [rule])", section);
		return 0;
	}
	if (r < 0) {
		st->r = r;
		snprintf(st->msg, sizeof(st->msg), "%s", mk_error_text(r));
		return 0; /* inih then reports this line's number */
	}
	return 1;
}

int mk_config_load(mk_config *c, const char *path)
{
	load_state st = { .c = c, .path = path };
	FILE *f;
	int line;

	f = fopen(path, "re");
	if (!f) {
		int e = errno;

		return mk_error(-e, "cannot read %s: %s", path, strerror(e));
	}
	line = ini_parse_file(f, on_entry, &st);
	fclose(f);
	if (line == -2)
		return -ENOMEM;
	if (line < 0)
		return mk_error(-EIO, "cannot read %s", path);
	if (line > 0 && st.r < 0)
		return mk_error(st.r, "%s:%d: %s", path, line, st.msg);
	if (line > 0)
		return mk_error(-EINVAL, "%s:%d: syntax error (expected [agent], [token], [policy] "
				"or [rule] and key = value)", path, line);
	if (mk_policy_check(&c->policy) < 0) {
		char why[400];

		snprintf(why, sizeof(why), "%s", mk_error_text(-EINVAL));
		return mk_error(-EINVAL, "%s: %s", path, why);
	}
	return 0;
}

int mk_config_default_path(char **ret)
{
	const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	char *p;

	if (xdg && xdg[0] == '/') {
		if (asprintf(&p, "%s/mlskey/mlskeyd.conf", xdg) < 0)
			return -ENOMEM;
	} else if (home && home[0] == '/') {
		if (asprintf(&p, "%s/.config/mlskey/mlskeyd.conf", home) < 0)
			return -ENOMEM;
	} else {
		return -ENOENT;
	}
	*ret = p;
	return 0;
}
