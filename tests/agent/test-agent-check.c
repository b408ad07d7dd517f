/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The checks every client argument passes before work starts (agent/check.h), the error
 * names the daemon maps to (common/error.h, ipc), and the worker queues (agent/workers.h).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent-config.h"
#include "agent/check.h"
#include "agent/hpke.h"
#include "agent/workers.h"
#include "common/error.h"
#include "ipc/bus.h"
#include "tests/tap.h"

static const char *KEY = "pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;"
			 "serial=5c8c1f2b0a6e4d3f;token=alice;id=%01%02;object=sig;type=private";

static void test_suites(void)
{
	const mk_suite *s = NULL;
	static const uint16_t good[] = { 1, 2, 3, 5, 7 };
	static const uint16_t invalid[] = { 0, 8, 99, 0xf000, 0xffff };

	for (size_t i = 0; i < ELEMENTSOF(good); i++)
		mkt_ok(mk_check_suite(good[i], &s) == 0 && s && s->id == good[i],
		       "suite %u is accepted", good[i]);
	mkt_ok_err(mk_check_suite(4, &s), -EOPNOTSUPP, "suite 4 (X448) is Unsupported");
	mkt_ok(strstr(mk_error_message(), "1, 2, 3, 5 or 7") != NULL, "  and says which are: %s",
	       mk_error_message());
	mkt_ok_err(mk_check_suite(6, &s), -EOPNOTSUPP, "suite 6 (Ed448) is Unsupported");
	for (size_t i = 0; i < ELEMENTSOF(invalid); i++)
		mkt_ok_err(mk_check_suite(invalid[i], &s), -EINVAL, "suite %u is InvalidInput",
			   invalid[i]);
	mkt_ok(!strcmp(mk_error_name(-EINVAL), "InvalidInput") &&
		       !strcmp(mk_error_name(-EOPNOTSUPP), "Unsupported"),
	       "-EINVAL / -EOPNOTSUPP are InvalidInput / Unsupported");

	mkt_ok_r(mk_check_hpke_ids(1, 1), "HPKE kdf 1 aead 1");
	mkt_ok_r(mk_check_hpke_ids(3, 3), "HPKE kdf 3 aead 3");
	mkt_ok_err(mk_check_hpke_ids(0, 1), -EINVAL, "kdf 0 is InvalidInput");
	mkt_ok_err(mk_check_hpke_ids(4, 1), -EINVAL, "kdf 4 is InvalidInput");
	mkt_ok_err(mk_check_hpke_ids(1, 0xffff), -EOPNOTSUPP, "aead 0xFFFF (export only) is Unsupported");
	mkt_ok_err(mk_check_hpke_ids(1, 9), -EINVAL, "aead 9 is InvalidInput");
}

static void test_key_suites(void)
{
	static const struct {
		mk_key_alg a;
		uint16_t s[2];
		size_t n;
	} want[] = {
		{ MK_ALG_ED25519, { 1, 3 }, 2 },      { MK_ALG_ECDSA_P256, { 2 }, 1 },
		{ MK_ALG_ECDSA_P521, { 5 }, 1 },      { MK_ALG_ECDSA_P384, { 7 }, 1 },
		{ MK_ALG_DHKEM_X25519, { 1, 3 }, 2 }, { MK_ALG_DHKEM_P256, { 2 }, 1 },
		{ MK_ALG_DHKEM_P521, { 5 }, 1 },      { MK_ALG_DHKEM_P384, { 7 }, 1 },
	};
	uint16_t out[8];

	for (size_t i = 0; i < ELEMENTSOF(want); i++) {
		size_t n = mk_key_alg_suites(want[i].a, out, ELEMENTSOF(out));

		mkt_ok(n == want[i].n && !memcmp(out, want[i].s, n * sizeof(uint16_t)),
		       "%s serves suites %u%s", mk_key_alg_name(want[i].a), want[i].s[0],
		       want[i].n == 2 ? " and 3" : "");
	}
	mkt_ok(mk_key_alg_suites(MK_ALG_NONE, out, ELEMENTSOF(out)) == 0,
	       "an unusable key serves none");
}

static void test_labels(void)
{
	mk_config c;
	char label[300];

	mk_config_init(&c);
	memset(label, 'a', sizeof(label));
	label[255] = '\0';
	mkt_ok_r(mk_check_label(&c, "the label", label), "a 255-byte label");
	label[255] = 'a';
	label[256] = '\0';
	mkt_ok_err(mk_check_label(&c, "the label", label), -EINVAL, "a 256-byte label");
	mkt_ok(strstr(mk_error_message(), "256 bytes") != NULL, "  says how long: %s",
	       mk_error_message());
	c.max_label_bytes = 10;
	mkt_ok_err(mk_check_label(&c, "the label", "eleven byte"), -EINVAL,
		   "max-label-bytes=10 refuses 11 bytes");
	mkt_ok_r(mk_check_label(&c, "the label", ""), "an empty label");
	mkt_ok_r(mk_check_label(&c, "the label", "Gr\xc3\xbc\xc3\x9f" "e"), "UTF-8 label");
	mkt_ok_err(mk_check_label(&c, "the label", "bad\xff"), -EINVAL, "0xFF is not UTF-8");
	mkt_ok(!mk_utf8_valid("\xc0\xaf", 2), "overlong '/' is not valid UTF-8");
	mkt_ok(!mk_utf8_valid("\xed\xa0\x80", 3), "a surrogate is not valid UTF-8");
	mkt_ok(!mk_utf8_valid("a\0b", 3), "NUL is refused");
	mkt_ok(mk_utf8_valid("\xf0\x9f\x94\x91", 4), "a 4-byte character is fine");
	mkt_ok(!mk_utf8_valid("\xe2\x82", 2), "a truncated sequence is not");

	mkt_ok_r(mk_check_array(&c, "the content", 4u * 1024 * 1024), "4 MiB array");
	mkt_ok_err(mk_check_array(&c, "the content", 4u * 1024 * 1024 + 1), -EINVAL,
		   "4 MiB + 1 is over the default cap");
	c.max_array_bytes = 1024;
	mkt_ok_err(mk_check_array(&c, "the content", 2048), -EINVAL, "max-array-bytes=1024: 2048");
	mkt_ok(strstr(mk_error_message(), "max-array-bytes") != NULL, "  names the setting: %s",
	       mk_error_message());
	mk_config_clear(&c);
}

static void test_uris(void)
{
	char *s = NULL, big[MK_URI_MAX + 16];

	mkt_ok_r(mk_check_key_uri(KEY, NULL), "a key URI as ListKeys gives it");
	mkt_ok_r(mk_check_key_uri("pkcs11:object=sig", NULL), "object= alone names a key");
	mkt_ok_r(mk_check_key_uri("pkcs11:id=%01;type=public", NULL), "id= with type=public");
	mkt_ok_err(mk_check_key_uri("pkcs11:token=alice", NULL), -EINVAL, "a token URI is no key URI");
	mkt_ok_err(mk_check_key_uri("", NULL), -EINVAL, "an empty key URI");
	mkt_ok_err(mk_check_key_uri("file:///etc/passwd", NULL), -EINVAL, "another scheme");
	mkt_ok_err(mk_check_key_uri("pkcs11:id=%zz", NULL), -EINVAL, "a bad percent-escape");
	mkt_ok_err(mk_check_key_uri("pkcs11:object=x;type=cert", NULL), -EINVAL, "type=cert");
	memset(big, 'a', sizeof(big));
	memcpy(big, "pkcs11:object=", 14);
	big[MK_URI_MAX + 1] = '\0';
	mkt_ok_err(mk_check_key_uri(big, NULL), -EINVAL, "a URI over %d bytes", MK_URI_MAX);

	mkt_ok_r(mk_check_token_uri("pkcs11:token=alice", false), "a token URI");
	mkt_ok_r(mk_check_token_uri("", true), "\"\" for Lock");
	mkt_ok_err(mk_check_token_uri("", false), -EINVAL, "\"\" for GenerateKey");
	mkt_ok_err(mk_check_token_uri(KEY, false), -EINVAL, "a key URI is no token URI");

	mkt_ok(mk_uri_token_part(KEY, &s) == 0 && strstr(s, "token=alice") &&
		       strstr(s, "serial=5c8c1f2b0a6e4d3f") && !strstr(s, "object=") &&
		       !strstr(s, "id="),
	       "the token part of a key URI: %s", s ? s : "(null)");
	free(s);
	s = NULL;
	{
		char *t1 = NULL, *t2 = NULL;

		mkt_ok(mk_check_key_uri(KEY, &t1) == 0 && mk_uri_token_part(KEY, &t2) == 0 &&
			       !strcmp(t1, t2),
		       "mk_check_key_uri gives the same token part from its one parse");
		free(t1);
		free(t2);
	}
	mkt_ok(mk_uri_object_label(KEY, &s) == 0 && !strcmp(s, "sig"), "the object label");
	free(s);
}

static void test_algorithms(void)
{
	mk_key_alg a = MK_ALG_NONE;
	uint8_t pt[65];

	mkt_ok(mk_check_algorithm("signature", "ecdsa-p256", &a) == 0 && a == MK_ALG_ECDSA_P256,
	       "signature ecdsa-p256");
	mkt_ok(mk_check_algorithm("hpke", "dhkem-x25519", &a) == 0 && a == MK_ALG_DHKEM_X25519,
	       "hpke dhkem-x25519");
	mkt_ok_err(mk_check_algorithm("signature", "dhkem-p256", &a), -EINVAL,
		   "a KEM algorithm for a signature key");
	mkt_ok_err(mk_check_algorithm("hpke", "ed25519", &a), -EINVAL,
		   "a signature algorithm for an HPKE key");
	mkt_ok_err(mk_check_algorithm("signature", "rsa-2048", &a), -EINVAL, "rsa-2048");
	mkt_ok(strstr(mk_error_message(), "ecdsa-p256") != NULL, "  lists the algorithms");
	mkt_ok_err(mk_check_algorithm("encryption", "dhkem-p256", &a), -EINVAL,
		   "purpose \"encryption\"");

	/* the P-256 generator is on the curve; flip a bit of y and it is not */
	static const uint8_t g[65] = {
		0x04, 0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5,
		0x63, 0xa4, 0x40, 0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4,
		0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2, 0x96, 0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a,
		0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e, 0x16, 0x2b, 0xce, 0x33,
		0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51, 0xf5,
	};
	mkt_ok_r(mk_check_point(MK_ALG_DHKEM_P256, g, sizeof(g)), "the P-256 base point");
	memcpy(pt, g, sizeof(pt));
	pt[64] ^= 1;
	mkt_ok_err(mk_check_point(MK_ALG_DHKEM_P256, pt, sizeof(pt)), -EINVAL,
		   "a point off the curve");
	mkt_ok_err(mk_check_point(MK_ALG_DHKEM_P256, g, 33), -EINVAL, "a compressed length");
	mkt_ok_err(mk_check_point(MK_ALG_DHKEM_X25519, g, 65), -EINVAL, "65 bytes for X25519");
	mkt_ok_r(mk_check_point(MK_ALG_DHKEM_X25519, g + 1, 32), "32 bytes for X25519");
	mkt_ok_err(mk_check_point(MK_ALG_ECDSA_P256, g, 65), -EOPNOTSUPP,
		   "a signature key has no KEM");
}

/* --- workers ------------------------------------------------------------------------------ */

static atomic_int ran, cancelled, running_now, max_running;
static atomic_bool release;

static void slow_job(void *job, int status)
{
	(void)job;
	if (status < 0) {
		cancelled++;
		return;
	}
	int now = ++running_now;
	int m = max_running;

	while (now > m && !atomic_compare_exchange_weak(&max_running, &m, now))
		;
	while (!release)
		usleep(1000);
	running_now--;
	ran++;
}

static void wait_for(atomic_int *v, int want)
{
	for (int i = 0; i < 5000 && *v < want; i++)
		usleep(1000);
}

static void test_workers(void)
{
	mk_workers *w = NULL;
	int jobs = 0;

	mkt_ok_r(mk_workers_new(2, 3, &w), "a pool: 2 threads per queue, 3 waiting at most");
	/* token A: 2 run, 3 wait, the sixth is Busy */
	for (int i = 0; i < 5; i++) {
		mkt_ok_r(mk_workers_submit(w, "pkcs11:token=A", slow_job, &jobs),
			 "job %d for token A", i);
		if (i < 2)
			wait_for(&running_now, i + 1);
	}
	mkt_ok(running_now == 2, "two jobs run at once on one token (%d)", (int)running_now);
	mkt_ok_err(mk_workers_submit(w, "pkcs11:token=A", slow_job, &jobs), -EBUSY,
		   "the sixth job for token A is Busy");
	/* token B has its own queue and threads: a stalled token A does not stop it */
	mkt_ok_r(mk_workers_submit(w, "pkcs11:token=B", slow_job, &jobs), "a job for token B");
	wait_for(&running_now, 3);
	mkt_ok(running_now == 3, "token B's job runs while token A's are stuck");
	release = true;
	wait_for(&ran, 6);
	mkt_ok(ran == 6 && max_running == 3, "all six ran (%d), at most 3 at once (%d)",
	       (int)ran, (int)max_running);

	/* free: queued jobs are cancelled, running ones finish */
	release = false;
	ran = 0;
	for (int i = 0; i < 4; i++) {
		mkt_ok_r(mk_workers_submit(w, "pkcs11:token=A", slow_job, &jobs), "job %d again", i);
		if (i < 2)
			wait_for(&running_now, i + 1);
	}
	release = true; /* free waits for the two running ones */
	w = mk_workers_free(w);
	mkt_ok(ran + cancelled == 4 && ran >= 2, "on free: %d finished, %d cancelled", (int)ran,
	       (int)cancelled);
	mkt_ok(mk_workers_free(NULL) == NULL, "free(NULL)");
}

static pthread_t quick_tid[2];
static atomic_int quick_done;

static void quick_job(void *job, int status)
{
	int i = *(int *)job;

	if (status == 0)
		quick_tid[i] = pthread_self();
	quick_done++;
}

/* With worker-spin-us set, a call that comes while a worker still watches is taken by that
 * worker: no second thread is started for it, and it runs at once. */
static void test_workers_spin(void)
{
	static int idx[2] = { 0, 1 };
	mk_workers *w = NULL;

	quick_done = 0;
	mkt_ok_r(mk_workers_new(2, 8, &w), "a pool with 2 threads per queue");
	mk_workers_set_spin(w, 200000); /* 200 ms: far longer than this test needs */
	mkt_ok_r(mk_workers_submit(w, "pkcs11:token=S", quick_job, &idx[0]), "first call");
	wait_for(&quick_done, 1);
	usleep(2000); /* the worker is now watching for the next call */
	mkt_ok_r(mk_workers_submit(w, "pkcs11:token=S", quick_job, &idx[1]), "second call");
	wait_for(&quick_done, 2);
	mkt_ok(quick_done == 2, "both calls ran");
	mkt_ok(pthread_equal(quick_tid[0], quick_tid[1]),
	       "the watching worker took the second call (no second thread started)");
	w = mk_workers_free(w);
	mkt_ok(w == NULL, "a pool with a watching worker stops at once");
}

/* Every errno the agent returns reaches the client under its stable name. */
static void test_error_names(void)
{
	static const struct {
		int r;
		const char *name;
	} names[] = {
		{ -ENOKEY, "org.mlskey.Error.NoSuchKey" },
		{ -ENODEV, "org.mlskey.Error.NoSuchToken" },
		{ -ENOMEDIUM, "org.mlskey.Error.TokenAbsent" },
		{ -EOPNOTSUPP, "org.mlskey.Error.Unsupported" },
		{ -EINVAL, "org.mlskey.Error.InvalidInput" },
		{ -EKEYREJECTED, "org.mlskey.Error.PinIncorrect" },
		{ -EKEYREVOKED, "org.mlskey.Error.PinLocked" },
		{ -ECANCELED, "org.mlskey.Error.Cancelled" },
		{ -EACCES, "org.mlskey.Error.AccessDenied" },
		{ -EPERM, "org.mlskey.Error.AccessDenied" },
		{ -EBADMSG, "org.mlskey.Error.DecryptFailed" },
		{ -EIO, "org.mlskey.Error.TokenError" },
		{ -ETIMEDOUT, "org.mlskey.Error.TokenError" },
		{ -EBUSY, "org.mlskey.Error.Busy" },
		{ -ENOMEM, "org.freedesktop.DBus.Error.NoMemory" },
		{ -E2BIG, "org.mlskey.Error.TokenError" },
	};

	for (size_t i = 0; i < ELEMENTSOF(names); i++)
		mkt_ok(!strcmp(mk_bus_error_name(names[i].r), names[i].name), "%s -> %s",
		       strerror(-names[i].r), names[i].name);
	mk_error_clear();
	mkt_ok(strstr(mk_error_text(-EKEYREVOKED), "PUK") != NULL,
	       "PinLocked without a message still says what to do: %s",
	       mk_error_text(-EKEYREVOKED));
}

int main(void)
{
	test_error_names();
	test_suites();
	test_key_suites();
	test_labels();
	test_uris();
	test_algorithms();
	test_workers();
	test_workers_spin();
	return mkt_done();
}
