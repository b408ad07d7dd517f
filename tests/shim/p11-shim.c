/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mkt-p11shim: a fault-injecting PKCS#11 module for tests. It loads the real module
 * (SoftHSM) with dlopen, hands out that module's function list with a few entries replaced,
 * and so forwards every PKCS#11 call unchanged except:
 *
 *   C_Login       counted: one line per call appended to the log (never the PIN itself);
 *                 on a PIN-pad token (pinpad=1) a call without a PIN is "typed on the
 *                 keypad": forwarded with pinpad_pin after pinpad_delay_ms
 *   C_Logout      logged
 *   C_GetTokenInfo  the flags USER_PIN_COUNT_LOW, USER_PIN_FINAL_TRY, USER_PIN_LOCKED and
 *                 PROTECTED_AUTHENTICATION_PATH set or cleared as told; nothing else changes
 *   C_Sign        delayed by sign_delay_ms (a slow or hung token)
 *
 * Knobs (each read afresh at every call that uses it, so a test can change them while the
 * module is loaded; the control file wins over the environment):
 *
 *   MKT_SHIM_MODULE    the real module (default: SoftHSM2 where Debian puts it)
 *   MKT_SHIM_LOG       file to append to: "C_Login user=U pin=yes|none rv=0xRV",
 *                      "C_Logout rv=0xRV", "C_Sign delayed=N" (one line each, O_APPEND)
 *   MKT_SHIM_CONTROL   a file of key=value lines, reread at each call:
 *     count_low=0|1    force CKF_USER_PIN_COUNT_LOW off / on (absent: as the module says)
 *     final_try=0|1    force CKF_USER_PIN_FINAL_TRY
 *     locked=0|1       force CKF_USER_PIN_LOCKED
 *     pinpad=0|1       force CKF_PROTECTED_AUTHENTICATION_PATH
 *     token=LABEL      change the flags of this token only (default: every token)
 *     sign_delay_ms=N  sleep N ms in every C_Sign before forwarding it
 *     pinpad_pin=PIN   what the person "types on the keypad" (default 123456)
 *     pinpad_delay_ms=N  how long the typing takes (default 0)
 *     pinpad_cancel=1  the person presses Cancel on the keypad: CKR_FUNCTION_CANCELED
 *     tries=N          a card with a retry counter of N: each C_Login(CKU_USER) the module
 *                      refuses counts one down, a good one resets it; the flags follow
 *                      (COUNT_LOW below N, FINAL_TRY at 1, LOCKED at 0) and at 0 C_Login
 *                      answers CKR_PIN_LOCKED without reaching the module. The count lives
 *                      in the process and starts afresh once tries= is gone; count_low=,
 *                      final_try=, locked= still override.
 *   MKT_SHIM_<KEY>     the same keys in upper case as environment variables, e.g.
 *                      MKT_SHIM_SIGN_DELAY_MS=3000 (the defaults under the control file)
 *
 * Build: tests/shim/meson.build (shared module mkt-p11shim); load it into mlskeyd with
 * --no-p11-kit --module .../tests/shim/libmkt-p11shim.so (mkt_shim_path() in
 * tests/shim/shim.h), with SOFTHSM2_CONF pointing at the test's store as usual.
 */
#include <ctype.h>
#include <stdarg.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#define SHIM_EXPORT __attribute__((visibility("default")))

typedef struct knobs {
	int count_low, final_try, locked, pinpad; /* -1: leave the flag alone */
	char token[33];
	unsigned long sign_delay_ms, pinpad_delay_ms;
	char pinpad_pin[64];
	bool pinpad_cancel;
	long tries; /* 0: no retry counter */
} knobs;

static pthread_mutex_t tries_lock = PTHREAD_MUTEX_INITIALIZER;
static long tries_left = -1; /* -1: not started */

static pthread_once_t once = PTHREAD_ONCE_INIT;
static CK_FUNCTION_LIST *real;
static CK_FUNCTION_LIST shim;
static CK_RV load_rv = CKR_GENERAL_ERROR;

static void knob_set(knobs *k, const char *key, const char *v)
{
	int *flag = !strcmp(key, "count_low") ? &k->count_low
		    : !strcmp(key, "final_try") ? &k->final_try
		    : !strcmp(key, "locked")    ? &k->locked
		    : !strcmp(key, "pinpad")    ? &k->pinpad
						: NULL;

	if (flag)
		*flag = atoi(v) ? 1 : 0;
	else if (!strcmp(key, "token"))
		snprintf(k->token, sizeof(k->token), "%s", v);
	else if (!strcmp(key, "sign_delay_ms"))
		k->sign_delay_ms = strtoul(v, NULL, 10);
	else if (!strcmp(key, "pinpad_delay_ms"))
		k->pinpad_delay_ms = strtoul(v, NULL, 10);
	else if (!strcmp(key, "pinpad_pin"))
		snprintf(k->pinpad_pin, sizeof(k->pinpad_pin), "%s", v);
	else if (!strcmp(key, "pinpad_cancel"))
		k->pinpad_cancel = atoi(v) != 0;
	else if (!strcmp(key, "tries"))
		k->tries = strtol(v, NULL, 10);
}

/* Without tries= the counter starts afresh the next time tries= is set. */
static void tries_reset(const knobs *k)
{
	if (k->tries > 0)
		return;
	pthread_mutex_lock(&tries_lock);
	tries_left = -1;
	pthread_mutex_unlock(&tries_lock);
}

/* The simulated retry counter (tries=N): how many are left. */
static long tries_now(const knobs *k)
{
	long n;

	pthread_mutex_lock(&tries_lock);
	if (tries_left < 0 || tries_left > k->tries)
		tries_left = k->tries;
	n = tries_left;
	pthread_mutex_unlock(&tries_lock);
	return n;
}

static void tries_after(const knobs *k, CK_RV rv)
{
	pthread_mutex_lock(&tries_lock);
	if (rv == CKR_PIN_INCORRECT && tries_left > 0)
		tries_left--;
	else if (rv == CKR_OK)
		tries_left = k->tries;
	pthread_mutex_unlock(&tries_lock);
}

/* The environment first, then the control file. */
static void knobs_read(knobs *k)
{
	static const char *const keys[] = { "count_low", "final_try", "locked", "pinpad", "token",
					    "sign_delay_ms", "pinpad_delay_ms", "pinpad_pin",
					    "pinpad_cancel", "tries" };
	const char *path = getenv("MKT_SHIM_CONTROL");
	char line[256];
	FILE *f;

	*k = (knobs){ .count_low = -1, .final_try = -1, .locked = -1, .pinpad = -1 };
	snprintf(k->pinpad_pin, sizeof(k->pinpad_pin), "123456");
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		char name[64];
		const char *v;
		size_t j;

		snprintf(name, sizeof(name), "MKT_SHIM_%s", keys[i]);
		for (j = 9; name[j]; j++)
			name[j] = (char)toupper((unsigned char)name[j]);
		v = getenv(name);
		if (v)
			knob_set(k, keys[i], v);
	}
	if (!path || !(f = fopen(path, "re")))
		return;
	while (fgets(line, sizeof(line), f)) {
		char *eq = strchr(line, '=');

		line[strcspn(line, "\r\n")] = '\0';
		if (!eq || line[0] == '#')
			continue;
		*eq = '\0';
		knob_set(k, line, eq + 1);
	}
	fclose(f);
}

static void shim_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void shim_log(const char *fmt, ...)
{
	const char *path = getenv("MKT_SHIM_LOG");
	char buf[256];
	va_list ap;
	int fd, n;

	if (!path)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	/* one write per line: lines of concurrent calls never mix */
	if (write(fd, buf, (size_t)n) < 0) {
		/* nothing to do about it in a test module */
	}
	close(fd);
}

static void sleep_ms(unsigned long ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* --- the replaced functions ------------------------------------------------------------ */

static CK_RV shim_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list);

static bool token_selected(const knobs *k, CK_SLOT_ID slot)
{
	CK_TOKEN_INFO ti;
	size_t n;

	if (!k->token[0])
		return true;
	if (real->C_GetTokenInfo(slot, &ti) != CKR_OK)
		return false;
	n = strlen(k->token);
	if (n > sizeof(ti.label))
		return false;
	if (memcmp(ti.label, k->token, n) != 0)
		return false;
	for (size_t i = n; i < sizeof(ti.label); i++)
		if (ti.label[i] != ' ')
			return false;
	return true;
}

static void flag(CK_FLAGS *f, int v, CK_FLAGS bit)
{
	if (v == 1)
		*f |= bit;
	else if (v == 0)
		*f &= ~bit;
}

static CK_RV shim_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info)
{
	CK_RV rv = real->C_GetTokenInfo(slot, info);
	knobs k;

	if (rv != CKR_OK || !info)
		return rv;
	knobs_read(&k);
	tries_reset(&k);
	if (!token_selected(&k, slot))
		return rv;
	if (k.tries > 0) {
		long n = tries_now(&k);

		info->flags &= ~(CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY |
				 CKF_USER_PIN_LOCKED);
		flag(&info->flags, n < k.tries && n > 1, CKF_USER_PIN_COUNT_LOW);
		flag(&info->flags, n == 1, CKF_USER_PIN_FINAL_TRY);
		flag(&info->flags, n == 0, CKF_USER_PIN_LOCKED);
	}
	flag(&info->flags, k.count_low, CKF_USER_PIN_COUNT_LOW);
	flag(&info->flags, k.final_try, CKF_USER_PIN_FINAL_TRY);
	flag(&info->flags, k.locked, CKF_USER_PIN_LOCKED);
	flag(&info->flags, k.pinpad, CKF_PROTECTED_AUTHENTICATION_PATH);
	return rv;
}

/* The slot of a session, for the token= knob. */
static bool session_selected(const knobs *k, CK_SESSION_HANDLE s)
{
	CK_SESSION_INFO si;

	if (!k->token[0])
		return true;
	return real->C_GetSessionInfo(s, &si) == CKR_OK && token_selected(k, si.slotID);
}

static CK_RV shim_Login(CK_SESSION_HANDLE s, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin,
			CK_ULONG pin_len)
{
	knobs k;
	CK_RV rv;

	knobs_read(&k);
	tries_reset(&k);
	if (k.tries > 0 && user == CKU_USER && session_selected(&k, s) && tries_now(&k) == 0) {
		shim_log("C_Login user=%lu pin=%s rv=0x%lx (locked by tries=)", (unsigned long)user,
			 pin ? "yes" : "none", (unsigned long)CKR_PIN_LOCKED);
		return CKR_PIN_LOCKED;
	}
	if (!pin && pin_len == 0 && k.pinpad == 1 && session_selected(&k, s)) {
		/* the PIN pad: the person types while the call blocks */
		sleep_ms(k.pinpad_delay_ms);
		if (k.pinpad_cancel)
			rv = CKR_FUNCTION_CANCELED;
		else
			rv = real->C_Login(s, user, (CK_UTF8CHAR_PTR)k.pinpad_pin,
					   strlen(k.pinpad_pin));
		shim_log("C_Login user=%lu pin=keypad rv=0x%lx", (unsigned long)user,
			 (unsigned long)rv);
		if (k.tries > 0 && user == CKU_USER)
			tries_after(&k, rv);
		return rv;
	}
	rv = real->C_Login(s, user, pin, pin_len);
	if (k.tries > 0 && user == CKU_USER && session_selected(&k, s))
		tries_after(&k, rv);
	shim_log("C_Login user=%lu pin=%s rv=0x%lx", (unsigned long)user, pin ? "yes" : "none",
		 (unsigned long)rv);
	return rv;
}

static CK_RV shim_Logout(CK_SESSION_HANDLE s)
{
	CK_RV rv = real->C_Logout(s);

	shim_log("C_Logout rv=0x%lx", (unsigned long)rv);
	return rv;
}

static CK_RV shim_Sign(CK_SESSION_HANDLE s, CK_BYTE_PTR data, CK_ULONG n, CK_BYTE_PTR sig,
		       CK_ULONG_PTR sig_len)
{
	knobs k;

	knobs_read(&k);
	if (k.sign_delay_ms && session_selected(&k, s)) {
		shim_log("C_Sign delayed=%lu", k.sign_delay_ms);
		sleep_ms(k.sign_delay_ms);
	}
	return real->C_Sign(s, data, n, sig, sig_len);
}

/* --- loading --------------------------------------------------------------------------- */

static void load(void)
{
	static const char *const candidates[] = {
		"/usr/lib/softhsm/libsofthsm2.so",
		"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
		"/usr/lib64/pkcs11/libsofthsm2.so",
		"/usr/lib/pkcs11/libsofthsm2.so",
	};
	const char *path = getenv("MKT_SHIM_MODULE");
	CK_RV (*get)(CK_FUNCTION_LIST_PTR_PTR);
	void *h = NULL;

	if (path && path[0])
		h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	for (size_t i = 0; !h && !(path && path[0]) && i < 4; i++)
		h = dlopen(candidates[i], RTLD_NOW | RTLD_LOCAL);
	if (!h)
		return;
	*(void **)&get = dlsym(h, "C_GetFunctionList");
	if (!get || get(&real) != CKR_OK || !real)
		return;
	/* never dlclose'd: the module lives as long as the process */
	shim = *real;
	shim.C_GetFunctionList = shim_GetFunctionList;
	shim.C_GetTokenInfo = shim_GetTokenInfo;
	shim.C_Login = shim_Login;
	shim.C_Logout = shim_Logout;
	shim.C_Sign = shim_Sign;
	load_rv = CKR_OK;
}

static CK_RV shim_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
	if (!list)
		return CKR_ARGUMENTS_BAD;
	pthread_once(&once, load);
	if (load_rv != CKR_OK)
		return load_rv;
	*list = &shim;
	return CKR_OK;
}

SHIM_EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list);
SHIM_EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
	return shim_GetFunctionList(list);
}
