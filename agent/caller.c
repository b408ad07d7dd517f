/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "agent/caller.h"
#include "common/error.h"
#include "common/macros.h"

/* The innermost *.service or *.scope component of one cgroup path; 0, -ENOENT, -ENAMETOOLONG. */
static int unit_from_path(const char *path, size_t len, char *buf, size_t cap)
{
	const char *best = NULL;
	size_t best_len = 0, i = 0;

	while (i < len) {
		size_t start, n;

		while (i < len && path[i] == '/')
			i++;
		start = i;
		while (i < len && path[i] != '/')
			i++;
		n = i - start;
		if ((n > 8 && memcmp(path + start + n - 8, ".service", 8) == 0) ||
		    (n > 6 && memcmp(path + start + n - 6, ".scope", 6) == 0)) {
			best = path + start;
			best_len = n;
		}
	}
	if (!best)
		return -ENOENT;
	/* systemd's cg_escape(): a leading "_" was added to names that could clash */
	if (best[0] == '_') {
		best++;
		best_len--;
	}
	if (best_len >= cap)
		return -ENAMETOOLONG;
	memcpy(buf, best, best_len);
	buf[best_len] = '\0';
	return 0;
}

int mk_caller_unit_from_cgroup(const char *cgroup, char *buf, size_t cap)
{
	/* 0: the unified hierarchy "0::PATH"; 1: v1's "N:name=systemd:PATH"; 2: any line */
	for (int pass = 0; pass < 3; pass++) {
		const char *line = cgroup;

		while (line && *line) {
			const char *eol = strchr(line, '\n'), *c1, *c2;
			size_t len = eol ? (size_t)(eol - line) : strlen(line);
			bool match;

			c1 = memchr(line, ':', len);
			c2 = c1 ? memchr(c1 + 1, ':', len - (size_t)(c1 + 1 - line)) : NULL;
			if (c2) {
				size_t ctl = (size_t)(c2 - c1 - 1);

				match = pass == 2 ||
					(pass == 0 && ctl == 0 && c1 - line == 1 && line[0] == '0') ||
					(pass == 1 && ctl == 12 && memcmp(c1 + 1, "name=systemd", 12) == 0);
				if (match) {
					int r = unit_from_path(c2 + 1, len - (size_t)(c2 + 1 - line), buf,
							       cap);

					if (r != -ENOENT) {
						if (r < 0)
							buf[0] = '\0';
						return r;
					}
				}
			}
			line = eol ? eol + 1 : NULL;
		}
	}
	buf[0] = '\0';
	return -ENOENT;
}

typedef struct app_state {
	char *buf;
	size_t cap;
	int r;
} app_state;

static int on_flatpak_entry(void *userdata, const char *section, const char *name,
			    const char *value)
{
	app_state *st = userdata;
	size_t n;

	if (strcmp(section, "Application") != 0 || strcmp(name, "name") != 0)
		return 1;
	n = strlen(value);
	if (n == 0)
		return 1;
	if (n >= st->cap) {
		st->r = -ENAMETOOLONG;
		return 1;
	}
	memcpy(st->buf, value, n + 1);
	st->r = 0;
	return 1;
}

int mk_caller_app_id_from_flatpak_info(const char *info, char *buf, size_t cap)
{
	app_state st = { .buf = buf, .cap = cap, .r = -ENOENT };
	int line;

	buf[0] = '\0';
	line = ini_parse_string(info, on_flatpak_entry, &st);
	if (line != 0) {
		buf[0] = '\0';
		return line == -2 ? -ENOMEM : -EINVAL;
	}
	if (st.r < 0)
		buf[0] = '\0';
	return st.r;
}

int mk_caller_start_time_from_stat(const char *stat, unsigned long long *ret)
{
	const char *p = strrchr(stat, ')');
	unsigned long long v;
	char *end;

	if (!p)
		return -EINVAL;
	p++;
	/* after "comm)": " state ppid ..." -- field 3 is the state, so 19 fields to skip */
	for (int field = 3; field < 22; field++) {
		while (*p == ' ')
			p++;
		if (!*p)
			return -EINVAL;
		while (*p && *p != ' ')
			p++;
	}
	while (*p == ' ')
		p++;
	if (*p < '0' || *p > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(p, &end, 10);
	if (errno || (*end && *end != ' ' && *end != '\n'))
		return -EINVAL;
	*ret = v;
	return 0;
}

/* Appends the decimal ids after "Key:" in line to gids (at most cap in all). */
static void parse_ids(const char *p, gid_t *gids, size_t cap, size_t *n, bool first_only)
{
	while (*n < cap) {
		unsigned long v;
		char *end;

		while (*p == ' ' || *p == '\t')
			p++;
		if (*p < '0' || *p > '9')
			return;
		v = strtoul(p, &end, 10);
		gids[(*n)++] = (gid_t)v;
		if (first_only)
			return;
		p = end;
	}
}

int mk_caller_groups_from_status(const char *status, gid_t *gids, size_t cap, size_t *ret_n)
{
	const char *gid = NULL, *groups = NULL, *line = status;
	size_t n = 0;

	while (line && *line) {
		if (strncmp(line, "Gid:", 4) == 0)
			gid = line + 4;
		else if (strncmp(line, "Groups:", 7) == 0)
			groups = line + 7;
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	if (!gid)
		return -EINVAL;
	parse_ids(gid, gids, cap, &n, true);
	if (groups) {
		/* stop at the end of the Groups: line */
		const char *eol = strchr(groups, '\n');
		size_t len = eol ? (size_t)(eol - groups) : strlen(groups);
		_cleanup_free_ char *copy = strndup(groups, len);

		if (!copy)
			return -ENOMEM;
		parse_ids(copy, gids, cap, &n, false);
	}
	*ret_n = n;
	return 0;
}

/*
 * Reads at most cap-1 bytes of a small regular file into buf, NUL-terminated. The caller's
 * /.flatpak-info is the caller's to choose: no symlink (it would resolve in our root), no
 * FIFO (the bus thread must not wait on it).
 */
static int read_small(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK);
	struct stat st;
	size_t n = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	while (n + 1 < cap) {
		ssize_t k = read(fd, buf + n, cap - 1 - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			int e = -errno;

			close(fd);
			return e;
		}
		if (k == 0)
			break;
		n += (size_t)k;
	}
	close(fd);
	buf[n] = '\0';
	return 0;
}

static int start_time_of(const char *proc_root, pid_t pid, unsigned long long *ret)
{
	char path[PATH_MAX], stat[2048];
	int r;

	snprintf(path, sizeof(path), "%s/%d/stat", proc_root, (int)pid);
	r = read_small(path, stat, sizeof(stat));
	if (r < 0)
		return r;
	return mk_caller_start_time_from_stat(stat, ret);
}

/* True while the process behind pidfd has not exited (a pidfd polls readable when it has). */
static bool pidfd_alive(int pidfd)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };
	int n;

	while ((n = poll(&p, 1, 0)) < 0 && errno == EINTR)
		;
	return n == 0;
}

static int went_away(pid_t pid)
{
	return mk_error(-EACCES, "the caller went away while it was identified (pid %d); retry",
			(int)pid);
}

int mk_caller_identify(const char *proc_root, pid_t pid, int pidfd, mk_caller *c, gid_t *groups,
		       size_t cap, size_t *n_groups)
{
	char path[PATH_MAX];
	_cleanup_free_ char *buf = NULL;
	unsigned long long st0 = 0, st1 = 0;
	int own_fd = -1, r;
	bool have_start;
	ssize_t n;

	if (pid <= 0)
		return 0;
	if (pidfd < 0) {
		own_fd = (int)syscall(SYS_pidfd_open, pid, 0);
		if (own_fd < 0 && errno == ESRCH)
			return went_away(pid);
		pidfd = own_fd; /* -1 without pidfd support: only the start time guards then */
	}
	buf = malloc(8192);
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	have_start = start_time_of(proc_root, pid, &st0) == 0;

	snprintf(path, sizeof(path), "%s/%d/exe", proc_root, (int)pid);
	n = readlink(path, c->exe, sizeof(c->exe) - 1);
	c->exe[n > 0 ? n : 0] = '\0';

	snprintf(path, sizeof(path), "%s/%d/cgroup", proc_root, (int)pid);
	c->unit[0] = '\0';
	if (read_small(path, buf, 8192) == 0)
		(void)mk_caller_unit_from_cgroup(buf, c->unit, sizeof(c->unit));

	snprintf(path, sizeof(path), "%s/%d/root/.flatpak-info", proc_root, (int)pid);
	c->app_id[0] = '\0';
	if (read_small(path, buf, 8192) == 0)
		(void)mk_caller_app_id_from_flatpak_info(buf, c->app_id, sizeof(c->app_id));

	if (groups) {
		size_t ng;

		snprintf(path, sizeof(path), "%s/%d/status", proc_root, (int)pid);
		if (read_small(path, buf, 8192) == 0 &&
		    mk_caller_groups_from_status(buf, groups, cap, &ng) == 0)
			*n_groups = ng;
	}

	/* the same process still? (a pid reused meanwhile has another start time) */
	if (pidfd >= 0 && !pidfd_alive(pidfd)) {
		r = went_away(pid);
		goto out;
	}
	if (have_start && (start_time_of(proc_root, pid, &st1) < 0 || st1 != st0)) {
		r = went_away(pid);
		goto out;
	}
	c->start_time = have_start ? st0 : 0;
	r = 0;
out:
	if (own_fd >= 0)
		close(own_fd);
	return r;
}

static bool has_uid(const mk_config *cfg, uid_t uid)
{
	for (size_t i = 0; i < cfg->n_allow_users; i++)
		if (cfg->allow_users[i] == uid)
			return true;
	return false;
}

static bool has_group(const mk_config *cfg, const gid_t *gids, size_t n)
{
	for (size_t i = 0; i < cfg->n_allow_groups; i++)
		for (size_t k = 0; k < n; k++)
			if (cfg->allow_groups[i] == gids[k])
				return true;
	return false;
}

int mk_caller_access(const mk_config *cfg, uid_t agent_uid, uid_t uid, const gid_t *gids,
		     size_t n)
{
	if (uid == agent_uid)
		return 0;
	if (!cfg->system_mode)
		return mk_error(-EACCES, "user %u may not use the mlskey agent of user %u",
				(unsigned)uid, (unsigned)agent_uid);
	if (has_uid(cfg, uid) || has_group(cfg, gids, n))
		return 0;
	return mk_error(-EACCES, "user %u may not use this mlskey agent: it is not in its "
			"allow-users, nor in one of its allow-groups (ask the administrator)",
			(unsigned)uid);
}
