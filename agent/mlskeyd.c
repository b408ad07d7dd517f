/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* mlskeyd: the MLS key agent on D-Bus (docs/API.md). */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "agent/agent-config.h"
#include "agent/log.h"
#include "agent/ops.h"
#include "common/error.h"
#include "common/secmem.h"
#include "config.h"
#include "ipc/bus.h"

enum {
	OPT_SYSTEM = 0x100,
	OPT_SESSION,
	OPT_ADDRESS,
	OPT_CONFIG,
	OPT_MODULE,
	OPT_NO_P11_KIT,
	OPT_PINENTRY,
	OPT_FOREGROUND,
	OPT_LOG_LEVEL,
	OPT_VERSION,
};

static const struct option options[] = {
	{ "system", no_argument, NULL, OPT_SYSTEM },
	{ "session", no_argument, NULL, OPT_SESSION },
	{ "address", required_argument, NULL, OPT_ADDRESS },
	{ "config", required_argument, NULL, OPT_CONFIG },
	{ "module", required_argument, NULL, OPT_MODULE },
	{ "no-p11-kit", no_argument, NULL, OPT_NO_P11_KIT },
	{ "pinentry", required_argument, NULL, OPT_PINENTRY },
	{ "foreground", no_argument, NULL, OPT_FOREGROUND },
	{ "log-level", required_argument, NULL, OPT_LOG_LEVEL },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: mlskeyd [OPTION]...\n"
		"The mlskey agent: signs and decrypts for MLS (RFC 9420) clients with keys that\n"
		"stay on PKCS#11 tokens, as org.mlskey.Agent1 on D-Bus (see docs/API.md).\n"
		"It runs until SIGTERM or SIGINT; D-Bus activation starts it on the first call.\n"
		"\n"
		"Bus (one of):\n"
		"      --session            the session bus, DBUS_SESSION_BUS_ADDRESS (default)\n"
		"      --system             the system bus (HSM servers): serves the users and\n"
		"                           groups of allow-users= and allow-groups= too\n"
		"      --address ADDR       a private bus, e.g. unix:path=/run/mlskey/bus (in\n"
		"                           session mode, or in system mode with --system)\n"
		"\n"
		"Tokens:\n"
		"      --module PATH        load this PKCS#11 module (repeatable; replaces the\n"
		"                           config file's modules=)\n"
		"      --no-p11-kit         load only the --module modules, not p11-kit's\n"
		"      --pinentry PROGRAM   ask PINs with PROGRAM (Assuan; default: pinentry)\n"
		"\n"
		"Other:\n"
		"      --config FILE        read settings from FILE instead of\n"
		"                           $XDG_CONFIG_HOME/mlskey/mlskeyd.conf\n"
		"      --foreground         log to stderr as well as to syslog\n"
		"      --log-level LEVEL    err, warning, notice, info (default) or debug\n"
		"      --version            print the version and exit\n"
		"  -h, --help               print this help and exit\n"
		"\n"
		"Options override the config file ([agent] section: pinentry, pinentry-timeout,\n"
		"p11-kit, modules, log-level, max-array-bytes, max-label-bytes, workers,\n"
		"max-queue, worker-spin-us, pin-attempts, idle-logout, token-timeout,\n"
		"slot-poll-ms, pcsc, allow-users, allow-groups, audit-file; [token] sections:\n"
		"uri, pin-file, for tokens that log in from a file). Who may use which key:\n"
		"[policy] (default, confirm, require-never-extracted) and [rule] sections (name,\n"
		"caller, key, operations, labels, confirm, allow-extracted, action); see\n"
		"docs/API.md.\n"
		"\n"
		"Exit status: 0 after a clean stop; 1 on an error, or when another mlskeyd\n"
		"already owns org.mlskey.Agent1 on the bus; 2 for a usage error.\n");
}

static int fail(int status, int r)
{
	const char *text = mk_error_text(r);

	fprintf(stderr, "mlskeyd: %s\n", text);
	mk_log(LOG_ERR, "%s", text);
	return status;
}

/*
 * First pass: --help, --version and --config, which decide what the file says, and
 * --system/--session, which decide which settings it may have (allow-users is for --system).
 */
static int first_pass(int argc, char **argv, const char **ret_config, bool *ret_system)
{
	int c;

	opterr = 0;
	optind = 0;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (c) {
		case 'h':
			usage(stdout);
			return 0;
		case OPT_VERSION:
			printf("mlskeyd %s\n", MK_VERSION);
			return 0;
		case OPT_CONFIG:
			*ret_config = optarg;
			break;
		case OPT_SYSTEM:
			*ret_system = true;
			break;
		case OPT_SESSION:
			*ret_system = false;
			break;
		default:
			break;
		}
	}
	return -1;
}

static int second_pass(int argc, char **argv, mk_config *cfg)
{
	bool modules_given = false, address_given = false;
	int c, r = 0;

	opterr = 1;
	optind = 0;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (c) {
		/* the mode says who may call; the bus is its own, or --address */
		case OPT_SYSTEM:
			cfg->system_mode = true;
			break;
		case OPT_SESSION:
			cfg->system_mode = false;
			break;
		case OPT_ADDRESS:
			free(cfg->address);
			cfg->address = strdup(optarg);
			if (!cfg->address)
				return -ENOMEM;
			address_given = true;
			break;
		case OPT_MODULE:
			if (!modules_given)
				mk_config_clear_modules(cfg);
			modules_given = true;
			r = mk_config_add_module(cfg, optarg);
			break;
		case OPT_NO_P11_KIT:
			cfg->use_p11_kit = false;
			break;
		case OPT_PINENTRY:
			r = mk_config_set(cfg, "pinentry", optarg);
			break;
		case OPT_FOREGROUND:
			cfg->foreground = true;
			break;
		case OPT_LOG_LEVEL:
			r = mk_config_set(cfg, "log-level", optarg);
			break;
		case OPT_CONFIG:
		case OPT_VERSION:
		case 'h':
			break;
		default:
			return mk_error(-EINVAL, "try 'mlskeyd --help'");
		}
		if (r < 0)
			return r;
	}
	if (optind < argc)
		return mk_error(-EINVAL, "unexpected argument \"%s\"; try 'mlskeyd --help'",
				argv[optind]);
	cfg->bus = address_given ? MK_BUS_ADDRESS : cfg->system_mode ? MK_BUS_SYSTEM : MK_BUS_SESSION;
	if (!cfg->use_p11_kit && cfg->n_modules == 0)
		return mk_error(-EINVAL, "--no-p11-kit leaves no module to load: add --module PATH");
	return 0;
}

static void harden(void)
{
	struct rlimit no_core = { 0, 0 };

	/* no core dumps, no ptrace by other processes of the user: PINs pass through here */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		mk_log(LOG_WARNING, "cannot make the process non-dumpable: %m");
	if (setrlimit(RLIMIT_CORE, &no_core) < 0)
		mk_log(LOG_WARNING, "cannot disable core dumps: %m");
}

int main(int argc, char **argv)
{
	_cleanup_free_ char *default_path = NULL;
	const char *config_path = NULL;
	mk_config cfg;
	mk_bus *bus = NULL;
	mk_agent *agent = NULL;
	sigset_t stop;
	int r, status = 0;

	if (mk_config_init(&cfg) < 0)
		return 1;
	if (first_pass(argc, argv, &config_path, &cfg.system_mode) == 0) {
		mk_config_clear(&cfg);
		return 0;
	}
	if (config_path) {
		r = mk_config_load(&cfg, config_path);
		if (r < 0) {
			status = fail(1, r);
			goto out;
		}
	} else if (mk_config_default_path(&default_path) == 0) {
		r = mk_config_load(&cfg, default_path);
		if (r < 0 && r != -ENOENT) {
			status = fail(1, r);
			goto out;
		}
	}
	r = second_pass(argc, argv, &cfg);
	if (r < 0) {
		status = fail(2, r);
		goto out;
	}

	mk_log_open(cfg.foreground, cfg.log_level);
	harden();
	r = mk_secmem_init();
	if (r < 0) {
		status = fail(1, mk_error(r, "cannot initialise secure memory (libsodium)"));
		goto out;
	}
	signal(SIGPIPE, SIG_IGN);
	/* stop signals arrive through a signalfd: block them before any thread exists */
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	if (mk_bus_global_init() < 0) {
		status = fail(1, -ENOMEM);
		goto out;
	}

	r = mk_bus_connect(&cfg, &bus);
	if (r < 0) {
		status = fail(1, r);
		goto out;
	}
	r = mk_agent_new(&cfg, &agent);
	if (r < 0) {
		status = fail(1, r);
		goto out;
	}
	r = mk_bus_run(bus, agent, &stop);
	if (r < 0)
		status = fail(1, r);
out:
	/* the bus first: it joins the workers, which use the agent */
	bus = mk_bus_free(bus);
	agent = mk_agent_free(agent);
	mk_config_clear(&cfg);
	mk_bus_global_done();
	return status;
}
