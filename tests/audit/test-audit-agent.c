/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The audit trail and who may call, with the real mlskeyd on a private bus and a SoftHSM
 * token: calls from busctl, gdbus and libdbus, allowed and refused (bad arguments, a failed
 * decryption, another user run with setpriv), each leave one record in the audit file with
 * the caller's executable and the SHA-256 of the input this test computes, and one line in
 * the agent's log (its stderr here); neither holds a plaintext or the PIN. `mlskey audit
 * verify` finds the chain intact, also after a restart, and finds an edited copy broken.
 * In system mode (--system on the private bus) the users of allow-users and the members of
 * allow-groups may call, and nobody else; in session mode allow-users stops the agent.
 */
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <openssl/evp.h>

#include "agent/audit-format.h"
#include "agent/mls.h"
#include "tests/agent/agent-test.h"
#include "tests/audit/audit-test.h"
#include "tests/shim/shim.h"

static const char *addr;
static char addr_arg[512];
static run_result res;
static char busctl_exe[PATH_MAX], gdbus_exe[PATH_MAX];
static bool other_users; /* root and setpriv: calls as other users can be made */

/* Runs argv into res, with newlines in what it printed made spaces (one TAP line each). */
static void run_flat(char *const *argv)
{
	run_argv(argv, &res);
	for (char *p = res.out; *p; p++)
		if (*p == '\n')
			*p = ' ';
	for (char *p = res.err; *p; p++)
		if (*p == '\n')
			*p = ' ';
}

static void sha256_hex(const void *p, size_t n, char hex[65])
{
	unsigned char md[32];
	unsigned int len;

	EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
	for (int i = 0; i < 32; i++)
		sprintf(hex + 2 * i, "%02x", md[i]);
}

/* The real path of a program on PATH, as /proc/PID/exe will show it. */
static void which(const char *name, char *buf)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "command -v %s", name);
	run_list(&res, "sh", "-c", cmd, NULL);
	res.out[strcspn(res.out, "\n")] = '\0';
	if (res.status != 0 || !realpath(res.out, buf))
		mkt_skip_all("%s not installed", name);
}

/* Starts mlskeyd with extra args (with the PKCS#11 shim as its module), stderr into log. */
static pid_t start_agent_with(const char *log, const char *const *extra, bool shim)
{
	int saved = dup(STDERR_FILENO), fd;
	pid_t pid;

	fflush(stderr);
	fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (saved < 0 || fd < 0 || dup2(fd, STDERR_FILENO) < 0)
		mkt_bail("cannot redirect stderr to %s", log);
	close(fd);
	pid = shim ? mkt_shim_agent_start(extra) : mkt_agent_start(extra);
	dup2(saved, STDERR_FILENO);
	close(saved);
	return pid;
}

static pid_t start_agent(const char *log, const char *const *extra)
{
	return start_agent_with(log, extra, false);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf = calloc(1, 1 << 20);
	size_t n;

	if (!f || !buf)
		mkt_bail("cannot read %s", path);
	n = fread(buf, 1, (1 << 20) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* The records of an audit file, parsed. */
typedef struct records {
	json_object *r[256];
	char line[256][8192];
	size_t n;
} records;

static void records_read(records *rs, const char *path)
{
	FILE *f = fopen(path, "re");

	for (size_t i = 0; i < rs->n; i++)
		json_object_put(rs->r[i]);
	rs->n = 0;
	if (!f)
		mkt_bail("cannot read %s", path);
	while (rs->n < ELEMENTSOF(rs->r) && fgets(rs->line[rs->n], sizeof(rs->line[0]), f)) {
		rs->r[rs->n] = json_tokener_parse(rs->line[rs->n]);
		if (!rs->r[rs->n])
			mkt_bail("%s line %zu is not JSON", path, rs->n + 1);
		rs->n++;
	}
	fclose(f);
}

static bool eq(json_object *o, const char *key, const char *want)
{
	const char *s = str(o, key);

	return want ? s && strcmp(s, want) == 0 : !s;
}

/* The one call record with this method, result and input hash (NULL: any); NULL if not one. */
static json_object *find(records *rs, const char *method, const char *result, long long uid,
			 const char *sha)
{
	json_object *hit = NULL;
	size_t n = 0;

	for (size_t i = 0; i < rs->n; i++) {
		json_object *o = rs->r[i];

		if (!eq(o, "event", "call") || !eq(o, "method", method) || !eq(o, "result", result) ||
		    (uid >= 0 && num(o, "uid") != uid) || (sha && !eq(o, "input_sha256", sha)))
			continue;
		hit = o;
		n++;
	}
	if (n != 1)
		mkt_diag("%zu records for %s %s uid %lld", n, method, result, uid);
	return n == 1 ? hit : NULL;
}

static size_t count(records *rs, const char *method, const char *result)
{
	size_t n = 0;

	for (size_t i = 0; i < rs->n; i++)
		n += eq(rs->r[i], "event", "call") && eq(rs->r[i], "method", method) &&
		     eq(rs->r[i], "result", result);
	return n;
}

static int verify(const char *path)
{
	const char *argv[] = { mkt_build_path("clients/mlskey"), "audit", "verify", path, NULL };

	run_flat((char *const *)argv);
	mkt_diag("verify: %s%s", res.out, res.err);
	return res.status;
}


/* Starts argv with setpriv as user and its primary group, with groups (or none) besides. */
static void av_as(av *a, const char *user, const char *group, const char *groups)
{
	static char reuid[64], regid[64], grp[64];

	a->n = 0;
	snprintf(reuid, sizeof(reuid), "--reuid=%s", user);
	snprintf(regid, sizeof(regid), "--regid=%s", group);
	av_add(a, "setpriv");
	av_add(a, reuid);
	av_add(a, regid);
	if (groups) {
		snprintf(grp, sizeof(grp), "--groups=%s", groups);
		av_add(a, grp);
	} else {
		av_add(a, "--clear-groups");
	}
	av_add(a, "--");
}

/* busctl/gdbus argv (after av_as: run as another user through setpriv) */
static void av_busctl(av *a, const char *method, const char *sig)
{
	av_add_busctl(a, addr_arg, method, sig);
}

static void av_gdbus(av *a, const char *method)
{
	static char m[128];

	av_add_gdbus(a, addr, method, m, sizeof(m));
}

static int run_av(av *a)
{
	run_flat((char *const *)a->v);
	if (res.status != 0)
		mkt_diag("%s: status %d: %s", a->v[0], res.status, res.err);
	return res.status;
}

static const uint8_t content1[] = "LeafNodeTBS signed through busctl";
static const uint8_t content2[] = "a KeyPackageTBS signed through gdbus";
static const uint8_t secret[] = "PLAINTEXT-MARKER the welcome secret";
static const uint8_t context[] = "the group context";

static void session_mode(const char *conf, const char *audit, const char *log)
{
	const char *const extra[] = { "--config", conf, NULL };
	char key[1024], hkey[1024], h1[65], h2[65], h3[65], want[65];
	_cleanup_bytes_ mk_bytes hpub = MK_BYTES_NULL, kem = MK_BYTES_NULL, ct = MK_BYTES_NULL,
				 pt = MK_BYTES_NULL, ctxb = MK_BYTES_NULL;
	char name[256];
	_cleanup_free_ char *gv = NULL, *text = NULL, *logtext = NULL;
	records *rs = calloc(1, sizeof(*rs));
	DBusConnection *c;
	json_object *o;
	ay_args t;
	size_t calls = 0, n_first;
	av a;
	pid_t pid;

	pid = start_agent(log, extra);
	c = bus_open(addr);
	if (agent_generate(c, "pkcs11:token=alice", "signature", "ecdsa-p256", "audit-sig", key,
			   sizeof(key)) < 0 ||
	    agent_generate(c, "pkcs11:token=alice", "hpke", "dhkem-p256", "audit-hpke", hkey,
			   sizeof(hkey)) < 0)
		mkt_bail("cannot generate the test keys");
	calls += 2;

	/* SignWithLabel from busctl and from gdbus */
	a.n = 0;
	av_busctl(&a, "SignWithLabel", "sqsay");
	av_add(&a, key);
	av_add(&a, "2");
	av_add(&a, "LeafNodeTBS");
	ay_args_fill(&t, content1, sizeof(content1));
	for (size_t i = 0; t.argv[i]; i++)
		av_add(&a, t.argv[i]);
	mkt_ok(run_av(&a) == 0, "busctl SignWithLabel");
	calls++;
	a.n = 0;
	av_gdbus(&a, "SignWithLabel");
	av_add(&a, key);
	av_add(&a, "2");
	av_add(&a, "KeyPackageTBS");
	gv = gvariant_ay(content2, sizeof(content2));
	av_add(&a, gv);
	mkt_ok(run_av(&a) == 0, "gdbus SignWithLabel");
	calls++;

	/* DecryptWithLabel over libdbus: a plaintext the log must never show */
	mkt_ok_r(agent_public_key(c, hkey, &hpub), "GetPublicKey of the HPKE key");
	calls++;
	mkt_ok_r(mk_mls_encrypt_with_label(2, hpub.data, hpub.len, "Welcome", context,
					   sizeof(context), secret, sizeof(secret), &kem, &ct),
		 "sealed in software to it");
	mk_bytes_dup(context, sizeof(context), &ctxb);
	mkt_ok(agent_decrypt(c, hkey, 2, "Welcome", &ctxb, &kem, &ct, &pt, name, sizeof(name)) == 0 &&
		       pt.len == sizeof(secret) && memcmp(pt.data, secret, pt.len) == 0,
	       "DecryptWithLabel opens it");
	calls++;
	mk_bytes_clear(&pt);
	mkt_ok(agent_decrypt(c, hkey, 2, "UpdatePathNode", &ctxb, &kem, &ct, &pt, name, sizeof(name)) < 0 &&
		       strstr(name, "DecryptFailed"),
	       "under another MLS label it fails (%s): a refusal from the worker", name);
	calls++;

	/* a read, and a call with a bad argument */
	a.n = 0;
	av_busctl(&a, "ListKeys", NULL);
	mkt_ok(run_av(&a) == 0, "busctl ListKeys");
	calls++;
	a.n = 0;
	av_busctl(&a, "SignWithLabel", "sqsay");
	av_add(&a, key);
	av_add(&a, "99");
	av_add(&a, "LeafNodeTBS");
	av_add(&a, "0");
	mkt_ok(run_av(&a) != 0 && strstr(res.err, "suite"), "SignWithLabel with suite 99 is refused");
	calls++;

	/* another user */
	if (other_users) {
		a.n = 0;
		av_as(&a, "nobody", "nogroup", NULL);
		av_gdbus(&a, "SignWithLabel");
		av_add(&a, key);
		av_add(&a, "2");
		av_add(&a, "LeafNodeTBS");
		av_add(&a, gv);
		mkt_ok(run_av(&a) != 0 && !strcmp(gdbus_error_name(&res), "org.mlskey.Error.AccessDenied"),
		       "gdbus as nobody: AccessDenied");
		calls++;
	}
	bus_close(c);
	mkt_ok(mkt_agent_stop(pid) == 0, "the agent stops cleanly");

	/* the file: start, one record per call, stop */
	records_read(rs, audit);
	mkt_ok(rs->n == calls + 2, "%zu records: start, %zu calls, stop", rs->n, calls);
	mkt_ok(rs->n >= 2 && eq(rs->r[0], "event", "start") && num(rs->r[0], "seq") == 1 &&
		       eq(rs->r[rs->n - 1], "event", "stop"),
	       "  the first is start, the last stop");
	sha256_hex(content1, sizeof(content1), h1);
	sha256_hex(content2, sizeof(content2), h2);
	sha256_hex(ct.data, ct.len, h3);
	o = find(rs, "SignWithLabel", "ok", 0, h1);
	mkt_ok(o && eq(o, "exe", busctl_exe) && eq(o, "uri", key) && eq(o, "label", "LeafNodeTBS"),
	       "busctl's signature: exe %s, the key, the label, SHA-256 of the content",
	       o ? str(o, "exe") : "?");
	mkt_ok(o && num(o, "pid") > 0 && num(o, "start_time") > 0, "  with its pid and start time");
	o = find(rs, "SignWithLabel", "ok", 0, h2);
	mkt_ok(o && eq(o, "exe", gdbus_exe) && eq(o, "label", "KeyPackageTBS"),
	       "gdbus's signature: exe %s, SHA-256 of its content", o ? str(o, "exe") : "?");
	o = find(rs, "DecryptWithLabel", "ok", 0, h3);
	mkt_ok(o && eq(o, "label", "Welcome") && eq(o, "uri", hkey) &&
		       strstr(str(o, "exe"), "test-audit-agent"),
	       "the decryption: SHA-256 of the ciphertext, label, this test as the exe");
	o = find(rs, "DecryptWithLabel", "org.mlskey.Error.DecryptFailed", 0, h3);
	mkt_ok(o && eq(o, "label", "UpdatePathNode") && str(o, "error"),
	       "the failed decryption, with its message");
	mkt_ok(count(rs, "GenerateKey", "ok") == 2 && count(rs, "GetPublicKey", "ok") == 1 &&
		       count(rs, "ListKeys", "ok") == 1,
	       "GenerateKey (two), GetPublicKey and ListKeys are recorded");
	o = find(rs, "SignWithLabel", "org.mlskey.Error.InvalidInput", 0, NULL);
	mkt_ok(o && !str(o, "input_sha256") && strstr(str(o, "error"), "suite"),
	       "the bad argument: InvalidInput, its message, no input hash");
	if (other_users) {
		o = find(rs, "SignWithLabel", "org.mlskey.Error.AccessDenied", 65534, NULL);
		mkt_ok(o && eq(o, "exe", gdbus_exe) && !str(o, "uri") && !str(o, "input_sha256") &&
			       strstr(str(o, "error"), "user 65534"),
		       "nobody's call: uid 65534, gdbus, no URI or hash, AccessDenied");
	} else {
		mkt_diag("not root or no setpriv: no call as another user");
	}

	/* nothing secret */
	text = slurp(audit);
	logtext = slurp(log);
	mkt_ok(!strstr(text, (const char *)secret) && !strstr(logtext, (const char *)secret),
	       "no plaintext in the audit file nor in the log");
	mkt_ok(!strstr(text, "\"" MKT_USER_PIN "\"") && !strstr(logtext, "PIN " MKT_USER_PIN) &&
		       !strstr(logtext, "=" MKT_USER_PIN),
	       "no PIN either");
	sha256_hex(content1, sizeof(content1), want);
	mkt_ok(strstr(logtext, "audit SignWithLabel uid=0") && strstr(logtext, want),
	       "the log has the signature's audit line with its hash");
	if (other_users)
		mkt_ok(strstr(logtext, "audit SignWithLabel uid=65534") &&
			       strstr(logtext, "org.mlskey.Error.AccessDenied: user 65534"),
		       "  and nobody's refusal");

	mkt_ok(verify(audit) == 0 && strstr(res.out, "chain intact (seq 1.."),
	       "mlskey audit verify: intact");

	/* a restart continues the chain */
	n_first = rs->n;
	sha256_hex(rs->line[n_first - 1], strlen(rs->line[n_first - 1]) - 1, want);
	pid = start_agent(log, extra);
	a.n = 0;
	av_busctl(&a, "ListTokens", NULL);
	mkt_ok(run_av(&a) == 0, "after a restart: busctl ListTokens");
	mkt_ok(mkt_agent_stop(pid) == 0, "  and a clean stop");
	records_read(rs, audit);
	mkt_ok(rs->n == n_first + 3, "  3 more records (%zu)", rs->n - n_first);
	mkt_ok(rs->n > n_first && eq(rs->r[n_first], "event", "start") &&
		       num(rs->r[n_first], "seq") == (long long)n_first + 1 &&
		       eq(rs->r[n_first], "prev", want),
	       "  its start record goes on with seq %zu and the last line's hash", n_first + 1);
	mkt_ok(verify(audit) == 0 && strstr(res.out, "chain intact"), "  verify: intact");

	/* a copy with one record edited */
	{
		char copy[600];
		FILE *f;

		snprintf(copy, sizeof(copy), "%s.edited", audit);
		f = fopen(copy, "we");
		for (size_t i = 0; i < rs->n; i++) {
			char *p = strstr(rs->line[i], "\"result\":\"org.mlskey.Error.DecryptFailed\"");

			if (p)
				memcpy(p, "\"result\":\"ok\",\"x\":\"", 19);
			fputs(rs->line[i], f);
		}
		fclose(f);
		mkt_ok(verify(copy) == 1 && strstr(res.out, "its hash does not match its content"),
		       "a copy where the failed decryption reads ok: verify says broken");
	}
	for (size_t i = 0; i < rs->n; i++)
		json_object_put(rs->r[i]);
	free(rs);
}

static void system_mode(const char *log)
{
	const char *conf;
	char text[1024], audit[512];
	records *rs = calloc(1, sizeof(*rs));
	json_object *o;
	av a;
	pid_t pid;

	snprintf(text, sizeof(text), "[agent]\nallow-users = nobody\nallow-groups = users\n"
				     "audit-file = %s/audit-system.jsonl\n",
		 mkt_tmpdir());
	conf = mkt_write_file("system.conf", text);
	snprintf(audit, sizeof(audit), "%s/audit-system.jsonl", mkt_tmpdir());

	/* in session mode the same file is refused at load, naming the line */
	{
		const char *argv[] = { mkt_build_path("ipc/mlskeyd"), "--address", addr, "--config",
				       conf, "--no-p11-kit", "--module", mkt_softhsm_module(), NULL };

		run_flat((char *const *)argv);
	}
	mkt_ok(res.status == 1 && strstr(res.err, "system.conf:2:") && strstr(res.err, "--system"),
	       "session mode with allow-users: mlskeyd refuses to start: %s", res.err);

	{
		const char *const extra[] = { "--system", "--config", conf, NULL };

		pid = start_agent(log, extra);
	}
	a.n = 0;
	av_as(&a, "nobody", "nogroup", NULL);
	av_busctl(&a, "ListTokens", NULL);
	mkt_ok(run_av(&a) == 0, "system mode: nobody (allow-users) may call");
	a.n = 0;
	av_as(&a, "daemon", "daemon", NULL);
	av_busctl(&a, "ListTokens", NULL);
	mkt_ok(run_av(&a) != 0 && strstr(res.err, "allow-users"),
	       "system mode: daemon may not: %s", res.err);
	a.n = 0;
	av_as(&a, "daemon", "daemon", "100");
	av_busctl(&a, "ListTokens", NULL);
	mkt_ok(run_av(&a) == 0, "system mode: daemon in group users (allow-groups) may");
	a.n = 0;
	av_busctl(&a, "ListTokens", NULL);
	mkt_ok(run_av(&a) == 0, "system mode: the agent's own user may");
	mkt_ok(mkt_agent_stop(pid) == 0, "the agent stops cleanly");

	records_read(rs, audit);
	o = find(rs, "ListTokens", "ok", 65534, NULL);
	mkt_ok(o && eq(o, "exe", busctl_exe), "audit: nobody's ListTokens, ok");
	mkt_ok(find(rs, "ListTokens", "org.mlskey.Error.AccessDenied", 1, NULL) != NULL,
	       "audit: daemon's refusal");
	mkt_ok(find(rs, "ListTokens", "ok", 1, NULL) != NULL, "audit: daemon's call through its group");
	mkt_ok(rs->n == 6, "6 records: start, 4 calls, stop (%zu)", rs->n);
	mkt_ok(verify(audit) == 0, "verify: intact");
	for (size_t i = 0; i < rs->n; i++)
		json_object_put(rs->r[i]);
	free(rs);
}

/*
 * Refusals that never reach the worker's reply: a token that hangs (the shim holds C_Sign)
 * answered by the watchdog with TokenError, and Busy when the token's queue is full. Each
 * call still leaves exactly one record.
 */
static void watchdog_and_busy(const char *log)
{
	char text[1024], audit[512], key[1024], e1[256], e2[256], e3[256];
	records *rs = calloc(1, sizeof(*rs));
	DBusPendingCall *p1, *p2, *p3;
	DBusConnection *c;
	const char *conf;
	size_t calls = 0;
	pid_t pid;

	mkt_shim_setup();
	snprintf(audit, sizeof(audit), "%s/audit-hung.jsonl", mkt_tmpdir());
	snprintf(text, sizeof(text), "[agent]\naudit-file = %s\ntoken-timeout = 1\nworkers = 1\n"
				     "max-queue = 1\npcsc = no\n", audit);
	conf = mkt_write_file("hung.conf", text);
	{
		const char *const extra[] = { "--config", conf, NULL };

		pid = start_agent_with(log, extra, true);
	}
	c = bus_open(addr);
	if (agent_generate(c, "pkcs11:token=alice", "signature", "ecdsa-p256", "hung", key,
			   sizeof(key)) < 0)
		mkt_bail("cannot generate a key through the shim");
	calls++;
	mkt_ok(!pending_error(sign_send(c, key, content1, sizeof(content1), 20000), e1, sizeof(e1))[0], "a signature while the token answers");
	calls++;
	mkt_shim_control("sign_delay_ms=2500\n");
	p1 = sign_send(c, key, content1, sizeof(content1), 20000);
	for (int i = 0; i < 100 && mkt_shim_count("C_Sign delayed") == 0; i++)
		usleep(10000);
	p2 = sign_send(c, key, content1, sizeof(content1), 20000); /* waits behind it: the queue is full */
	usleep(100000);
	p3 = sign_send(c, key, content1, sizeof(content1), 20000); /* no room */
	pending_error(p1, e1, sizeof(e1));
	pending_error(p2, e2, sizeof(e2));
	pending_error(p3, e3, sizeof(e3));
	calls += 3;
	mkt_ok(!strcmp(e1, "org.mlskey.Error.TokenError"), "the hung signature: %s", e1);
	mkt_ok(!strcmp(e3, "org.mlskey.Error.Busy") || !strcmp(e2, "org.mlskey.Error.Busy"),
	       "a signature with no room in the queue: %s / %s", e2, e3);
	mkt_shim_control("");
	usleep(2600000); /* the worker comes back from the module: its late result goes nowhere */
	bus_close(c);
	mkt_ok(mkt_agent_stop(pid) == 0, "the agent stops cleanly");
	records_read(rs, audit);
	mkt_ok(rs->n == calls + 2, "one record per call, also when the watchdog answered (%zu "
				   "records, %zu calls)", rs->n, calls);
	mkt_ok(count(rs, "SignWithLabel", "org.mlskey.Error.TokenError") >= 1,
	       "  TokenError from the watchdog is recorded");
	mkt_ok(count(rs, "SignWithLabel", "org.mlskey.Error.Busy") >= 1, "  Busy is recorded");
	mkt_ok(verify(audit) == 0, "  verify: intact");
	for (size_t i = 0; i < rs->n; i++)
		json_object_put(rs->r[i]);
	free(rs);
}

int main(void)
{
	char text[1024], audit[512], log[512], sock[600];
	const char *conf;

	mkt_softhsm_setup();
	mkt_softhsm_add_token("alice");
	addr = mkt_dbus_setup();
	snprintf(addr_arg, sizeof(addr_arg), "--address=%s", addr);
	mkt_pinentry_log_path();
	mkt_pinentry_control("");
	which("busctl", busctl_exe);
	which("gdbus", gdbus_exe);
	run_list(&res, "setpriv", "--version", NULL);
	other_users = res.status == 0 && geteuid() == 0;
	if (other_users) {
		/* let other users reach the private bus */
		chmod(mkt_tmpdir(), 0711);
		snprintf(sock, sizeof(sock), "%s/bus", mkt_tmpdir());
		chmod(sock, 0777);
	}

	snprintf(audit, sizeof(audit), "%s/audit.jsonl", mkt_tmpdir());
	snprintf(log, sizeof(log), "%s/agent.log", mkt_tmpdir());
	snprintf(text, sizeof(text), "[agent]\naudit-file = %s\n", audit);
	conf = mkt_write_file("session.conf", text);
	session_mode(conf, audit, log);
	if (other_users)
		system_mode(log);
	else
		mkt_diag("not root or no setpriv: system mode's other users are not tried");
	watchdog_and_busy(log);
	return mkt_done();
}
