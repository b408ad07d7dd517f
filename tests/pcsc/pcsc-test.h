/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers of the card and hotplug tests: reading ListTokens / ListKeys / ListSlots replies
 * into plain structs, waiting for the agent's signals, and calls that stay in flight.
 * The D-Bus basics (bus_open, agent_call_new, agent_send, ...) are tests/agent/agent-test.h.
 */
#pragma once

#include "tests/agent/agent-test.h"

typedef struct entry {
	char uri[1024];
	char label[256];
	char description[256]; /* slots */
	char state[32];        /* slots */
	char token[1024];      /* keys: the token's URI; slots: the token in it */
	char reason[512];      /* keys */
	bool present;          /* tokens */
	bool logged_in;        /* tokens */
	bool usable;           /* keys */
	bool token_present;    /* slots */
} entry;

static inline void entry_field(entry *e, const char *key, DBusMessageIter *v)
{
	static const struct {
		const char *key;
		size_t off, cap;
	} strs[] = {
		{ "label", offsetof(entry, label), sizeof(((entry *)0)->label) },
		{ "description", offsetof(entry, description), sizeof(((entry *)0)->description) },
		{ "state", offsetof(entry, state), sizeof(((entry *)0)->state) },
		{ "token", offsetof(entry, token), sizeof(((entry *)0)->token) },
		{ "reason", offsetof(entry, reason), sizeof(((entry *)0)->reason) },
	};
	static const struct {
		const char *key;
		size_t off;
	} bools[] = {
		{ "present", offsetof(entry, present) },
		{ "logged_in", offsetof(entry, logged_in) },
		{ "usable", offsetof(entry, usable) },
		{ "token_present", offsetof(entry, token_present) },
	};
	int type = dbus_message_iter_get_arg_type(v);

	for (size_t i = 0; type == DBUS_TYPE_STRING && i < ELEMENTSOF(strs); i++)
		if (strcmp(key, strs[i].key) == 0) {
			const char *s;

			dbus_message_iter_get_basic(v, &s);
			snprintf((char *)e + strs[i].off, strs[i].cap, "%s", s);
		}
	for (size_t i = 0; type == DBUS_TYPE_BOOLEAN && i < ELEMENTSOF(bools); i++)
		if (strcmp(key, bools[i].key) == 0) {
			dbus_bool_t b;

			dbus_message_iter_get_basic(v, &b);
			*(bool *)((char *)e + bools[i].off) = b;
		}
}

/* Calls method (ListTokens, ListKeys, ListSlots) and reads up to max entries; -1 on error. */
static inline int list_entries(DBusConnection *c, const char *method, entry *out, int max)
{
	DBusMessage *r = agent_send(c, agent_call_new(method), 30000, NULL, 0, NULL, 0);
	DBusMessageIter it, arr;
	int n = 0;

	if (!r)
		return -1;
	if (!dbus_message_has_signature(r, "a(sa{sv})")) {
		dbus_message_unref(r);
		return -1;
	}
	dbus_message_iter_init(r, &it);
	dbus_message_iter_recurse(&it, &arr);
	while (n < max && dbus_message_iter_get_arg_type(&arr) == DBUS_TYPE_STRUCT) {
		DBusMessageIter st, d;
		entry *e = &out[n++];
		const char *uri;

		memset(e, 0, sizeof(*e));
		dbus_message_iter_recurse(&arr, &st);
		dbus_message_iter_get_basic(&st, &uri);
		snprintf(e->uri, sizeof(e->uri), "%s", uri);
		dbus_message_iter_next(&st);
		dbus_message_iter_recurse(&st, &d);
		while (dbus_message_iter_get_arg_type(&d) == DBUS_TYPE_DICT_ENTRY) {
			DBusMessageIter kv, v;
			const char *key;

			dbus_message_iter_recurse(&d, &kv);
			dbus_message_iter_get_basic(&kv, &key);
			dbus_message_iter_next(&kv);
			dbus_message_iter_recurse(&kv, &v);
			entry_field(e, key, &v);
			dbus_message_iter_next(&d);
		}
		dbus_message_iter_next(&arr);
	}
	dbus_message_unref(r);
	return n;
}

/* The entry whose label (tokens, keys) or description (slots) is name, or NULL. */
static inline const entry *entry_find(const entry *a, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (strcmp(a[i].label, name) == 0 || strcmp(a[i].description, name) == 0)
			return &a[i];
	return NULL;
}

/* Subscribes c to the agent's signals. */
static inline void signals_watch(DBusConnection *c)
{
	DBusError err;

	dbus_error_init(&err);
	dbus_bus_add_match(c, "type='signal',interface='" AGENT_IFACE "'", &err);
	if (dbus_error_is_set(&err))
		mkt_bail("AddMatch: %s", err.message);
}

/* Forgets the signals that arrived so far. */
static inline void signals_drain(DBusConnection *c)
{
	DBusMessage *m;

	dbus_connection_read_write(c, 0);
	while ((m = dbus_connection_pop_message(c)))
		dbus_message_unref(m);
}

/* Waits up to secs for the signal `member`; true when it came (other messages dropped). */
static inline bool signal_wait(DBusConnection *c, const char *member, double secs)
{
	double until = mkt_now() + secs;

	while (mkt_now() < until) {
		DBusMessage *m;

		dbus_connection_read_write(c, 50);
		while ((m = dbus_connection_pop_message(c))) {
			bool hit = dbus_message_is_signal(m, AGENT_IFACE, member);

			dbus_message_unref(m);
			if (hit)
				return true;
		}
	}
	return false;
}

/* Starts SignWithLabel without waiting for its reply (dbus_pending_call_block later). */
static inline DBusPendingCall *sign_start(DBusConnection *c, const char *key)
{
	DBusMessage *m = agent_call_new("SignWithLabel");
	DBusPendingCall *p = NULL;
	const char *label = "LeafNodeTBS";
	dbus_uint16_t suite = 2;
	const uint8_t content[] = { 1, 2, 3 };

	dbus_message_append_args(m, DBUS_TYPE_STRING, &key, DBUS_TYPE_UINT16, &suite,
				 DBUS_TYPE_STRING, &label, DBUS_TYPE_INVALID);
	append_ay(m, content, sizeof(content));
	if (!dbus_connection_send_with_reply(c, m, &p, 60000) || !p)
		mkt_bail("cannot send SignWithLabel");
	dbus_message_unref(m);
	dbus_connection_flush(c);
	return p;
}

/* Waits for a pending call; its error name in name ("" on success). */
static inline void pending_finish(DBusPendingCall *p, char *name, size_t cap, char *msg,
				  size_t msg_cap)
{
	DBusMessage *r;

	dbus_pending_call_block(p);
	r = dbus_pending_call_steal_reply(p);
	dbus_pending_call_unref(p);
	name[0] = '\0';
	if (msg)
		msg[0] = '\0';
	if (r && dbus_message_get_type(r) == DBUS_MESSAGE_TYPE_ERROR) {
		DBusError err;

		dbus_error_init(&err);
		dbus_set_error_from_message(&err, r);
		snprintf(name, cap, "%s", err.name ? err.name : "?");
		if (msg)
			snprintf(msg, msg_cap, "%s", err.message ? err.message : "");
		dbus_error_free(&err);
	} else if (!r) {
		snprintf(name, cap, "no reply");
	}
	if (r)
		dbus_message_unref(r);
}

/* SignWithLabel on key, suite 2 (ECDSA P-256): "" on success, else the error name. */
static inline const char *sign_now(DBusConnection *c, const char *key, char *msg, size_t cap)
{
	static char name[256];

	pending_finish(sign_start(c, key), name, sizeof(name), msg, cap);
	return name;
}
