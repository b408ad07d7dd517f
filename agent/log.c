/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/log.h"

static bool log_stderr;
static int log_max = LOG_INFO;

/*
 * Whether a syslog socket exists. Without one (a container, a test bus) glibc's syslog()
 * would try socket()+connect() again on every line, on the path of every reply; so look
 * for it at most every 10 seconds instead.
 */
static bool syslog_present(void)
{
	static _Atomic long next_check;
	static _Atomic bool present;
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
	if (now.tv_sec >= next_check) {
		present = access("/dev/log", W_OK) == 0;
		next_check = now.tv_sec + 10;
	}
	return present;
}

void mk_log_open(bool to_stderr, int max_level)
{
	log_stderr = to_stderr;
	log_max = max_level;
	openlog("mlskeyd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

bool mk_log_enabled(int prio)
{
	return prio <= log_max;
}

void mk_log(int prio, const char *fmt, ...)
{
	static const char *const names[] = { "emerg", "alert", "crit", "error",
					     "warning", "notice", "info", "debug" };
	char buf[1024];
	va_list ap;
	bool sys;

	if (!mk_log_enabled(prio))
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	sys = syslog_present();
	if (sys)
		syslog(prio, "%s", buf);
	/* Without syslog the line goes to stderr (the journal, under systemd), never nowhere. */
	if (log_stderr || !sys)
		/* one fprintf per line: stdio locks the stream, so threads do not interleave */
		fprintf(stderr, "mlskeyd: %s: %s\n", names[prio & 7], buf);
}

void mk_log_audit(int prio, const char *line)
{
	static const char *const names[] = { "emerg", "alert", "crit", "error",
					     "warning", "notice", "info", "debug" };
	bool sys = syslog_present();

	if (sys)
		syslog(prio, "%s", line);
	if (log_stderr || !sys)
		fprintf(stderr, "mlskeyd: %s: %s\n", names[prio & 7], line);
}

int mk_log_level_from_name(const char *name)
{
	static const struct {
		const char *name;
		int level;
	} levels[] = {
		{ "err", LOG_ERR },	  { "error", LOG_ERR }, { "warning", LOG_WARNING },
		{ "notice", LOG_NOTICE }, { "info", LOG_INFO }, { "debug", LOG_DEBUG },
	};

	for (size_t i = 0; i < ELEMENTSOF(levels); i++)
		if (strcmp(name, levels[i].name) == 0)
			return levels[i].level;
	return -EINVAL;
}
