/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * PINs leave no trace (issue 5): with distinctive random PINs (8 digits each: a wrong one
 * and the right one typed into the dialog, another read from a pin-file), after the logins
 * and signatures mlskeyd's log (stderr at log-level debug) holds none of them, and neither
 * does its memory: every readable mapping of the process is read through /proc/PID/mem
 * (root in CI; the agent is not dumpable, so other users may not) and searched. A hit is
 * only allowed inside a mapping of the PKCS#11 module itself (SoftHSM, or the test shim
 * that wraps it), which the test then names; a hit anywhere else (heap, stack, anonymous
 * memory, our own data) fails.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>

#include "tests/pin/pin-test.h"

#define MAX_REGION (1ull << 30) /* bigger ones are sanitizer shadow or reservations */
#define PIN_LEN 8

static DBusConnection *c;

static void random_digits(char *out, size_t n)
{
	uint8_t b[32];
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

	if (fd < 0 || read(fd, b, n) != (ssize_t)n)
		mkt_bail("cannot read /dev/urandom");
	close(fd);
	for (size_t i = 0; i < n; i++)
		out[i] = (char)('0' + b[i] % 10);
	out[n] = '\0';
	/* a leading 9 keeps the PINs apart from counters and dates in memory */
	out[0] = '9';
}

typedef struct scan {
	size_t bytes, regions, hits_ours, hits_module, hits_control;
	size_t control;        /* the needle that is no PIN: it must be found */
	char module_regions[1024];
} scan;

static bool module_owned(const char *path)
{
	return strstr(path, "softhsm") || strstr(path, "libmkt-p11shim");
}

/*
 * Searches [start, end) of the process's memory for each needle (all PIN_LEN bytes long).
 * PIN_LEN - 1 bytes of a chunk are searched again with the next one: a PIN may straddle
 * the two, and no whole PIN fits in them to be counted twice.
 */
static void scan_region(int mem, uint64_t start, uint64_t end, const char *path,
			const char *const *needles, size_t n_needles, scan *s)
{
	static uint8_t buf[(1 << 20) + PIN_LEN];
	uint64_t at = start;
	size_t keep = 0;

	s->regions++;
	while (at < end) {
		size_t want = (size_t)MK_MIN((uint64_t)1 << 20, end - at), total;
		ssize_t got = pread(mem, buf + keep, want, (off_t)at);

		if (got <= 0)
			break; /* a guard page, or a region that went away */
		s->bytes += (size_t)got;
		total = keep + (size_t)got;
		for (size_t k = 0; k < n_needles; k++) {
			const uint8_t *p = buf, *hit;

			while ((hit = memmem(p, total - (size_t)(p - buf), needles[k], PIN_LEN))) {
				uint64_t addr = at - keep + (uint64_t)(hit - buf);

				p = hit + 1;
				if (k == s->control) {
					s->hits_control++;
					continue;
				}
				if (module_owned(path)) {
					s->hits_module++;
					if (!strstr(s->module_regions, path))
						snprintf(s->module_regions + strlen(s->module_regions),
							 sizeof(s->module_regions) -
								 strlen(s->module_regions),
							 "%s%s", s->module_regions[0] ? ", " : "", path);
				} else {
					s->hits_ours++;
				}
				mkt_diag("PIN %zu found at 0x%" PRIx64 " in %s", k + 1, addr,
					 path[0] ? path : "[anonymous]");
			}
		}
		at += (uint64_t)got;
		keep = MK_MIN(total, (size_t)PIN_LEN - 1);
		memmove(buf, buf + total - keep, keep);
	}
}

int main(void)
{
	char right[16], wrong[16], filed[16], label[16], key[64], conf_text[1024], path[512];
	char maps_path[64];
	char log_path[512], line[1024], msg[512], *log;
	const char *needles[4], *args[6];
	scan s = { .control = 3 };
	FILE *maps;
	pid_t pid;
	int mem;

	random_digits(right, PIN_LEN);
	do
		random_digits(wrong, PIN_LEN);
	while (!strcmp(wrong, right));
	do
		random_digits(filed, PIN_LEN);
	while (!strcmp(filed, right) || !strcmp(filed, wrong));
	/* the control: a key label as distinctive as the PINs, which the agent must hold */
	random_digits(label, PIN_LEN);
	label[0] = '7';
	needles[0] = right;
	needles[1] = wrong;
	needles[2] = filed;
	needles[3] = label;
	snprintf(key, sizeof(key), "pkcs11:token=secret;object=%s", label);

	pin_add_token("secret", right);
	pin_add_token("svc", filed);
	if (pin_make_key("secret", right, label, false) < 0 ||
	    pin_make_key("svc", filed, "s", false) < 0)
		mkt_bail("cannot make the test keys");
	mkt_shim_setup();
	snprintf(path, sizeof(path), "%s/svc.pin", mkt_tmpdir());
	{
		FILE *f = fopen(path, "we");

		if (!f)
			mkt_bail("cannot write %s", path);
		fprintf(f, "%s\n", filed);
		fclose(f);
		chmod(path, 0600);
	}
	snprintf(conf_text, sizeof(conf_text), "[token]\nuri = pkcs11:token=svc\npin-file = %s\n",
		 path);
	args[0] = "--config";
	args[1] = write_agent_conf("memory.conf", conf_text);
	args[2] = "--log-level";
	args[3] = "debug";
	args[4] = NULL;
	snprintf(log_path, sizeof(log_path), "%s/mlskeyd.log", mkt_tmpdir());
	{
		char script[128];

		snprintf(script, sizeof(script), "PIN %s\nPIN %s\nPIN %s\n", wrong, right, right);
		pin_script(script);
	}
	pid = pin_agent_start(NULL, log_path, args);
	c = bus_open(mkt_dbus_setup());

	mkt_ok(!strcmp(pin_sign(c, key, msg, sizeof(msg)), ""),
	       "a wrong PIN, then the right one typed: signed (%s)", msg);
	mkt_ok(pin_log_count("GETPIN") == 2, "  after two dialogs");
	mkt_ok(!strcmp(pin_sign(c, "pkcs11:token=svc;object=s", msg, sizeof(msg)), ""),
	       "the PIN of token svc from its pin-file: signed (%s)", msg);
	mkt_ok(!strcmp(pin_sign(c, key, msg, sizeof(msg)), ""),
	       "and again, logged in (%s)", msg);

	/* the agent's memory, while it is logged in */
	snprintf(maps_path, sizeof(maps_path), "/proc/%d/maps", (int)pid);
	snprintf(line, sizeof(line), "/proc/%d/mem", (int)pid);
	mem = open(line, O_RDONLY | O_CLOEXEC);
	maps = fopen(maps_path, "re");
	if (mem < 0 || !maps) {
		char why[200];

		snprintf(why, sizeof(why), "cannot read mlskeyd's memory (%s); run as root",
			 strerror(errno));
		pin_skip(why);
		pin_skip(why);
		pin_skip(why);
	} else {
		while (fgets(line, sizeof(line), maps)) {
			uint64_t start, end;
			char perms[8], where[512] = "";

			if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %7s %*s %*s %*s %511[^\n]", &start,
				   &end, perms, where) < 3)
				continue;
			if (perms[0] != 'r' || end - start > MAX_REGION || !strcmp(where, "[vvar]") ||
			    !strcmp(where, "[vsyscall]"))
				continue;
			scan_region(mem, start, end, where, needles, 4, &s);
		}
		fclose(maps);
		close(mem);
		mkt_ok(s.bytes > 1024 * 1024, "read %zu MiB of mlskeyd's memory in %zu mappings",
		       s.bytes >> 20, s.regions);
		mkt_ok(s.hits_control > 0, "the scan works: it finds the key's label, as distinctive "
		       "as a PIN, in the agent's memory (%zu times)", s.hits_control);
		mkt_ok(s.hits_ours == 0, "no PIN anywhere in mlskeyd's own memory (heap, stack, "
		       "anonymous, its data): %zu hits", s.hits_ours);
		if (s.hits_module)
			mkt_diag("%zu hits in memory of the PKCS#11 module: %s", s.hits_module,
				 s.module_regions);
		else
			mkt_diag("no PIN in the PKCS#11 module's mappings either");
	}

	mkt_ok(mkt_agent_stop(pid) == 0, "mlskeyd stops cleanly");
	log = pin_slurp(log_path);
	mkt_ok(strlen(log) > 200 && strstr(log, "asking for the PIN") && strstr(log, "pin-file"),
	       "mlskeyd logged the logins (%zu bytes at debug level)", strlen(log));
	mkt_ok(!strstr(log, right) && !strstr(log, wrong) && !strstr(log, filed),
	       "  and no PIN appears in its log");
	free(log);
	log = pin_slurp(mkt_shim_file("log"));
	mkt_ok(!strstr(log, right) && !strstr(log, wrong) && !strstr(log, filed),
	       "nor in the shim's log");
	free(log);
	bus_close(c);
	return mkt_done();
}
