/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mlskey-p11-list: a developer tool (not installed) that lists the tokens the token layer
 * sees and the keys on them, with the key URIs mlskey would use.
 *
 *   mlskey-p11-list [--no-p11-kit] [--module PATH]... [--pin PIN]
 *
 * With --pin it logs in to every present token first, so that private keys (and their
 * purpose and provenance) show. The PIN is moved into wiping memory and the argv copy is
 * overwritten at once.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "common/error.h"
#include "common/secmem.h"
#include "pkcs11/p11.h"

#define MAX_MODULES 32

static void usage(FILE *f)
{
	fprintf(f, "usage: mlskey-p11-list [--no-p11-kit] [--module PATH]... [--pin PIN]\n"
		   "Lists PKCS#11 tokens and the keys on them.\n"
		   "  --no-p11-kit   do not load the modules p11-kit registers\n"
		   "  --module PATH  also load this PKCS#11 module (repeatable)\n"
		   "  --pin PIN      log in to each present token with this user PIN\n");
}

static void print_token(const mk_token_info *t)
{
	printf("token: %s\n", t->uri);
	printf("  label: %s\n  manufacturer: %s\n  model: %s\n  serial: %s\n  module: %s\n",
	       t->label, t->manufacturer, t->model, t->serial, t->module);
	printf("  flags:%s%s%s%s%s%s%s%s\n", t->present ? " present" : " absent",
	       t->logged_in ? " logged-in" : "", t->login_required ? " login-required" : "",
	       t->pin_count_low ? " pin-count-low" : "", t->pin_final_try ? " pin-final-try" : "",
	       t->pin_locked ? " pin-locked" : "",
	       t->protected_auth_path ? " protected-auth-path" : "",
	       t->write_protected ? " write-protected" : "");
}

static void print_key(const mk_key_info *k)
{
	char *hex = k->public_key ? mk_hex_encode(k->public_key, k->public_key_len) : NULL;
	const char *purpose = k->can_sign && k->can_derive ? "sign+derive" :
			      k->can_sign			 ? "sign" :
			      k->can_derive		 ? "derive" :
							   "none";

	printf("  key: %s\n", k->uri);
	printf("    alg: %s\n    purpose: %s\n", mk_key_alg_name(k->alg), purpose);
	printf("    public-key: %s\n", hex ? hex : "(unknown)");
	if (k->private_visible)
		printf("    provenance:%s%s%s%s%s%s\n", k->local ? " local" : " not-local",
		       k->never_extractable ? " never-extractable" : "",
		       k->always_sensitive ? " always-sensitive" : "",
		       k->sensitive ? " sensitive" : " NOT-sensitive",
		       k->extractable ? " EXTRACTABLE" : " non-extractable",
		       k->always_authenticate ? " always-authenticate" : "");
	else
		printf("    provenance: (private key hidden; log in to see it)\n");
	if (k->reason)
		printf("    reason: %s\n", k->reason);
	free(hex);
}

static int login_all(mk_p11 *p, const mk_token_info *toks, size_t n, const mk_secret *pin)
{
	int ret = 0;

	for (size_t i = 0; i < n; i++) {
		int r;

		if (!toks[i].present || toks[i].logged_in)
			continue;
		r = mk_p11_login(p, toks[i].uri, pin->data, pin->len);
		if (r < 0) {
			fprintf(stderr, "mlskey-p11-list: %s: %s\n", toks[i].label, mk_error_text(r));
			ret = r;
		}
	}
	return ret;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "no-p11-kit", no_argument, NULL, 'n' },
		{ "module", required_argument, NULL, 'm' },
		{ "pin", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	const char *modules[MAX_MODULES + 1] = { 0 };
	size_t n_modules = 0, n_toks = 0;
	mk_p11_options o = { .use_p11_kit = true, .module_paths = modules };
	mk_token_info *toks = NULL;
	mk_secret *pin = NULL;
	mk_p11 *p = NULL;
	int c, r, status = 0;

	while ((c = getopt_long(argc, argv, "nm:p:h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			o.use_p11_kit = false;
			break;
		case 'm':
			if (n_modules == MAX_MODULES) {
				fprintf(stderr, "mlskey-p11-list: at most %d modules\n", MAX_MODULES);
				return 2;
			}
			modules[n_modules++] = optarg;
			break;
		case 'p':
			mk_secret_free(pin);
			pin = NULL;
			if (mk_secret_new_copy(optarg, strlen(optarg), &pin) < 0) {
				fprintf(stderr, "mlskey-p11-list: out of secure memory\n");
				return 1;
			}
			mk_wipe(optarg, strlen(optarg));
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		usage(stderr);
		mk_secret_free(pin);
		return 2;
	}

	r = mk_p11_open(&o, &p);
	if (r < 0) {
		fprintf(stderr, "mlskey-p11-list: %s\n", mk_error_text(r));
		mk_secret_free(pin);
		return 1;
	}
	r = mk_p11_list_tokens(p, &toks, &n_toks);
	if (r >= 0 && pin && login_all(p, toks, n_toks, pin) < 0)
		status = 1;
	if (r >= 0 && pin) {
		/* Logged in now: read the flags again. */
		mk_token_info_array_free(toks, n_toks);
		toks = NULL;
		r = mk_p11_list_tokens(p, &toks, &n_toks);
	}
	if (r < 0) {
		fprintf(stderr, "mlskey-p11-list: %s\n", mk_error_text(r));
		status = 1;
		n_toks = 0;
	}
	if (n_toks == 0 && r >= 0)
		printf("no tokens\n");
	for (size_t i = 0; i < n_toks; i++) {
		mk_key_info *keys = NULL;
		size_t n_keys = 0;

		print_token(&toks[i]);
		if (!toks[i].present)
			continue;
		r = mk_p11_list_keys(p, toks[i].uri, &keys, &n_keys);
		if (r < 0) {
			fprintf(stderr, "mlskey-p11-list: %s: %s\n", toks[i].label, mk_error_text(r));
			status = 1;
			continue;
		}
		if (n_keys == 0)
			printf("  (no keys)\n");
		for (size_t j = 0; j < n_keys; j++)
			print_key(&keys[j]);
		mk_key_info_array_free(keys, n_keys);
	}
	mk_token_info_array_free(toks, n_toks);
	mk_p11_free(p);
	mk_secret_free(pin);
	return status;
}
