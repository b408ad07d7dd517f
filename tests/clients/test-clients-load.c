/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * 50 concurrent clients (50 threads, each with its own libmlskey handle and connection),
 * each signing and decrypting 100 times through the real mlskeyd: every signature verifies
 * (libmlskey checks each one, and the test checks again), every plaintext is what was sealed,
 * no call fails, and the agent's resident memory stays flat across the run.
 *
 * SoftHSM 2.6.1 itself keeps ~240 bytes per C_DeriveKey (reproduced with raw PKCS#11 calls,
 * no mlskey code involved; its leaks are suppressed for LSan in tests/lsan.supp), so every
 * decryption grows any process that uses it. The test measures that rate in its own process
 * on the same token and allows the agent exactly that much for its decryptions, and checks
 * a signing-only run (no derive) for strict flatness.
 */
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "pkcs11/p11.h"
#include "tests/agent-fixture.h"
#include "tests/clients/clients-test.h"

#define TOKEN "load"
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#endif

#define CLIENTS 50
#define WARMUP_ROUNDS 10
#ifdef UNDER_ASAN
/* ASan with slow unwinding (tests/meson.build) makes each call far dearer: fewer rounds */
#define ROUNDS 20
#else
#define ROUNDS 100
#endif

static const char *addr;
static char *sign_uri, *hpke_uri;
static uint8_t *sign_pub, *hpke_pub;
static size_t sign_pub_len, hpke_pub_len;
static pthread_barrier_t start;

typedef struct client {
	unsigned id, rounds;
	unsigned signed_ok, decrypted_ok, failed;
	char first_error[512];
} client;

static bool only_sign;

static void fail(client *cl, const char *what)
{
	const mlskey_error *e = mlskey_last_error();

	if (cl->failed++ == 0)
		snprintf(cl->first_error, sizeof(cl->first_error), "%s: %s (%s)", what, e->message,
			 e->name);
}

static void *client_run(void *p)
{
	client *cl = p;
	mlskey_client *h = NULL;
	uint8_t content[64], secret[32];
	uint8_t *kem = NULL, *ct = NULL;
	size_t kem_len = 0, ct_len = 0;

	if (mlskey_client_new(addr, &h) < 0) {
		fail(cl, "connect");
		pthread_barrier_wait(&start);
		return NULL;
	}
	/* Each client seals its own secret, so that a mixed-up reply would show. */
	memset(secret, (int)cl->id, sizeof(secret));
	if (mlskey_encrypt_with_label(2, hpke_pub, hpke_pub_len, "Welcome", (uint8_t *)"ctx", 3,
				      secret, sizeof(secret), &kem, &kem_len, &ct, &ct_len) < 0)
		fail(cl, "EncryptWithLabel");
	pthread_barrier_wait(&start);
	for (unsigned i = 0; i < cl->rounds && kem; i++) {
		uint8_t *sig = NULL, *pt = NULL;
		size_t sig_len = 0, pt_len = 0;

		snprintf((char *)content, sizeof(content), "client %u round %u", cl->id, i);
		if (only_sign)
			cl->decrypted_ok++;
		if (mlskey_sign_with_label(h, sign_uri, 2, "LeafNodeTBS", content, sizeof(content),
					   &sig, &sig_len) < 0)
			fail(cl, "SignWithLabel");
		else if (mlskey_verify_with_label(2, sign_pub, sign_pub_len, "LeafNodeTBS", content,
						  sizeof(content), sig, sig_len) < 0)
			fail(cl, "VerifyWithLabel");
		else
			cl->signed_ok++;
		mlskey_free(sig, sig_len);

		if (only_sign)
			;
		else if (mlskey_decrypt_with_label(h, hpke_uri, 2, "Welcome", (uint8_t *)"ctx", 3, kem,
					      kem_len, ct, ct_len, &pt, &pt_len) < 0)
			fail(cl, "DecryptWithLabel");
		else if (pt_len != sizeof(secret) || memcmp(pt, secret, pt_len) != 0) {
			cl->failed++;
			snprintf(cl->first_error, sizeof(cl->first_error), "wrong plaintext");
		} else
			cl->decrypted_ok++;
		mlskey_free(pt, pt_len);
	}
	mlskey_free(kem, kem_len);
	mlskey_free(ct, ct_len);
	mlskey_client_free(h);
	return NULL;
}

/* Runs CLIENTS clients of `rounds` rounds each; returns how many failed. */
static unsigned run_clients(unsigned rounds, unsigned *ret_signed, unsigned *ret_decrypted,
			    double *ret_secs)
{
	static client cl[CLIENTS];
	pthread_t th[CLIENTS];
	struct timespec t0, t1;
	unsigned failed = 0;

	pthread_barrier_init(&start, NULL, CLIENTS + 1);
	for (unsigned i = 0; i < CLIENTS; i++) {
		cl[i] = (client){ .id = i, .rounds = rounds };
		if (pthread_create(&th[i], NULL, client_run, &cl[i]) != 0)
			mkt_bail("pthread_create");
	}
	pthread_barrier_wait(&start);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	*ret_signed = *ret_decrypted = 0;
	for (unsigned i = 0; i < CLIENTS; i++) {
		pthread_join(th[i], NULL);
		*ret_signed += cl[i].signed_ok;
		*ret_decrypted += cl[i].decrypted_ok;
		if (cl[i].failed) {
			if (failed < 5)
				mkt_diag("client %u: %u failures, first: %s", i, cl[i].failed,
					 cl[i].first_error);
			failed++;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	pthread_barrier_destroy(&start);
	*ret_secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	return failed;
}

static void setup_keys(void)
{
	mlskey_client *h = NULL;

	if (mlskey_client_new(addr, &h) < 0 ||
	    mlskey_generate_key(h, "pkcs11:token=" TOKEN, NULL, "ecdsa-p256", "load-sign",
				&sign_uri) < 0 ||
	    mlskey_generate_key(h, "pkcs11:token=" TOKEN, NULL, "dhkem-p256", "load-hpke",
				&hpke_uri) < 0 ||
	    mlskey_get_public_key(h, sign_uri, &sign_pub, &sign_pub_len) < 0 ||
	    mlskey_get_public_key(h, hpke_uri, &hpke_pub, &hpke_pub_len) < 0)
		mkt_bail("setting up keys: %s (%s)", mlskey_last_error()->message,
			 mlskey_last_error()->name);
	mlskey_client_free(h);
}

/*
 * SoftHSM's own growth per C_DeriveKey, in bytes, measured in this process with the token
 * layer on the same token and key as the agent uses. -1 when it cannot be measured.
 */
static _unused_ double softhsm_bytes_per_derive(void)
{
	const char *paths[] = { mkt_softhsm_module(), NULL };
	mk_p11_options o = { .use_p11_kit = false, .module_paths = paths };
	mk_token_info *t = NULL;
	mk_p11 *p = NULL;
	mk_key *k = NULL;
	size_t n = 0;
	long before = 0, after = 0;
	int r;

	r = mk_p11_open(&o, &p);
	if (r == 0)
		r = mk_p11_list_tokens(p, &t, &n);
	for (size_t i = 0; r == 0 && i < n; i++)
		if (strcmp(t[i].label, TOKEN) == 0)
			r = mk_p11_login(p, t[i].uri, (const uint8_t *)MKT_USER_PIN,
					 strlen(MKT_USER_PIN));
	if (r == 0)
		r = mk_p11_find_key(p, hpke_uri, &k);
	for (int i = 0; r == 0 && i < 6000; i++) {
		mk_secret *dh = NULL;

		if (i == 1000)
			before = rss_kib(getpid());
		r = mk_key_derive(k, hpke_pub, hpke_pub_len, &dh);
		mk_secret_free(dh);
	}
	after = rss_kib(getpid());
	if (r < 0)
		mkt_diag("cannot measure SoftHSM in-process: %s", mk_error_text(r));
	mk_key_unref(k);
	mk_token_info_array_free(t, n);
	mk_p11_free(p);
	return r < 0 ? -1 : (after - before) * 1024.0 / 5000;
}

int main(void)
{
	unsigned s, d, failed;
	long rss0, rss1, rss2;
	double secs;
	pid_t agent;

	mkt_softhsm_setup();
	mkt_softhsm_add_token(TOKEN);
	setenv("MKT_AGENT_LOG_LEVEL", "notice", 1); /* not 20000 lines of log */
	agent = mkt_agent_start(NULL);
	addr = getenv("DBUS_SESSION_BUS_ADDRESS");
	setup_keys();

	/* A first run brings the agent's allocator and caches to their working size. */
	rss0 = rss_kib(agent);
	failed = run_clients(WARMUP_ROUNDS, &s, &d, &secs);
	mkt_ok(failed == 0 && s == CLIENTS * WARMUP_ROUNDS && d == CLIENTS * WARMUP_ROUNDS,
	       "warm-up: %u clients x %u: %u signed, %u decrypted in %.1f s", CLIENTS,
	       WARMUP_ROUNDS, s, d, secs);
	rss1 = rss_kib(agent);

	/* Signing only: nothing in the agent nor in SoftHSM may grow. */
	only_sign = true;
	failed = run_clients(ROUNDS, &s, &d, &secs);
	rss2 = rss_kib(agent);
	only_sign = false;
	mkt_ok(failed == 0 && s == CLIENTS * ROUNDS, "signing only: %u clients x %u: %u signed",
	       CLIENTS, ROUNDS, s);
	mkt_diag("agent RSS: %ld KiB at start, %ld KiB after the warm-up, %ld KiB after %u "
		 "signatures (%+ld KiB)", rss0, rss1, rss2, CLIENTS * ROUNDS, rss2 - rss1);
#ifdef UNDER_ASAN
	printf("ok %d - agent RSS flat (signing) # SKIP AddressSanitizer's quarantine holds freed "
	       "memory\n", ++mkt_n);
#else
	mkt_ok(rss1 > 0 && rss2 > 0 && rss2 - rss1 <= 512,
	       "agent RSS flat across %u signatures: %ld -> %ld KiB", CLIENTS * ROUNDS, rss1,
	       rss2);
#endif

	/* The run the issue asks for: each client signs and decrypts 100 times. */
	rss1 = rss_kib(agent);
	failed = run_clients(ROUNDS, &s, &d, &secs);
	rss2 = rss_kib(agent);
	mkt_ok(failed == 0, "%u concurrent clients: no call failed (%u clients had failures)",
	       CLIENTS, failed);
	mkt_ok(s == CLIENTS * ROUNDS, "%u of %u signatures valid", s, CLIENTS * ROUNDS);
	mkt_ok(d == CLIENTS * ROUNDS, "%u of %u decryptions gave the sealed plaintext", d,
	       CLIENTS * ROUNDS);
	mkt_diag("%u clients x %u x (sign + decrypt) in %.1f s: %.0f operations/s", CLIENTS,
		 ROUNDS, secs, 2.0 * CLIENTS * ROUNDS / secs);
	mkt_diag("agent RSS: %ld KiB before, %ld KiB after %u operations (%+ld KiB)", rss1, rss2,
		 2 * CLIENTS * ROUNDS, rss2 - rss1);
#ifdef UNDER_ASAN
	printf("ok %d - agent RSS flat # SKIP AddressSanitizer's quarantine holds freed memory\n",
	       ++mkt_n);
#else
	{
		double per_derive = softhsm_bytes_per_derive();
		long softhsm_kib = per_derive > 0 ? (long)(per_derive * CLIENTS * ROUNDS / 1024) : 0;

		mkt_diag("SoftHSM alone grows by %.0f bytes per C_DeriveKey (measured in this "
			 "process): %ld KiB for %u decryptions", per_derive, softhsm_kib,
			 CLIENTS * ROUNDS);
		/* What is left for mlskeyd itself: 512 KiB of allocator slack, i.e. less than
		 * 52 bytes per call. */
		mkt_ok(per_derive >= 0 && rss1 > 0 && rss2 > 0 &&
			       rss2 - rss1 <= softhsm_kib * 5 / 4 + 512,
		       "agent RSS flat across the run: %+ld KiB, of which SoftHSM's own ~%ld KiB",
		       rss2 - rss1, softhsm_kib);
	}
#endif
	mkt_ok(kill(agent, 0) == 0, "the agent is still running");
	mkt_agent_stop(agent);
	free(sign_uri);
	free(hpke_uri);
	mlskey_free(sign_pub, sign_pub_len);
	mlskey_free(hpke_pub, hpke_pub_len);
	return mkt_done();
}
