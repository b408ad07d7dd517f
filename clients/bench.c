/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mlskey bench: P-256 sign and decrypt through the agent (1 and N clients) beside the same
 * operations called in-process on the same token, and a D-Bus echo as the floor. The
 * measurements alternate in short slices, round after round, so that the machine's drift
 * hits all of them alike; the ratios against the targets are taken within each round.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/mls.h"
#include "clients/cli.h"
#include "common/error.h"
#include "pkcs11/p11.h"

#define SUITE 2
#define SIGN_LABEL "LeafNodeTBS"
#define DEC_LABEL "UpdatePathNode"
#define TARGET_LATENCY 1.6
#define TARGET_THROUGHPUT 0.45
#define MAX_ROUNDS 1000

const char cli_bench_help[] =
	"NAME\n"
	"    mlskey bench - measure the agent against in-process calls on the same token\n"
	"\n"
	"SYNOPSIS\n"
	"    mlskey bench [--key URI]... [--token URI] [--module PATH] [--pin PIN]\n"
	"                 [--seconds S] [--rounds N] [--clients N] [--json]\n"
	"\n"
	"DESCRIPTION\n"
	"    Measures, for P-256 (MLS suite 2) SignWithLabel and DecryptWithLabel, operations\n"
	"    per second and p50/p99 latency through D-Bus with 1 client and with N clients (N\n"
	"    threads, each with its own connection), the same operation called in-process on the\n"
	"    same token (this program opens the token itself, like the agent does), and a D-Bus\n"
	"    echo round trip (org.freedesktop.DBus.Peer.Ping to the agent) as the floor.\n"
	"    All are measured in the same run, in short slices that alternate round by round, so\n"
	"    that drift of the machine cancels; the ratios are taken per round and their median\n"
	"    is printed against the targets:\n"
	"        1 client's p50 latency <= 1.6 x (echo p50 + in-process p50)\n"
	"        N clients' throughput  >= 45% of the in-process single-thread throughput\n"
	"    D-Bus calls run with libmlskey's checks off (they cost client CPU, not agent time);\n"
	"    one extra row shows a signature with the checks on.\n"
	"\n"
	"    Without --key, an ecdsa-p256 and a dhkem-p256 key are generated for the run on the\n"
	"    token (--token, or the first present one) and deleted afterwards. The in-process\n"
	"    side must see the agent's token: run with the same SOFTHSM2_CONF and pass the module\n"
	"    the agent loaded. It logs in with the PIN from --pin or $MLSKEY_PIN.\n"
	"\n"
	"OPTIONS\n"
	"    --key URI        an ecdsa-p256 and/or a dhkem-p256 key to use (repeatable)\n"
	"    --token URI      the token for temporary keys\n"
	"    --module PATH    the PKCS#11 module for the in-process side (default: the modules\n"
	"                     p11-kit registers)\n"
	"    --pin PIN        the token's user PIN for the in-process side (or $MLSKEY_PIN)\n"
	"    --no-in-process  skip the in-process side (no ratios then)\n"
	"    --seconds S      total measuring time (default 12)\n"
	"    --rounds N       rounds of alternating slices (default 6)\n"
	"    --clients N      clients for the throughput figure (default 8)\n"
	"    --address ADDR   the D-Bus address of the agent's bus (default: the session bus)\n"
	"    --json           machine-readable figures\n"
	"    -h, --help       this help\n"
	"\n"
	"EXIT STATUS\n"
	"    0 when it measured (whether or not the targets were met), else as for every\n"
	"    command (mlskey --help): 1 usage, 2 no such key or token, 3 PIN, 7 no agent, ...\n"
	"\n"
	"EXAMPLES\n"
	"    MLSKEY_PIN=123456 mlskey bench --module /usr/lib/softhsm/libsofthsm2.so\n"
	"    mlskey bench --key \"$SIGN_KEY\" --key \"$HPKE_KEY\" --no-in-process --seconds 4\n";

typedef enum meas {
	M_ECHO,
	M_SIGN_INPROC,
	M_SIGN_1,
	M_SIGN_N,
	M_SIGN_CHECKED,
	M_DEC_INPROC,
	M_DEC_1,
	M_DEC_N,
	_M_MAX,
} meas;

static const char *const meas_name[_M_MAX] = {
	[M_ECHO] = "echo (Peer.Ping), 1 client",
	[M_SIGN_INPROC] = "sign, in-process",
	[M_SIGN_1] = "sign, D-Bus, 1 client",
	[M_SIGN_N] = "sign, D-Bus, N clients",
	[M_SIGN_CHECKED] = "sign, D-Bus, 1 client, checks on",
	[M_DEC_INPROC] = "decrypt, in-process",
	[M_DEC_1] = "decrypt, D-Bus, 1 client",
	[M_DEC_N] = "decrypt, D-Bus, N clients",
};

static const char *const meas_key[_M_MAX] = {
	[M_ECHO] = "echo",
	[M_SIGN_INPROC] = "sign_in_process",
	[M_SIGN_1] = "sign_dbus_1",
	[M_SIGN_N] = "sign_dbus_n",
	[M_SIGN_CHECKED] = "sign_dbus_1_checked",
	[M_DEC_INPROC] = "decrypt_in_process",
	[M_DEC_1] = "decrypt_dbus_1",
	[M_DEC_N] = "decrypt_dbus_n",
};

typedef struct samples {
	double *v; /* latencies in microseconds */
	size_t n, cap;
} samples;

typedef struct result {
	samples all;
	double ops, secs;       /* over every round */
	double *round_rate;     /* ops/s per round */
	double *round_p50;      /* p50 per round */
} result;

typedef struct bench {
	cli_global *g;
	unsigned n_clients, rounds;
	double seconds;
	bool in_process;
	mlskey_client **clients; /* n_clients handles, checks off */
	mlskey_client *checked;  /* one handle with libmlskey's checks */
	char *sign_uri, *hpke_uri, *token_uri;
	bool sign_temp, hpke_temp;
	uint8_t content[256], context[64];
	uint8_t *kem, *ct;
	size_t kem_len, ct_len;
	mk_p11 *p11;
	mk_key *sign_key, *hpke_key;
	result res[_M_MAX];
} bench;

/* A thread's run of one measurement. */
typedef struct worker {
	bench *b;
	mlskey_client *c;
	meas m;
	pthread_barrier_t *start;
	double deadline, end;
	samples s;
	int r;
	char err[600];
} worker;

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int samples_add(samples *s, double v)
{
	if (s->n == s->cap) {
		size_t nc = s->cap ? s->cap * 2 : 4096;
		double *p = reallocarray(s->v, nc, sizeof(*p));

		if (!p)
			return -ENOMEM;
		s->v = p;
		s->cap = nc;
	}
	s->v[s->n++] = v;
	return 0;
}

static int samples_append(samples *dst, const samples *src)
{
	for (size_t i = 0; i < src->n; i++)
		if (samples_add(dst, src->v[i]) < 0)
			return -ENOMEM;
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The q-quantile (0..1) of s, nearest rank; sorts s. */
static double quantile(samples *s, double q)
{
	size_t k;

	if (s->n == 0)
		return NAN;
	qsort(s->v, s->n, sizeof(double), cmp_double);
	k = (size_t)ceil(q * s->n);
	return s->v[k ? k - 1 : 0];
}

static double median(double *v, size_t n)
{
	samples s = { v, n, n };

	return quantile(&s, 0.5);
}

/* One operation of measurement m with client c (or in-process). */
static int one_op(bench *b, meas m, mlskey_client *c, char *err, size_t err_len)
{
	uint8_t *out = NULL;
	size_t n = 0;
	int r;

	switch (m) {
	case M_ECHO:
		r = mlskey_ping(c);
		break;
	case M_SIGN_1:
	case M_SIGN_N:
	case M_SIGN_CHECKED:
		r = mlskey_sign_with_label(c, b->sign_uri, SUITE, SIGN_LABEL, b->content,
					   sizeof(b->content), &out, &n);
		break;
	case M_DEC_1:
	case M_DEC_N:
		r = mlskey_decrypt_with_label(c, b->hpke_uri, SUITE, DEC_LABEL, b->context,
					      sizeof(b->context), b->kem, b->kem_len, b->ct,
					      b->ct_len, &out, &n);
		break;
	case M_SIGN_INPROC: {
		mk_bytes sig = MK_BYTES_NULL;

		r = mk_mls_sign_with_label(b->sign_key, SUITE, SIGN_LABEL, b->content,
					   sizeof(b->content), &sig);
		mk_bytes_clear(&sig);
		if (r < 0)
			snprintf(err, err_len, "in-process sign: %s", mk_error_text(r));
		return r;
	}
	case M_DEC_INPROC: {
		mk_bytes pt = MK_BYTES_NULL;

		r = mk_mls_decrypt_with_label(b->hpke_key, SUITE, DEC_LABEL, b->context,
					      sizeof(b->context), b->kem, b->kem_len, b->ct,
					      b->ct_len, &pt);
		mk_bytes_clear(&pt);
		if (r < 0)
			snprintf(err, err_len, "in-process decrypt: %s", mk_error_text(r));
		return r;
	}
	default:
		return -EINVAL;
	}
	mlskey_free(out, n);
	if (r < 0)
		snprintf(err, err_len, "%s: %s (%s)", meas_key[m], mlskey_last_error()->message,
			 mlskey_last_error()->name);
	return r;
}

/* Runs operations back to back until the deadline, recording each one's latency. */
static void *worker_run(void *userdata)
{
	worker *w = userdata;
	double t0, t1 = 0;

	if (w->start)
		pthread_barrier_wait(w->start);
	do {
		t0 = now_us();
		w->r = one_op(w->b, w->m, w->c, w->err, sizeof(w->err));
		t1 = now_us();
		if (w->r < 0)
			break;
		if (samples_add(&w->s, t1 - t0) < 0) {
			w->r = -ENOMEM;
			snprintf(w->err, sizeof(w->err), "out of memory");
			break;
		}
	} while (t1 < w->deadline);
	w->end = t1;
	return NULL;
}

/* One slice of measurement m in round `round`, `slice` microseconds long. */
static int run_slice(bench *b, meas m, unsigned round, double slice)
{
	unsigned n = (m == M_SIGN_N || m == M_DEC_N) ? b->n_clients : 1;
	worker *w = calloc(n, sizeof(*w));
	pthread_t *th = calloc(n, sizeof(*th));
	pthread_barrier_t bar;
	result *res = &b->res[m];
	samples round_s = {};
	double start, end = 0;
	int r = 0;

	if (!w || !th) {
		free(w);
		free(th);
		return cli_usage_error(b->g, "out of memory");
	}
	for (unsigned i = 0; i < n; i++) {
		w[i].b = b;
		w[i].m = m;
		w[i].c = m == M_SIGN_CHECKED ? b->checked : b->clients[i];
	}
	if (n == 1) {
		start = now_us();
		w[0].deadline = start + slice;
		worker_run(&w[0]);
	} else {
		pthread_barrier_init(&bar, NULL, n + 1);
		for (unsigned i = 0; i < n; i++) {
			w[i].start = &bar;
			if (pthread_create(&th[i], NULL, worker_run, &w[i]) != 0)
				abort(); /* cannot happen with a handful of threads */
		}
		start = now_us();
		for (unsigned i = 0; i < n; i++)
			w[i].deadline = start + slice;
		pthread_barrier_wait(&bar);
		for (unsigned i = 0; i < n; i++)
			pthread_join(th[i], NULL);
		pthread_barrier_destroy(&bar);
	}
	for (unsigned i = 0; i < n; i++) {
		if (w[i].r < 0 && r == 0) {
			fprintf(stderr, "mlskey bench: %s\n", w[i].err);
			r = cli_exit_code(w[i].r);
		}
		if (w[i].end > end)
			end = w[i].end;
		if (samples_append(&round_s, &w[i].s) < 0 && r == 0)
			r = cli_usage_error(b->g, "out of memory");
		free(w[i].s.v);
	}
	if (r == 0) {
		res->ops += round_s.n;
		res->secs += (end - start) / 1e6;
		res->round_rate[round] = round_s.n / ((end - start) / 1e6);
		res->round_p50[round] = quantile(&round_s, 0.5);
		if (samples_append(&res->all, &round_s) < 0)
			r = cli_usage_error(b->g, "out of memory");
	}
	free(round_s.v);
	free(w);
	free(th);
	return r;
}

/* --- set-up: keys, clients, the in-process token ---------------------------------------- */

static int find_or_make_keys(bench *b, char **keys, size_t n_keys, const char *token)
{
	mlskey_client *c = b->clients[0];
	mlskey_key *k = NULL;
	size_t n = 0;
	int r;

	r = mlskey_list_keys(c, &k, &n);
	if (r < 0)
		return cli_fail(b->g, r, "cannot list keys");
	for (size_t i = 0; i < n_keys && r == 0; i++) {
		size_t j;

		for (j = 0; j < n && strcmp(k[j].uri, keys[i]) != 0; j++)
			;
		if (j == n) {
			r = cli_usage_error(b->g, "--key %s: the agent lists no such key (use the URI "
					    "as 'mlskey keys' prints it)", keys[i]);
		} else if (strcmp(k[j].algorithm, "ecdsa-p256") == 0 && !b->sign_uri) {
			b->sign_uri = strdup(keys[i]);
			b->token_uri = b->token_uri ? b->token_uri : strdup(k[j].token);
		} else if (strcmp(k[j].algorithm, "dhkem-p256") == 0 && !b->hpke_uri) {
			b->hpke_uri = strdup(keys[i]);
			b->token_uri = b->token_uri ? b->token_uri : strdup(k[j].token);
		} else
			r = cli_usage_error(b->g, "--key %s: the bench needs one ecdsa-p256 and one "
					    "dhkem-p256 key; this one is %s", keys[i],
					    k[j].algorithm);
	}
	mlskey_keys_free(k, n);
	if (r)
		return r;
	if (token) {
		free(b->token_uri);
		b->token_uri = strdup(token);
	}
	if (!b->token_uri && (!b->sign_uri || !b->hpke_uri)) {
		mlskey_token *t = NULL;
		size_t nt = 0;

		r = mlskey_list_tokens(c, &t, &nt);
		if (r < 0)
			return cli_fail(b->g, r, "cannot list tokens");
		for (size_t i = 0; i < nt && !b->token_uri; i++)
			if (t[i].present && !t[i].write_protected)
				b->token_uri = strdup(t[i].uri);
		mlskey_tokens_free(t, nt);
		if (!b->token_uri)
			return cli_usage_error(b->g, "the agent sees no token to make keys on; "
					       "insert one or pass --key");
	}
	if (!b->sign_uri) {
		r = mlskey_generate_key(c, b->token_uri, "signature", "ecdsa-p256",
					"mlskey-bench-sign", &b->sign_uri);
		if (r < 0)
			return cli_fail(b->g, r, "cannot generate a temporary ecdsa-p256 key");
		b->sign_temp = true;
	}
	if (!b->hpke_uri) {
		r = mlskey_generate_key(c, b->token_uri, "hpke", "dhkem-p256", "mlskey-bench-hpke",
					&b->hpke_uri);
		if (r < 0)
			return cli_fail(b->g, r, "cannot generate a temporary dhkem-p256 key");
		b->hpke_temp = true;
	}
	return 0;
}

/* The token URI of a key, as the agent lists it (for the in-process login). */
static int key_token(bench *b, const char *uri, char **ret)
{
	mlskey_key *k = NULL;
	size_t n = 0;
	int r;

	r = mlskey_list_keys(b->clients[0], &k, &n);
	if (r < 0)
		return cli_fail(b->g, r, "cannot list keys");
	r = -ENOKEY;
	for (size_t i = 0; i < n && r < 0; i++)
		if (strcmp(k[i].uri, uri) == 0) {
			*ret = strdup(k[i].token);
			r = *ret ? 0 : -ENOMEM;
		}
	mlskey_keys_free(k, n);
	if (r < 0)
		return cli_usage_error(b->g, "key %s is no longer listed by the agent", uri);
	return 0;
}

static int open_in_process(bench *b, const char *module, const char *pin)
{
	const char *paths[] = { module, NULL };
	mk_p11_options opts = { .use_p11_kit = !module, .module_paths = module ? paths : NULL };
	_cleanup_free_ char *tok_sign = NULL, *tok_hpke = NULL;
	int r;

	if ((r = key_token(b, b->sign_uri, &tok_sign)) || (r = key_token(b, b->hpke_uri, &tok_hpke)))
		return r;
	r = mk_p11_open(&opts, &b->p11);
	if (r < 0)
		return cli_usage_error(b->g, "in-process: cannot load the PKCS#11 module%s%s: %s",
				       module ? " " : "s", module ? module : "", mk_error_text(r));
	r = mk_p11_login(b->p11, tok_sign, (const uint8_t *)pin, strlen(pin));
	if (r == 0 && strcmp(tok_sign, tok_hpke) != 0)
		r = mk_p11_login(b->p11, tok_hpke, (const uint8_t *)pin, strlen(pin));
	if (r < 0) {
		fprintf(stderr, "mlskey bench: in-process login: %s\n", mk_error_text(r));
		return cli_exit_code(r);
	}
	r = mk_p11_find_key(b->p11, b->sign_uri, &b->sign_key);
	if (r == 0)
		r = mk_p11_find_key(b->p11, b->hpke_uri, &b->hpke_key);
	if (r < 0) {
		fprintf(stderr, "mlskey bench: in-process: %s (does this process see the agent's "
				"token? same SOFTHSM2_CONF, same --module)\n", mk_error_text(r));
		return cli_exit_code(r);
	}
	return 0;
}

static int prepare(bench *b)
{
	_cleanup_free_ uint8_t *pub = NULL;
	uint8_t pt[32];
	size_t pub_len = 0;
	int r;

	for (size_t i = 0; i < sizeof(b->content); i++)
		b->content[i] = (uint8_t)i;
	for (size_t i = 0; i < sizeof(b->context); i++)
		b->context[i] = (uint8_t)(0xa0 + i);
	memset(pt, 0x5a, sizeof(pt));
	r = mlskey_get_public_key(b->clients[0], b->hpke_uri, &pub, &pub_len);
	if (r < 0)
		return cli_fail(b->g, r, "cannot get the HPKE key's public key");
	r = mlskey_encrypt_with_label(SUITE, pub, pub_len, DEC_LABEL, b->context,
				      sizeof(b->context), pt, sizeof(pt), &b->kem, &b->kem_len,
				      &b->ct, &b->ct_len);
	if (r < 0)
		return cli_fail(b->g, r, "cannot encrypt to the HPKE key");
	return 0;
}

/* --- report ------------------------------------------------------------------------------ */

typedef struct ratio {
	double med, min, max;
	bool ok;
} ratio;

static ratio ratio_of(double *v, unsigned n, double target, bool at_most)
{
	ratio q = { median(v, n), INFINITY, -INFINITY, false };

	for (unsigned i = 0; i < n; i++) {
		q.min = fmin(q.min, v[i]);
		q.max = fmax(q.max, v[i]);
	}
	q.ok = at_most ? q.med <= target : q.med >= target;
	return q;
}

static void report(bench *b)
{
	static double lat_s[MAX_ROUNDS], lat_d[MAX_ROUNDS], thr_s[MAX_ROUNDS], thr_d[MAX_ROUNDS];
	ratio q[4] = {};
	bool have = b->in_process;
	char name[64];
	double p50[_M_MAX], p99[_M_MAX], rate[_M_MAX];

	for (unsigned m = 0; m < _M_MAX; m++) {
		rate[m] = b->res[m].secs > 0 ? b->res[m].ops / b->res[m].secs : NAN;
		p50[m] = quantile(&b->res[m].all, 0.5);
		p99[m] = quantile(&b->res[m].all, 0.99);
	}
	if (have) {
		for (unsigned i = 0; i < b->rounds; i++) {
			result *r = b->res;

			lat_s[i] = r[M_SIGN_1].round_p50[i] /
				   (r[M_ECHO].round_p50[i] + r[M_SIGN_INPROC].round_p50[i]);
			lat_d[i] = r[M_DEC_1].round_p50[i] /
				   (r[M_ECHO].round_p50[i] + r[M_DEC_INPROC].round_p50[i]);
			thr_s[i] = r[M_SIGN_N].round_rate[i] / r[M_SIGN_INPROC].round_rate[i];
			thr_d[i] = r[M_DEC_N].round_rate[i] / r[M_DEC_INPROC].round_rate[i];
		}
		q[0] = ratio_of(lat_s, b->rounds, TARGET_LATENCY, true);
		q[1] = ratio_of(thr_s, b->rounds, TARGET_THROUGHPUT, false);
		q[2] = ratio_of(lat_d, b->rounds, TARGET_LATENCY, true);
		q[3] = ratio_of(thr_d, b->rounds, TARGET_THROUGHPUT, false);
	}

	if (b->g->json) {
		printf("{\"suite\": %d, \"rounds\": %u, \"seconds\": %g, \"clients\": %u, "
		       "\"results\": {", SUITE, b->rounds, b->seconds, b->n_clients);
		for (unsigned m = 0, first = 1; m < _M_MAX; m++) {
			if (!b->res[m].all.n)
				continue;
			printf("%s\n  \"%s\": {\"ops_per_s\": %.1f, \"p50_us\": %.1f, "
			       "\"p99_us\": %.1f, \"ops\": %.0f}", first ? "" : ",", meas_key[m],
			       rate[m], p50[m], p99[m], b->res[m].ops);
			first = 0;
		}
		printf("\n}");
		if (have)
			printf(", \"ratios\": {\"sign_latency\": %.3f, \"sign_throughput\": %.3f, "
			       "\"decrypt_latency\": %.3f, \"decrypt_throughput\": %.3f}, "
			       "\"targets_met\": %s",
			       q[0].med, q[1].med, q[2].med, q[3].med,
			       q[0].ok && q[1].ok && q[2].ok && q[3].ok ? "true" : "false");
		printf("}\n");
		return;
	}

	printf("\n%-36s %10s %10s %10s\n", "P-256, suite 2", "ops/s", "p50 us", "p99 us");
	for (unsigned m = 0; m < _M_MAX; m++) {
		if (!b->res[m].all.n)
			continue;
		if (m == M_SIGN_N || m == M_DEC_N)
			snprintf(name, sizeof(name), "%s, D-Bus, %u clients",
				 m == M_SIGN_N ? "sign" : "decrypt", b->n_clients);
		else
			snprintf(name, sizeof(name), "%s", meas_name[m]);
		printf("%-36s %10.0f %10.1f %10.1f\n", name, rate[m], p50[m], p99[m]);
	}
	if (!have) {
		printf("\n(no in-process figures: no ratios against the targets)\n");
		return;
	}
	printf("\nTargets (median of the %u per-round ratios, [min..max]):\n", b->rounds);
	printf("  sign     1 client p50 / (echo + in-process)  %5.2f [%4.2f..%4.2f]  <= %.2f  %s\n",
	       q[0].med, q[0].min, q[0].max, TARGET_LATENCY, q[0].ok ? "met" : "MISSED");
	printf("  sign     %u clients ops/s / in-process        %5.2f [%4.2f..%4.2f]  >= %.2f  %s\n",
	       b->n_clients, q[1].med, q[1].min, q[1].max, TARGET_THROUGHPUT,
	       q[1].ok ? "met" : "MISSED");
	printf("  decrypt  1 client p50 / (echo + in-process)  %5.2f [%4.2f..%4.2f]  <= %.2f  %s\n",
	       q[2].med, q[2].min, q[2].max, TARGET_LATENCY, q[2].ok ? "met" : "MISSED");
	printf("  decrypt  %u clients ops/s / in-process        %5.2f [%4.2f..%4.2f]  >= %.2f  %s\n",
	       b->n_clients, q[3].med, q[3].min, q[3].max, TARGET_THROUGHPUT,
	       q[3].ok ? "met" : "MISSED");
}

/* --- the command ------------------------------------------------------------------------- */

static int parse_positive(cli_global *g, const char *opt, const char *arg, double max,
			  double *ret)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(arg, &end);
	if (errno || end == arg || *end || !(v > 0) || v > max)
		return cli_usage_error(g, "%s: \"%s\" is not a number above 0 and at most %g", opt,
				       arg, max);
	*ret = v;
	return 0;
}

static int measure(bench *b)
{
	meas order[_M_MAX];
	unsigned n = 0;
	double slice;
	int r;

	for (unsigned m = 0; m < _M_MAX; m++) {
		if ((m == M_SIGN_INPROC || m == M_DEC_INPROC) && !b->in_process)
			continue;
		order[n++] = m;
		b->res[m].round_rate = calloc(b->rounds, sizeof(double));
		b->res[m].round_p50 = calloc(b->rounds, sizeof(double));
		if (!b->res[m].round_rate || !b->res[m].round_p50)
			return cli_usage_error(b->g, "out of memory");
	}
	slice = b->seconds * 1e6 / (b->rounds * n);
	if (!b->g->json)
		printf("mlskey bench: %u rounds of %u measurements, %.0f ms each, %u clients\n"
		       "  sign key    %s\n  decrypt key %s\n", b->rounds, n, slice / 1e3,
		       b->n_clients, b->sign_uri, b->hpke_uri);

	/* Warm up every handle and both sides: logins, caches, first-call costs. */
	for (unsigned i = 0; i < b->n_clients; i++)
		for (meas m = M_ECHO; m <= M_DEC_1; m++) {
			char err[600];

			if (m == M_SIGN_INPROC || m == M_DEC_INPROC || m == M_SIGN_N ||
			    m == M_SIGN_CHECKED)
				continue;
			r = one_op(b, m, b->clients[i], err, sizeof(err));
			if (r < 0) {
				fprintf(stderr, "mlskey bench: warming up: %s\n", err);
				return cli_exit_code(r);
			}
		}
	for (unsigned i = 0; i < n; i++) {
		r = run_slice(b, order[i], 0, 2e4);
		if (r)
			return r;
	}
	for (unsigned i = 0; i < n; i++) {
		free(b->res[order[i]].all.v);
		b->res[order[i]].all = (samples){};
		b->res[order[i]].ops = b->res[order[i]].secs = 0;
	}

	/* Each round starts one measurement later (and odd rounds go backwards), so that every
	 * measurement sees every position and neighbour. */
	for (unsigned round = 0; round < b->rounds; round++)
		for (unsigned i = 0; i < n; i++) {
			unsigned k = (round & 1) ? n - 1 - i : i;

			r = run_slice(b, order[(k + round) % n], round, slice);
			if (r)
				return r;
		}
	report(b);
	return 0;
}

static void bench_cleanup(bench *b)
{
	int r;

	if (b->sign_temp) {
		r = mlskey_delete_key(b->clients[0], b->sign_uri);
		if (r < 0)
			cli_fail(b->g, r, "cannot delete the temporary signature key");
	}
	if (b->hpke_temp) {
		r = mlskey_delete_key(b->clients[0], b->hpke_uri);
		if (r < 0)
			cli_fail(b->g, r, "cannot delete the temporary HPKE key");
	}
	mk_key_unref(b->sign_key);
	mk_key_unref(b->hpke_key);
	mk_p11_free(b->p11);
	for (unsigned i = 0; b->clients && i < b->n_clients; i++)
		mlskey_client_free(b->clients[i]);
	free(b->clients);
	mlskey_client_free(b->checked);
	for (unsigned m = 0; m < _M_MAX; m++) {
		free(b->res[m].all.v);
		free(b->res[m].round_rate);
		free(b->res[m].round_p50);
	}
	free(b->sign_uri);
	free(b->hpke_uri);
	free(b->token_uri);
	mlskey_free(b->kem, b->kem_len);
	mlskey_free(b->ct, b->ct_len);
}

enum {
	OPT_KEY = OPT_FIRST_OWN,
	OPT_TOKEN,
	OPT_MODULE,
	OPT_PIN,
	OPT_NO_IN_PROCESS,
	OPT_SECONDS,
	OPT_ROUNDS,
	OPT_CLIENTS,
};

int cli_bench(cli_global *g, int argc, char **argv)
{
	static const struct option lo[] = {
		COMMON_LONG_OPTIONS,
		{ "key", required_argument, NULL, OPT_KEY },
		{ "token", required_argument, NULL, OPT_TOKEN },
		{ "module", required_argument, NULL, OPT_MODULE },
		{ "pin", required_argument, NULL, OPT_PIN },
		{ "no-in-process", no_argument, NULL, OPT_NO_IN_PROCESS },
		{ "seconds", required_argument, NULL, OPT_SECONDS },
		{ "rounds", required_argument, NULL, OPT_ROUNDS },
		{ "clients", required_argument, NULL, OPT_CLIENTS },
		{},
	};
	bench b = { .g = g, .n_clients = 8, .rounds = 6, .seconds = 12, .in_process = true };
	char *keys[2];
	size_t n_keys = 0;
	const char *token = NULL, *module = NULL, *pin = getenv("MLSKEY_PIN");
	double v;
	int c, r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
		r = cli_common_option(g, c, argv);
		if (r == CLI_OPT_HELP)
			return cli_help(cli_bench_help);
		if (r == CLI_OPT_DONE)
			continue;
		if (r != CLI_OPT_OWN)
			return r;
		switch (c) {
		case OPT_KEY:
			if (n_keys == ELEMENTSOF(keys))
				return cli_usage_error(g, "--key: at most two keys (an ecdsa-p256 "
						       "and a dhkem-p256 one)");
			keys[n_keys++] = optarg;
			break;
		case OPT_TOKEN:
			token = optarg;
			break;
		case OPT_MODULE:
			module = optarg;
			break;
		case OPT_PIN:
			pin = optarg;
			break;
		case OPT_NO_IN_PROCESS:
			b.in_process = false;
			break;
		case OPT_SECONDS:
			if ((r = parse_positive(g, "--seconds", optarg, 3600, &b.seconds)))
				return r;
			break;
		case OPT_ROUNDS:
			if ((r = parse_positive(g, "--rounds", optarg, MAX_ROUNDS, &v)) || v != (int)v)
				return r ? r : cli_usage_error(g, "--rounds: a whole number");
			b.rounds = (unsigned)v;
			break;
		case OPT_CLIENTS:
			if ((r = parse_positive(g, "--clients", optarg, 256, &v)) || v != (int)v)
				return r ? r : cli_usage_error(g, "--clients: a whole number");
			b.n_clients = (unsigned)v;
			break;
		}
	}
	if (optind < argc)
		return cli_usage_error(g, "unexpected argument \"%s\"", argv[optind]);
	if (b.in_process && (!pin || !*pin))
		return cli_usage_error(g, "the in-process side logs in to the token itself: give "
				       "its PIN with --pin PIN or $MLSKEY_PIN (or --no-in-process)");

	b.clients = calloc(b.n_clients, sizeof(*b.clients));
	if (!b.clients)
		return cli_usage_error(g, "out of memory");
	r = 0;
	for (unsigned i = 0; i < b.n_clients && r == 0; i++) {
		int k = mlskey_client_new(g->address, &b.clients[i]);

		if (k == 0)
			k = mlskey_client_set_checks(b.clients[i], 0);
		if (k < 0)
			r = cli_fail(g, k, "cannot reach the agent");
	}
	if (r == 0) {
		int k = mlskey_client_new(g->address, &b.checked);

		if (k < 0)
			r = cli_fail(g, k, "cannot reach the agent");
	}
	if (r == 0)
		r = find_or_make_keys(&b, keys, n_keys, token);
	if (r == 0)
		r = prepare(&b);
	if (r == 0 && b.in_process)
		r = open_in_process(&b, module, pin);
	if (r == 0)
		r = measure(&b);
	bench_cleanup(&b);
	return r;
}
