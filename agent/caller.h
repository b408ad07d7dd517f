/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Who is calling (issue 7): from the uid and pid the bus vouches for
 * (GetConnectionCredentials) to the process's executable, systemd unit, Flatpak app id and
 * start time, read from /proc; and whether that caller may use the agent at all.
 *
 * The parsers take file contents, and mk_caller_identify() a /proc root, so that tests can
 * feed sample cgroup lines, stat lines and .flatpak-info files. Nothing here logs.
 *
 * Trust: uid, pid and groups come from the bus daemon (the kernel's SO_PEERCRED and
 * SO_PEERGROUPS). The rest is what /proc says of that pid: the executable and unit are as
 * good as the kernel's word, the Flatpak app id is as good as the process's mount namespace
 * (a process that may make its own user and mount namespaces can show any /.flatpak-info).
 * They are for dialogs, policy rules that say so, and the audit trail.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "agent/agent-config.h"
#include "agent/ops.h"

/* The most groups of a caller that are kept (more are ignored for allow-groups). */
#define MK_CALLER_MAX_GROUPS 256

/*
 * The systemd unit a process runs in, from the contents of its /proc/PID/cgroup: the
 * innermost path component that ends in ".service" or ".scope" (systemd's "_" escape
 * removed), e.g. "mailbox.service" from "0::/system.slice/mailbox.service" or
 * "app-flatpak-org.example.Mail-1234.scope". The cgroup v2 line ("0::") counts first, then
 * v1's "name=systemd" line, then any other line. Writes a NUL-terminated name into buf (cap
 * bytes, cap >= 1) and returns 0, or returns -ENOENT (buf = "") when no line names a unit,
 * -ENAMETOOLONG when the name does not fit.
 */
int mk_caller_unit_from_cgroup(const char *cgroup, char *buf, size_t cap);

/*
 * The Flatpak app id from the contents of a .flatpak-info file: `name` in its [Application]
 * section. 0 and buf (cap bytes); -ENOENT (buf = "") when there is none or it is empty;
 * -EINVAL for a file that is not INI; -ENAMETOOLONG when it does not fit.
 */
int mk_caller_app_id_from_flatpak_info(const char *info, char *buf, size_t cap);

/*
 * The start time (field 22, clock ticks after boot) from the contents of /proc/PID/stat; the
 * command name (field 2) may hold spaces and parentheses. 0 and *ret, or -EINVAL.
 */
int mk_caller_start_time_from_stat(const char *stat, unsigned long long *ret);

/*
 * The groups from the contents of /proc/PID/status: the real gid ("Gid:") and the
 * supplementary groups ("Groups:"), at most cap of them into gids. 0 and *ret_n, or -EINVAL
 * when the file has no Gid: line.
 */
int mk_caller_groups_from_status(const char *status, gid_t *gids, size_t cap, size_t *ret_n);

/*
 * Fills c->start_time, exe, unit and app_id of process pid from proc_root ("/proc", or a
 * directory laid out like it in tests: PID/stat, PID/exe, PID/cgroup, PID/root/.flatpak-info),
 * and, when groups is not NULL, up to cap groups from PID/status into groups and *n_groups
 * (unchanged when that file is unreadable). c->uid and c->pid are the caller's (from the
 * bus) and stay as they are. pidfd refers to the process (from the bus, or pidfd_open()),
 * or is -1 to open one here; it is borrowed.
 *
 * What cannot be read stays "" or 0 (another user's process, ProtectProc=). After reading,
 * it checks through the pidfd that the process is still alive and that its start time did
 * not change (the pid was not reused meanwhile); if not, or when the process is already gone
 * before, it returns -EACCES "the caller went away while it was identified" and c may be
 * partly filled. Otherwise 0.
 */
int mk_caller_identify(const char *proc_root, pid_t pid, int pidfd, mk_caller *c, gid_t *groups,
		       size_t cap, size_t *n_groups);

/*
 * May this caller use the agent? agent_uid (the user mlskeyd runs as) always may. In session
 * mode (!cfg->system_mode) nobody else; in system mode also the users of cfg->allow_users
 * and the members of cfg->allow_groups (gids: the caller's groups, n of them). Returns 0, or
 * -EACCES with an mk_error() message that names the caller's uid and what would allow it.
 */
int mk_caller_access(const mk_config *cfg, uid_t agent_uid, uid_t uid, const gid_t *gids,
		     size_t n);
