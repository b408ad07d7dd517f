/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Reading audit records (JSON objects, docs/AUDIT.md) in the audit tests. */
#pragma once

#include <json-c/json.h>

/* The string member key of o, or NULL when it is missing or not a string. */
static inline const char *str(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* The integer member key of o, or -1 when it is missing or not an integer. */
static inline long long num(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
		return -1;
	return json_object_get_int64(v);
}
