/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The KeyPackage codec (agent/keypackage.h) against encodings written out by hand here from
 * RFC 9420's struct definitions (§6 MLSMessage, §10 KeyPackage, §7.2 LeafNode, §5.3
 * Credential, §5.2 RefHash), not produced by the encoder under test. Then the strict
 * decoder: round trips, and truncated, non-minimal, trailing and mislabelled inputs.
 */
#include <openssl/evp.h>
#include <string.h>

#include "agent/keypackage.h"
#include "common/error.h"
#include "tests/tap.h"

/* One field per line with its comment: not for clang-format. */
/* clang-format off */
/*
 * MLSMessage(KeyPackage) with a basic credential, one leaf extension, a last_resort
 * KeyPackage extension, a 70-byte leaf signature (2-byte varint length) and short dummy keys.
 */
static const char kp_basic_hex[] =
	/* MLSMessage */
	"0001"           /* ProtocolVersion version = mls10 (uint16) */
	"0005"           /* WireFormat wire_format = mls_key_package (uint16) */
	/* KeyPackage */
	"0001"           /* ProtocolVersion version = mls10 */
	"0001"           /* CipherSuite cipher_suite = 1 (uint16) */
	"04" "01020304"  /* HPKEPublicKey init_key<V>: varint 4, bytes */
	/* LeafNode leaf_node */
	"04" "11121314"  /* HPKEPublicKey encryption_key<V> */
	"03" "212223"    /* SignaturePublicKey signature_key<V> */
	"0001"           /* Credential.credential_type = basic (uint16) */
	"05" "616c696365" /* opaque identity<V> = "alice" */
	/* Capabilities: five vectors of uint16, each varint byte length then the values */
	"02" "0001"      /* ProtocolVersion versions<V> = [mls10] */
	"02" "0001"      /* CipherSuite cipher_suites<V> = [1] */
	"02" "000a"      /* ExtensionType extensions<V> = [last_resort] */
	"00"             /* ProposalType proposals<V> = [] */
	"02" "0001"      /* CredentialType credentials<V> = [basic] */
	"01"             /* LeafNodeSource leaf_node_source = key_package (uint8) */
	"0000000065000000" /* Lifetime.not_before (uint64) */
	"0000000066000000" /* Lifetime.not_after (uint64) */
	"06"             /* Extension extensions<V>: 6 bytes follow */
	"0001" "03" "617070" /*   extension_type application_id, extension_data<V> = "app" */
	"4046"           /* opaque signature<V>: 70 = 0x46 as the 2-byte varint 0x4046 */
	"5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a" /* 35 bytes */
	"5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a" /* 35 bytes */
	/* back in KeyPackage */
	"03"             /* Extension extensions<V>: 3 bytes follow */
	"000a" "00"      /*   last_resort, empty extension_data<V> */
	"04" "b1b2b3b4"; /* opaque signature<V> */

/* The same leaf's LeafNodeTBS (source key_package: nothing after the extensions). */
static const char leaf_tbs_hex[] =
	"04" "11121314" "03" "212223" "0001" "05" "616c696365"
	"02" "0001" "02" "0001" "02" "000a" "00" "02" "0001"
	"01" "0000000065000000" "0000000066000000"
	"06" "0001" "03" "617070";

/* A bare KeyPackage (no MLSMessage header) with an x509 credential of two certificates. */
static const char kp_x509_hex[] =
	"0001" "0002"    /* mls10, cipher suite 2 */
	"02" "0a0b"      /* init_key */
	"02" "0c0d"      /* encryption_key */
	"01" "0e"        /* signature_key */
	"0002"           /* credential_type = x509 */
	"07"             /* Certificate certificates<V>: 7 bytes follow */
	"02" "3001"      /*   cert_data<V> of the leaf */
	"03" "300200"    /*   cert_data<V> of the issuer */
	"02" "0001" "02" "0002" "00" "00" "04" "00010002" /* versions, suites, ext, prop, creds */
	"01" "0000000000000001" "ffffffffffffffff" /* key_package, lifetime */
	"00"             /* no leaf extensions */
	"01" "ee"        /* leaf signature */
	"00"             /* no KeyPackage extensions */
	"01" "ff";       /* signature */
/* clang-format on */

static mk_bytes hex(const char *h)
{
	mk_bytes b = MK_BYTES_NULL;

	if (mk_hex_decode(h, &b) < 0)
		mkt_bail("bad hex in the test");
	return b;
}

static bool span_is(mk_kp_span s, const void *p, size_t n)
{
	return s.n == n && (n == 0 || memcmp(s.p, p, n) == 0);
}

static void fill_fixed(mk_key_package *kp, uint8_t sig70[70])
{
	static const uint8_t init[] = { 1, 2, 3, 4 }, enc[] = { 0x11, 0x12, 0x13, 0x14 },
			     sk[] = { 0x21, 0x22, 0x23 }, sig[] = { 0xb1, 0xb2, 0xb3, 0xb4 };

	memset(kp, 0, sizeof(*kp));
	memset(sig70, 0x5a, 70);
	kp->version = 1;
	kp->cipher_suite = 1;
	kp->init_key = (mk_kp_span){ init, sizeof(init) };
	kp->leaf.encryption_key = (mk_kp_span){ enc, sizeof(enc) };
	kp->leaf.signature_key = (mk_kp_span){ sk, sizeof(sk) };
	kp->leaf.credential.type = MK_MLS_CREDENTIAL_BASIC;
	kp->leaf.credential.identity = (mk_kp_span){ (const uint8_t *)"alice", 5 };
	kp->leaf.capabilities.versions = (mk_kp_u16s){ { 1 }, 1 };
	kp->leaf.capabilities.cipher_suites = (mk_kp_u16s){ { 1 }, 1 };
	kp->leaf.capabilities.extensions = (mk_kp_u16s){ { MK_MLS_EXTENSION_LAST_RESORT }, 1 };
	kp->leaf.capabilities.credentials = (mk_kp_u16s){ { MK_MLS_CREDENTIAL_BASIC }, 1 };
	kp->leaf.not_before = 0x65000000;
	kp->leaf.not_after = 0x66000000;
	kp->leaf.extensions.n = 1;
	kp->leaf.extensions.v[0] = (mk_kp_extension){ 1, { (const uint8_t *)"app", 3 } };
	kp->leaf.signature = (mk_kp_span){ sig70, 70 };
	kp->extensions.n = 1;
	kp->extensions.v[0] = (mk_kp_extension){ MK_MLS_EXTENSION_LAST_RESORT, { NULL, 0 } };
	kp->signature = (mk_kp_span){ sig, sizeof(sig) };
}

static bool bytes_eq(const mk_bytes *a, const mk_bytes *b)
{
	return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

static void test_encode(void)
{
	_cleanup_bytes_ mk_bytes want = hex(kp_basic_hex), want_tbs = hex(leaf_tbs_hex);
	_cleanup_bytes_ mk_bytes msg = MK_BYTES_NULL, tbs = MK_BYTES_NULL, kpb = MK_BYTES_NULL,
				 kptbs = MK_BYTES_NULL;
	mk_key_package kp;
	uint8_t sig70[70];

	fill_fixed(&kp, sig70);
	mkt_ok_r(mk_kp_encode_message(&kp, &msg), "encode the fixed KeyPackage as an MLSMessage");
	mkt_ok(bytes_eq(&msg, &want), "  matches the hand-written RFC 9420 encoding (%zu bytes)",
	       want.len);
	if (!bytes_eq(&msg, &want)) {
		_cleanup_free_ char *h = mk_hex_encode(msg.data, msg.len);
		mkt_diag("got  %s", h);
		mkt_diag("want %s", kp_basic_hex);
	}
	mkt_ok_r(mk_kp_encode(&kp, &kpb), "encode the bare KeyPackage");
	mkt_ok(kpb.len == want.len - 4 && !memcmp(kpb.data, want.data + 4, kpb.len),
	       "  is the MLSMessage without its 4-byte header");
	mkt_ok_r(mk_kp_leaf_tbs(&kp.leaf, &tbs), "LeafNodeTBS");
	mkt_ok(bytes_eq(&tbs, &want_tbs), "  matches the hand-written LeafNodeTBS");
	mkt_ok_r(mk_kp_tbs(&kp, &kptbs), "KeyPackageTBS");
	/* KeyPackageTBS = the KeyPackage without its final signature<V> (1 + 4 bytes) */
	mkt_ok(kptbs.len == kpb.len - 5 && !memcmp(kptbs.data, kpb.data, kptbs.len),
	       "  is the KeyPackage without its signature");
}

static void test_ref(void)
{
	_cleanup_bytes_ mk_bytes msg = hex(kp_basic_hex), ref = MK_BYTES_NULL;
	static const char label[] = "MLS 1.0 KeyPackage Reference";
	uint8_t in[4096], want[32];
	size_t n = 0, kpn = msg.len - 4;
	unsigned wl = 0;

	/* RefHashInput: label<V> (28 = 0x1c), value<V> (the KeyPackage; 2-byte varint) */
	in[n++] = 0x1c;
	memcpy(in + n, label, 28);
	n += 28;
	in[n++] = (uint8_t)(0x40 | kpn >> 8);
	in[n++] = (uint8_t)kpn;
	memcpy(in + n, msg.data + 4, kpn);
	n += kpn;
	EVP_Digest(in, n, want, &wl, EVP_sha256(), NULL);
	mkt_ok(kpn >= 64 && kpn < 16384, "the KeyPackage's length takes a 2-byte varint (%zu)",
	       kpn);
	mkt_ok_r(mk_kp_ref(1, msg.data + 4, kpn, &ref), "KeyPackageRef for suite 1");
	mkt_ok(ref.len == 32 && !memcmp(ref.data, want, 32), "  equals SHA-256(RefHashInput)");
	mk_bytes_clear(&ref);
	mkt_ok_r(mk_kp_ref(7, msg.data + 4, kpn, &ref), "KeyPackageRef for suite 7");
	mkt_ok(ref.len == 48, "  is 48 bytes (SHA-384)");
	mk_bytes_clear(&ref);
	mkt_ok_err(mk_kp_ref(4, msg.data + 4, kpn, &ref), -EOPNOTSUPP, "suite 4 is refused");
}

static void test_decode(void)
{
	_cleanup_bytes_ mk_bytes msg = hex(kp_basic_hex), x = hex(kp_x509_hex),
				 again = MK_BYTES_NULL;
	mk_key_package kp;
	mk_kp_span inner = { 0 };
	const mk_kp_leaf *l = &kp.leaf;

	mkt_ok_r(mk_kp_decode_message(msg.data, msg.len, &kp, &inner), "decode the MLSMessage");
	mkt_ok(kp.version == 1 && kp.cipher_suite == 1 && span_is(kp.init_key, "\1\2\3\4", 4),
	       "  version, suite, init_key");
	mkt_ok(l->credential.type == 1 && span_is(l->credential.identity, "alice", 5),
	       "  basic credential \"alice\"");
	mkt_ok(l->capabilities.versions.n == 1 && l->capabilities.extensions.v[0] == 0x000a &&
		       l->capabilities.proposals.n == 0 && l->capabilities.credentials.v[0] == 1,
	       "  capabilities");
	mkt_ok(l->not_before == 0x65000000 && l->not_after == 0x66000000, "  lifetime");
	mkt_ok(l->extensions.n == 1 && l->extensions.v[0].type == 1 &&
		       span_is(l->extensions.v[0].data, "app", 3) && l->signature.n == 70,
	       "  leaf extensions and signature");
	mkt_ok(kp.extensions.n == 1 && kp.extensions.v[0].type == 0x000a &&
		       kp.extensions.v[0].data.n == 0 &&
		       span_is(kp.signature, "\xb1\xb2\xb3\xb4", 4),
	       "  KeyPackage extensions and signature");
	mkt_ok(inner.p == msg.data + 4 && inner.n == msg.len - 4, "  the inner KeyPackage span");
	mkt_ok_r(mk_kp_encode_message(&kp, &again), "re-encode");
	mkt_ok(bytes_eq(&again, &msg), "  round trip is byte-identical");
	mk_bytes_clear(&again);

	mkt_ok_r(mk_kp_decode(x.data, x.len, &kp), "decode the hand-written x509 KeyPackage");
	mkt_ok(l->credential.type == 2 && l->credential.n_certs == 2 &&
		       span_is(l->credential.certs[0], "\x30\x01", 2) &&
		       span_is(l->credential.certs[1], "\x30\x02\x00", 3),
	       "  two certificates, leaf first");
	mkt_ok(l->capabilities.credentials.n == 2 && l->capabilities.credentials.v[1] == 2 &&
		       l->not_after == UINT64_MAX,
	       "  credentials [basic, x509], lifetime up to 2^64-1");
	mkt_ok_r(mk_kp_encode(&kp, &again), "re-encode");
	mkt_ok(bytes_eq(&again, &x), "  round trip is byte-identical");
}

/* Decodes hex with a change: it must be refused with -EBADMSG. */
static void refuse(const char *h, bool framed, const char *what)
{
	_cleanup_bytes_ mk_bytes b = hex(h);
	mk_key_package kp;
	int r = framed ? mk_kp_decode_message(b.data, b.len, &kp, NULL)
		       : mk_kp_decode(b.data, b.len, &kp);

	mkt_ok_err(r, -EBADMSG, "refused: %s (%s)", what, mk_error_message() ?: "no message");
}

/* kp_basic_hex with `from` (first occurrence after offset skip) replaced by `to`. */
static char *patch(const char *from, const char *to, size_t skip)
{
	static char buf[2][4096];
	static int k;
	char *out = buf[k++ % 2];
	const char *p = strstr(kp_basic_hex + skip, from);

	if (!p)
		mkt_bail("patch: %s not found", from);
	snprintf(out, sizeof(buf[0]), "%.*s%s%s", (int)(p - kp_basic_hex), kp_basic_hex, to,
		 p + strlen(from));
	return out;
}

static void test_malformed(void)
{
	_cleanup_bytes_ mk_bytes msg = hex(kp_basic_hex);
	char trailing[4096];
	size_t bad_prefixes = 0;
	mk_key_package kp;

	for (size_t n = 0; n < msg.len; n++)
		if (mk_kp_decode_message(msg.data, n, &kp, NULL) != -EBADMSG)
			bad_prefixes++;
	mkt_ok(bad_prefixes == 0, "every truncation (0..%zu bytes) is refused", msg.len - 1);
	snprintf(trailing, sizeof(trailing), "%s00", kp_basic_hex);
	refuse(trailing, true, "a trailing byte");
	refuse(patch("000100050001", "000100010001", 0), true, "wire format 1 (public message)");
	refuse(patch("000100050001", "000200050001", 0), true, "MLSMessage version 2");
	refuse(patch("000100050001", "000100050002", 0), true, "KeyPackage version 2");
	refuse(patch("0001000500010001", "0001000500010004", 0), true,
	       "cipher suite 4 (unsupported)");
	refuse(patch("0401020304", "400401020304", 0), true, "non-minimal varint 0x4004");
	refuse(patch("000105616c", "000305616c", 0), true, "credential type 3");
	refuse(patch("020001010000000065", "020001020000000065", 0), true,
	       "leaf_node_source update (2)");
	refuse(patch("060001036170704046", "0a000103617070000101004046", 0), true,
	       "duplicate leaf extension type");
	refuse(patch("020001020001", "030001020001", 0), true, "a uint16 list of odd length");
	refuse(patch("04b1b2b3b4", "05b1b2b3b4", 0), true, "a length beyond the end");
}

int main(void)
{
	test_encode();
	test_ref();
	test_decode();
	test_malformed();
	return mkt_done();
}
