/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers of the PIN-flow tests (issue 5): the scripted pinentry (tests/pin/
 * pinentry-script.c) and what it logged, SoftHSM tokens with a PIN of the test's choice,
 * keys made directly on the module (CKA_ALWAYS_AUTHENTICATE), and mlskeyd started with the
 * shim and the scripted pinentry.
 */
#pragma once

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#include "tests/agent/agent-test.h"
#include "tests/shim/shim.h"

/* One check that cannot run here: TAP "ok N # SKIP why" (the rest of the test runs). */
static inline void pin_skip(const char *why)
{
	printf("ok %d # SKIP %s\n", ++mkt_n, why);
	fflush(stdout);
}

/* --- the scripted pinentry ------------------------------------------------------------- */

static inline const char *pin_script_program(void)
{
	static char path[1024];

	if (!path[0]) {
		snprintf(path, sizeof(path), "%s", mkt_build_path("tests/pin/mkt-pinentry"));
		if (access(path, X_OK) != 0)
			mkt_bail("the scripted pinentry is not built at %s", path);
	}
	return path;
}

static inline const char *pin_script_file(const char *suffix)
{
	static char paths[3][512];
	int i = !strcmp(suffix, "") ? 0 : !strcmp(suffix, ".log") ? 1 : 2;

	snprintf(paths[i], sizeof(paths[i]), "%s/pinscript%s", mkt_tmpdir(), suffix);
	return paths[i];
}

/* Replaces the script (answers one per line) and starts it from its first line. */
static inline void pin_script(const char *text)
{
	FILE *f = fopen(pin_script_file(""), "we");

	if (!f)
		mkt_bail("cannot write the pinentry script");
	fputs(text, f);
	fclose(f);
	unlink(pin_script_file(".pos"));
	setenv("MKT_PINSCRIPT", pin_script_file(""), 1);
	setenv("MKT_PINSCRIPT_LOG", pin_script_file(".log"), 1);
}

/* Empties the pinentry's log. */
static inline void pin_log_reset(void)
{
	FILE *f = fopen(pin_script_file(".log"), "we");

	if (f)
		fclose(f);
}

/* The whole log (static buffer, NUL-terminated). */
static inline const char *pin_log(void)
{
	static char buf[256 * 1024];
	FILE *f = fopen(pin_script_file(".log"), "re");
	size_t n = 0;

	buf[0] = '\0';
	if (f) {
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
	return buf;
}

/* Lines of the log that start with prefix ("START", "GETPIN", "SETERROR ", ...). */
static inline int pin_log_count(const char *prefix)
{
	const char *p = pin_log();
	size_t n = strlen(prefix);
	int count = 0;

	while (*p) {
		if (strncmp(p, prefix, n) == 0)
			count++;
		p = strchr(p, '\n');
		if (!p)
			break;
		p++;
	}
	return count;
}

/* The last log line that starts with prefix, without it (static buffer), or "". */
static inline const char *pin_log_last(const char *prefix)
{
	static char last[4096];
	const char *p = pin_log();
	size_t n = strlen(prefix);

	last[0] = '\0';
	while (*p) {
		const char *end = strchr(p, '\n');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		if (strncmp(p, prefix, n) == 0)
			snprintf(last, sizeof(last), "%.*s", (int)(len - n), p + n);
		if (!end)
			break;
		p = end + 1;
	}
	return last;
}

/* --- tokens and keys -------------------------------------------------------------------- */

/* A SoftHSM token with the given user PIN (SO PIN MKT_SO_PIN). */
static inline void pin_add_token(const char *label, const char *pin)
{
	run_result *res = malloc(sizeof(*res));

	mkt_softhsm_setup();
	if (!res)
		mkt_bail("out of memory");
	run_list(res, "softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin",
		 MKT_SO_PIN, "--pin", pin, NULL);
	if (res->status != 0)
		mkt_bail("softhsm2-util --init-token --label %s: %s", label, res->err);
	free(res);
}

/*
 * Makes an ECDSA P-256 key pair labelled label on the SoftHSM token token_label (user PIN
 * pin), the private key with CKA_ALWAYS_AUTHENTICATE as asked, straight through the real
 * module (never the shim: no C_Login of the test is counted). 0 or -1 with a diagnostic.
 */
static inline int pin_make_key(const char *token_label, const char *pin, const char *label,
			       bool always_authenticate)
{
	static const CK_BYTE p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE, aa = always_authenticate ? CK_TRUE : CK_FALSE;
	CK_BYTE id[8];
	CK_ATTRIBUTE pub[] = {
		{ CKA_EC_PARAMS, (void *)p256, sizeof(p256) }, { CKA_VERIFY, &yes, 1 },
		{ CKA_TOKEN, &yes, 1 }, { CKA_LABEL, (void *)label, strlen(label) },
		{ CKA_ID, id, sizeof(id) },
	};
	CK_ATTRIBUTE priv[] = {
		{ CKA_SIGN, &yes, 1 }, { CKA_TOKEN, &yes, 1 }, { CKA_PRIVATE, &yes, 1 },
		{ CKA_SENSITIVE, &yes, 1 }, { CKA_EXTRACTABLE, &no, 1 },
		{ CKA_ALWAYS_AUTHENTICATE, &aa, 1 }, { CKA_LABEL, (void *)label, strlen(label) },
		{ CKA_ID, id, sizeof(id) },
	};
	CK_MECHANISM gen = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
	CK_FUNCTION_LIST *f;
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	CK_OBJECT_HANDLE hpub, hpriv;
	CK_RV rv = CKR_GENERAL_ERROR;

	for (size_t i = 0; i < sizeof(id); i++)
		id[i] = (CK_BYTE)(label[i % strlen(label)] ^ (i * 37));
	mkt_softhsm_setup();
	f = p11_kit_module_load(mkt_softhsm_module(), 0);
	if (!f || p11_kit_module_initialize(f) != CKR_OK) {
		mkt_diag("cannot load SoftHSM to make key %s", label);
		return -1;
	}
	if (f->C_GetSlotList(CK_TRUE, slots, &n) == CKR_OK) {
		for (CK_ULONG i = 0; i < n && s == CK_INVALID_HANDLE; i++) {
			CK_TOKEN_INFO ti;
			size_t l = strlen(token_label);

			if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK || l > sizeof(ti.label) ||
			    memcmp(ti.label, token_label, l) != 0 ||
			    (l < sizeof(ti.label) && ti.label[l] != ' '))
				continue;
			if (f->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
					     NULL, &s) != CKR_OK)
				s = CK_INVALID_HANDLE;
		}
	}
	if (s != CK_INVALID_HANDLE) {
		rv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR *)pin, strlen(pin));
		if (rv == CKR_OK)
			rv = f->C_GenerateKeyPair(s, &gen, pub, ELEMENTSOF(pub), priv,
						  ELEMENTSOF(priv), &hpub, &hpriv);
		f->C_CloseSession(s);
	}
	p11_kit_module_finalize(f);
	p11_kit_module_release(f);
	if (rv != CKR_OK)
		mkt_diag("cannot make key %s on token %s: %s", label, token_label,
			 p11_kit_strerror(rv));
	return rv == CKR_OK ? 0 : -1;
}

/* --- the agent --------------------------------------------------------------------------- */

/*
 * mlskeyd with the shim as its module, the scripted pinentry (or pinentry, when given) and
 * extra arguments (NULL-terminated list, may be NULL); its stderr goes to log_path when
 * that is not NULL.
 */
static inline pid_t pin_agent_start(const char *pinentry, const char *log_path,
				    const char *const *extra)
{
	const char *argv[32];
	size_t n = 0;
	int saved = -1;
	pid_t pid;

	argv[n++] = "--pinentry";
	argv[n++] = pinentry ? pinentry : pin_script_program();
	for (size_t i = 0; extra && extra[i] && n < ELEMENTSOF(argv) - 1; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	if (log_path) {
		int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

		if (fd < 0)
			mkt_bail("cannot open %s", log_path);
		fflush(stderr);
		saved = dup(STDERR_FILENO);
		dup2(fd, STDERR_FILENO);
		close(fd);
	}
	pid = mkt_shim_agent_start(argv);
	if (saved >= 0) {
		dup2(saved, STDERR_FILENO);
		close(saved);
	}
	return pid;
}

/* SignWithLabel on key over c: "" on success, else the D-Bus error name (static buffer);
 * the error message into msg when not NULL. */
static inline const char *pin_sign(DBusConnection *c, const char *key, char *msg, size_t cap)
{
	static char name[256];
	static const uint8_t content[] = { 1, 2, 3, 4 };
	DBusMessage *m = agent_call_new("SignWithLabel"), *r;
	const char *label = "LeafNodeTBS";
	uint16_t suite = 2;

	dbus_message_append_args(m, DBUS_TYPE_STRING, &key, DBUS_TYPE_UINT16, &suite,
				 DBUS_TYPE_STRING, &label, DBUS_TYPE_INVALID);
	append_ay(m, content, sizeof(content));
	r = agent_send(c, m, 60000, name, sizeof(name), msg, msg ? cap : 0);
	if (r)
		dbus_message_unref(r);
	return name;
}

/* Waits up to ms for the shim to have logged `want` lines starting with prefix. */
static inline bool pin_wait_shim(const char *prefix, int want, int ms)
{
	for (int i = 0; i < ms / 20; i++) {
		if (mkt_shim_count(prefix) >= want)
			return true;
		usleep(20 * 1000);
	}
	return mkt_shim_count(prefix) >= want;
}

/* The whole of a file (malloc'ed, NUL-terminated; "" when missing). */
static inline char *pin_slurp(const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t n = 0, cap = 0;

	if (f) {
		for (;;) {
			if (n + 4096 + 1 > cap) {
				cap = (cap ? cap * 2 : 8192);
				buf = realloc(buf, cap);
				if (!buf)
					mkt_bail("out of memory");
			}
			size_t k = fread(buf + n, 1, cap - n - 1, f);

			if (k == 0)
				break;
			n += k;
		}
		fclose(f);
	}
	if (!buf && !(buf = malloc(1)))
		mkt_bail("out of memory");
	buf[n] = '\0';
	return buf;
}
