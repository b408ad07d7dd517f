/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <winscard.h>

#include "tests/fixture.h"
#include "tests/pcsc/pcsc-fixture.h"
#include "tests/tap.h"

static pid_t pcscd_pid = -1, vicc_pid = -1;
static unsigned vpcd_port;
static char sock_path[400];

/* The program's path in buf, or NULL. */
static const char *find_program(const char *name, char *buf, size_t cap)
{
	static const char *const dirs[] = { "/usr/sbin", "/usr/bin", "/sbin", "/bin" };

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(buf, cap, "%s/%s", dirs[i], name);
		if (access(buf, X_OK) == 0)
			return buf;
	}
	return NULL;
}

static void sleep_ms(unsigned ms)
{
	nanosleep(&(struct timespec){ ms / 1000, (long)(ms % 1000) * 1000000L }, NULL);
}

/* Two free TCP ports in a row (vpcd takes PORT and PORT+1, one per reader). */
static unsigned free_ports(void)
{
	srand((unsigned)getpid() ^ (unsigned)time(NULL));
	for (int tries = 0; tries < 200; tries++) {
		unsigned port = 20000u + (unsigned)(rand() % 20000) * 2u;
		bool ok = true;

		for (unsigned i = 0; i < 2 && ok; i++) {
			struct sockaddr_in a = { .sin_family = AF_INET,
						 .sin_port = htons((uint16_t)(port + i)),
						 .sin_addr.s_addr = htonl(INADDR_ANY) };
			int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

			ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
			if (fd >= 0)
				close(fd);
		}
		if (ok)
			return port;
	}
	mkt_bail("no two free TCP ports for vpcd");
}

const char *mkt_pcscd_socket(void)
{
	if (!sock_path[0]) {
		snprintf(sock_path, sizeof(sock_path), "%s/pcscd.comm", mkt_tmpdir());
		setenv("PCSCLITE_CSOCK_NAME", sock_path, 1);
	}
	return sock_path;
}

/* The vpcd readers pcscd lists right now (0 when it does not answer). */
static int count_vpcd_readers(void)
{
	SCARDCONTEXT ctx;
	char buf[4096];
	DWORD len = sizeof(buf);
	int n = 0;

	if (SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx) != SCARD_S_SUCCESS)
		return 0;
	if (SCardListReaders(ctx, NULL, buf, &len) == SCARD_S_SUCCESS)
		for (const char *p = buf; p < buf + len && *p; p += strlen(p) + 1)
			if (strncmp(p, "Virtual PCD", 11) == 0)
				n++;
	SCardReleaseContext(ctx);
	return n;
}

void mkt_pcscd_start(void)
{
	char pcscd_buf[256], unshare_buf[256];
	const char *pcscd = find_program("pcscd", pcscd_buf, sizeof(pcscd_buf));
	const char *unshare = find_program("unshare", unshare_buf, sizeof(unshare_buf));
	static const char driver[] = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";
	char conf_dir[400], conf[450];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, status;
	FILE *f;

	if (!pcscd)
		mkt_skip_all("pcscd not installed (apt-get install pcscd)");
	if (access(driver, R_OK) != 0)
		mkt_skip_all("the vpcd reader driver is not installed (apt-get install vsmartcard-vpcd)");
	if (!unshare)
		mkt_skip_all("unshare not installed (util-linux): pcscd needs a private /run/pcscd");
	vpcd_port = free_ports();
	snprintf(conf_dir, sizeof(conf_dir), "%s/reader.conf.d", mkt_tmpdir());
	if (mkdir(conf_dir, 0700) < 0 && errno != EEXIST)
		mkt_bail("mkdir %s: %s", conf_dir, strerror(errno));
	snprintf(conf, sizeof(conf), "%s/vpcd", conf_dir);
	f = fopen(conf, "we");
	if (!f)
		mkt_bail("cannot write %s", conf);
	fprintf(f, "FRIENDLYNAME \"Virtual PCD\"\nDEVICENAME /dev/null:0x%x\nLIBPATH %s\n"
		   "CHANNELID 0x%x\n", vpcd_port, driver, vpcd_port);
	fclose(f);

	mkt_pcscd_socket();
	if (strlen(sock_path) >= sizeof(sa.sun_path))
		mkt_bail("socket path too long: %s", sock_path);
	strcpy(sa.sun_path, sock_path);
	unlink(sock_path);
	fd = socket(AF_UNIX, SOCK_STREAM, 0); /* not CLOEXEC: pcscd inherits it */
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0)
		mkt_bail("cannot listen on %s: %s", sock_path, strerror(errno));
	chmod(sock_path, 0666);

	fflush(stdout);
	pcscd_pid = fork();
	if (pcscd_pid < 0)
		mkt_bail("fork: %s", strerror(errno));
	if (pcscd_pid == 0) {
		char pid[32];
		/* a private /run/pcscd (made on a private /run if the machine has none) */
		static const char script[] =
			"{ if [ -d /run/pcscd ]; then mount -t tmpfs tmpfs /run/pcscd; "
			"else mount -t tmpfs tmpfs /run && mkdir /run/pcscd; fi; } || exit 97; "
			"exec \"$0\" --foreground --config \"$1\"";

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (fd != 3) {
			dup2(fd, 3);
			close(fd);
		}
		snprintf(pid, sizeof(pid), "%d", (int)getpid());
		setenv("LISTEN_PID", pid, 1);
		setenv("LISTEN_FDS", "1", 1);
		dup2(STDERR_FILENO, STDOUT_FILENO);
		if (getuid() == 0)
			execl(unshare, "unshare", "-m", "--", "sh", "-c", script, pcscd, conf_dir,
			      (char *)NULL);
		else
			execl(unshare, "unshare", "-rm", "--", "sh", "-c", script, pcscd, conf_dir,
			      (char *)NULL);
		_exit(127);
	}
	close(fd);
	for (int i = 0; i < 200; i++) {
		if (waitpid(pcscd_pid, &status, WNOHANG) == pcscd_pid) {
			pcscd_pid = -1;
			mkt_skip_all("no private pcscd: unshare or mount in a new mount namespace "
				     "failed (status %d); see above",
				     WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
		}
		if (count_vpcd_readers() >= 1)
			return;
		sleep_ms(50);
	}
	mkt_bail("the private pcscd did not list the vpcd readers within 10 s");
}

void mkt_pcscd_stop(void)
{
	int status;

	if (pcscd_pid <= 0)
		return;
	kill(pcscd_pid, SIGTERM);
	while (waitpid(pcscd_pid, &status, 0) < 0 && errno == EINTR)
		;
	pcscd_pid = -1;
}

bool mkt_pcsc_card_present(void)
{
	SCARD_READERSTATE st = { .szReader = MKT_VPCD_READER,
				 .dwCurrentState = SCARD_STATE_UNAWARE };
	SCARDCONTEXT ctx;
	bool present = false;

	if (SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx) != SCARD_S_SUCCESS)
		return false;
	if (SCardGetStatusChange(ctx, 0, &st, 1) == SCARD_S_SUCCESS)
		present = (st.dwEventState & SCARD_STATE_PRESENT) != 0;
	SCardReleaseContext(ctx);
	return present;
}

/* Up to 20 s: vicc is Python, slow to start on a loaded machine. */
static bool wait_card(bool want)
{
	for (int i = 0; i < 400; i++) {
		if (mkt_pcsc_card_present() == want)
			return true;
		sleep_ms(50);
	}
	return false;
}

static const char vicc_pkg[] = "/usr/lib/python3/site-packages/virtualsmartcard";
static const char cryptodome[] = "/usr/lib/python3/dist-packages/Cryptodome";

void mkt_vicc_check(void)
{
	struct stat st;

	char buf[256];

	if (!find_program("vicc", buf, sizeof(buf)))
		mkt_skip_all("vicc not installed (apt-get install vsmartcard-vpicc)");
	if (stat(vicc_pkg, &st) < 0)
		mkt_skip_all("vicc's Python package is not at %s (apt-get install vsmartcard-vpicc)",
			     vicc_pkg);
	if (stat(cryptodome, &st) < 0)
		mkt_skip_all("vicc needs pycryptodome (apt-get install python3-pycryptodome)");
}

void mkt_vicc_insert(void)
{
	char pylib[400], link[450], path[1000], port[16], vicc[256];

	mkt_vicc_check();
	find_program("vicc", vicc, sizeof(vicc));
	if (pcscd_pid <= 0)
		mkt_bail("mkt_vicc_insert before mkt_pcscd_start");
	/* Debian's pycryptodome is Cryptodome; vicc imports Crypto */
	snprintf(pylib, sizeof(pylib), "%s/pylib", mkt_tmpdir());
	mkdir(pylib, 0700);
	snprintf(link, sizeof(link), "%s/Crypto", pylib);
	if (symlink(cryptodome, link) < 0 && errno != EEXIST)
		mkt_bail("symlink %s: %s", link, strerror(errno));
	snprintf(path, sizeof(path), "%s:%s", vicc_pkg, pylib);
	snprintf(port, sizeof(port), "%u", vpcd_port);

	fflush(stdout);
	vicc_pid = fork();
	if (vicc_pid < 0)
		mkt_bail("fork: %s", strerror(errno));
	if (vicc_pid == 0) {
		int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		setenv("PYTHONPATH", path, 1);
		if (devnull >= 0)
			dup2(devnull, STDOUT_FILENO);
		execl(vicc, "vicc", "-t", "iso7816", "-P", port, (char *)NULL);
		_exit(127);
	}
	if (!wait_card(true)) {
		int status;

		if (waitpid(vicc_pid, &status, WNOHANG) == vicc_pid)
			mkt_bail("vicc exited (status %d) before the card showed; see above",
				 WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
		mkt_bail("pcscd did not see vicc's card within 20 s");
	}
}

void mkt_vicc_remove(void)
{
	int status;

	if (vicc_pid <= 0)
		return;
	kill(vicc_pid, SIGTERM);
	while (waitpid(vicc_pid, &status, 0) < 0 && errno == EINTR)
		;
	vicc_pid = -1;
	if (!wait_card(false))
		mkt_bail("pcscd still sees a card 20 s after vicc stopped");
}

const char *mkt_opensc_module(void)
{
	static const char *const candidates[] = {
		"/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
		"/usr/lib/x86_64-linux-gnu/pkcs11/opensc-pkcs11.so",
		"/usr/lib/opensc-pkcs11.so",
		"/usr/lib64/opensc-pkcs11.so",
		"/usr/lib/pkcs11/opensc-pkcs11.so",
	};

	for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++)
		if (access(candidates[i], R_OK) == 0)
			return candidates[i];
	mkt_skip_all("OpenSC's PKCS#11 module not installed (apt-get install opensc-pkcs11)");
}
