/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libmlskey example: finds a P-256 signature key and a P-256 HPKE key among the agent's keys,
 * signs an MLS LeafNodeTBS with the first and checks the signature, seals a path secret to
 * the second and has the agent open it.
 *
 *   cc example.c $(pkg-config --cflags --libs mlskey) -o mlskey-example
 *   ./mlskey-example [BUS-ADDRESS]
 *
 * Exit status: 0 when both round trips worked, 2 when the agent has no such keys, 1 on error.
 */
#include <stdio.h>
#include <string.h>

#include <mlskey.h>

static int fail(const char *what)
{
	const mlskey_error *e = mlskey_last_error();

	fprintf(stderr, "mlskey-example: %s: %s (%s)\n", what, e->message, e->name);
	return 1;
}

int main(int argc, char **argv)
{
	static const uint8_t content[] = "a LeafNodeTBS would go here";
	static const uint8_t context[] = "the group context";
	static const uint8_t secret[] = "path secret";
	const uint16_t suite = MLSKEY_SUITE_P256_AES128GCM_P256;
	const char *sig_uri = NULL, *hpke_uri = NULL;
	mlskey_client *c = NULL;
	mlskey_key *keys = NULL;
	size_t n_keys = 0;
	uint8_t *sig = NULL, *kem = NULL, *ct = NULL, *pt = NULL, *pub = NULL;
	size_t sig_len = 0, kem_len = 0, ct_len = 0, pt_len = 0, pub_len = 0;
	int ret = 1;

	if (mlskey_client_new(argc > 1 ? argv[1] : NULL, &c) < 0)
		return fail("connecting to the bus");
	if (mlskey_list_keys(c, &keys, &n_keys) < 0) {
		fail("listing keys");
		goto out;
	}
	for (size_t i = 0; i < n_keys; i++) {
		if (!keys[i].usable)
			continue;
		if (!sig_uri && strcmp(keys[i].algorithm, "ecdsa-p256") == 0)
			sig_uri = keys[i].uri;
		if (!hpke_uri && strcmp(keys[i].algorithm, "dhkem-p256") == 0)
			hpke_uri = keys[i].uri;
	}
	if (!sig_uri || !hpke_uri) {
		fprintf(stderr, "mlskey-example: the agent has no ecdsa-p256 and dhkem-p256 key; "
				"make them with 'mlskey generate'\n");
		ret = 2;
		goto out;
	}

	/* The agent signs on the token; libmlskey has verified the signature already. */
	if (mlskey_sign_with_label(c, sig_uri, suite, "LeafNodeTBS", content, sizeof(content),
				   &sig, &sig_len) < 0) {
		fail("signing");
		goto out;
	}
	/* Anyone holding the public key can verify it too. */
	if (mlskey_get_public_key(c, sig_uri, &pub, &pub_len) < 0 ||
	    mlskey_verify_with_label(suite, pub, pub_len, "LeafNodeTBS", content, sizeof(content),
				     sig, sig_len) < 0) {
		fail("verifying");
		goto out;
	}
	printf("signed %zu bytes with %s: %zu-byte signature, verified\n", sizeof(content),
	       sig_uri, sig_len);

	/* A peer seals to the HPKE key's public key (software) ... */
	mlskey_free(pub, pub_len);
	pub = NULL;
	if (mlskey_get_public_key(c, hpke_uri, &pub, &pub_len) < 0 ||
	    mlskey_encrypt_with_label(suite, pub, pub_len, "UpdatePathNode", context,
				      sizeof(context), secret, sizeof(secret), &kem, &kem_len, &ct,
				      &ct_len) < 0) {
		fail("sealing");
		goto out;
	}
	/* ... and only the token can open it. */
	if (mlskey_decrypt_with_label(c, hpke_uri, suite, "UpdatePathNode", context,
				      sizeof(context), kem, kem_len, ct, ct_len, &pt, &pt_len) < 0) {
		fail("decrypting");
		goto out;
	}
	if (pt_len != sizeof(secret) || memcmp(pt, secret, pt_len) != 0) {
		fprintf(stderr, "mlskey-example: the plaintext differs from what was sealed\n");
		goto out;
	}
	printf("sealed %zu bytes to %s, opened by the agent: \"%s\"\n", sizeof(secret), hpke_uri,
	       (const char *)pt);
	ret = 0;
out:
	mlskey_free(sig, sig_len);
	mlskey_free(pub, pub_len);
	mlskey_free(kem, kem_len);
	mlskey_free(ct, ct_len);
	mlskey_free(pt, pt_len);
	mlskey_keys_free(keys, n_keys);
	mlskey_client_free(c);
	return ret;
}
