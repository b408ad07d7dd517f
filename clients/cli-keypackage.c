/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* `mlskey keypackage`: MLS KeyPackages made by the agent, whose private keys stay on the token. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "clients/cli.h"

#define COUNT_MAX 100

const char cli_keypackage_help[] =
	"NAME\n"
	"    mlskey keypackage - make MLS KeyPackages whose private keys stay on the token\n"
	"\n"
	"SYNOPSIS\n"
	"    mlskey keypackage KEY --suite N [--identity TEXT] [--count N] [--last-resort]\n"
	"                      [--lifetime-days D] -o FILE\n"
	"\n"
	"DESCRIPTION\n"
	"    Asks the agent for complete, signed MLS KeyPackages (RFC 9420 section 10) for\n"
	"    cipher suite N, signed by the signature key KEY (a key URI). For each one the agent\n"
	"    generates two HPKE keys on KEY's token: the init key, which a Welcome is sealed to\n"
	"    (single-use: deleted after its first Welcome, unless --last-resort), and the leaf's\n"
	"    encryption key. The credential is the key's X.509 certificate chain when the token\n"
	"    holds one, else a basic credential with --identity.\n"
	"\n"
	"    FILE receives the KeyPackages as MLSMessages (version mls10, wire format\n"
	"    mls_key_package), back to back with nothing between them: each MLSMessage is\n"
	"    self-delimiting, so a reader parses one after the other until the end of the file.\n"
	"    Each is checked as a receiver would (both signatures, lifetime, capabilities)\n"
	"    before it is written. For each KeyPackage one line is printed on standard output:\n"
	"        KEYPACKAGE_REF_HEX INIT_KEY_URI LEAF_KEY_URI\n"
	"    (with --json: an array of objects with ref, init_key and leaf_key). When one of\n"
	"    several KeyPackages fails, the keys made for the others are deleted again and FILE\n"
	"    is not written.\n"
	"\n"
	"OPTIONS\n"
	"    -s, --suite N          the MLS cipher suite: 1, 2, 3, 5 or 7; it must fit KEY\n"
	"    -I, --identity TEXT    the basic credential's identity (when the token holds no\n"
	"                           certificate for KEY)\n"
	"    -n, --count N          make N KeyPackages (1 to 100; default 1)\n"
	"    --last-resort          add the last_resort extension (0x000a); the init key is\n"
	"                           not single-use\n"
	"    --lifetime-days D      valid for D days from an hour ago (default 90)\n"
	"    -o, --out FILE         where to write the KeyPackages (- for standard output; the\n"
	"                           lines then go to standard error)\n"
	"    --address ADDR   the D-Bus address of the agent's bus (default: the session bus)\n"
	"    --json           machine-readable output\n"
	"    -h, --help       this help\n"
	"\n"
	"EXIT STATUS\n"
	"    as for every mlskey command (see mlskey --help); 6 also when the agent's KeyPackage\n"
	"    would be refused by a receiver\n"
	"\n"
	"EXAMPLES\n"
	"    mlskey keypackage \"$KEY\" --suite 2 --identity alice@example.org -o alice.kp\n"
	"    mlskey keypackage \"$KEY\" --suite 1 --identity alice --count 20 -o batch.kp\n"
	"    mlskey keypackage \"$KEY\" --suite 1 --identity alice --last-resort -o last.kp\n";

enum { OPT_LAST_RESORT = OPT_FIRST_OWN, OPT_LIFETIME };

static int parse_uint(const cli_global *g, const char *option, const char *arg, unsigned long min,
		      unsigned long max, unsigned long *ret)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(arg, &end, 10);
	if (errno || end == arg || *end || arg[0] == '-' || v < min || v > max)
		return cli_usage_error(g, "%s wants a number from %lu to %lu, not \"%s\"", option,
				       min, max, arg);
	*ret = v;
	return 0;
}

static void free_all(mlskey_key_package *kps, size_t n)
{
	for (size_t i = 0; i < n; i++)
		mlskey_key_package_clear(&kps[i]);
	free(kps);
}

int cli_keypackage(cli_global *g, int argc, char **argv)
{
	static const struct option lo[] = {
		COMMON_LONG_OPTIONS,
		{ "suite", required_argument, NULL, 's' },
		{ "identity", required_argument, NULL, 'I' },
		{ "count", required_argument, NULL, 'n' },
		{ "last-resort", no_argument, NULL, OPT_LAST_RESORT },
		{ "lifetime-days", required_argument, NULL, OPT_LIFETIME },
		{ "out", required_argument, NULL, 'o' },
		{},
	};
	mlskey_key_package_options opts = { 0 };
	const char *suite_arg = NULL, *out = NULL;
	mlskey_client *c = NULL;
	mlskey_key_package *kps = NULL;
	unsigned long count = 1, days = 0;
	uint16_t suite;
	size_t made = 0, total = 0;
	uint8_t *buf = NULL;
	FILE *lines;
	int ch, r;

	optind = 0;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":hs:I:n:o:", lo, NULL)) != -1) {
		r = cli_common_option(g, ch, argv);
		if (r == CLI_OPT_HELP)
			return cli_help(cli_keypackage_help);
		if (r == CLI_OPT_DONE)
			continue;
		if (r != CLI_OPT_OWN)
			return r;
		switch (ch) {
		case 's':
			suite_arg = optarg;
			break;
		case 'I':
			opts.identity = optarg;
			break;
		case 'n':
			if ((r = parse_uint(g, "--count", optarg, 1, COUNT_MAX, &count)))
				return r;
			break;
		case OPT_LAST_RESORT:
			opts.last_resort = true;
			break;
		case OPT_LIFETIME:
			if ((r = parse_uint(g, "--lifetime-days", optarg, 1, 3650, &days)))
				return r;
			opts.lifetime_days = (uint32_t)days;
			break;
		case 'o':
			out = optarg;
			break;
		}
	}
	if (argc - optind != 1)
		return cli_usage_error(g, "%s (see mlskey %s --help)",
				       argc - optind < 1 ? "the signature key URI is missing"
							 : "only one key URI is expected",
				       g->cmd);
	if (!suite_arg)
		return cli_usage_error(g, "--suite is missing (see mlskey %s --help)", g->cmd);
	if (!out)
		return cli_usage_error(g, "-o FILE is missing (see mlskey %s --help)", g->cmd);
	if ((r = cli_parse_u16(g, "--suite", suite_arg, &suite)))
		return r;
	kps = calloc(count, sizeof(*kps));
	if (!kps)
		return cli_usage_error(g, "out of memory");
	r = mlskey_client_new(g->address, &c);
	if (r < 0) {
		free(kps);
		return cli_fail(g, r, "cannot reach the agent");
	}
	for (; made < count; made++) {
		r = mlskey_create_key_package(c, argv[optind], suite, &opts, &kps[made]);
		if (r < 0)
			break;
		total += kps[made].key_package_len;
	}
	if (r < 0) {
		int code = cli_fail(g, r, "cannot create the KeyPackage");

		/* nothing is written: the keys of the KeyPackages made so far go again */
		for (size_t i = 0; i < made; i++) {
			(void)mlskey_delete_key(c, kps[i].init_key);
			(void)mlskey_delete_key(c, kps[i].leaf_key);
		}
		free_all(kps, made);
		mlskey_client_free(c);
		return code;
	}
	mlskey_client_free(c);

	buf = malloc(total ? total : 1);
	if (!buf) {
		free_all(kps, made);
		return cli_usage_error(g, "out of memory");
	}
	total = 0;
	for (size_t i = 0; i < made; i++) {
		memcpy(buf + total, kps[i].key_package, kps[i].key_package_len);
		total += kps[i].key_package_len;
	}
	r = cli_write_data(g, out, buf, total);
	free(buf);
	if (r) {
		free_all(kps, made);
		return r;
	}
	lines = strcmp(out, "-") == 0 ? stderr : stdout;
	if (g->json)
		fprintf(lines, "[");
	for (size_t i = 0; i < made; i++) {
		if (g->json) {
			fprintf(lines, "%s{\"ref\": \"", i ? ", " : "");
			for (size_t k = 0; k < kps[i].ref_len; k++)
				fprintf(lines, "%02x", kps[i].ref[k]);
			fprintf(lines, "\", \"init_key\": ");
			cli_json_string(lines, kps[i].init_key);
			fprintf(lines, ", \"leaf_key\": ");
			cli_json_string(lines, kps[i].leaf_key);
			fprintf(lines, "}");
			continue;
		}
		for (size_t k = 0; k < kps[i].ref_len; k++)
			fprintf(lines, "%02x", kps[i].ref[k]);
		fprintf(lines, " %s %s\n", kps[i].init_key, kps[i].leaf_key);
	}
	if (g->json)
		fprintf(lines, "]\n");
	free_all(kps, made);
	return EXIT_OK;
}
