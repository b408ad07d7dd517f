/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A key's X.509 certificate as its MLS credential, end to end: the real mlskeyd on a private
 * bus with a SoftHSM token; keys generated on the token through the agent; a test CA (root,
 * intermediate) made with OpenSSL that certifies the keys' public keys. The chain goes in
 * with `mlskey cert import` and libmlskey, comes out with GetCredential (busctl, libmlskey,
 * `mlskey cert show`), byte for byte, and ListKeys describes it. Certificates of other keys
 * (also one stored under this key's CKA_ID) are never returned; refused imports store
 * nothing; an expired or not yet valid leaf is refused with its dates unless allow_expired.
 */
#include <time.h>

#include "agent/keypackage.h"
#include "tests/agent/agent-test.h"
#include "tests/cert/cert-test.h"
#include "tests/clients/clients-test.h"
#include "tests/p11-import.h"

#define TOKEN "cert"
#define TOKEN_URI "pkcs11:token=" TOKEN

static const char *mlskey;
static char addr_arg[600], addr_opt[600];
static mlskey_client *c;
static pid_t agent;

static EVP_PKEY *k_root, *k_inter, *k_root2, *k_inter2;
static X509 *root, *inter, *root2, *inter2;
static mk_bytes d_root, d_inter;

/* A key generated on the token through the agent, its id and public key. */
typedef struct key {
	char *uri;
	uint8_t id[64];
	size_t id_len;
	EVP_PKEY *pub;
} key;

static key k_main, k_other, k_bare, k_expired, k_future, k_wrong, k_ed, k_hpke;

static void key_make(key *k, const char *alg, const char *label)
{
	mlskey_key *keys = NULL;
	uint8_t *pub = NULL;
	size_t n = 0, pub_len = 0;
	const mlskey_key *me;

	if (mlskey_generate_key(c, TOKEN_URI, NULL, alg, label, &k->uri) < 0)
		mkt_bail("generate %s: %s", alg, mlskey_last_error()->message);
	if (mlskey_list_keys(c, &keys, &n) < 0 || !(me = find_key(keys, n, k->uri)) ||
	    me->id_len > sizeof(k->id))
		mkt_bail("the new key is not listed");
	memcpy(k->id, me->id, me->id_len);
	k->id_len = me->id_len;
	mlskey_keys_free(keys, n);
	if (strcmp(alg, "dhkem-p256") != 0) {
		if (mlskey_get_public_key(c, k->uri, &pub, &pub_len) < 0)
			mkt_bail("public key of %s", label);
		k->pub = ca_public_key(pub, pub_len);
		mlskey_free(pub, pub_len);
	}
}

/* A leaf for k's public key from the test intermediate. */
static X509 *leaf_for(const key *k, const char *cn, long from_s, long to_s)
{
	return ca_issue(cn, k->pub, inter, NULL, k_inter, false, from_s, to_s);
}

static int64_t x509_time(const ASN1_TIME *t)
{
	struct tm tm = { 0 };

	ASN1_TIME_to_tm(t, &tm);
	return (int64_t)timegm(&tm);
}

static void date_str(const ASN1_TIME *t, char *buf, size_t n)
{
	time_t tt = (time_t)x509_time(t);
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(buf, n, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static bool bytes_eq(const uint8_t *p, size_t n, const mk_bytes *want)
{
	return n == want->len && memcmp(p, want->data, n) == 0;
}

static bool chain_is(const mlskey_credential *cr, const mk_bytes *want, size_t n)
{
	if (!cr || cr->credential_type != MLSKEY_CREDENTIAL_X509 || cr->n_certificates != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!bytes_eq(cr->certificates[i], cr->certificate_lens[i], &want[i]))
			return false;
	return true;
}

static void cli(run_result *res, const char *a1, const char *a2, const char *a3, const char *a4,
		const char *a5, const char *a6)
{
	run_list(res, mlskey, addr_opt, a1, a2, a3, a4, a5, a6, NULL);
}

static int certs_on_token(void)
{
	int n = mkt_count_certs(TOKEN);

	if (n < 0)
		mkt_bail("cannot count the certificates on the token");
	return n;
}

static const char *path(const char *name)
{
	static char buf[8][600];
	static int i;

	i = (i + 1) % 8;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", mkt_tmpdir(), name);
	return buf[i];
}

/* busctl's "N b1 b2 ..." (one ay without its "ay" prefix) into *ret. */
static int parse_first_ay(const char *p, mk_bytes *ret)
{
	char *end;
	unsigned long n = strtoul(p, &end, 10);

	if (end == p || n > 65536 || mk_bytes_alloc(n, ret) < 0)
		return -EINVAL;
	for (unsigned long i = 0; i < n; i++) {
		p = end;
		ret->data[i] = (uint8_t)strtoul(p, &end, 10);
		if (end == p) {
			mk_bytes_clear(ret);
			return -EINVAL;
		}
	}
	return 0;
}

/* --- the main key: import with the CLI, read back three ways ----------------------------- */

static X509 *leaf_main;
static mk_bytes d_leaf_main;

static void test_import_and_get(void)
{
	static run_result res;
	X509 *ca[] = { inter, root };
	mk_bytes want[3];
	mlskey_credential *cr = NULL;
	mk_bytes busctl_first = MK_BYTES_NULL;
	int before = certs_on_token();

	leaf_main = leaf_for(&k_main, "Erika Mustermann", -60, 86400 * 30);
	ca_der(leaf_main, &d_leaf_main);
	ca_write_pem(path("main.pem"), &leaf_main, 1);
	ca_write_pem(path("ca.pem"), ca, 2); /* two certificates in one file */

	cli(&res, "cert", "import", k_main.uri, path("main.pem"), path("ca.pem"), NULL);
	mkt_ok(res.status == 0 && strstr(res.out, "stored 3 certificates"),
	       "mlskey cert import KEY leaf.pem ca.pem (exit %d): %s%s", res.status, res.out,
	       res.err);
	mkt_ok(certs_on_token() == before + 3, "three certificate objects on the token (%d -> %d)",
	       before, certs_on_token());

	want[0] = d_leaf_main;
	want[1] = d_inter;
	want[2] = d_root;
	mkt_ok_mlskey(mlskey_get_credential(c, k_main.uri, 0, &cr), "GetCredential (libmlskey)");
	mkt_ok(chain_is(cr, want, 3),
	       "x509 credential (type %u) [leaf, intermediate, root], byte-equal to the CA's DER "
	       "(%zu certificates)", cr ? cr->credential_type : 0, cr ? cr->n_certificates : 0);
	mlskey_credential_free(cr);

	run_list(&res, "busctl", addr_arg, "call", AGENT_NAME, AGENT_PATH, AGENT_IFACE,
		 "GetCredential", "sa{sv}", k_main.uri, "0", NULL);
	mkt_ok(res.status == 0 && strncmp(res.out, "qaay 2 3 ", 9) == 0,
	       "busctl GetCredential: credential_type 2, three certificates (%.40s)", res.out);
	if (res.status != 0 || parse_first_ay(res.out + 9, &busctl_first) < 0)
		busctl_first = MK_BYTES_NULL;
	mkt_ok(bytes_eq(busctl_first.data, busctl_first.len, &d_leaf_main),
	       "busctl: the first certificate is the leaf's DER (%zu bytes)", busctl_first.len);
	mk_bytes_clear(&busctl_first);

	/* the same chain twice: nothing new is stored */
	cli(&res, "cert", "import", k_main.uri, path("main.pem"), path("ca.pem"), NULL);
	mkt_ok(res.status == 0 && certs_on_token() == before + 3,
	       "importing the same chain again stores nothing new (%d objects)", certs_on_token());
}

static void test_list_and_show(void)
{
	static run_result res;
	mlskey_key *keys = NULL;
	const mlskey_key *k;
	size_t n = 0;
	char from[64], to[64];
	FILE *f;

	mkt_ok_mlskey(mlskey_list_keys(c, &keys, &n), "ListKeys");
	k = find_key(keys, n, k_main.uri);
	mkt_ok(k && k->has_certificate, "ListKeys: has_certificate");
	mkt_ok(k && strcmp(k->certificate_subject,
			   "CN=Erika Mustermann,O=Stadt Musterhausen,C=DE") == 0,
	       "ListKeys: certificate_subject \"%s\"", k ? k->certificate_subject : "");
	mkt_ok(k && strcmp(k->certificate_issuer,
			   "CN=Test Intermediate,O=Stadt Musterhausen,C=DE") == 0,
	       "ListKeys: certificate_issuer \"%s\"", k ? k->certificate_issuer : "");
	mkt_ok(k && k->certificate_not_before == x509_time(X509_get0_notBefore(leaf_main)) &&
		       k->certificate_not_after == x509_time(X509_get0_notAfter(leaf_main)),
	       "ListKeys: certificate_not_before/after are the leaf's (%lld, %lld)",
	       k ? (long long)k->certificate_not_before : 0,
	       k ? (long long)k->certificate_not_after : 0);
	k = find_key(keys, n, k_bare.uri);
	mkt_ok(k && !k->has_certificate && !k->certificate_subject[0] &&
		       !k->certificate_not_after,
	       "ListKeys: a key without certificate has none of these");
	mlskey_keys_free(keys, n);

	run_list(&res, "busctl", addr_arg, "call", AGENT_NAME, AGENT_PATH, AGENT_IFACE,
		 "ListKeys", NULL);
	mkt_ok(res.status == 0 &&
		       strstr(res.out, "\"certificate_subject\" s \"CN=Erika Mustermann,O=Stadt "
				       "Musterhausen,C=DE\"") &&
		       strstr(res.out, "\"certificate_not_after\" x "),
	       "busctl ListKeys shows certificate_subject and certificate_not_after (x)");

	date_str(X509_get0_notBefore(leaf_main), from, sizeof(from));
	date_str(X509_get0_notAfter(leaf_main), to, sizeof(to));
	cli(&res, "cert", "show", k_main.uri, NULL, NULL, NULL);
	mkt_ok(res.status == 0 && strstr(res.out, "certificate 1 of 3") &&
		       strstr(res.out, "subject    CN=Erika Mustermann,O=Stadt Musterhausen,C=DE") &&
		       strstr(res.out, "issuer     CN=Test Intermediate") &&
		       strstr(res.out, "subject    CN=Test Root") && strstr(res.out, from) &&
		       strstr(res.out, to),
	       "mlskey cert show prints subject, issuer and validity of each (exit %d):\n%s%s",
	       res.status, res.out, res.err);

	cli(&res, "cert", "show", k_main.uri, "--pem", "--out", path("out.pem"));
	f = fopen(path("expect.pem"), "w+e");
	if (!f)
		mkt_bail("tmp file");
	PEM_write_X509(f, leaf_main);
	PEM_write_X509(f, inter);
	PEM_write_X509(f, root);
	fclose(f);
	{
		FILE *a = fopen(path("out.pem"), "re"), *b = fopen(path("expect.pem"), "re");
		char x[16384], y[16384];
		size_t nx = a ? fread(x, 1, sizeof(x), a) : 0, ny = b ? fread(y, 1, sizeof(y), b) : 0;

		mkt_ok(res.status == 0 && nx > 0 && nx == ny && memcmp(x, y, nx) == 0,
		       "mlskey cert show --pem writes the chain as PEM, leaf first (%zu bytes)", nx);
		if (a)
			fclose(a);
		if (b)
			fclose(b);
	}

	cli(&res, "keys", NULL, NULL, NULL, NULL, NULL);
	mkt_ok(res.status == 0 &&
		       strstr(res.out, "certificate CN=Erika Mustermann,O=Stadt Musterhausen,C=DE"),
	       "mlskey keys shows the certificate's subject");
	cli(&res, "keys", "--json", NULL, NULL, NULL, NULL);
	mkt_ok(res.status == 0 &&
		       strstr(res.out, "\"certificate_subject\": \"CN=Erika Mustermann,O=Stadt "
				       "Musterhausen,C=DE\"") &&
		       strstr(res.out, "\"certificate_not_after\": "),
	       "mlskey keys --json has certificate_subject and certificate_not_after");
}

/* --- other keys' certificates are never this key's --------------------------------------- */

static void test_other_keys(void)
{
	X509 *leaf_other = leaf_for(&k_other, "Max Mustermann", -60, 86400);
	X509 *impostor = leaf_for(&k_other, "Not the bare key", -60, 86400);
	mk_bytes d_other = MK_BYTES_NULL, d_impostor = MK_BYTES_NULL, want[3];
	const uint8_t *certs[2];
	size_t lens[2];
	mlskey_credential *cr = NULL;
	mlskey_key *keys = NULL;
	const mlskey_key *k;
	size_t n = 0;
	int before;

	mkt_ok_mlskey_err(mlskey_get_credential(c, k_bare.uri, 0, &cr), -ENOKEY,
			  "org.mlskey.Error.NoSuchKey", "a key without a certificate: NoSuchKey");
	mkt_ok(strstr(mlskey_last_error()->message, "no certificate for key \"bare\" on token "
						    "\"cert\"") &&
		       strstr(mlskey_last_error()->message, "import"),
	       "... saying which key, which token, and what to do: %s",
	       mlskey_last_error()->message);

	/* libmlskey import; the intermediate is on the token already and is skipped */
	ca_der(leaf_other, &d_other);
	ca_der(impostor, &d_impostor);
	before = certs_on_token();
	certs[0] = d_other.data;
	lens[0] = d_other.len;
	certs[1] = d_inter.data;
	lens[1] = d_inter.len;
	mkt_ok_mlskey(mlskey_import_certificates(c, k_other.uri, certs, lens, 2),
		      "mlskey_import_certificates [leaf, intermediate]");
	mkt_ok(certs_on_token() == before + 1,
	       "only the new leaf is stored; the intermediate already was (%d -> %d)", before,
	       certs_on_token());

	/* a certificate for k_other's public key, stored under k_bare's CKA_ID */
	if (mkt_import_cert(TOKEN, "bare", k_bare.id, k_bare.id_len, d_impostor.data,
			    d_impostor.len) < 0)
		mkt_bail("cannot plant the certificate");
	mkt_ok_mlskey_err(mlskey_get_credential(c, k_bare.uri, 0, &cr), -ENOKEY,
			  "org.mlskey.Error.NoSuchKey",
			  "a certificate for another key under this key's CKA_ID is not this key's");
	mkt_ok_mlskey(mlskey_list_keys(c, &keys, &n), "ListKeys");
	k = find_key(keys, n, k_bare.uri);
	mkt_ok(k && !k->has_certificate, "ListKeys: that key still has no certificate");
	mlskey_keys_free(keys, n);

	want[0] = d_other;
	want[1] = d_inter;
	want[2] = d_root;
	mkt_ok_mlskey(mlskey_get_credential(c, k_other.uri, 0, &cr), "GetCredential other key");
	mkt_ok(chain_is(cr, want, 3),
	       "the other key gets its own leaf (the one under its own CKA_ID), then the "
	       "intermediate and root from the token");
	mlskey_credential_free(cr);
	cr = NULL;
	want[0] = d_leaf_main;
	mkt_ok_mlskey(mlskey_get_credential(c, k_main.uri, 0, &cr), "GetCredential main key");
	mkt_ok(chain_is(cr, want, 3), "the main key still gets its own leaf only");
	mlskey_credential_free(cr);

	X509_free(leaf_other);
	X509_free(impostor);
	mk_bytes_clear(&d_other);
	mk_bytes_clear(&d_impostor);
}

/* --- the credential in a KeyPackage (CreateKeyPackage with a certified key) --------------- */

static size_t keys_listed(void)
{
	mlskey_key *keys = NULL;
	size_t n = 0;

	if (mlskey_list_keys(c, &keys, &n) < 0)
		return (size_t)-1;
	mlskey_keys_free(keys, n);
	return n;
}

static bool span_is(mk_kp_span s, const mk_bytes *want)
{
	return s.n == want->len && memcmp(s.p, want->data, s.n) == 0;
}

/*
 * The main key holds [leaf, intermediate, root] on its token: a KeyPackage signed by it
 * carries them as its x509 credential, and no identity is needed. A key whose leaf is not
 * valid yet gets no KeyPackage (and no keys are left behind).
 */
static void test_keypackage(void)
{
	mlskey_key_package kp = { 0 };
	mlskey_key_package_options o = { 0 };
	mk_key_package d;
	mk_kp_span body;
	uint8_t *pub = NULL;
	size_t pub_len = 0, before;
	bool has_x509 = false;
	int r;

	mkt_ok_mlskey(mlskey_create_key_package(c, k_main.uri, 2, NULL, &kp),
		      "CreateKeyPackage with a certified key and no identity");
	r = kp.key_package ? mk_kp_decode_message(kp.key_package, kp.key_package_len, &d, &body)
			   : -EINVAL;
	mkt_ok_r(r, "the KeyPackage parses (%zu bytes)", kp.key_package_len);
	if (r == 0) {
		mkt_ok(d.leaf.credential.type == MK_MLS_CREDENTIAL_X509 &&
			       d.leaf.credential.n_certs == 3 &&
			       span_is(d.leaf.credential.certs[0], &d_leaf_main) &&
			       span_is(d.leaf.credential.certs[1], &d_inter) &&
			       span_is(d.leaf.credential.certs[2], &d_root),
		       "its credential is x509 with [leaf, intermediate, root], byte-equal to the "
		       "CA's DER (type %u, %zu certificates)",
		       d.leaf.credential.type, d.leaf.credential.n_certs);
		for (size_t i = 0; i < d.leaf.capabilities.credentials.n; i++)
			has_x509 |= d.leaf.capabilities.credentials.v[i] == MK_MLS_CREDENTIAL_X509;
		mkt_ok(has_x509, "its capabilities list the x509 credential type");
		mkt_ok(mlskey_get_public_key(c, k_main.uri, &pub, &pub_len) == 0 &&
			       d.leaf.signature_key.n == pub_len &&
			       memcmp(d.leaf.signature_key.p, pub, pub_len) == 0,
		       "its signature_key is the certified key");
		mlskey_free(pub, pub_len);
		mkt_ok_r(mk_kp_check(&d, (uint64_t)time(NULL)),
			 "both signatures verify and a receiver accepts it");
	}
	if (kp.init_key)
		mlskey_delete_key(c, kp.init_key);
	if (kp.leaf_key)
		mlskey_delete_key(c, kp.leaf_key);
	mlskey_key_package_clear(&kp);

	before = keys_listed();
	o.identity = "future@example.org";
	mkt_ok_mlskey_err(mlskey_create_key_package(c, k_future.uri, 2, &o, &kp), -EOPNOTSUPP,
			  "org.mlskey.Error.Unsupported",
			  "CreateKeyPackage with a certificate not valid yet is refused, not turned "
			  "into a basic credential");
	mkt_ok(strstr(mlskey_last_error()->message, "is not valid yet") != NULL,
	       "  and says why: %s", mlskey_last_error()->message);
	mkt_ok(keys_listed() == before, "  and leaves no key behind (%zu keys)", keys_listed());
	mlskey_key_package_clear(&kp);
}

/* --- dates ------------------------------------------------------------------------------- */

static void test_dates(const key *k, long from_s, long to_s, const char *state, bool use_der)
{
	static run_result res;
	X509 *leaf = leaf_for(k, "Dated Clerk", from_s, to_s);
	mk_bytes d_leaf = MK_BYTES_NULL, want[3];
	mlskey_credential *cr = NULL;
	char from[64], to[64];
	const char *msg;

	ca_der(leaf, &d_leaf);
	date_str(X509_get0_notBefore(leaf), from, sizeof(from));
	date_str(X509_get0_notAfter(leaf), to, sizeof(to));
	if (use_der)
		ca_write_der(path("dated.der"), leaf);
	else
		ca_write_pem(path("dated.der"), &leaf, 1);
	cli(&res, "cert", "import", k->uri, path("dated.der"), path("ca.pem"), NULL);
	mkt_ok(res.status == 0, "import a leaf that %s from a %s file (exit %d) %s", state,
	       use_der ? "DER" : "PEM", res.status, res.err);

	mkt_ok_mlskey_err(mlskey_get_credential(c, k->uri, 0, &cr), -EOPNOTSUPP,
			  "org.mlskey.Error.Unsupported", "GetCredential refuses a leaf that %s",
			  state);
	msg = mlskey_last_error()->message;
	mkt_ok(strstr(msg, state) && strstr(msg, from) && strstr(msg, to) &&
		       strstr(msg, "allow_expired"),
	       "the message names the dates (%s .. %s): %s", from, to, msg);

	want[0] = d_leaf;
	want[1] = d_inter;
	want[2] = d_root;
	mkt_ok_mlskey(mlskey_get_credential(c, k->uri, MLSKEY_CREDENTIAL_ALLOW_EXPIRED, &cr),
		      "GetCredential with allow_expired");
	mkt_ok(chain_is(cr, want, 3), "allow_expired returns the whole chain");
	mlskey_credential_free(cr);

	run_list(&res, "busctl", addr_arg, "call", AGENT_NAME, AGENT_PATH, AGENT_IFACE,
		 "GetCredential", "sa{sv}", k->uri, "1", "allow_expired", "b", "true", NULL);
	mkt_ok(res.status == 0 && strncmp(res.out, "qaay 2 3 ", 9) == 0,
	       "busctl GetCredential with allow_expired b true: %.30s%s", res.out, res.err);

	cli(&res, "cert", "show", k->uri, NULL, NULL, NULL);
	mkt_ok(res.status == 1 && strstr(res.err, state),
	       "mlskey cert show refuses it (exit %d): %s", res.status, res.err);
	cli(&res, "cert", "show", k->uri, "--allow-expired", NULL, NULL);
	mkt_ok(res.status == 0 && strstr(res.out, "subject    CN=Dated Clerk"),
	       "mlskey cert show --allow-expired shows it (exit %d)", res.status);
	X509_free(leaf);
	mk_bytes_clear(&d_leaf);
}

/* A renewed certificate next to the expired one: the valid one is the key's credential. */
static void test_renewed(void)
{
	X509 *renewed = leaf_for(&k_expired, "Renewed Clerk", -60, 86400 * 60);
	mk_bytes d_renewed = MK_BYTES_NULL, want[3];
	const uint8_t *certs[1];
	size_t lens[1];
	mlskey_credential *cr = NULL;
	mlskey_key *keys = NULL;
	const mlskey_key *k;
	size_t n = 0;

	ca_der(renewed, &d_renewed);
	certs[0] = d_renewed.data;
	lens[0] = d_renewed.len;
	mkt_ok_mlskey(mlskey_import_certificates(c, k_expired.uri, certs, lens, 1),
		      "import a renewed leaf next to the expired one");
	want[0] = d_renewed;
	want[1] = d_inter;
	want[2] = d_root;
	mkt_ok_mlskey(mlskey_get_credential(c, k_expired.uri, 0, &cr),
		      "GetCredential without allow_expired now succeeds");
	mkt_ok(chain_is(cr, want, 3), "it returns the renewed leaf, not the expired one");
	mlskey_credential_free(cr);
	mkt_ok_mlskey(mlskey_list_keys(c, &keys, &n), "ListKeys");
	k = find_key(keys, n, k_expired.uri);
	mkt_ok(k && strstr(k->certificate_subject, "CN=Renewed Clerk") &&
		       k->certificate_not_after == x509_time(X509_get0_notAfter(renewed)),
	       "ListKeys describes the renewed leaf: %s", k ? k->certificate_subject : "");
	mlskey_keys_free(keys, n);
	X509_free(renewed);
	mk_bytes_clear(&d_renewed);
}

/* --- refused imports store nothing ------------------------------------------------------- */

static void test_refused(void)
{
	static run_result res;
	X509 *leaf2 = ca_issue("Wrong Order", k_wrong.pub, inter2, NULL, k_inter2, false, -60,
			       86400);
	mk_bytes d_leaf2 = MK_BYTES_NULL, d_root2 = MK_BYTES_NULL, d_inter2 = MK_BYTES_NULL;
	const uint8_t *certs[3];
	size_t lens[3];
	mlskey_credential *cr = NULL;
	int before = certs_on_token();
	const char *msg;

	/* the main key's leaf offered for another key */
	cli(&res, "cert", "import", k_wrong.uri, path("main.pem"), path("ca.pem"), NULL);
	mkt_ok(res.status == 1 && strstr(res.err, "is not for key \"wrong\"") &&
		       strstr(res.err, "CN=Erika Mustermann") && strstr(res.err, "InvalidInput"),
	       "a leaf for another key is refused, naming both (exit %d): %s", res.status,
	       res.err);
	mkt_ok(certs_on_token() == before, "... and nothing is stored (%d objects)",
	       certs_on_token());

	/* a new CA's chain out of order: neither its root nor its intermediate may land */
	ca_der(leaf2, &d_leaf2);
	ca_der(root2, &d_root2);
	ca_der(inter2, &d_inter2);
	certs[0] = d_leaf2.data;
	lens[0] = d_leaf2.len;
	certs[1] = d_root2.data;
	lens[1] = d_root2.len;
	certs[2] = d_inter2.data;
	lens[2] = d_inter2.len;
	mkt_ok_mlskey_err(mlskey_import_certificates(c, k_wrong.uri, certs, lens, 3), -EINVAL,
			  "org.mlskey.Error.InvalidInput", "a chain out of order is refused");
	msg = mlskey_last_error()->message;
	mkt_ok(strstr(msg, "not in order"), "... saying so: %s", msg);
	mkt_ok(certs_on_token() == before, "... and nothing is stored (%d objects)",
	       certs_on_token());
	mkt_ok_mlskey_err(mlskey_get_credential(c, k_wrong.uri, 0, &cr), -ENOKEY,
			  "org.mlskey.Error.NoSuchKey", "that key still has no credential");

	/* in order it goes in */
	certs[1] = d_inter2.data;
	lens[1] = d_inter2.len;
	certs[2] = d_root2.data;
	lens[2] = d_root2.len;
	mkt_ok_mlskey(mlskey_import_certificates(c, k_wrong.uri, certs, lens, 3),
		      "the same chain in order is stored");
	mkt_ok(certs_on_token() == before + 3, "three new objects (%d)", certs_on_token());

	/* garbage and bounds, on the bus thread */
	run_list(&res, "busctl", addr_arg, "call", AGENT_NAME, AGENT_PATH, AGENT_IFACE,
		 "ImportCertificates", "saay", k_main.uri, "1", "3", "48", "1", "2", NULL);
	mkt_ok(res.status != 0 && strstr(res.err, "no DER X.509 certificate"),
	       "busctl ImportCertificates with garbage: %s", res.err);
	run_list(&res, "busctl", addr_arg, "call", AGENT_NAME, AGENT_PATH, AGENT_IFACE,
		 "ImportCertificates", "saay", k_main.uri, "0", NULL);
	mkt_ok(res.status != 0 && strstr(res.err, "no certificate given"),
	       "busctl ImportCertificates with none: %s", res.err);
	run_list(&res, "busctl", addr_arg, "call", AGENT_NAME, AGENT_PATH, AGENT_IFACE,
		 "GetCredential", "sa{sv}", k_main.uri, "1", "bogus", "b", "true", NULL);
	mkt_ok(res.status != 0 && strstr(res.err, "option \"bogus\" is unknown"),
	       "GetCredential with an unknown option: InvalidInput: %s", res.err);
	run_list(&res, "busctl", addr_arg, "call", AGENT_NAME, AGENT_PATH, AGENT_IFACE,
		 "GetCredential", "sa{sv}", k_main.uri, "1", "allow_expired", "s", "yes", NULL);
	mkt_ok(res.status != 0 && strstr(res.err, "must be a boolean"),
	       "GetCredential with allow_expired of type s: %s", res.err);
	mkt_ok(certs_on_token() == before + 3, "nothing stored by those (%d)", certs_on_token());

	/* a file with no certificate never reaches the agent */
	cli(&res, "cert", "import", k_main.uri, mkt_write_file("junk.pem", "not a certificate\n"),
	    NULL, NULL);
	mkt_ok(res.status == 1 && strstr(res.err, "holds no certificate"),
	       "mlskey cert import of a file without certificate (exit %d): %s", res.status,
	       res.err);

	X509_free(leaf2);
	mk_bytes_clear(&d_leaf2);
	mk_bytes_clear(&d_root2);
	mk_bytes_clear(&d_inter2);
}

/* --- key kinds and the PIN --------------------------------------------------------------- */

static void test_kinds(void)
{
	X509 *leaf_ed = leaf_for(&k_ed, "Ed Clerk", -60, 86400);
	mk_bytes d_ed = MK_BYTES_NULL, want[3];
	const uint8_t *certs[1];
	size_t lens[1];
	mlskey_credential *cr = NULL;
	int pins;

	ca_der(leaf_ed, &d_ed);
	certs[0] = d_ed.data;
	lens[0] = d_ed.len;
	mkt_ok_mlskey(mlskey_import_certificates(c, k_ed.uri, certs, lens, 1),
		      "import a leaf alone for an ed25519 key");
	want[0] = d_ed;
	want[1] = d_inter;
	want[2] = d_root;
	mkt_ok_mlskey(mlskey_get_credential(c, k_ed.uri, 0, &cr), "GetCredential ed25519 key");
	mkt_ok(chain_is(cr, want, 3), "the ed25519 key's chain is completed from the token");
	mlskey_credential_free(cr);
	cr = NULL;

	mkt_ok_mlskey_err(mlskey_get_credential(c, k_hpke.uri, 0, &cr), -EOPNOTSUPP,
			  "org.mlskey.Error.Unsupported", "an hpke key has no credential");
	mkt_ok(strstr(mlskey_last_error()->message, "signature key"), "... saying why: %s",
	       mlskey_last_error()->message);
	mkt_ok_mlskey_err(mlskey_import_certificates(c, k_hpke.uri, certs, lens, 1), -EOPNOTSUPP,
			  "org.mlskey.Error.Unsupported", "nor can it get certificates");

	mkt_ok_mlskey_err(mlskey_get_credential(c, TOKEN_URI ";id=%01%02%03", 0, &cr), -ENOKEY,
			  "org.mlskey.Error.NoSuchKey", "no such key: NoSuchKey");

	/* reading a credential asks for no PIN */
	mkt_ok_mlskey(mlskey_lock(c, TOKEN_URI), "lock the token");
	pins = mkt_pinentry_getpins();
	mkt_ok_mlskey(mlskey_get_credential(c, k_main.uri, 0, &cr), "GetCredential after Lock");
	mkt_ok(mkt_pinentry_getpins() == pins, "... without a PIN dialog (%d -> %d)", pins,
	       mkt_pinentry_getpins());
	mlskey_credential_free(cr);

	/* storing needs the PIN; a chain that is refused asks for none */
	mkt_ok_mlskey_err(mlskey_import_certificates(c, k_bare.uri, certs, lens, 1), -EINVAL,
			  "org.mlskey.Error.InvalidInput", "a leaf for another key, after Lock");
	mkt_ok(mkt_pinentry_getpins() == pins, "... refused without a PIN dialog (%d -> %d)", pins,
	       mkt_pinentry_getpins());
	mkt_ok_mlskey(mlskey_import_certificates(c, k_ed.uri, certs, lens, 1),
		      "the ed25519 key's leaf again, after Lock");
	mkt_ok(mkt_pinentry_getpins() == pins + 1, "... after one PIN dialog (%d -> %d)", pins,
	       mkt_pinentry_getpins());
	X509_free(leaf_ed);
	mk_bytes_clear(&d_ed);
}

int main(void)
{
	const char *addr;

	mkt_softhsm_setup();
	mkt_softhsm_add_token(TOKEN);
	mkt_pinentry_control("");
	mkt_pinentry_log_path();
	agent = mkt_agent_start(NULL);
	addr = getenv("DBUS_SESSION_BUS_ADDRESS");
	snprintf(addr_arg, sizeof(addr_arg), "--address=%s", addr);
	snprintf(addr_opt, sizeof(addr_opt), "--address=%s", addr);
	mlskey = strdup(mkt_build_path("clients/mlskey"));
	if (mlskey_client_new(addr, &c) < 0)
		mkt_bail("cannot connect: %s", mlskey_last_error()->message);

	k_root = ca_key_new();
	k_inter = ca_key_new();
	k_root2 = ca_key_new();
	k_inter2 = ca_key_new();
	root = ca_issue("Test Root", k_root, NULL, NULL, k_root, true, -3600, 86400 * 365);
	inter = ca_issue("Test Intermediate", k_inter, root, NULL, k_root, true, -3600, 86400 * 90);
	root2 = ca_issue("Second Root", k_root2, NULL, NULL, k_root2, true, -3600, 86400 * 365);
	inter2 = ca_issue("Second Intermediate", k_inter2, root2, NULL, k_root2, true, -3600,
			  86400 * 90);
	ca_der(root, &d_root);
	ca_der(inter, &d_inter);

	key_make(&k_main, "ecdsa-p256", "clerk");
	key_make(&k_other, "ecdsa-p256", "other");
	key_make(&k_bare, "ecdsa-p256", "bare");
	key_make(&k_expired, "ecdsa-p256", "expired");
	key_make(&k_future, "ecdsa-p256", "future");
	key_make(&k_wrong, "ecdsa-p256", "wrong");
	key_make(&k_ed, "ed25519", "ed");
	key_make(&k_hpke, "dhkem-p256", "hpke");

	{
		static run_result res;

		cli(&res, "cert", "--help", NULL, NULL, NULL, NULL);
		mkt_ok(res.status == 0 && strstr(res.out, "mlskey cert import KEY FILE...") &&
			       strstr(res.out, "--allow-expired"),
		       "mlskey cert --help");
		cli(&res, "--help", NULL, NULL, NULL, NULL, NULL);
		mkt_ok(res.status == 0 && strstr(res.out, "    cert "), "mlskey --help lists cert");
		cli(&res, "cert", "sign", NULL, NULL, NULL, NULL);
		mkt_ok(res.status == 1 && strstr(res.err, "import or show"),
		       "an unknown cert command is a usage error: %s", res.err);
	}
	test_import_and_get();
	test_list_and_show();
	test_other_keys();
	test_dates(&k_expired, -86400 * 30, -86400, "has expired", true);
	test_dates(&k_future, 86400, 86400 * 30, "is not valid yet", false);
	test_renewed();
	test_keypackage();
	test_refused();
	test_kinds();

	mlskey_client_free(c);
	{
		int st = mkt_agent_stop(agent);

		mkt_ok(st == 0, "mlskeyd ends cleanly (status %d; under ASan: no error, no leak)",
		       st);
	}
	return mkt_done();
}
