/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mlskey: the command-line face of the mlskey agent. Everything on the bus goes through
 * libmlskey; each subcommand is one function with its own options and man-page help.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#include "clients/cli.h"

#define EXIT_STATUS_TEXT                                                                           \
	"EXIT STATUS\n"                                                                            \
	"    0  success\n"                                                                         \
	"    1  bad usage or input (also org.mlskey.Error.InvalidInput and .Unsupported)\n"        \
	"    2  no such key or token (NoSuchKey, NoSuchToken, TokenAbsent)\n"                      \
	"    3  the PIN was refused or is locked, or the PIN dialog was cancelled\n"               \
	"       (PinIncorrect, PinLocked, Cancelled)\n"                                            \
	"    4  access denied (AccessDenied)\n"                                                    \
	"    5  decryption failed (DecryptFailed) or the signature does not verify\n"              \
	"    6  the token or the agent failed (TokenError, Busy, a reply not understood)\n"        \
	"    7  the agent is not reachable (no bus, no mlskeyd, connection lost, timeout)\n"

#define DATA_TEXT                                                                                  \
	"DATA\n"                                                                                   \
	"    Options that take DATA accept hex digits (00ff...), @FILE for a file's bytes, or -\n"  \
	"    for the bytes on standard input (one option per call). Outputs are one line of hex\n" \
	"    on standard output, or raw bytes with --out FILE (--out - for standard output).\n"

#define COMMON_OPTIONS_TEXT                                                                        \
	"    --address ADDR   the D-Bus address of the agent's bus (default: the session bus)\n"   \
	"    --json           machine-readable output\n"                                           \
	"    -h, --help       this help\n"

static const char main_help[] =
	"NAME\n"
	"    mlskey - use MLS keys that stay on a smartcard, USB token or HSM\n"
	"\n"
	"SYNOPSIS\n"
	"    mlskey [--address ADDR] [--json] COMMAND [OPTIONS] [ARGUMENTS]\n"
	"    mlskey COMMAND --help\n"
	"    mlskey --version\n"
	"\n"
	"DESCRIPTION\n"
	"    mlskey asks the mlskey agent (mlskeyd, D-Bus name org.mlskey.Agent1) to sign and\n"
	"    decrypt for MLS (RFC 9420) with keys on PKCS#11 tokens, lists tokens and keys, and\n"
	"    makes and deletes keys. Keys and tokens are named by their pkcs11: URIs, as\n"
	"    'mlskey keys' and 'mlskey tokens' print them. When a token needs its PIN, the agent\n"
	"    asks for it with its own dialog; mlskey never sees it.\n"
	"\n"
	"COMMANDS\n"
	"    tokens     list the tokens the agent sees\n"
	"    keys       list the key pairs on them\n"
	"    generate   generate a key pair on a token\n"
	"    delete     delete a key pair\n"
	"    pubkey     print a key's public key\n"
	"    sign       SignWithLabel on the token\n"
	"    verify     VerifyWithLabel in software\n"
	"    encrypt    EncryptWithLabel in software: seal to a key's public key\n"
	"    decrypt    DecryptWithLabel (or an HPKE open) on the token\n"
	"    lock       log the agent out of a token, so that the next use asks for the PIN\n"
	"    keypackage make MLS KeyPackages whose private keys stay on the token\n"
	"    cert       import or show a key's X.509 certificate chain (its MLS credential)\n"
	"    bench      measure the agent against the same operations in-process\n"
	"    audit      verify the agent's audit file (mlskey audit verify FILE)\n"
	"\n"
	"OPTIONS\n"
	COMMON_OPTIONS_TEXT
	"    --version        print mlskey's version\n"
	"\n"
	DATA_TEXT
	"\n"
	EXIT_STATUS_TEXT
	"\n"
	"EXAMPLES\n"
	"    mlskey keys\n"
	"    mlskey generate 'pkcs11:token=mytoken' --algorithm ecdsa-p256 --label alice\n"
	"    mlskey sign \"$KEY\" --suite 2 --label LeafNodeTBS --in @leafnode.tbs\n"
	"    mlskey --address unix:path=/tmp/bus tokens --json\n";

static const char tokens_help[] =
	"NAME\n"
	"    mlskey tokens - list the tokens the agent sees\n"
	"\n"
	"SYNOPSIS\n"
	"    mlskey tokens [--json]\n"
	"\n"
	"DESCRIPTION\n"
	"    Prints every token of every PKCS#11 module the agent loaded: its URI, label, maker,\n"
	"    model and serial, whether it is present and logged in, and its PIN state.\n"
	"\n"
	"OPTIONS\n" COMMON_OPTIONS_TEXT "\n" EXIT_STATUS_TEXT "\n"
	"EXAMPLES\n"
	"    mlskey tokens\n"
	"    mlskey tokens --json\n";

static const char keys_help[] =
	"NAME\n"
	"    mlskey keys - list the key pairs on the tokens\n"
	"\n"
	"SYNOPSIS\n"
	"    mlskey keys [--token URI] [--all] [--json]\n"
	"\n"
	"DESCRIPTION\n"
	"    Prints every EC key pair the agent finds: its URI, label, purpose (signature or\n"
	"    hpke), algorithm, the MLS cipher suites it serves, its public key, and whether it\n"
	"    was generated on the token and never left it, whether it is a single-use init key,\n"
	"    and the subject and issuer of its X.509 certificate when the token holds one\n"
	"    ('mlskey cert show' for the chain). Listing never asks for a PIN.\n"
	"\n"
	"OPTIONS\n"
	"    --token URI      only keys on tokens this URI matches exactly (as 'mlskey tokens'\n"
	"                     prints it)\n"
	"    --all            also keys mlskey cannot use (RSA, other curves, keys the policy\n"
	"                     refuses to everyone), with the reason\n"
	COMMON_OPTIONS_TEXT "\n" EXIT_STATUS_TEXT "\n"
	"EXAMPLES\n"
	"    mlskey keys\n"
	"    mlskey keys --json | jq -r '.[] | select(.algorithm == \"ecdsa-p256\") | .uri'\n";

static const char generate_help[] =
	"NAME\n"
	"    mlskey generate - generate a key pair on a token\n"
	"\n"
	"SYNOPSIS\n"
	"    mlskey generate TOKEN --algorithm ALG [--label LABEL] [--single-use]\n"
	"\n"
	"DESCRIPTION\n"
	"    Generates a key pair on the token TOKEN (a token URI; pkcs11:token=NAME is enough\n"
	"    when it names one token) and prints the new key's URI. The private key never leaves\n"
	"    the token. The agent asks for the token's PIN if it is not logged in.\n"
	"\n"
	"OPTIONS\n"
	"    -a, --algorithm ALG  signature keys: ecdsa-p256, ecdsa-p384, ecdsa-p521, ed25519;\n"
	"                         HPKE keys: dhkem-p256, dhkem-p384, dhkem-p521, dhkem-x25519\n"
	"    -l, --label LABEL    the key's label on the token (default: none)\n"
	"    --single-use         an HPKE init key for one Welcome: the agent deletes it from\n"
	"                         the token after its first DecryptWithLabel(\"Welcome\")\n"
	COMMON_OPTIONS_TEXT "\n" EXIT_STATUS_TEXT "\n"
	"EXAMPLES\n"
	"    KEY=$(mlskey generate 'pkcs11:token=mytoken' -a ecdsa-p256 -l alice)\n"
	"    mlskey generate 'pkcs11:token=mytoken' --algorithm dhkem-x25519 --label alice-hpke\n"
	"    mlskey generate 'pkcs11:token=mytoken' -a dhkem-p256 -l alice-init --single-use\n";

static const char delete_help[] =
	"NAME\n"
	"    mlskey delete - delete a key pair from its token\n"
	"\n"
	"SYNOPSIS\n"
	"    mlskey delete KEY\n"
	"\n"
	"DESCRIPTION\n"
	"    Destroys the private and the public key object of the key pair KEY (a key URI).\n"
	"    This cannot be undone.\n"
	"\n"
	"OPTIONS\n" COMMON_OPTIONS_TEXT "\n" EXIT_STATUS_TEXT "\n"
	"EXAMPLES\n"
	"    mlskey delete \"$KEY\"\n";

static const char pubkey_help[] =
	"NAME\n"
	"    mlskey pubkey - print a key's public key\n"
	"\n"
	"SYNOPSIS\n"
	"    mlskey pubkey KEY [--out FILE|-]\n"
	"\n"
	"DESCRIPTION\n"
	"    Prints the public key of KEY in its MLS encoding (04||X||Y for the NIST curves, 32\n"
	"    raw bytes for Ed25519 and X25519), as hex or into a file.\n"
	"\n"
	"OPTIONS\n"
	"    -o, --out FILE|-  write the raw bytes to FILE (- for standard output)\n"
	COMMON_OPTIONS_TEXT "\n" EXIT_STATUS_TEXT "\n"
	"EXAMPLES\n"
	"    mlskey pubkey \"$KEY\"\n"
	"    mlskey pubkey \"$KEY\" --out alice.pub\n";

static const char sign_help[] =
	"NAME\n"
	"    mlskey sign - MLS SignWithLabel with a key on a token\n"
	"\n"
	"SYNOPSIS\n"
	"    mlskey sign KEY --suite N --label LABEL --in DATA [--out FILE|-]\n"
	"\n"
	"DESCRIPTION\n"
	"    Has the token sign SignContent = V(\"MLS 1.0 \" + LABEL) || V(content) (RFC 9420\n"
	"    5.1.2) with KEY and prints the signature (DER for ECDSA, 64 bytes for Ed25519).\n"
	"    The signature is verified under the key's public key before it is printed.\n"
	"\n"
	"OPTIONS\n"
	"    -s, --suite N      the MLS cipher suite: 1, 3 (ed25519), 2 (ecdsa-p256),\n"
	"                       5 (ecdsa-p521), 7 (ecdsa-p384)\n"
	"    -l, --label LABEL  the MLS label without \"MLS 1.0 \", e.g. LeafNodeTBS\n"
	"    -i, --in DATA      the content to sign\n"
	"    -o, --out FILE|-   write the raw signature to FILE (- for standard output)\n"
	COMMON_OPTIONS_TEXT "\n" DATA_TEXT "\n" EXIT_STATUS_TEXT "\n"
	"EXAMPLES\n"
	"    mlskey sign \"$KEY\" --suite 2 --label LeafNodeTBS --in @leafnode.tbs\n"
	"    printf hello | mlskey sign \"$KEY\" -s 2 -l Test --in - --out sig.der\n";

static const char verify_help[] =
	"NAME\n"
	"    mlskey verify - MLS VerifyWithLabel in software\n"
	"\n"
	"SYNOPSIS\n"
	"    mlskey verify (KEY | --public-key DATA) --suite N --label LABEL --in DATA\n"
	"                  --signature DATA\n"
	"\n"
	"DESCRIPTION\n"
	"    Checks that the signature is valid over SignContent = V(\"MLS 1.0 \" + LABEL) ||\n"
	"    V(content) under a public key: KEY's (asked from the agent) or the one given. The\n"
	"    check runs in software; with --public-key no agent is needed. Prints \"valid\" and\n"
	"    exits 0, or exits 5 when the signature does not verify.\n"
	"\n"
	"OPTIONS\n"
	"    -p, --public-key DATA  the public key in its MLS encoding, instead of KEY\n"
	"    -s, --suite N          the MLS cipher suite (1, 2, 3, 5, 7)\n"
	"    -l, --label LABEL      the MLS label without \"MLS 1.0 \"\n"
	"    -i, --in DATA          the signed content\n"
	"    -g, --signature DATA   the signature\n"
	COMMON_OPTIONS_TEXT "\n" DATA_TEXT "\n" EXIT_STATUS_TEXT "\n"
	"EXAMPLES\n"
	"    mlskey verify \"$KEY\" -s 2 -l LeafNodeTBS --in @leafnode.tbs --signature @sig.der\n"
	"    mlskey verify --public-key @alice.pub -s 2 -l Test --in 68656c6c6f --signature 3045...\n";

static const char encrypt_help[] =
	"NAME\n"
	"    mlskey encrypt - MLS EncryptWithLabel in software: seal to a key's public key\n"
	"\n"
	"SYNOPSIS\n"
	"    mlskey encrypt (KEY | --public-key DATA) --suite N --label LABEL [--context DATA]\n"
	"                   --in DATA [--kem-out FILE|- --out FILE|-]\n"
	"\n"
	"DESCRIPTION\n"
	"    HPKE SealBase (RFC 9180) of the plaintext to an HPKE public key, with info =\n"
	"    V(\"MLS 1.0 \" + LABEL) || V(context) (RFC 9420 5.1.3), in software: what a peer does\n"
	"    to send to the key's owner. Prints kem_output and ciphertext as two lines\n"
	"    \"kem_output HEX\" and \"ciphertext HEX\", or writes them raw to --kem-out and --out.\n"
	"    Only 'mlskey decrypt' with the key on the token can open the result.\n"
	"\n"
	"OPTIONS\n"
	"    -p, --public-key DATA  the recipient's public key, instead of KEY (no agent needed)\n"
	"    -s, --suite N          the MLS cipher suite (1, 2, 3, 5, 7)\n"
	"    -l, --label LABEL      the MLS label without \"MLS 1.0 \", e.g. Welcome\n"
	"    -c, --context DATA     the context (default: empty)\n"
	"    -i, --in DATA          the plaintext\n"
	"    -k, --kem-out FILE|-   write the raw kem_output to FILE\n"
	"    -o, --out FILE|-       write the raw ciphertext to FILE\n"
	COMMON_OPTIONS_TEXT "\n" DATA_TEXT "\n" EXIT_STATUS_TEXT "\n"
	"EXAMPLES\n"
	"    mlskey encrypt \"$HPKE_KEY\" -s 2 -l Welcome -c @groupinfo --in @secret \\\n"
	"        --kem-out kem.bin --out ct.bin\n";

static const char decrypt_help[] =
	"NAME\n"
	"    mlskey decrypt - MLS DecryptWithLabel (or HPKE open) with a key on a token\n"
	"\n"
	"SYNOPSIS\n"
	"    mlskey decrypt KEY --suite N --label LABEL [--context DATA] --kem-output DATA\n"
	"                   --in DATA [--out FILE|-]\n"
	"    mlskey decrypt KEY --hpke --kdf ID --aead ID [--info DATA] [--aad DATA]\n"
	"                   --kem-output DATA --in DATA [--out FILE|-]\n"
	"\n"
	"DESCRIPTION\n"
	"    Has the agent open an HPKE ciphertext with KEY: the Diffie-Hellman step runs on the\n"
	"    token. The first form is MLS DecryptWithLabel (info = V(\"MLS 1.0 \" + LABEL) ||\n"
	"    V(context), aad empty). The second is a plain HPKE OpenBase with the key's KEM and\n"
	"    the given KDF and AEAD. Prints the plaintext; exits 5 when the ciphertext does not\n"
	"    authenticate (wrong key, suite, label, context, or a changed ciphertext).\n"
	"\n"
	"OPTIONS\n"
	"    -s, --suite N          the MLS cipher suite (1, 2, 3, 5, 7)\n"
	"    -l, --label LABEL      the MLS label without \"MLS 1.0 \", e.g. Welcome\n"
	"    -c, --context DATA     the context (default: empty)\n"
	"    -k, --kem-output DATA  the kem_output (HPKE enc)\n"
	"    -i, --in DATA          the ciphertext (with its 16-byte tag)\n"
	"    -o, --out FILE|-       write the raw plaintext to FILE (- for standard output)\n"
	"    --hpke                 plain HPKE open instead of DecryptWithLabel, with:\n"
	"    --kdf ID               1 HKDF-SHA256, 2 HKDF-SHA384, 3 HKDF-SHA512\n"
	"    --aead ID              1 AES-128-GCM, 2 AES-256-GCM, 3 ChaCha20Poly1305\n"
	"    --info DATA            HPKE info (default: empty)\n"
	"    --aad DATA             AEAD associated data (default: empty)\n"
	COMMON_OPTIONS_TEXT "\n" DATA_TEXT "\n" EXIT_STATUS_TEXT "\n"
	"EXAMPLES\n"
	"    mlskey decrypt \"$HPKE_KEY\" -s 2 -l Welcome -c @groupinfo --kem-output @kem.bin \\\n"
	"        --in @ct.bin --out secret\n";

static const char lock_help[] =
	"NAME\n"
	"    mlskey lock - log the agent out of a token\n"
	"\n"
	"SYNOPSIS\n"
	"    mlskey lock [TOKEN]\n"
	"\n"
	"DESCRIPTION\n"
	"    Logs the agent out of the token TOKEN (a token URI), or out of every token without\n"
	"    TOKEN. The next operation that needs the token asks for its PIN again.\n"
	"\n"
	"OPTIONS\n" COMMON_OPTIONS_TEXT "\n" EXIT_STATUS_TEXT "\n"
	"EXAMPLES\n"
	"    mlskey lock\n"
	"    mlskey lock 'pkcs11:token=mytoken'\n";

/* --- option parsing ---------------------------------------------------------------------- */

enum {
	OPT_VERSION = OPT_FIRST_OWN,
	OPT_HPKE,
	OPT_KDF,
	OPT_AEAD,
	OPT_INFO,
	OPT_AAD,
	OPT_ALL,
	OPT_TOKEN,
	OPT_SINGLE_USE,
};

/* The options of one subcommand, as parsed. */
typedef struct cmd_opts {
	const char *algorithm, *label, *out, *kem_out, *suite, *in, *context, *kem_output;
	const char *signature, *public_key, *kdf, *aead, *info, *aad, *token;
	bool hpke, all, help, single_use;
} cmd_opts;

/*
 * Parses a subcommand's options (shortopts/longopts as it accepts them) and leaves its
 * positional arguments in argv[optind..]. Returns 0 or EXIT_USAGE after printing why.
 */
static int parse_opts(cli_global *g, int argc, char **argv, const char *shortopts,
		      const struct option *longopts, cmd_opts *o)
{
	int c;

	optind = 0; /* glibc: start afresh on this argv */
	opterr = 0;
	while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		int r = cli_common_option(g, c, argv);

		if (r == CLI_OPT_HELP)
			o->help = true;
		if (r != CLI_OPT_OWN) {
			if (r >= 0)
				return r;
			continue;
		}
		switch (c) {
		case 'a':
			o->algorithm = optarg;
			break;
		case 'l':
			o->label = optarg;
			break;
		case 'o':
			o->out = optarg;
			break;
		case 'k':
			/* --kem-out in encrypt, --kem-output in decrypt: one letter, one meaning. */
			if (strcmp(g->cmd, "encrypt") == 0)
				o->kem_out = optarg;
			else
				o->kem_output = optarg;
			break;
		case 's':
			o->suite = optarg;
			break;
		case 'i':
			o->in = optarg;
			break;
		case 'c':
			o->context = optarg;
			break;
		case 'g':
			o->signature = optarg;
			break;
		case 'p':
			o->public_key = optarg;
			break;
		case OPT_HPKE:
			o->hpke = true;
			break;
		case OPT_SINGLE_USE:
			o->single_use = true;
			break;
		case OPT_KDF:
			o->kdf = optarg;
			break;
		case OPT_AEAD:
			o->aead = optarg;
			break;
		case OPT_INFO:
			o->info = optarg;
			break;
		case OPT_AAD:
			o->aad = optarg;
			break;
		case OPT_ALL:
			o->all = true;
			break;
		case OPT_TOKEN:
			o->token = optarg;
			break;
		}
	}
	return 0;
}

/* Exactly n positional arguments (or between min and max). */
static int want_args(cli_global *g, int argc, char **argv, int min, int max, const char *what)
{
	int n = argc - optind;

	if (n < min)
		return cli_usage_error(g, "%s is missing (see mlskey %s --help)", what, g->cmd);
	if (n > max)
		return cli_usage_error(g, "unexpected argument \"%s\" (see mlskey %s --help)",
				       argv[optind + max], g->cmd);
	return 0;
}

static int connect_agent(cli_global *g, mlskey_client **ret)
{
	int r = mlskey_client_new(g->address, ret);

	if (r < 0)
		return cli_fail(g, r, "cannot reach the agent");
	return 0;
}

static void client_freep(mlskey_client **c)
{
	mlskey_client_free(*c);
}
#define _cleanup_client_ _cleanup_(client_freep)

static const char *yes(bool b)
{
	return b ? "true" : "false";
}

/* --- tokens, keys ------------------------------------------------------------------------ */

static int cmd_tokens(cli_global *g, int argc, char **argv)
{
	static const struct option lo[] = { COMMON_LONG_OPTIONS, {} };
	_cleanup_client_ mlskey_client *c = NULL;
	cmd_opts o = {};
	mlskey_token *t = NULL;
	size_t n = 0;
	int r;

	r = parse_opts(g, argc, argv, ":h", lo, &o);
	if (r || o.help)
		return r ? r : cli_help(tokens_help);
	if ((r = want_args(g, argc, argv, 0, 0, "")) || (r = connect_agent(g, &c)))
		return r;
	r = mlskey_list_tokens(c, &t, &n);
	if (r < 0)
		return cli_fail(g, r, "cannot list tokens");
	if (g->json) {
		printf("[");
		for (size_t i = 0; i < n; i++) {
			printf("%s\n  {\"uri\": ", i ? "," : "");
			cli_json_string(stdout, t[i].uri);
			printf(", \"label\": ");
			cli_json_string(stdout, t[i].label);
			printf(", \"manufacturer\": ");
			cli_json_string(stdout, t[i].manufacturer);
			printf(", \"model\": ");
			cli_json_string(stdout, t[i].model);
			printf(", \"serial\": ");
			cli_json_string(stdout, t[i].serial);
			printf(", \"module\": ");
			cli_json_string(stdout, t[i].module);
			printf(", \"present\": %s, \"logged_in\": %s, \"login_required\": %s, "
			       "\"pin_count_low\": %s, \"pin_final_try\": %s, \"pin_locked\": %s, "
			       "\"protected_auth_path\": %s, \"write_protected\": %s}",
			       yes(t[i].present), yes(t[i].logged_in), yes(t[i].login_required),
			       yes(t[i].pin_count_low), yes(t[i].pin_final_try),
			       yes(t[i].pin_locked), yes(t[i].protected_auth_path),
			       yes(t[i].write_protected));
		}
		printf("%s]\n", n ? "\n" : "");
	} else {
		if (n == 0)
			fprintf(stderr, "mlskey tokens: the agent sees no token\n");
		for (size_t i = 0; i < n; i++) {
			printf("%s\n", t[i].uri);
			printf("    label \"%s\", %s %s, serial %s\n", t[i].label,
			       t[i].manufacturer, t[i].model, t[i].serial);
			printf("    %s, %s%s%s%s%s%s\n", t[i].present ? "present" : "absent",
			       t[i].logged_in ? "logged in" : "not logged in",
			       t[i].pin_locked ? ", PIN LOCKED" : "",
			       t[i].pin_final_try ? ", PIN: final try" : "",
			       t[i].pin_count_low ? ", PIN: a wrong PIN was entered" : "",
			       t[i].protected_auth_path ? ", PIN pad" : "",
			       t[i].write_protected ? ", write-protected" : "");
		}
	}
	mlskey_tokens_free(t, n);
	return EXIT_OK;
}

static void print_suites(const mlskey_key *k, const char *sep)
{
	for (size_t j = 0; j < k->n_cipher_suites; j++)
		printf("%s%u", j ? sep : "", k->cipher_suites[j]);
}

static void print_hex(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		printf("%02x", p[i]);
}

static void print_key_json(const mlskey_key *k, bool first)
{
	printf("%s\n  {\"uri\": ", first ? "" : ",");
	cli_json_string(stdout, k->uri);
	printf(", \"label\": ");
	cli_json_string(stdout, k->label);
	printf(", \"id\": \"");
	print_hex(k->id, k->id_len);
	printf("\", \"token\": ");
	cli_json_string(stdout, k->token);
	printf(", \"purpose\": ");
	cli_json_string(stdout, k->purpose);
	printf(", \"algorithm\": ");
	cli_json_string(stdout, k->algorithm);
	printf(", \"cipher_suites\": [");
	print_suites(k, ", ");
	printf("], \"public_key\": \"");
	print_hex(k->public_key, k->public_key_len);
	printf("\", \"usable\": %s, \"reason\": ", yes(k->usable));
	cli_json_string(stdout, k->reason);
	printf(", \"local\": %s, \"never_extractable\": %s, \"always_sensitive\": %s, "
	       "\"always_authenticate\": %s, \"has_certificate\": %s, \"single_use\": %s",
	       yes(k->local), yes(k->never_extractable), yes(k->always_sensitive),
	       yes(k->always_authenticate), yes(k->has_certificate), yes(k->single_use));
	if (k->has_certificate) {
		printf(", \"certificate_subject\": ");
		cli_json_string(stdout, k->certificate_subject);
		printf(", \"certificate_issuer\": ");
		cli_json_string(stdout, k->certificate_issuer);
		printf(", \"certificate_not_before\": %lld, \"certificate_not_after\": %lld",
		       (long long)k->certificate_not_before, (long long)k->certificate_not_after);
	}
	printf("}");
}

static void print_key_text(const mlskey_key *k)
{
	printf("%s\n", k->uri);
	printf("    label \"%s\", %s", k->label, k->algorithm[0] ? k->algorithm : "unknown");
	if (k->purpose[0])
		printf(" %s key", k->purpose);
	if (k->n_cipher_suites) {
		printf(", suite%s ", k->n_cipher_suites > 1 ? "s" : "");
		print_suites(k, ", ");
	}
	printf("\n    public key ");
	if (k->public_key_len > 24) {
		print_hex(k->public_key, 12);
		printf("...");
		print_hex(k->public_key + k->public_key_len - 4, 4);
		printf(" (%zu bytes)", k->public_key_len);
	} else if (k->public_key_len) {
		print_hex(k->public_key, k->public_key_len);
	} else
		printf("unknown");
	printf("\n");
	if (!k->usable)
		printf("    NOT USABLE: %s\n", k->reason);
	else
		printf("    %s%s%s%s\n",
		       k->local && k->never_extractable ? "generated on the token, never left it" :
		       "imported or of unknown origin",
		       k->always_authenticate ? ", PIN for every use" : "",
		       k->has_certificate ? ", has a certificate" : "",
		       k->single_use ? ", single-use (deleted after its first Welcome)" : "");
	if (k->has_certificate)
		printf("    certificate %s\n        issued by %s\n", k->certificate_subject,
		       k->certificate_issuer);
}

static int cmd_keys(cli_global *g, int argc, char **argv)
{
	static const struct option lo[] = { COMMON_LONG_OPTIONS,
					    { "token", required_argument, NULL, OPT_TOKEN },
					    { "all", no_argument, NULL, OPT_ALL },
					    {} };
	_cleanup_client_ mlskey_client *c = NULL;
	cmd_opts o = {};
	mlskey_key *k = NULL;
	size_t n = 0, shown = 0;
	int r;

	r = parse_opts(g, argc, argv, ":h", lo, &o);
	if (r || o.help)
		return r ? r : cli_help(keys_help);
	if ((r = want_args(g, argc, argv, 0, 0, "")) || (r = connect_agent(g, &c)))
		return r;
	r = mlskey_list_keys(c, &k, &n);
	if (r < 0)
		return cli_fail(g, r, "cannot list keys");
	if (g->json)
		printf("[");
	for (size_t i = 0; i < n; i++) {
		if ((!k[i].usable && !o.all) || (o.token && strcmp(o.token, k[i].token) != 0))
			continue;
		if (g->json)
			print_key_json(&k[i], shown == 0);
		else
			print_key_text(&k[i]);
		shown++;
	}
	if (g->json)
		printf("%s]\n", shown ? "\n" : "");
	else if (shown == 0)
		fprintf(stderr, "mlskey keys: no %skeys%s\n", o.all ? "" : "usable ",
			o.token ? " on that token" : "");
	mlskey_keys_free(k, n);
	return EXIT_OK;
}

/* --- generate, delete, pubkey, lock ------------------------------------------------------ */

static int cmd_generate(cli_global *g, int argc, char **argv)
{
	static const struct option lo[] = { COMMON_LONG_OPTIONS,
					    { "algorithm", required_argument, NULL, 'a' },
					    { "label", required_argument, NULL, 'l' },
					    { "single-use", no_argument, NULL, OPT_SINGLE_USE },
					    {} };
	_cleanup_client_ mlskey_client *c = NULL;
	_cleanup_free_ char *uri = NULL;
	cmd_opts o = {};
	int r;

	r = parse_opts(g, argc, argv, ":ha:l:", lo, &o);
	if (r || o.help)
		return r ? r : cli_help(generate_help);
	if ((r = want_args(g, argc, argv, 1, 1, "the token URI")))
		return r;
	if (!o.algorithm)
		return cli_usage_error(g, "--algorithm is missing: ecdsa-p256, ecdsa-p384, "
				       "ecdsa-p521, ed25519, dhkem-p256, dhkem-p384, dhkem-p521 or "
				       "dhkem-x25519");
	if ((r = connect_agent(g, &c)))
		return r;
	r = mlskey_generate_key_flags(c, argv[optind], NULL, o.algorithm, o.label,
				      o.single_use ? MLSKEY_GENERATE_SINGLE_USE : 0, &uri);
	if (r < 0)
		return cli_fail(g, r, "cannot generate the key");
	if (g->json) {
		printf("{\"uri\": ");
		cli_json_string(stdout, uri);
		printf("}\n");
	} else
		printf("%s\n", uri);
	return EXIT_OK;
}

/* Subcommands whose only argument is a URI and that print nothing: delete, lock. */
static int cmd_delete(cli_global *g, int argc, char **argv)
{
	static const struct option lo[] = { COMMON_LONG_OPTIONS, {} };
	_cleanup_client_ mlskey_client *c = NULL;
	cmd_opts o = {};
	int r;

	r = parse_opts(g, argc, argv, ":h", lo, &o);
	if (r || o.help)
		return r ? r : cli_help(delete_help);
	if ((r = want_args(g, argc, argv, 1, 1, "the key URI")) || (r = connect_agent(g, &c)))
		return r;
	r = mlskey_delete_key(c, argv[optind]);
	if (r < 0)
		return cli_fail(g, r, "cannot delete the key");
	return EXIT_OK;
}

static int cmd_lock(cli_global *g, int argc, char **argv)
{
	static const struct option lo[] = { COMMON_LONG_OPTIONS, {} };
	_cleanup_client_ mlskey_client *c = NULL;
	cmd_opts o = {};
	int r;

	r = parse_opts(g, argc, argv, ":h", lo, &o);
	if (r || o.help)
		return r ? r : cli_help(lock_help);
	if ((r = want_args(g, argc, argv, 0, 1, "")) || (r = connect_agent(g, &c)))
		return r;
	r = mlskey_lock(c, optind < argc ? argv[optind] : "");
	if (r < 0)
		return cli_fail(g, r, "cannot lock");
	return EXIT_OK;
}

static int cmd_pubkey(cli_global *g, int argc, char **argv)
{
	static const struct option lo[] = { COMMON_LONG_OPTIONS,
					    { "out", required_argument, NULL, 'o' },
					    {} };
	_cleanup_client_ mlskey_client *c = NULL;
	cmd_opts o = {};
	uint8_t *pub = NULL;
	size_t n = 0;
	int r;

	r = parse_opts(g, argc, argv, ":ho:", lo, &o);
	if (r || o.help)
		return r ? r : cli_help(pubkey_help);
	if ((r = want_args(g, argc, argv, 1, 1, "the key URI")) || (r = connect_agent(g, &c)))
		return r;
	r = mlskey_get_public_key(c, argv[optind], &pub, &n);
	if (r < 0)
		return cli_fail(g, r, "cannot get the public key");
	if (g->json && !o.out) {
		printf("{\"public_key\": \"");
		print_hex(pub, n);
		printf("\"}\n");
	} else
		r = cli_write_data(g, o.out, pub, n);
	mlskey_free(pub, n);
	return r;
}

/* --- sign, verify, encrypt, decrypt ------------------------------------------------------ */

/* Reads an optional DATA option into *ret (empty when absent). */
static int opt_data(cli_global *g, const char *name, const char *arg, mk_bytes *ret)
{
	if (!arg)
		return mk_bytes_alloc(0, ret) < 0 ? cli_usage_error(g, "out of memory") : 0;
	return cli_read_data(g, name, arg, ret);
}

static int need(cli_global *g, const char *value, const char *option)
{
	if (!value)
		return cli_usage_error(g, "%s is missing (see mlskey %s --help)", option, g->cmd);
	return 0;
}

/* Checks --suite and --label, which sign, verify, encrypt and decrypt share. */
static int suite_label(cli_global *g, const cmd_opts *o, uint16_t *ret_suite)
{
	int r;

	if ((r = need(g, o->suite, "--suite")) || (r = need(g, o->label, "--label")))
		return r;
	return cli_parse_u16(g, "--suite", o->suite, ret_suite);
}

static int cmd_sign(cli_global *g, int argc, char **argv)
{
	static const struct option lo[] = { COMMON_LONG_OPTIONS,
					    { "suite", required_argument, NULL, 's' },
					    { "label", required_argument, NULL, 'l' },
					    { "in", required_argument, NULL, 'i' },
					    { "out", required_argument, NULL, 'o' },
					    {} };
	_cleanup_client_ mlskey_client *c = NULL;
	_cleanup_bytes_ mk_bytes in = MK_BYTES_NULL;
	cmd_opts o = {};
	uint8_t *sig = NULL;
	size_t n = 0;
	uint16_t suite;
	int r;

	r = parse_opts(g, argc, argv, ":hs:l:i:o:", lo, &o);
	if (r || o.help)
		return r ? r : cli_help(sign_help);
	if ((r = want_args(g, argc, argv, 1, 1, "the key URI")) || (r = suite_label(g, &o, &suite)) ||
	    (r = need(g, o.in, "--in")) || (r = cli_read_data(g, "--in", o.in, &in)) ||
	    (r = connect_agent(g, &c)))
		return r;
	r = mlskey_sign_with_label(c, argv[optind], suite, o.label, in.data, in.len, &sig, &n);
	if (r < 0)
		return cli_fail(g, r, "cannot sign");
	if (g->json && !o.out) {
		printf("{\"signature\": \"");
		print_hex(sig, n);
		printf("\"}\n");
	} else
		r = cli_write_data(g, o.out, sig, n);
	mlskey_free(sig, n);
	return r;
}

/* The public key from --public-key, or the key URI's (asked from the agent). */
static int public_key_arg(cli_global *g, int argc, char **argv, const cmd_opts *o,
			  mk_bytes *ret)
{
	_cleanup_client_ mlskey_client *c = NULL;
	uint8_t *pub = NULL;
	size_t n = 0;
	int r;

	if (o->public_key) {
		if ((r = want_args(g, argc, argv, 0, 0, "")))
			return r;
		return cli_read_data(g, "--public-key", o->public_key, ret);
	}
	if ((r = want_args(g, argc, argv, 1, 1, "the key URI (or --public-key)")) ||
	    (r = connect_agent(g, &c)))
		return r;
	r = mlskey_get_public_key(c, argv[optind], &pub, &n);
	if (r < 0)
		return cli_fail(g, r, "cannot get the public key");
	*ret = (mk_bytes){ pub, n };
	return 0;
}

static int cmd_verify(cli_global *g, int argc, char **argv)
{
	static const struct option lo[] = { COMMON_LONG_OPTIONS,
					    { "public-key", required_argument, NULL, 'p' },
					    { "suite", required_argument, NULL, 's' },
					    { "label", required_argument, NULL, 'l' },
					    { "in", required_argument, NULL, 'i' },
					    { "signature", required_argument, NULL, 'g' },
					    {} };
	_cleanup_bytes_ mk_bytes pub = MK_BYTES_NULL, in = MK_BYTES_NULL, sig = MK_BYTES_NULL;
	cmd_opts o = {};
	uint16_t suite;
	int r;

	r = parse_opts(g, argc, argv, ":hp:s:l:i:g:", lo, &o);
	if (r || o.help)
		return r ? r : cli_help(verify_help);
	if ((r = suite_label(g, &o, &suite)) || (r = need(g, o.in, "--in")) ||
	    (r = need(g, o.signature, "--signature")) ||
	    (r = cli_read_data(g, "--in", o.in, &in)) ||
	    (r = cli_read_data(g, "--signature", o.signature, &sig)) ||
	    (r = public_key_arg(g, argc, argv, &o, &pub)))
		return r;
	r = mlskey_verify_with_label(suite, pub.data, pub.len, o.label, in.data, in.len, sig.data,
				     sig.len);
	if (g->json)
		printf("{\"valid\": %s}\n", yes(r == 0));
	if (r < 0)
		return cli_fail(g, r, r == -EBADMSG ? "INVALID signature" : "cannot verify");
	if (!g->json)
		printf("valid\n");
	return EXIT_OK;
}

static int cmd_encrypt(cli_global *g, int argc, char **argv)
{
	static const struct option lo[] = { COMMON_LONG_OPTIONS,
					    { "public-key", required_argument, NULL, 'p' },
					    { "suite", required_argument, NULL, 's' },
					    { "label", required_argument, NULL, 'l' },
					    { "context", required_argument, NULL, 'c' },
					    { "in", required_argument, NULL, 'i' },
					    { "kem-out", required_argument, NULL, 'k' },
					    { "out", required_argument, NULL, 'o' },
					    {} };
	_cleanup_bytes_ mk_bytes pub = MK_BYTES_NULL, in = MK_BYTES_NULL, ctx = MK_BYTES_NULL;
	uint8_t *kem = NULL, *ct = NULL;
	size_t kem_len = 0, ct_len = 0;
	cmd_opts o = {};
	uint16_t suite;
	int r;

	r = parse_opts(g, argc, argv, ":hp:s:l:c:i:k:o:", lo, &o);
	if (r || o.help)
		return r ? r : cli_help(encrypt_help);
	if (!o.kem_out != !o.out)
		return cli_usage_error(g, "--kem-out and --out go together (or neither: hex on "
				       "standard output)");
	if (o.kem_out && strcmp(o.kem_out, "-") == 0 && strcmp(o.out, "-") == 0)
		return cli_usage_error(g, "--kem-out and --out cannot both be standard output");
	if ((r = suite_label(g, &o, &suite)) || (r = need(g, o.in, "--in")) ||
	    (r = cli_read_data(g, "--in", o.in, &in)) ||
	    (r = opt_data(g, "--context", o.context, &ctx)) ||
	    (r = public_key_arg(g, argc, argv, &o, &pub)))
		return r;
	r = mlskey_encrypt_with_label(suite, pub.data, pub.len, o.label, ctx.data, ctx.len,
				      in.data, in.len, &kem, &kem_len, &ct, &ct_len);
	if (r < 0)
		return cli_fail(g, r, "cannot encrypt");
	if (o.out) {
		r = cli_write_data(g, o.kem_out, kem, kem_len);
		if (r == 0)
			r = cli_write_data(g, o.out, ct, ct_len);
	} else if (g->json) {
		printf("{\"kem_output\": \"");
		print_hex(kem, kem_len);
		printf("\", \"ciphertext\": \"");
		print_hex(ct, ct_len);
		printf("\"}\n");
	} else {
		printf("kem_output ");
		print_hex(kem, kem_len);
		printf("\nciphertext ");
		print_hex(ct, ct_len);
		printf("\n");
	}
	mlskey_free(kem, kem_len);
	mlskey_free(ct, ct_len);
	return r;
}

static int cmd_decrypt(cli_global *g, int argc, char **argv)
{
	static const struct option lo[] = { COMMON_LONG_OPTIONS,
					    { "suite", required_argument, NULL, 's' },
					    { "label", required_argument, NULL, 'l' },
					    { "context", required_argument, NULL, 'c' },
					    { "kem-output", required_argument, NULL, 'k' },
					    { "in", required_argument, NULL, 'i' },
					    { "out", required_argument, NULL, 'o' },
					    { "hpke", no_argument, NULL, OPT_HPKE },
					    { "kdf", required_argument, NULL, OPT_KDF },
					    { "aead", required_argument, NULL, OPT_AEAD },
					    { "info", required_argument, NULL, OPT_INFO },
					    { "aad", required_argument, NULL, OPT_AAD },
					    {} };
	_cleanup_client_ mlskey_client *c = NULL;
	_cleanup_bytes_ mk_bytes in = MK_BYTES_NULL, ctx = MK_BYTES_NULL, kem = MK_BYTES_NULL;
	_cleanup_bytes_ mk_bytes info = MK_BYTES_NULL, aad = MK_BYTES_NULL;
	uint16_t suite = 0, kdf = 0, aead = 0;
	uint8_t *pt = NULL;
	size_t pt_len = 0;
	cmd_opts o = {};
	int r;

	r = parse_opts(g, argc, argv, ":hs:l:c:k:i:o:", lo, &o);
	if (r || o.help)
		return r ? r : cli_help(decrypt_help);
	if ((r = want_args(g, argc, argv, 1, 1, "the key URI")))
		return r;
	if (o.hpke) {
		if (o.suite || o.label || o.context)
			return cli_usage_error(g, "--hpke takes --kdf, --aead, --info and --aad, "
					       "not --suite, --label or --context");
		if ((r = need(g, o.kdf, "--kdf")) || (r = need(g, o.aead, "--aead")) ||
		    (r = cli_parse_u16(g, "--kdf", o.kdf, &kdf)) ||
		    (r = cli_parse_u16(g, "--aead", o.aead, &aead)) ||
		    (r = opt_data(g, "--info", o.info, &info)) ||
		    (r = opt_data(g, "--aad", o.aad, &aad)))
			return r;
	} else {
		if (o.kdf || o.aead || o.info || o.aad)
			return cli_usage_error(g, "--kdf, --aead, --info and --aad go with --hpke");
		if ((r = suite_label(g, &o, &suite)) ||
		    (r = opt_data(g, "--context", o.context, &ctx)))
			return r;
	}
	if ((r = need(g, o.kem_output, "--kem-output")) || (r = need(g, o.in, "--in")) ||
	    (r = cli_read_data(g, "--kem-output", o.kem_output, &kem)) ||
	    (r = cli_read_data(g, "--in", o.in, &in)) || (r = connect_agent(g, &c)))
		return r;
	if (o.hpke)
		r = mlskey_hpke_open(c, argv[optind], kdf, aead, info.data, info.len, aad.data,
				     aad.len, kem.data, kem.len, in.data, in.len, &pt, &pt_len);
	else
		r = mlskey_decrypt_with_label(c, argv[optind], suite, o.label, ctx.data, ctx.len,
					      kem.data, kem.len, in.data, in.len, &pt, &pt_len);
	if (r < 0)
		return cli_fail(g, r, "cannot decrypt");
	if (g->json && !o.out) {
		printf("{\"plaintext\": \"");
		print_hex(pt, pt_len);
		printf("\"}\n");
	} else
		r = cli_write_data(g, o.out, pt, pt_len);
	mlskey_free(pt, pt_len);
	return r;
}

/* --- main -------------------------------------------------------------------------------- */

static const struct {
	const char *name;
	int (*fn)(cli_global *g, int argc, char **argv);
} commands[] = {
	{ "tokens", cmd_tokens },   { "keys", cmd_keys },	  { "generate", cmd_generate },
	{ "delete", cmd_delete },   { "pubkey", cmd_pubkey },	  { "sign", cmd_sign },
	{ "verify", cmd_verify },   { "encrypt", cmd_encrypt },	  { "decrypt", cmd_decrypt },
	{ "lock", cmd_lock },	    { "bench", cli_bench },
	{ "keypackage", cli_keypackage },
	{ "audit", cli_audit },
	{ "cert", cli_cert },
};

int main(int argc, char **argv)
{
	static const struct option lo[] = { COMMON_LONG_OPTIONS,
					    { "version", no_argument, NULL, OPT_VERSION },
					    {} };
	cli_global g = {};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:h", lo, NULL)) != -1) {
		switch (c) {
		case OPT_ADDRESS:
			g.address = optarg;
			break;
		case OPT_JSON:
			g.json = true;
			break;
		case 'h':
			return cli_help(main_help);
		case OPT_VERSION:
			printf("mlskey %s (libmlskey %s)\n", MK_VERSION, mlskey_version());
			return EXIT_OK;
		case ':':
			return cli_usage_error(&g, "option %s needs a value (see mlskey --help)",
					       argv[optind - 1]);
		default:
			return cli_usage_error(&g, "unknown option %s (see mlskey --help)",
					       argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return cli_usage_error(&g, "a command is missing: tokens, keys, generate, delete, "
				       "pubkey, sign, verify, encrypt, decrypt, lock, keypackage, "
				       "cert, bench or audit (see mlskey --help)");
	for (size_t i = 0; i < ELEMENTSOF(commands); i++)
		if (strcmp(argv[optind], commands[i].name) == 0) {
			g.cmd = commands[i].name;
			return commands[i].fn(&g, argc - optind, argv + optind);
		}
	return cli_usage_error(&g, "unknown command \"%s\" (see mlskey --help)", argv[optind]);
}
