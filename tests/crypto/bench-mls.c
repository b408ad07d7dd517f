/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Benchmark: what the MLS layer adds to the bare token call, per cipher suite.
 *
 *   sign:    mk_mls_sign_with_label          vs mk_key_sign_digest (ECDSA) / mk_key_sign (Ed25519)
 *   decrypt: mk_mls_decrypt_with_label       vs mk_key_derive
 *
 * Same SoftHSM2 token, same keys, same process; the two are interleaved operation by
 * operation (in ABBA order) within each round, so that drift and load from other processes
 * (CPU frequency, caches, the other core) hit both alike. Prints ops/s for both and the ratio
 * of their per-operation times; the target is at most 1.10.
 *
 *   bench-mls [-r ROUNDS] [-t MS_PER_ROUND] [-c CONTENT_BYTES] [SUITE...]
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/mls.h"
#include "common/error.h"
#include "tests/fixture.h"
#include "tests/tap.h"

#define TOKEN "mls-bench"

typedef int (*op_fn)(void *ctx);

typedef struct sign_ctx {
	mk_key *k;
	uint16_t suite;
	const uint8_t *content;
	size_t content_len;
	mk_bytes tbs;        /* SignContent, for the bare Ed25519 call */
	uint8_t digest[64];  /* any digest of the right length, for the bare ECDSA call */
	size_t digest_len;
} sign_ctx;

typedef struct dec_ctx {
	mk_key *k;
	uint16_t suite;
	const uint8_t *context;
	size_t context_len;
	mk_bytes kem, ct;
} dec_ctx;

static int mls_sign(void *p)
{
	sign_ctx *c = p;
	mk_bytes sig = MK_BYTES_NULL;
	int r = mk_mls_sign_with_label(c->k, c->suite, "LeafNodeTBS", c->content, c->content_len,
				       &sig);

	mk_bytes_clear(&sig);
	return r;
}

static int bare_sign(void *p)
{
	sign_ctx *c = p;
	mk_bytes sig = MK_BYTES_NULL;
	int r = c->digest_len ? mk_key_sign_digest(c->k, c->digest, c->digest_len, &sig)
			      : mk_key_sign(c->k, c->tbs.data, c->tbs.len, &sig);

	mk_bytes_clear(&sig);
	return r;
}

static int mls_decrypt(void *p)
{
	dec_ctx *c = p;
	mk_bytes pt = MK_BYTES_NULL;
	int r = mk_mls_decrypt_with_label(c->k, c->suite, "UpdatePathNode", c->context,
					  c->context_len, c->kem.data, c->kem.len, c->ct.data,
					  c->ct.len, &pt);

	mk_bytes_clear(&pt);
	return r;
}

static int bare_derive(void *p)
{
	dec_ctx *c = p;
	mk_secret *dh = NULL;
	int r = mk_key_derive(c->k, c->kem.data, c->kem.len, &dh);

	mk_secret_free(dh);
	return r;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void must(int r)
{
	if (r < 0)
		mkt_bail("operation failed: %s", mk_error_text(r));
}

typedef struct result {
	double mls, bare; /* ops/s over all rounds */
	double ratio;     /* t(mls)/t(bare) from the totals */
	double median;    /* median t(mls) / median t(bare), single operations */
} result;

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

typedef struct samples {
	double *t;
	size_t n, cap;
} samples;

static void add(samples *s, double t)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 4096;
		s->t = realloc(s->t, s->cap * sizeof(double));
		if (!s->t)
			mkt_bail("out of memory");
	}
	s->t[s->n++] = t;
}

static double median(samples *s)
{
	qsort(s->t, s->n, sizeof(double), cmp_double);
	return s->n % 2 ? s->t[s->n / 2] : (s->t[s->n / 2 - 1] + s->t[s->n / 2]) / 2;
}

/*
 * Each round runs for about ms milliseconds, alternating single operations in ABBA order
 * (mls, bare, bare, mls, ...) and timing each one, so that load from other processes hits
 * both sides alike. ops/s and the first ratio come from the totals; the second ratio is that
 * of the median single-operation times, which a process stealing the CPU for a while (a
 * loaded machine) cannot move.
 */
static result compare(op_fn mls, op_fn bare, void *ctx, int rounds, double ms)
{
	samples sm = { 0 }, sb = { 0 };
	double s_m = 0, s_b = 0;
	result res;

	/* warm-up: sessions, caches, lazy initialisation */
	for (int i = 0; i < 20; i++) {
		must(mls(ctx));
		must(bare(ctx));
	}
	for (int i = 0; i < rounds; i++) {
		double t0 = now();

		for (long j = 0; (now() - t0) * 1000.0 < ms; j++) {
			bool mls_first = (j & 1) == 0;

			for (int side = 0; side < 2; side++) {
				bool is_mls = (side == 0) == mls_first;
				double a = now(), d;

				must(is_mls ? mls(ctx) : bare(ctx));
				d = now() - a;
				if (is_mls)
					s_m += d, add(&sm, d);
				else
					s_b += d, add(&sb, d);
			}
		}
	}
	res.mls = (double)sm.n / s_m;
	res.bare = (double)sb.n / s_b;
	res.ratio = res.bare / res.mls;
	res.median = median(&sm) / median(&sb);
	free(sm.t);
	free(sb.t);
	return res;
}

static mk_key *generate(mk_p11 *p11, const char *token_uri, mk_key_alg alg, const char *label)
{
	char *uri = NULL;
	mk_key *k = NULL;
	int r;

	r = mk_p11_generate_key(p11, token_uri, alg, label, &uri);
	if (r >= 0)
		r = mk_p11_find_key(p11, uri, &k);
	free(uri);
	if (r < 0)
		mkt_bail("generating a %s key: %s", mk_key_alg_name(alg), mk_error_text(r));
	return k;
}

int main(int argc, char **argv)
{
	static const uint16_t all_suites[] = { 1, 2, 3, 5, 7 };
	uint16_t suites[8];
	size_t nsuites = 0, content_len = 256;
	int rounds = 10, opt, r;
	double ms = 200;
	const char *mods[2] = { NULL, NULL };
	mk_p11_options opts = { .module_paths = mods };
	mk_token_info *toks = NULL;
	size_t ntoks = 0;
	char *token_uri = NULL;
	uint8_t *content, context[64];
	mk_p11 *p11 = NULL;
	double worst = 0;

	while ((opt = getopt(argc, argv, "r:t:c:h")) != -1) {
		switch (opt) {
		case 'r':
			rounds = atoi(optarg);
			break;
		case 't':
			ms = atof(optarg);
			break;
		case 'c':
			content_len = (size_t)atol(optarg);
			break;
		default:
			fprintf(stderr, "usage: %s [-r ROUNDS] [-t MS_PER_ROUND] [-c CONTENT_BYTES] "
					"[SUITE...]\n", argv[0]);
			return 2;
		}
	}
	for (int i = optind; i < argc && nsuites < ELEMENTSOF(suites); i++)
		suites[nsuites++] = (uint16_t)atoi(argv[i]);
	if (nsuites == 0) {
		memcpy(suites, all_suites, sizeof(all_suites));
		nsuites = ELEMENTSOF(all_suites);
	}
	if (rounds < 1 || ms <= 0)
		mkt_bail("rounds and milliseconds must be positive");

	mkt_softhsm_setup();
	mkt_softhsm_add_token(TOKEN);
	mods[0] = mkt_softhsm_module();
	r = mk_p11_open(&opts, &p11);
	if (r < 0)
		mkt_bail("mk_p11_open: %s", mk_error_text(r));
	r = mk_p11_list_tokens(p11, &toks, &ntoks);
	for (size_t i = 0; r >= 0 && i < ntoks; i++)
		if (strcmp(toks[i].label, TOKEN) == 0)
			token_uri = strdup(toks[i].uri);
	mk_token_info_array_free(toks, ntoks);
	if (!token_uri)
		mkt_bail("token not found");
	r = mk_p11_login(p11, token_uri, (const uint8_t *)MKT_USER_PIN, strlen(MKT_USER_PIN));
	if (r < 0)
		mkt_bail("login: %s", mk_error_text(r));

	content = malloc(content_len ? content_len : 1);
	if (!content)
		mkt_bail("out of memory");
	for (size_t i = 0; i < content_len; i++)
		content[i] = (uint8_t)(i * 7);
	memset(context, 0x42, sizeof(context));

	printf("# SoftHSM2, %d rounds x %.0f ms, single operations interleaved ABBA; content %zu "
	       "bytes, context %zu bytes\n",
	       rounds, ms, content_len, sizeof(context));
	printf("# t ratio = time per MLS operation / time per bare token call (from the totals; "
	       "from the median single operations)\n");
	printf("# %-5s %-8s %12s %12s %8s %8s\n", "suite", "op", "mls ops/s", "bare ops/s",
	       "t ratio", "median");
	for (size_t i = 0; i < nsuites; i++) {
		const mk_suite *su = mk_suite_get(suites[i]);
		sign_ctx sc = { 0 };
		dec_ctx dc = { 0 };
		const mk_key_info *ki;
		result res;
		double ratio;

		if (!su)
			mkt_bail("unknown suite %u", suites[i]);
		sc = (sign_ctx){ generate(p11, token_uri, su->sig_alg, "bench-sig"), su->id, content,
				 content_len, MK_BYTES_NULL, { 0 }, 0 };
		if (su->sig_alg == MK_ALG_ED25519) {
			r = mk_mls_labeled_content("LeafNodeTBS", content, content_len, &sc.tbs);
			if (r < 0)
				mkt_bail("SignContent: %s", mk_error_text(r));
		} else {
			sc.digest_len = su->md_len;
			memset(sc.digest, 0x5a, sizeof(sc.digest));
		}
		res = compare(mls_sign, bare_sign, &sc, rounds, ms);
		ratio = res.ratio;
		worst = MK_MAX(worst, res.median);
		printf("  %-5u %-8s %12.1f %12.1f %8.3f %8.3f\n", su->id, "sign", res.mls, res.bare,
		       ratio, res.median);
		fflush(stdout);

		dc.k = generate(p11, token_uri, su->kem_alg, "bench-kem");
		dc.suite = su->id;
		dc.context = context;
		dc.context_len = sizeof(context);
		ki = mk_key_get_info(dc.k);
		r = mk_mls_encrypt_with_label(su->id, ki->public_key, ki->public_key_len,
					      "UpdatePathNode", context, sizeof(context),
					      (const uint8_t *)"a path secret of 32 bytes.......",
					      32, &dc.kem, &dc.ct);
		if (r < 0)
			mkt_bail("EncryptWithLabel: %s", mk_error_text(r));
		res = compare(mls_decrypt, bare_derive, &dc, rounds, ms);
		ratio = res.ratio;
		worst = MK_MAX(worst, res.median);
		printf("  %-5u %-8s %12.1f %12.1f %8.3f %8.3f\n", su->id, "decrypt", res.mls,
		       res.bare, ratio, res.median);
		fflush(stdout);

		mk_key_unref(sc.k);
		mk_bytes_clear(&sc.tbs);
		mk_key_unref(dc.k);
		mk_bytes_clear(&dc.kem);
		mk_bytes_clear(&dc.ct);
	}
	printf("# worst median ratio %.3f (target <= 1.10): %s\n", worst,
	       worst <= 1.10 ? "met" : "NOT met");
	free(content);
	free(token_uri);
	mk_p11_free(p11);
	return 0;
}
