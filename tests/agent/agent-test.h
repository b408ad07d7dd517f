/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers of the agent's integration tests: running busctl/gdbus (optionally as another
 * user) and reading what they print, calling the agent with libdbus, the test pinentry's
 * control and log files, and reading a process's RSS.
 */
#pragma once

#include <dbus/dbus.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/bytes.h"
#include "common/macros.h"
#include "tests/agent-fixture.h"
#include "tests/fixture.h"
#include "tests/tap.h"

#define AGENT_NAME "org.mlskey.Agent1"
#define AGENT_PATH "/org/mlskey/Agent1"
#define AGENT_IFACE "org.mlskey.Agent1"

extern char **environ;

/* What a program printed and how it ended. */
typedef struct run_result {
	int status; /* exit status, 128+signal, or -errno when it could not start */
	char out[65536];
	char err[8192];
} run_result;

static inline double mkt_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Runs argv (PATH lookup) and collects stdout and stderr. */
static inline void run_argv(char *const argv[], run_result *res)
{
	posix_spawn_file_actions_t fa;
	int po[2], pe[2], status;
	size_t no = 0, ne = 0;
	pid_t pid;

	memset(res, 0, sizeof(*res));
	if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0)
		mkt_bail("pipe: %s", strerror(errno));
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, po[1], STDOUT_FILENO);
	posix_spawn_file_actions_adddup2(&fa, pe[1], STDERR_FILENO);
	res->status = -posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(po[1]);
	close(pe[1]);
	if (res->status == 0) {
		struct pollfd p[2] = { { .fd = po[0], .events = POLLIN },
				       { .fd = pe[0], .events = POLLIN } };
		int open_fds = 2;

		while (open_fds > 0 && poll(p, 2, -1) >= 0) {
			for (int i = 0; i < 2; i++) {
				char *buf = i ? res->err : res->out;
				size_t cap = i ? sizeof(res->err) : sizeof(res->out);
				size_t *n = i ? &ne : &no;
				char tmp[4096];
				ssize_t r;

				if (!(p[i].revents & (POLLIN | POLLHUP)))
					continue;
				r = read(p[i].fd, tmp, sizeof(tmp));
				if (r <= 0) {
					p[i].fd = -1;
					open_fds--;
					continue;
				}
				if (*n + (size_t)r < cap) {
					memcpy(buf + *n, tmp, (size_t)r);
					*n += (size_t)r;
				}
			}
		}
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		res->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	}
	close(po[0]);
	close(pe[0]);
	res->out[no] = '\0';
	res->err[ne] = '\0';
}

/* Builds an argv from a NULL-terminated list of strings and runs it. */
static inline void run_list(run_result *res, const char *first, ...)
{
	const char *argv[512];
	size_t n = 0;
	va_list ap;

	argv[n++] = first;
	va_start(ap, first);
	while (n < ELEMENTSOF(argv) - 1 && (argv[n] = va_arg(ap, const char *)))
		n++;
	va_end(ap);
	argv[n] = NULL;
	run_argv((char *const *)argv, res);
}

/* The D-Bus error name in gdbus's stderr ("GDBus.Error:NAME: message"), or "". */
static inline const char *gdbus_error_name(const run_result *res)
{
	static char name[256];
	const char *p = strstr(res->err, "GDBus.Error:");
	size_t n;

	name[0] = '\0';
	if (!p)
		return name;
	p += strlen("GDBus.Error:");
	n = strcspn(p, ": \n");
	snprintf(name, sizeof(name), "%.*s", (int)n, p);
	return name;
}

/*
 * Parses busctl's "ay N b1 b2 ..." output (the first ay in out) into *ret. Returns 0, or
 * -EINVAL when there is none.
 */
static inline int busctl_parse_ay(const char *out, mk_bytes *ret)
{
	const char *p = strstr(out, "ay ");
	char *end;
	unsigned long n;

	if (!p)
		return -EINVAL;
	p += 3;
	n = strtoul(p, &end, 10);
	if (end == p || mk_bytes_alloc(n, ret) < 0)
		return -EINVAL;
	for (unsigned long i = 0; i < n; i++) {
		p = end;
		ret->data[i] = (uint8_t)strtoul(p, &end, 10);
		if (end == p) {
			mk_bytes_clear(ret);
			return -EINVAL;
		}
	}
	return 0;
}

/* The first quoted string in busctl's output ("s \"...\""), into buf. */
static inline const char *busctl_parse_s(const char *out, char *buf, size_t cap)
{
	const char *p = strchr(out, '"');
	size_t n;

	buf[0] = '\0';
	if (!p)
		return buf;
	p++;
	n = strcspn(p, "\"");
	snprintf(buf, cap, "%.*s", (int)n, p);
	return buf;
}

/* Decimal byte arguments for busctl: "N", "b1", ... into a static argv slice. */
typedef struct ay_args {
	char count[16];
	char bytes[256][4];
	const char *argv[258];
} ay_args;

static inline void ay_args_fill(ay_args *a, const uint8_t *p, size_t n)
{
	if (n > 256)
		mkt_bail("busctl byte array over 256 bytes in a test");
	snprintf(a->count, sizeof(a->count), "%zu", n);
	a->argv[0] = a->count;
	for (size_t i = 0; i < n; i++) {
		snprintf(a->bytes[i], sizeof(a->bytes[i]), "%u", p[i]);
		a->argv[i + 1] = a->bytes[i];
	}
	a->argv[n + 1] = NULL;
}

/* An argv for busctl, gdbus, setpriv ...: av_add appends, NULL-terminated. */
typedef struct av {
	const char *v[700];
	size_t n;
} av;

static inline void av_add(av *a, const char *s)
{
	if (a->n + 2 >= ELEMENTSOF(a->v))
		mkt_bail("too many arguments");
	a->v[a->n++] = s;
	a->v[a->n] = NULL;
}

/* Appends "busctl --address=... call AGENT METHOD [SIG]" (addr_arg is "--address=ADDR"). */
static inline void av_add_busctl(av *a, const char *addr_arg, const char *method,
				 const char *sig)
{
	const char *const head[] = { "busctl", addr_arg, "call", AGENT_NAME, AGENT_PATH,
				     AGENT_IFACE, method };

	for (size_t i = 0; i < ELEMENTSOF(head); i++)
		av_add(a, head[i]);
	if (sig)
		av_add(a, sig);
}

/* Appends "gdbus call --address ADDR ... --method AGENT_IFACE.METHOD" (method kept in buf). */
static inline void av_add_gdbus(av *a, const char *addr, const char *method, char *buf,
				size_t cap)
{
	const char *const head[] = { "gdbus",	  "call", "--address",	   addr,       "--dest",
				     AGENT_NAME, "--object-path", AGENT_PATH, "--method", buf };

	snprintf(buf, cap, "%s.%s", AGENT_IFACE, method);
	for (size_t i = 0; i < ELEMENTSOF(head); i++)
		av_add(a, head[i]);
}

/* A GVariant text byte array for gdbus: "[byte 0x01, ...]" or "@ay []". */
static inline char *gvariant_ay(const uint8_t *p, size_t n)
{
	char *s = malloc(n * 6 + 16), *q = s;

	if (!s)
		mkt_bail("out of memory");
	if (n == 0) {
		strcpy(s, "@ay []");
		return s;
	}
	q += sprintf(q, "[byte ");
	for (size_t i = 0; i < n; i++)
		q += sprintf(q, "%s0x%02x", i ? ", " : "", p[i]);
	strcpy(q, "]");
	return s;
}

/* --- libdbus ---------------------------------------------------------------------------- */

static inline DBusConnection *bus_open(const char *addr)
{
	DBusError err;
	DBusConnection *c;

	dbus_error_init(&err);
	c = dbus_connection_open_private(addr, &err);
	if (!c || !dbus_bus_register(c, &err))
		mkt_bail("cannot connect to %s: %s", addr, err.message);
	dbus_connection_set_exit_on_disconnect(c, FALSE);
	return c;
}

static inline void bus_close(DBusConnection *c)
{
	dbus_connection_close(c);
	dbus_connection_unref(c);
}

static inline DBusMessage *agent_call_new(const char *method)
{
	DBusMessage *m = dbus_message_new_method_call(AGENT_NAME, AGENT_PATH, AGENT_IFACE, method);

	if (!m)
		mkt_bail("out of memory");
	return m;
}

/*
 * Sends m (and unrefs it), waits for the reply. Returns the reply (unref it) or NULL with the
 * error name and message in err_name / err_msg (when not NULL).
 */
static inline DBusMessage *agent_send(DBusConnection *c, DBusMessage *m, int timeout_ms,
				      char *err_name, size_t name_cap, char *err_msg,
				      size_t msg_cap)
{
	DBusError err;
	DBusMessage *r;

	dbus_error_init(&err);
	r = dbus_connection_send_with_reply_and_block(c, m, timeout_ms, &err);
	dbus_message_unref(m);
	if (err_name)
		snprintf(err_name, name_cap, "%s", r ? "" : err.name ? err.name : "?");
	if (err_msg)
		snprintf(err_msg, msg_cap, "%s", r ? "" : err.message ? err.message : "?");
	dbus_error_free(&err);
	return r;
}

/* Appends an ay to m. */
static inline void append_ay(DBusMessage *m, const uint8_t *p, size_t n)
{
	const uint8_t *q = p ? p : (const uint8_t *)"";

	if (!dbus_message_append_args(m, DBUS_TYPE_ARRAY, DBUS_TYPE_BYTE, &q, (int)n,
				      DBUS_TYPE_INVALID))
		mkt_bail("out of memory");
}

/* SignWithLabel(key, suite 2, "LeafNodeTBS", content) sent without waiting: the pending reply. */
static inline DBusPendingCall *sign_send(DBusConnection *c, const char *key,
					 const uint8_t *content, size_t n, int timeout_ms)
{
	DBusMessage *m = agent_call_new("SignWithLabel");
	DBusPendingCall *p = NULL;
	const char *label = "LeafNodeTBS";
	dbus_uint16_t suite = 2;

	dbus_message_append_args(m, DBUS_TYPE_STRING, &key, DBUS_TYPE_UINT16, &suite,
				 DBUS_TYPE_STRING, &label, DBUS_TYPE_INVALID);
	append_ay(m, content, n);
	if (!dbus_connection_send_with_reply(c, m, &p, timeout_ms) || !p)
		mkt_bail("cannot send SignWithLabel");
	dbus_connection_flush(c);
	dbus_message_unref(m);
	return p;
}

/* Waits for p and drops it: "" for a method return, else the error name, or "(no reply)". */
static inline const char *pending_error(DBusPendingCall *p, char *buf, size_t cap)
{
	DBusMessage *r;

	dbus_pending_call_block(p);
	r = dbus_pending_call_steal_reply(p);
	dbus_pending_call_unref(p);
	snprintf(buf, cap, "%s", !r ? "(no reply)"
				 : dbus_message_get_type(r) == DBUS_MESSAGE_TYPE_ERROR
					 ? dbus_message_get_error_name(r)
					 : "");
	if (r)
		dbus_message_unref(r);
	return buf;
}

/* The ay of a reply into *ret (a copy). 0 or -EINVAL. */
static inline int reply_ay(DBusMessage *r, mk_bytes *ret)
{
	const uint8_t *p = NULL;
	int n = 0;

	if (!r || !dbus_message_get_args(r, NULL, DBUS_TYPE_ARRAY, DBUS_TYPE_BYTE, &p, &n,
					 DBUS_TYPE_INVALID))
		return -EINVAL;
	return mk_bytes_dup(p, (size_t)n, ret);
}

/* SignWithLabel over libdbus: 0 and *ret_sig, or -1 with the error name in err_name. */
static inline int agent_sign(DBusConnection *c, const char *key, uint16_t suite,
			     const char *label, const uint8_t *content, size_t n, mk_bytes *ret_sig,
			     char *err_name, size_t name_cap)
{
	DBusMessage *m = agent_call_new("SignWithLabel"), *r;
	int q;

	dbus_message_append_args(m, DBUS_TYPE_STRING, &key, DBUS_TYPE_UINT16, &suite,
				 DBUS_TYPE_STRING, &label, DBUS_TYPE_INVALID);
	append_ay(m, content, n);
	r = agent_send(c, m, 60000, err_name, name_cap, NULL, 0);
	if (!r)
		return -1;
	q = reply_ay(r, ret_sig);
	dbus_message_unref(r);
	return q;
}

/* DecryptWithLabel over libdbus, as agent_sign(). */
static inline int agent_decrypt(DBusConnection *c, const char *key, uint16_t suite,
				const char *label, const mk_bytes *context, const mk_bytes *kem,
				const mk_bytes *ct, mk_bytes *ret_pt, char *err_name,
				size_t name_cap)
{
	DBusMessage *m = agent_call_new("DecryptWithLabel"), *r;
	int q;

	dbus_message_append_args(m, DBUS_TYPE_STRING, &key, DBUS_TYPE_UINT16, &suite,
				 DBUS_TYPE_STRING, &label, DBUS_TYPE_INVALID);
	append_ay(m, context->data, context->len);
	append_ay(m, kem->data, kem->len);
	append_ay(m, ct->data, ct->len);
	r = agent_send(c, m, 60000, err_name, name_cap, NULL, 0);
	if (!r)
		return -1;
	q = reply_ay(r, ret_pt);
	dbus_message_unref(r);
	return q;
}

/* GenerateKey over libdbus; the URI into uri (cap bytes). */
static inline int agent_generate(DBusConnection *c, const char *token, const char *purpose,
				 const char *alg, const char *label, char *uri, size_t cap)
{
	DBusMessage *m = agent_call_new("GenerateKey"), *r;
	DBusMessageIter it, d;
	char name[256], msg[512];
	const char *s;

	dbus_message_append_args(m, DBUS_TYPE_STRING, &token, DBUS_TYPE_STRING, &purpose,
				 DBUS_TYPE_STRING, &alg, DBUS_TYPE_STRING, &label,
				 DBUS_TYPE_INVALID);
	dbus_message_iter_init_append(m, &it);
	dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &d);
	dbus_message_iter_close_container(&it, &d);
	r = agent_send(c, m, 60000, name, sizeof(name), msg, sizeof(msg));
	if (!r) {
		mkt_diag("GenerateKey %s: %s: %s", alg, name, msg);
		return -1;
	}
	if (!dbus_message_get_args(r, NULL, DBUS_TYPE_STRING, &s, DBUS_TYPE_INVALID)) {
		dbus_message_unref(r);
		return -1;
	}
	snprintf(uri, cap, "%s", s);
	dbus_message_unref(r);
	return 0;
}

/* Lock over libdbus ("" = every token). 0 or -1. */
static inline int agent_lock(DBusConnection *c, const char *token)
{
	DBusMessage *m = agent_call_new("Lock"), *r;

	dbus_message_append_args(m, DBUS_TYPE_STRING, &token, DBUS_TYPE_INVALID);
	r = agent_send(c, m, 60000, NULL, 0, NULL, 0);
	if (!r)
		return -1;
	dbus_message_unref(r);
	return 0;
}

/* GetPublicKey over libdbus. */
static inline int agent_public_key(DBusConnection *c, const char *key, mk_bytes *ret)
{
	DBusMessage *m = agent_call_new("GetPublicKey"), *r;
	int q;

	dbus_message_append_args(m, DBUS_TYPE_STRING, &key, DBUS_TYPE_INVALID);
	r = agent_send(c, m, 60000, NULL, 0, NULL, 0);
	if (!r)
		return -1;
	q = reply_ay(r, ret);
	dbus_message_unref(r);
	return q;
}

/* --- the test pinentry -------------------------------------------------------------------- */


/* The last SETDESC line the test pinentry was sent, or "". */
static inline const char *pin_last_desc(void)
{
	static char last[2048];
	char line[2048];
	FILE *f = fopen(mkt_pinentry_log_path(), "re");

	last[0] = '\0';
	if (!f)
		return last;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "SETDESC ", 8) == 0)
			snprintf(last, sizeof(last), "%s", line + 8);
	fclose(f);
	return last;
}

/* VmRSS of a process in KiB, or -1. */
static inline long rss_kib_of(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* A config file in the fixture directory; returns its path (static buffer per name). */
static inline const char *write_agent_conf(const char *name, const char *text)
{
	static char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", mkt_tmpdir(), name);
	f = fopen(path, "we");
	if (!f)
		mkt_bail("cannot write %s", path);
	fputs(text, f);
	fclose(f);
	return path;
}
