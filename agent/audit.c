/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/audit.h"
#include "agent/ossl.h"
#include "agent/log.h"
#include "common/error.h"
#include "common/macros.h"
#include "config.h"

#define TAIL_CHUNK 65536

struct mk_audit {
	pthread_mutex_t lock;
	char *path;
	int fd;                  /* -1: syslog only */
	unsigned long long seq;  /* of the next record */
	char prev[65];           /* hex SHA-256 of the last line in the file */
	bool need_newline;       /* the file's last line has no "\n" (a torn write) */
	unsigned long long lost; /* records not written since the last complaint */
	long long next_complaint; /* CLOCK_MONOTONIC seconds */
	bool started;            /* the "start" record was written: "stop" goes with it */
};

/* 32 bytes as 64 lower-case hex digits and a NUL (no printf: this is on every call). */
static void to_hex(const unsigned char md[32], char hex[65])
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < 32; i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 15];
	}
	hex[64] = '\0';
}

/* SHA-256 fetched once: EVP_sha256() would fetch it on every call, under the provider
 * store's lock that all workers share (three digests per record) */
static const EVP_MD *sha256(void)
{
	const EVP_MD *md = mk_ossl_md("SHA256");

	return md ? md : EVP_sha256();
}

int mk_audit_sha256_hex(const void *p, size_t n, char hex[65])
{
	unsigned char md[32];
	unsigned int len = 0;

	if (!EVP_Digest(p, n, md, &len, sha256(), NULL) || len != 32)
		return -ENOMEM;
	to_hex(md, hex);
	return 0;
}

/* --- strings: valid UTF-8, no control characters ---------------------------------------- */

/* The length of the well-formed UTF-8 sequence at p (RFC 3629), or 0. Never reads past NUL. */
static size_t utf8_len(const unsigned char *p)
{
	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		return (p[1] & 0xc0) == 0x80 ? 2 : 0;
	if (p[0] >= 0xe0 && p[0] <= 0xef) {
		if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
			return 0;
		if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] >= 0xa0))
			return 0; /* overlong, surrogate */
		return 3;
	}
	if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80)
			return 0;
		if ((p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] >= 0x90))
			return 0;
		return 4;
	}
	return 0;
}

/*
 * A copy of s (NULL: "") that is valid UTF-8 without control characters: other bytes become
 * the text \xNN. For a syslog field (for_log) also space and backslash, so that a field
 * never splits and "-" stands for "".
 */
static char *clean(const char *s, bool for_log)
{
	const unsigned char *p = (const unsigned char *)(s ? s : ""), *e;
	char *out, *q;

	if (for_log && !*p)
		return strdup("-");
	/* the common case, a plain ASCII path or URI, is copied as it is */
	for (e = p; *e >= 0x21 && *e <= 0x7e && *e != '\\'; e++)
		;
	if (!*e)
		return strdup((const char *)p);
	out = malloc(strlen((const char *)p) * 4 + 1);
	if (!out)
		return NULL;
	q = out;
	while (*p) {
		size_t k = utf8_len(p);

		if (k == 1 && (*p < 0x20 || *p == 0x7f || (for_log && (*p == ' ' || *p == '\\'))))
			k = 0;
		if (k == 0) {
			q += sprintf(q, "\\x%02x", *p);
			p++;
			continue;
		}
		memcpy(q, p, k);
		q += k;
		p += k;
	}
	*q = '\0';
	return out;
}

static void now_rfc3339(char buf[40])
{
	struct timespec ts;
	struct tm tm;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(buf, 40, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, 40 - n, ".%06ldZ", ts.tv_nsec / 1000);
}

/* --- the JSON record ------------------------------------------------------------------------ */

static bool add_str(json_object *o, const char *key, const char *s)
{
	_cleanup_free_ char *c = NULL;
	json_object *v = NULL;

	if (s) {
		c = clean(s, false);
		if (!c || !(v = json_object_new_string(c)))
			return false;
	}
	return json_object_object_add(o, key, v) == 0;
}

static bool add_i64(json_object *o, const char *key, int64_t n)
{
	json_object *v = json_object_new_int64(n);

	return v && json_object_object_add(o, key, v) == 0;
}

/* The members of a call record after seq, time and event (docs/AUDIT.md). */
static bool add_call(json_object *o, const mk_audit_event *e, const char *input_hex)
{
	const mk_caller *c = e->caller;
	bool ok = add_str(o, "method", e->method);

	if (c) {
		json_object *st = c->start_time ? json_object_new_uint64(c->start_time) : NULL;

		ok = ok && add_i64(o, "uid", (int64_t)c->uid) &&
		     (c->pid > 0 ? add_i64(o, "pid", c->pid)
				 : json_object_object_add(o, "pid", NULL) == 0) &&
		     json_object_object_add(o, "start_time", st) == 0 &&
		     add_str(o, "exe", c->exe[0] ? c->exe : NULL) &&
		     add_str(o, "unit", c->unit[0] ? c->unit : NULL) &&
		     add_str(o, "app_id", c->app_id[0] ? c->app_id : NULL);
	} else {
		static const char *const unknown[] = { "uid", "pid", "start_time", "exe", "unit",
						       "app_id" };

		for (size_t i = 0; ok && i < ELEMENTSOF(unknown); i++)
			ok = json_object_object_add(o, unknown[i], NULL) == 0;
	}
	return ok && add_str(o, "uri", e->uri) && add_str(o, "label", e->label) &&
	       add_str(o, "input_sha256", input_hex) &&
	       add_str(o, "result", e->error_name ? e->error_name : "ok") &&
	       add_str(o, "error", e->error_name ? (e->error_text ? e->error_text : "") : NULL);
}

/*
 * The members of a record after seq, time and event, as JSON text without braces
 * ("\"method\":...,\"error\":null"), malloc()ed; built before the file's lock is taken, so
 * that the workers wait for each other only for the seq, the hashes and the write. NULL on
 * no memory.
 */
static char *members(const char *event, const mk_audit_event *e, const char *input_hex)
{
	json_object *o = json_object_new_object();
	const char *text;
	char *out = NULL;
	size_t n;
	bool ok = o;

	if (ok && e)
		ok = add_call(o, e, input_hex);
	else if (ok && strcmp(event, MK_AUDIT_EVENT_START) == 0)
		ok = add_str(o, "version", MK_VERSION) && add_i64(o, "pid", getpid());
	else if (ok)
		ok = add_i64(o, "pid", getpid());
	text = ok ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
							  JSON_C_TO_STRING_NOSLASHESCAPE)
		  : NULL;
	n = text ? strlen(text) : 0;
	if (n >= 2 && text[0] == '{' && text[n - 1] == '}' && n <= MK_AUDIT_MAX_LINE)
		out = strndup(text + 1, n - 2);
	json_object_put(o);
	return out;
}

/*
 * The whole line: {"seq":N,"time":T,"event":E,MEMBERS,"prev":P,"hash":H} and "\n",
 * malloc()ed, its length in *ret_len; the hash covers the bytes before ,"hash". NULL on no
 * memory.
 */
static char *finish_line(unsigned long long seq, const char *event, const char *body,
			 const char *prev, size_t *ret_len)
{
	char when[40], hash[65], *line;
	size_t cap = strlen(body) + strlen(event) + 256 + sizeof(MK_AUDIT_HASH_SEP) + 2 * 65;
	int n;

	now_rfc3339(when);
	line = malloc(cap);
	if (!line)
		return NULL;
	n = snprintf(line, cap, "{\"seq\":%llu,\"time\":\"%s\",\"event\":\"%s\"%s%s,\"prev\":\"%s\"",
		     seq, when, event, body[0] ? "," : "", body, prev);
	if (n < 0 || (size_t)n >= cap || mk_audit_sha256_hex(line, (size_t)n, hash) < 0) {
		free(line);
		return NULL;
	}
	n += snprintf(line + n, cap - (size_t)n, MK_AUDIT_HASH_SEP "%s\"}\n", hash);
	if ((size_t)n - 1 > MK_AUDIT_MAX_LINE) {
		/* the format's bound on a line (without its "\n"), which verify enforces */
		free(line);
		return NULL;
	}
	*ret_len = (size_t)n;
	return line;
}

/* --- the file ------------------------------------------------------------------------------ */

static long long mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return ts.tv_sec;
}

/* Writes all of p (O_APPEND); returns what was written, with errno set when short. */
static size_t write_all(int fd, const char *p, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t k = write(fd, p + done, n - done);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			if (k == 0)
				errno = EIO;
			break;
		}
		done += (size_t)k;
	}
	return done;
}

/*
 * Builds and appends one record under a->lock: seq, time, event, then what add() puts in,
 * then prev and hash. On a write error the chain goes on from what reached the file.
 */
static void append_record(mk_audit *a, const char *event, const mk_audit_event *e,
			  const char *input_hex)
{
	_cleanup_free_ char *body = members(event, e, input_hex);
	char *line = NULL;
	size_t len = 0, done;

	pthread_mutex_lock(&a->lock);
	if (body)
		line = finish_line(a->seq, event, body, a->prev, &len);
	if (!line) {
		errno = ENOMEM;
		done = 0;
		len = 1;
	} else if (a->need_newline && write_all(a->fd, "\n", 1) != 1) {
		done = 0;
	} else {
		a->need_newline = false;
		done = write_all(a->fd, line, len);
	}
	if (done == len) {
		/* the next record chains from this line's bytes, without the "\n" */
		mk_audit_sha256_hex(line, len - 1, a->prev);
		a->seq++;
	} else {
		int e_no = errno;
		long long now = mono_s();

		if (done > 0) {
			/* a torn line is in the file: chain from its bytes, start on a new line */
			mk_audit_sha256_hex(line, done, a->prev);
			a->need_newline = true;
			a->seq++;
		}
		a->lost++;
		if (now >= a->next_complaint) {
			mk_log(LOG_CRIT, "audit-file %s: cannot write record %llu (%s); %llu record(s) "
			       "are only in syslog. Free space or fix the file; the agent goes on",
			       a->path, a->seq, strerror(e_no), a->lost);
			a->lost = 0;
			a->next_complaint = now + 10;
		}
	}
	pthread_mutex_unlock(&a->lock);
	free(line);
}

/* Reads the bytes [from, to) of fd, streaming them into a SHA-256 and, when buf, into buf. */
static int hash_range(int fd, off_t from, off_t to, char hex[65], char *buf)
{
	_cleanup_free_ char *chunk = malloc(TAIL_CHUNK);
	unsigned char md[32];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int r = 0;

	if (!chunk || !ctx || !EVP_DigestInit_ex(ctx, sha256(), NULL)) {
		EVP_MD_CTX_free(ctx);
		return -ENOMEM;
	}
	for (off_t at = from; at < to;) {
		ssize_t k = pread(fd, chunk, (size_t)MK_MIN((off_t)TAIL_CHUNK, to - at), at);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			r = k < 0 ? -errno : -EIO;
			break;
		}
		EVP_DigestUpdate(ctx, chunk, (size_t)k);
		if (buf)
			memcpy(buf + (at - from), chunk, (size_t)k);
		at += k;
	}
	if (r == 0 && (!EVP_DigestFinal_ex(ctx, md, &mdlen) || mdlen != 32))
		r = -ENOMEM;
	EVP_MD_CTX_free(ctx);
	if (r == 0)
		to_hex(md, hex);
	return r;
}

/* Where the line that ends at `end` starts (after the "\n" before it, or 0). */
static int line_start(int fd, off_t end, off_t *ret)
{
	char chunk[4096];
	off_t at = end;

	while (at > 0) {
		size_t n = (size_t)MK_MIN((off_t)sizeof(chunk), at);
		ssize_t k = pread(fd, chunk, n, at - (off_t)n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k != (ssize_t)n)
			return k < 0 ? -errno : -EIO;
		for (size_t i = n; i > 0; i--)
			if (chunk[i - 1] == '\n') {
				*ret = at - (off_t)n + (off_t)i;
				return 0;
			}
		at -= (off_t)n;
	}
	*ret = 0;
	return 0;
}

/* The number of "\n" in the file: the seq to continue with after an unreadable last line. */
static unsigned long long count_lines(int fd, off_t size)
{
	char chunk[TAIL_CHUNK];
	unsigned long long n = 0;

	for (off_t at = 0; at < size;) {
		ssize_t k = pread(fd, chunk, sizeof(chunk), at);

		if (k <= 0)
			break;
		for (ssize_t i = 0; i < k; i++)
			n += chunk[i] == '\n';
		at += k;
	}
	return n;
}

/* Continues seq and prev from the file's last line. */
static int read_tail(mk_audit *a)
{
	struct stat st;
	char last_byte;
	off_t end, start;
	_cleanup_free_ char *buf = NULL;
	json_object *o = NULL, *seq = NULL;
	int r;

	if (fstat(a->fd, &st) < 0)
		return mk_error(-errno, "audit-file %s: %s", a->path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return mk_error(-EINVAL, "audit-file %s is not a regular file", a->path);
	if (st.st_mode & 077)
		mk_log(LOG_WARNING, "audit-file %s may be read or written by others (mode %o); "
		       "chmod 600 it", a->path, (unsigned)(st.st_mode & 0777));
	a->seq = 1;
	snprintf(a->prev, sizeof(a->prev), "%s", MK_AUDIT_ZERO_HASH);
	if (st.st_size == 0)
		return 0;
	if (pread(a->fd, &last_byte, 1, st.st_size - 1) != 1)
		return mk_error(-EIO, "audit-file %s: cannot read its end", a->path);
	end = last_byte == '\n' ? st.st_size - 1 : st.st_size;
	a->need_newline = last_byte != '\n';
	r = line_start(a->fd, end, &start);
	if (r < 0)
		return mk_error(r, "audit-file %s: cannot read its last line: %s", a->path,
				strerror(-r));
	if (end - start <= MK_AUDIT_MAX_LINE)
		buf = calloc(1, (size_t)(end - start) + 1);
	r = hash_range(a->fd, start, end, a->prev, buf);
	if (r < 0)
		return mk_error(r, "audit-file %s: cannot read its last line: %s", a->path,
				strerror(-r));
	if (buf && !a->need_newline)
		o = json_tokener_parse(buf);
	if (o && json_object_object_get_ex(o, "seq", &seq) &&
	    json_object_is_type(seq, json_type_int) && json_object_get_int64(seq) > 0) {
		a->seq = (unsigned long long)json_object_get_int64(seq) + 1;
	} else {
		a->seq = count_lines(a->fd, st.st_size) + 1 + (a->need_newline ? 1 : 0);
		mk_log(LOG_WARNING, "audit-file %s: its last line (%lld bytes) is not a record; "
		       "the chain goes on from its hash at seq %llu ('mlskey audit verify' will "
		       "show the break)", a->path, (long long)(end - start), a->seq);
	}
	json_object_put(o);
	return 0;
}

int mk_audit_open(const char *path, mk_audit **ret)
{
	mk_audit *a = calloc(1, sizeof(*a));
	int r;

	if (!a)
		return -ENOMEM;
	a->fd = -1;
	pthread_mutex_init(&a->lock, NULL);
	if (!path) {
		*ret = a;
		return 0;
	}
	a->path = strdup(path);
	if (!a->path) {
		r = -ENOMEM;
		goto fail;
	}
	a->fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
				   O_NOCTTY, 0600);
	if (a->fd < 0) {
		r = mk_error(-errno, "cannot open audit-file %s: %s", path, strerror(errno));
		goto fail;
	}
	if (flock(a->fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK
			    ? mk_error(-EBUSY, "audit-file %s is in use by another mlskeyd; give "
					       "each agent a file of its own", path)
			    : mk_error(-errno, "cannot lock audit-file %s: %s", path, strerror(errno));
		goto fail;
	}
	r = read_tail(a);
	if (r < 0)
		goto fail;
	append_record(a, MK_AUDIT_EVENT_START, NULL, NULL);
	a->started = true;
	mk_log(LOG_INFO, "audit trail: %s (this start is record %llu)", path, a->seq - 1);
	*ret = a;
	return 0;
fail:
	mk_audit_close(a);
	return r;
}

mk_audit *mk_audit_close(mk_audit *a)
{
	if (!a)
		return NULL;
	if (a->fd >= 0) {
		if (a->started)
			append_record(a, MK_AUDIT_EVENT_STOP, NULL, NULL);
		close(a->fd);
	}
	pthread_mutex_destroy(&a->lock);
	free(a->path);
	free(a);
	return NULL;
}

/*
 * The syslog line: "audit METHOD uid= pid= exe= unit= app= uri= label= sha256= time=: RESULT"
 * where an empty field is "-" and a space, backslash or control byte in a field is \xNN.
 */
static void log_line(const mk_audit_event *e, const char *input_hex)
{
	const mk_caller *c = e->caller;
	_cleanup_free_ char *exe = clean(c ? c->exe : NULL, true);
	_cleanup_free_ char *unit = clean(c ? c->unit : NULL, true);
	_cleanup_free_ char *app = clean(c ? c->app_id : NULL, true);
	_cleanup_free_ char *uri = clean(e->uri, true);
	_cleanup_free_ char *label = e->label ? clean(e->label, true) : strdup("-");
	_cleanup_free_ char *text = e->error_name ? clean(e->error_text, false) : NULL;
	_cleanup_free_ char *line = NULL;
	char who[64], when[40];
	int prio, n;

	if (!exe || !unit || !app || !uri || !label || (e->error_name && !text)) {
		mk_log(LOG_ERR, "audit: %s: no memory for the record", e->method);
		return;
	}
	if (c)
		snprintf(who, sizeof(who), "uid=%u pid=%d", (unsigned)c->uid, (int)c->pid);
	else
		snprintf(who, sizeof(who), "uid=? pid=?");
	now_rfc3339(when);
	n = asprintf(&line,
		     "audit %s %s exe=%s unit=%s app=%s uri=%s label=%s sha256=%s time=%s: %s%s%s",
		     e->method, who, exe, unit, app, uri, label, input_hex ? input_hex : "-", when,
		     e->error_name ? e->error_name : "ok", e->error_name ? ": " : "",
		     e->error_name ? text : "");
	if (n < 0) {
		line = NULL;
		mk_log(LOG_ERR, "audit: %s: no memory for the record", e->method);
		return;
	}
	if (!e->error_name)
		prio = e->read_only ? LOG_INFO : LOG_NOTICE;
	else
		prio = strstr(e->error_name, ".AccessDenied") ? LOG_WARNING : LOG_NOTICE;
	mk_log_audit(prio, line);
}

void mk_audit_log(mk_audit *a, const mk_audit_event *e)
{
	char hex[65];
	const char *input_hex = NULL;

	if (e->has_input && mk_audit_sha256_hex(e->input ? (const void *)e->input : "",
						e->input ? e->input_len : 0, hex) == 0)
		input_hex = hex;
	log_line(e, input_hex);
	if (a && a->fd >= 0)
		append_record(a, MK_AUDIT_EVENT_CALL, e, input_hex);
}
