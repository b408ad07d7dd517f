/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * `mlskey cert`: the X.509 certificate chain of a key, which MLS carries as its credential.
 * `import` stores a chain on the key's token (ImportCertificates), `show` prints what
 * GetCredential returns. All X.509 parsing is OpenSSL's.
 */
#include <errno.h>
#include <getopt.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clients/cli.h"
#include "pkcs11/p11.h"

#define MAX_CERTS 10

const char cli_cert_help[] =
	"NAME\n"
	"    mlskey cert - the X.509 certificate of a key: its MLS credential\n"
	"\n"
	"SYNOPSIS\n"
	"    mlskey cert import KEY FILE...\n"
	"    mlskey cert show KEY [--pem] [--out FILE] [--allow-expired] [--json]\n"
	"\n"
	"DESCRIPTION\n"
	"    A clerk's card carries the certificate their administration issued for the card's\n"
	"    signature key; MLS sends it as an x509 credential (RFC 9420 section 5.3), the\n"
	"    certificate first, then the CA certificates above it.\n"
	"\n"
	"    import  stores the certificates in FILE... on the token of KEY: the certificate\n"
	"            issued for KEY first, then each issuer in turn (the root may be left out).\n"
	"            A FILE holds PEM (one or several certificates) or one DER certificate.\n"
	"            The agent refuses a first certificate that is not for KEY and a chain out\n"
	"            of order, and then stores nothing. It may ask for the token's PIN.\n"
	"    show    prints the chain the token holds for KEY (GetCredential): subject, issuer\n"
	"            and validity of each certificate. A certificate that is expired or not\n"
	"            valid yet is refused unless --allow-expired.\n"
	"\n"
	"OPTIONS\n"
	"    --pem            show: write the chain as PEM instead (leaf first)\n"
	"    -o, --out FILE   show --pem: write to FILE instead of standard output\n"
	"    --allow-expired  show: accept a certificate outside its validity dates\n"
	"    --address ADDR   the D-Bus address of the agent's bus (default: the session bus)\n"
	"    --json           machine-readable output (show)\n"
	"    -h, --help       this help\n"
	"\n"
	"EXIT STATUS\n"
	"    0 success; 1 bad usage or input (a file that holds no certificate, a chain the\n"
	"    agent refused, an expired certificate); 2 no such key, or no certificate for it;\n"
	"    3 PIN refused or cancelled; 4 access denied; 6 the token or agent failed; 7 the\n"
	"    agent is not reachable.\n"
	"\n"
	"EXAMPLES\n"
	"    mlskey cert import \"$KEY\" clerk.pem intermediate-and-root.pem\n"
	"    mlskey cert show \"$KEY\"\n"
	"    mlskey cert show \"$KEY\" --pem --out chain.pem\n";

enum {
	OPT_PEM = OPT_FIRST_OWN,
	OPT_ALLOW_EXPIRED,
};

typedef struct cert_list {
	uint8_t *der[MAX_CERTS];
	size_t len[MAX_CERTS];
	size_t n;
} cert_list;

static void cert_list_clear(cert_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		OPENSSL_free(l->der[i]);
	l->n = 0;
}

static int cert_list_add(const cli_global *g, cert_list *l, X509 *x, const char *path)
{
	unsigned char *der = NULL;
	int n;

	if (l->n >= MAX_CERTS)
		return cli_usage_error(g, "%s: more than %d certificates in all; give the key's "
				       "certificate and the CA certificates above it", path,
				       MAX_CERTS);
	n = i2d_X509(x, &der);
	if (n <= 0)
		return cli_usage_error(g, "%s: cannot encode a certificate", path);
	l->der[l->n] = der;
	l->len[l->n++] = (size_t)n;
	return 0;
}

/* The certificates of one file: every PEM CERTIFICATE block, else the whole file as DER. */
static int read_cert_file(const cli_global *g, const char *path, cert_list *l)
{
	BIO *b = BIO_new_file(path, "rb");
	size_t before = l->n;
	X509 *x;
	int r = 0;

	if (!b)
		return cli_usage_error(g, "cannot open %s: %s", path, strerror(errno));
	while (r == 0 && (x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
		r = cert_list_add(g, l, x, path);
		X509_free(x);
	}
	ERR_clear_error();
	if (r == 0 && l->n == before) {
		(void)BIO_reset(b);
		x = d2i_X509_bio(b, NULL);
		ERR_clear_error();
		if (!x)
			r = cli_usage_error(g, "%s holds no certificate (neither PEM \"-----BEGIN "
					    "CERTIFICATE-----\" nor DER)", path);
		else {
			r = cert_list_add(g, l, x, path);
			X509_free(x);
		}
	}
	BIO_free(b);
	return r;
}

static int connect_agent(cli_global *g, mlskey_client **ret)
{
	int r = mlskey_client_new(g->address, ret);

	if (r < 0)
		return cli_fail(g, r, "cannot reach the agent");
	return 0;
}

static int cert_import(cli_global *g, const char *key, char **files, int n_files)
{
	mlskey_client *c = NULL;
	cert_list l = { 0 };
	int r = 0;

	for (int i = 0; r == 0 && i < n_files; i++)
		r = read_cert_file(g, files[i], &l);
	if (r == 0)
		r = connect_agent(g, &c);
	if (r == 0) {
		r = mlskey_import_certificates(c, key, (const uint8_t *const *)l.der, l.len, l.n);
		r = r < 0 ? cli_fail(g, r, "cannot import the certificates") : 0;
	}
	if (r == 0 && !g->json)
		printf("stored %zu certificate%s for %s\n", l.n, l.n == 1 ? "" : "s", key);
	else if (r == 0)
		printf("{\"certificates\": %zu}\n", l.n);
	mlskey_client_free(c);
	cert_list_clear(&l);
	return r;
}

static void time_string(int64_t t, char *buf, size_t n)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || !strftime(buf, n, "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(buf, n, "?");
}

/* One certificate of the chain, as pkcs11/x509.c describes it (the agent's own words). */
static void show_one(const cli_global *g, const mk_x509_info *x, size_t i, size_t n)
{
	const char *subject = x->subject ? x->subject : "?";
	const char *issuer = x->issuer ? x->issuer : "?";
	char from[64], to[64];

	time_string(x->not_before, from, sizeof(from));
	time_string(x->not_after, to, sizeof(to));
	if (g->json) {
		printf("%s\n  {\"subject\": ", i ? "," : "");
		cli_json_string(stdout, subject);
		printf(", \"issuer\": ");
		cli_json_string(stdout, issuer);
		printf(", \"not_before\": \"%s\", \"not_after\": \"%s\"}", from, to);
	} else {
		printf("certificate %zu of %zu%s\n", i + 1, n, i == 0 ? " (the key's)" : "");
		printf("    subject    %s\n", subject);
		printf("    issuer     %s\n", issuer);
		printf("    not before %s\n", from);
		printf("    not after  %s\n", to);
	}
}

static int cert_show(cli_global *g, const char *key, bool pem, const char *out, bool allow)
{
	mlskey_client *c = NULL;
	mlskey_credential *cr = NULL;
	BIO *b = NULL;
	int r;

	r = connect_agent(g, &c);
	if (r)
		return r;
	r = mlskey_get_credential(c, key, allow ? MLSKEY_CREDENTIAL_ALLOW_EXPIRED : 0, &cr);
	mlskey_client_free(c);
	if (r < 0)
		return cli_fail(g, r, "cannot get the certificate");
	if (pem) {
		b = out && strcmp(out, "-") != 0 ? BIO_new_file(out, "wb")
						 : BIO_new_fp(stdout, BIO_NOCLOSE);
		if (!b)
			r = cli_usage_error(g, "cannot write %s: %s", out, strerror(errno));
	} else if (g->json)
		printf("{\"credential_type\": %u, \"certificates\": [", cr->credential_type);
	for (size_t i = 0; r == 0 && i < cr->n_certificates; i++) {
		const unsigned char *p = cr->certificates[i];
		X509 *x = pem ? d2i_X509(NULL, &p, (long)cr->certificate_lens[i]) : NULL;
		mk_x509_info info = { 0 };

		if (pem && !x)
			r = cli_fail(g, -EPROTO,
				     "the agent returned a certificate that does not parse");
		else if (pem)
			r = PEM_write_bio_X509(b, x) == 1
				    ? 0
				    : cli_usage_error(g, "cannot write %s", out ? out : "-");
		else if (mk_x509_describe(cr->certificates[i], cr->certificate_lens[i], &info) < 0)
			r = cli_fail(g, -EPROTO,
				     "the agent returned a certificate that does not parse");
		else
			show_one(g, &info, i, cr->n_certificates);
		mk_x509_info_clear(&info);
		X509_free(x);
	}
	if (!pem && g->json && r == 0)
		printf("\n]}\n");
	BIO_free_all(b);
	mlskey_credential_free(cr);
	return r;
}

int cli_cert(cli_global *g, int argc, char **argv)
{
	static const struct option lo[] = {
		COMMON_LONG_OPTIONS,
		{ "pem", no_argument, NULL, OPT_PEM },
		{ "out", required_argument, NULL, 'o' },
		{ "allow-expired", no_argument, NULL, OPT_ALLOW_EXPIRED },
		{},
	};
	bool pem = false, allow = false;
	const char *out = NULL, *sub;
	int c;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":ho:", lo, NULL)) != -1) {
		int r = cli_common_option(g, c, argv);

		if (r == CLI_OPT_HELP)
			return cli_help(cli_cert_help);
		if (r == CLI_OPT_DONE)
			continue;
		if (r != CLI_OPT_OWN)
			return r;
		switch (c) {
		case OPT_PEM:
			pem = true;
			break;
		case 'o':
			out = optarg;
			break;
		case OPT_ALLOW_EXPIRED:
			allow = true;
			break;
		}
	}
	if (optind >= argc)
		return cli_usage_error(g, "import or show is missing (see mlskey cert --help)");
	sub = argv[optind++];
	if (strcmp(sub, "import") == 0) {
		if (argc - optind < 2)
			return cli_usage_error(g, "cert import needs KEY and at least one FILE (see "
					       "mlskey cert --help)");
		if (pem || out || allow)
			return cli_usage_error(g, "--pem, --out and --allow-expired belong to cert "
					       "show");
		return cert_import(g, argv[optind], argv + optind + 1, argc - optind - 1);
	}
	if (strcmp(sub, "show") == 0) {
		if (argc - optind != 1)
			return cli_usage_error(g, "cert show needs exactly one KEY (see mlskey cert "
					       "--help)");
		if (out && !pem)
			return cli_usage_error(g, "--out goes with --pem");
		return cert_show(g, argv[optind], pem, out, allow);
	}
	return cli_usage_error(g, "unknown cert command \"%s\": import or show (see mlskey cert "
			       "--help)", sub);
}
