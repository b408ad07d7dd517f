/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The audit file (agent/audit.h, docs/AUDIT.md) and `mlskey audit verify`: records with the
 * right members and the SHA-256 of their input, never the input itself; the chain across a
 * restart; and copies of the file with a line edited (in the middle, the last line, and with
 * its own hash recomputed), deleted, swapped, the first line removed, a torn last line: each
 * is detected and the first broken record named. A write error (the file size limit) is
 * logged and never stops the caller; a second writer is refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/audit.h"
#include "agent/log.h"
#include "common/error.h"
#include "tests/agent/agent-test.h"
#include "tests/audit/audit-test.h"

#define MAX_LINES 64

static char lines[MAX_LINES][4096];
static size_t n_lines;

static void read_lines(const char *path)
{
	FILE *f = fopen(path, "re");

	n_lines = 0;
	if (!f)
		mkt_bail("cannot read %s", path);
	while (n_lines < MAX_LINES && fgets(lines[n_lines], sizeof(lines[0]), f))
		n_lines++;
	fclose(f);
}

/* Writes the lines (each still with its "\n") to name in the temp dir; returns its path. */
static const char *write_lines(const char *name, char (*l)[4096], size_t n)
{
	static char path[16][512];
	static size_t k;
	char *p = path[k++ % 16];
	FILE *f;

	snprintf(p, sizeof(path[0]), "%s/%s", mkt_tmpdir(), name);
	f = fopen(p, "we");
	if (!f)
		mkt_bail("cannot write %s", p);
	for (size_t i = 0; i < n; i++)
		fputs(l[i], f);
	fclose(f);
	return p;
}

static run_result res;

/* Runs mlskey audit verify on path; the exit status. */
static int verify(const char *path)
{
	run_list(&res, mkt_build_path("clients/mlskey"), "audit", "verify", path, NULL);
	mkt_diag("verify: %s%s", res.out, res.err);
	return res.status;
}

static void sha256_hex(const void *p, size_t n, char hex[65])
{
	unsigned char md[32];
	unsigned int len;

	EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
	for (int i = 0; i < 32; i++)
		sprintf(hex + 2 * i, "%02x", md[i]);
}

static json_object *record(size_t i)
{
	json_object *o = json_tokener_parse(lines[i]);

	if (!o)
		mkt_bail("line %zu is not JSON: %s", i + 1, lines[i]);
	return o;
}

static bool is_null(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) && v == NULL;
}

static const uint8_t secret_pt[] = "PLAINTEXT-MARKER-never-in-the-log";
static const uint8_t content[] = "an MLS LeafNodeTBS";

static void log_calls(mk_audit *a)
{
	mk_caller c = { .uid = 1000, .pid = 4242, .start_time = 777 };
	mk_caller odd = { .uid = 1001, .pid = 99 };
	mk_audit_event e;

	snprintf(c.exe, sizeof(c.exe), "/usr/bin/mail client");
	snprintf(c.unit, sizeof(c.unit), "app-flatpak-org.example.Mail-1234.scope");
	snprintf(c.app_id, sizeof(c.app_id), "org.example.Mail");
	/* an exe with a newline, a quote and a byte that is not UTF-8 */
	snprintf(odd.exe, sizeof(odd.exe), "/tmp/evil\n\"name\xff");

	e = (mk_audit_event){ .caller = &c, .method = "SignWithLabel", .uri = "pkcs11:token=a;id=%01",
			      .label = "LeafNodeTBS", .input = content, .input_len = sizeof(content),
			      .has_input = true };
	mk_audit_log(a, &e);
	e = (mk_audit_event){ .caller = &c, .method = "DecryptWithLabel", .uri = "pkcs11:token=a;id=%02",
			      .label = "Welcome", .input = secret_pt, .input_len = sizeof(secret_pt),
			      .has_input = true, .error_name = "org.mlskey.Error.DecryptFailed",
			      .error_text = "the ciphertext did not authenticate" };
	mk_audit_log(a, &e);
	e = (mk_audit_event){ .caller = &odd, .method = "SignWithLabel",
			      .error_name = "org.mlskey.Error.AccessDenied",
			      .error_text = "user 1001 may not use the mlskey agent of user 1000" };
	mk_audit_log(a, &e);
	e = (mk_audit_event){ .caller = NULL, .method = "ListKeys", .read_only = true,
			      .error_name = "org.mlskey.Error.AccessDenied",
			      .error_text = "cannot identify the caller :1.9" };
	mk_audit_log(a, &e);
	e = (mk_audit_event){ .caller = &c, .method = "ListKeys", .read_only = true };
	mk_audit_log(a, &e);
}

static void test_records(const char *path, const char *log_path)
{
	mk_audit *a = NULL;
	struct stat st;
	json_object *o;
	char want[65], buf[65536];
	FILE *f;
	size_t n;

	mkt_ok_r(mk_audit_open(path, &a), "open a new audit file");
	log_calls(a);
	a = mk_audit_close(a);
	mkt_ok(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "  created with mode 0600 (%o)",
	       (unsigned)(st.st_mode & 0777));
	read_lines(path);
	mkt_ok(n_lines == 7, "start + 5 calls + stop = 7 records (%zu)", n_lines);
	if (n_lines != 7)
		return;

	o = record(0);
	mkt_ok(num(o, "seq") == 1 && !strcmp(str(o, "event"), "start") && str(o, "version") &&
		       num(o, "pid") == getpid() && !strcmp(str(o, "prev"), MK_AUDIT_ZERO_HASH),
	       "line 1: start, seq 1, version, pid, prev = 64 zeros");
	json_object_put(o);

	o = record(1);
	sha256_hex(content, sizeof(content), want);
	mkt_ok(num(o, "seq") == 2 && !strcmp(str(o, "event"), "call") &&
		       !strcmp(str(o, "method"), "SignWithLabel") && num(o, "uid") == 1000 &&
		       num(o, "pid") == 4242 && num(o, "start_time") == 777 &&
		       !strcmp(str(o, "exe"), "/usr/bin/mail client") &&
		       !strcmp(str(o, "unit"), "app-flatpak-org.example.Mail-1234.scope") &&
		       !strcmp(str(o, "app_id"), "org.example.Mail") &&
		       !strcmp(str(o, "uri"), "pkcs11:token=a;id=%01") &&
		       !strcmp(str(o, "label"), "LeafNodeTBS") && !strcmp(str(o, "result"), "ok") &&
		       is_null(o, "error"),
	       "line 2: the signature with every caller field");
	mkt_ok(str(o, "input_sha256") && !strcmp(str(o, "input_sha256"), want),
	       "  input_sha256 is the SHA-256 of the content (%s)", want);
	sha256_hex(lines[0], strlen(lines[0]) - 1, want);
	mkt_ok(!strcmp(str(o, "prev"), want), "  prev is the SHA-256 of line 1's bytes");
	json_object_put(o);

	o = record(2);
	sha256_hex(secret_pt, sizeof(secret_pt), want);
	mkt_ok(!strcmp(str(o, "result"), "org.mlskey.Error.DecryptFailed") &&
		       !strcmp(str(o, "error"), "the ciphertext did not authenticate") &&
		       !strcmp(str(o, "input_sha256"), want),
	       "line 3: a refusal: error name, message, the ciphertext's hash");
	json_object_put(o);

	o = record(3);
	mkt_ok(!strcmp(str(o, "result"), "org.mlskey.Error.AccessDenied") && num(o, "uid") == 1001 &&
		       is_null(o, "uri") && is_null(o, "label") && is_null(o, "input_sha256"),
	       "line 4: another user's refusal: no URI, label or hash (never looked at)");
	mkt_ok(str(o, "exe") && !strcmp(str(o, "exe"), "/tmp/evil\\x0a\"name\\xff"),
	       "  a control byte and a non-UTF-8 byte in exe are written as \\xNN (%s)",
	       str(o, "exe") ? str(o, "exe") : "null");
	json_object_put(o);

	o = record(4);
	mkt_ok(is_null(o, "uid") && is_null(o, "pid") && is_null(o, "exe"),
	       "line 5: a caller the bus could not name: uid, pid, exe are null");
	json_object_put(o);
	o = record(6);
	mkt_ok(num(o, "seq") == 7 && !strcmp(str(o, "event"), "stop"), "line 7: stop, seq 7");
	json_object_put(o);

	/* never the plaintext, anywhere */
	f = fopen(path, "re");
	n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
	if (f)
		fclose(f);
	buf[n] = '\0';
	mkt_ok(!strstr(buf, (const char *)secret_pt) && !strstr(buf, (const char *)content),
	       "neither the ciphertext's nor the content's bytes are in the file");
	f = fopen(log_path, "re");
	n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
	if (f)
		fclose(f);
	buf[n] = '\0';
	sha256_hex(content, sizeof(content), want);
	mkt_ok(strstr(buf, "audit SignWithLabel uid=1000 pid=4242 exe=/usr/bin/mail\\x20client "
			   "unit=app-flatpak-org.example.Mail-1234.scope app=org.example.Mail "
			   "uri=pkcs11:token=a;id=%01 label=LeafNodeTBS sha256=") != NULL &&
		       strstr(buf, want) != NULL,
	       "the syslog line (stderr here) has the same fields");
	mkt_ok(strstr(buf, "audit SignWithLabel uid=1001 pid=99 exe=/tmp/evil\\x0a\"name\\xff") &&
		       strstr(buf, ": org.mlskey.Error.AccessDenied: user 1001 may not use"),
	       "  the refusal too, its exe escaped on one line");
	mkt_ok(!strstr(buf, (const char *)secret_pt), "  and no plaintext either");

	mkt_ok(verify(path) == 0 && strstr(res.out, ": 7 records, chain intact (seq 1..7)"),
	       "mlskey audit verify: intact");
}

static void test_restart(const char *path)
{
	mk_audit *a = NULL;
	json_object *o;
	char want[65];

	mkt_ok_r(mk_audit_open(path, &a), "reopen the file (a restart)");
	log_calls(a);
	a = mk_audit_close(a);
	read_lines(path);
	mkt_ok(n_lines == 14, "  7 more records (%zu)", n_lines);
	if (n_lines != 14)
		return;
	o = record(7);
	sha256_hex(lines[6], strlen(lines[6]) - 1, want);
	mkt_ok(num(o, "seq") == 8 && !strcmp(str(o, "event"), "start") &&
		       !strcmp(str(o, "prev"), want),
	       "  the start record continues seq (8) and prev (the stop record's hash)");
	json_object_put(o);
	mkt_ok(verify(path) == 0 && strstr(res.out, ": 14 records, chain intact (seq 1..14)"),
	       "  verify: intact across the restart");
}

static void expect_broken(const char *path, const char *where, const char *why, const char *what)
{
	int st = verify(path);

	mkt_ok(st == 1 && strstr(res.out, where) && strstr(res.out, why), "%s: exit 1, \"%s: %s\"",
	       what, where, why);
}

static void test_tamper(void)
{
	char copy[MAX_LINES][4096];
	size_t n = n_lines;
	char *p;

	/* a middle line edited */
	memcpy(copy, lines, sizeof(copy));
	p = strstr(copy[3], "\"uid\":1001");
	if (!p)
		mkt_bail("line 4 has no uid 1001: %s", copy[3]);
	p[9] = '2';
	expect_broken(write_lines("t-edit.jsonl", copy, n), "record 4 (line 4)",
		      "its hash does not match its content", "a middle line edited");

	/* the last line edited */
	memcpy(copy, lines, sizeof(copy));
	p = strstr(copy[n - 1], "\"event\":\"stop\"");
	if (!p)
		mkt_bail("the last line is no stop record");
	memcpy(p, "\"event\":\"stap\"", 14);
	expect_broken(write_lines("t-last.jsonl", copy, n), "record 14 (line 14)",
		      "its hash does not match", "the last line edited");

	/* a middle line edited with its own hash recomputed: the next line's prev tells */
	memcpy(copy, lines, sizeof(copy));
	{
		char *sep, hex[65];

		p = strstr(copy[2], "\"uid\":1000");
		p[9] = '7';
		sep = strstr(copy[2], MK_AUDIT_HASH_SEP);
		sha256_hex(copy[2], (size_t)(sep - copy[2]), hex);
		memcpy(sep + strlen(MK_AUDIT_HASH_SEP), hex, 64);
	}
	expect_broken(write_lines("t-rehash.jsonl", copy, n), "record 4 (line 4)",
		      "prev does not match the hash of line 3 - a line was edited, removed or "
		      "reordered",
		      "a line edited with its own hash recomputed");

	/* a line deleted */
	memcpy(copy, lines, sizeof(copy));
	memmove(copy[5], copy[6], (n - 6) * sizeof(copy[0]));
	expect_broken(write_lines("t-delete.jsonl", copy, n - 1), "record 7 (line 6)",
		      "prev does not match the hash of line 5", "a line deleted");

	/* two lines swapped */
	memcpy(copy, lines, sizeof(copy));
	memcpy(copy[9], lines[10], sizeof(copy[0]));
	memcpy(copy[10], lines[9], sizeof(copy[0]));
	expect_broken(write_lines("t-swap.jsonl", copy, n), "record 11 (line 10)",
		      "prev does not match the hash of line 9", "two lines swapped");

	/* the first line removed */
	expect_broken(write_lines("t-head.jsonl", lines + 1, n - 1), "record 2 (line 1)",
		      "does not start its chain", "the first line removed");

	/* a torn last line */
	memcpy(copy, lines, sizeof(copy));
	copy[n - 1][20] = '\0';
	expect_broken(write_lines("t-torn.jsonl", copy, n), "line 14", "not a JSON object",
		      "a torn last line");

	/* a line past the format's bound: named, and never read whole into memory */
	{
		const char *path = write_lines("t-long.jsonl", lines, 3);
		FILE *f = fopen(path, "ae");

		if (!f)
			mkt_bail("cannot append to %s", path);
		for (size_t i = 0; i < MK_AUDIT_MAX_LINE + 10; i++)
			putc('x', f);
		putc('\n', f);
		fclose(f);
		expect_broken(path, "line 4", "longer than a record can be",
			      "a line longer than a record can be");
	}

	/* not a file */
	mkt_ok(verify("/nonexistent/audit.jsonl") == 2, "a file that cannot be read: exit 2");
	run_list(&res, mkt_build_path("clients/mlskey"), "audit", "check", "x", NULL);
	mkt_ok(res.status == 2, "an unknown subcommand: exit 2");
}

/* A last line that is not a record: a warning, and the chain goes on from its bytes. */
static void test_garbage_tail(void)
{
	const char *path = write_lines("garbage.jsonl", lines, 3);
	mk_audit *a = NULL;
	json_object *o;
	char want[65];
	FILE *f = fopen(path, "ae");

	fputs("this is not json\n", f);
	fclose(f);
	mkt_ok_r(mk_audit_open(path, &a), "open a file whose last line is garbage: not fatal");
	a = mk_audit_close(a);
	read_lines(path);
	o = n_lines == 6 ? record(4) : NULL;
	sha256_hex("this is not json", 16, want);
	mkt_ok(o && num(o, "seq") == 5 && !strcmp(str(o, "prev"), want),
	       "  the start record chains from the garbage line's hash, seq 5");
	json_object_put(o);
	expect_broken(path, "line 4", "not a JSON object", "  verify names the garbage line");
}

/* The file size limit makes write() fail: logged, the caller goes on, the chain stays intact. */
static void test_write_error(void)
{
	const char *path = write_lines("full.jsonl", lines, 0);
	char log2[512], buf[65536];
	struct rlimit old, lim;
	mk_audit *a = NULL, *b = NULL;
	struct stat st;
	mk_caller c = { .uid = 1 };
	mk_audit_event e = { .caller = &c, .method = "ListKeys", .read_only = true };
	size_t n;
	FILE *f;
	int r, fd;

	mkt_ok_r(mk_audit_open(path, &a), "open a fresh file");
	r = mk_audit_open(path, &b);
	mkt_ok(r == -EBUSY && strstr(mk_error_text(r), "in use by another mlskeyd"),
	       "a second writer is refused: %s", mk_error_text(r));
	for (int i = 0; i < 20; i++)
		mk_audit_log(a, &e);
	/* the limit holds for every file of the process: the log goes to a new, small one */
	snprintf(log2, sizeof(log2), "%s/stderr2.log", mkt_tmpdir());
	fd = open(log2, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || dup2(fd, STDERR_FILENO) < 0)
		mkt_bail("cannot redirect stderr");
	close(fd);
	signal(SIGXFSZ, SIG_IGN);
	stat(path, &st);
	getrlimit(RLIMIT_FSIZE, &old);
	lim = old;
	lim.rlim_cur = (rlim_t)st.st_size;
	setrlimit(RLIMIT_FSIZE, &lim);
	mk_audit_log(a, &e); /* must neither crash nor block */
	mk_audit_log(a, &e);
	setrlimit(RLIMIT_FSIZE, &old);
	mkt_ok(true, "two records could not be written, and the calls went on");
	mk_audit_log(a, &e);
	a = mk_audit_close(a);
	f = fopen(log2, "re");
	n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
	if (f)
		fclose(f);
	buf[n] = '\0';
	mkt_ok(strstr(buf, "crit: audit-file") && strstr(buf, "cannot write record 22 (File too large)"),
	       "  the failure is logged loudly (crit)");
	mkt_ok(!strstr(buf, "cannot write record 23"), "  once, not per record");
	mkt_ok(verify(path) == 0 && strstr(res.out, "23 records, chain intact (seq 1..23)"),
	       "  the file holds start, 20 calls, the later call and stop, intact");
}

/* Records from several workers at once: every one in the file, in one unbroken chain. */
#define THREADS 4
#define PER_THREAD 2000

static void *log_many(void *p)
{
	mk_audit *a = p;
	mk_caller c = { .uid = 7, .pid = 77 };
	mk_audit_event e = { .caller = &c, .method = "SignWithLabel", .label = "LeafNodeTBS",
			     .input = (const uint8_t *)"x", .input_len = 1, .has_input = true };

	for (int i = 0; i < PER_THREAD; i++)
		mk_audit_log(a, &e);
	return NULL;
}

static void test_threads(void)
{
	char path[512], want[128];
	pthread_t t[THREADS];
	mk_audit *a = NULL;

	snprintf(path, sizeof(path), "%s/threads.jsonl", mkt_tmpdir());
	mkt_ok_r(mk_audit_open(path, &a), "open a file for %d threads", THREADS);
	for (int i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, log_many, a);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	a = mk_audit_close(a);
	snprintf(want, sizeof(want), "%d records, chain intact (seq 1..%d)",
		 THREADS * PER_THREAD + 2, THREADS * PER_THREAD + 2);
	mkt_ok(verify(path) == 0 && strstr(res.out, want),
	       "%d threads x %d records, one unbroken chain: %s", THREADS,
	       PER_THREAD, want);
}

int main(void)
{
	char path[512], log_path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/audit.jsonl", mkt_tmpdir());
	snprintf(log_path, sizeof(log_path), "%s/stderr.log", mkt_tmpdir());
	/* the log goes to stderr (there is no /dev/log in a test): capture it */
	fflush(stderr);
	fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || dup2(fd, STDERR_FILENO) < 0)
		mkt_bail("cannot redirect stderr");
	close(fd);
	mk_log_open(true, LOG_INFO);

	test_records(path, log_path);
	test_restart(path);
	if (n_lines == 14) {
		test_tamper();
		test_garbage_tail();
	}
	test_write_error();
	test_threads();
	return mkt_done();
}
