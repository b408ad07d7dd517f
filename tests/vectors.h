/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Reading the known-answer vectors in ../shared/vectors (json-c). */
#pragma once

#include <json-c/json.h>

#include "common/bytes.h"

/* Loads vectors/<name> (e.g. "mls-crypto-basics-suite2.json"); bails out if unreadable. */
json_object *mkt_vector_load(const char *name);

/* The object at a dotted path ("sign_with_label.pub"), or NULL. Borrowed from root. */
json_object *mkt_json_path(json_object *root, const char *path);

/* Decodes the hex string at path into *ret; bails out when missing or not hex. */
void mkt_json_hex(json_object *root, const char *path, mk_bytes *ret);

/* The string at path (borrowed); bails out when missing. */
const char *mkt_json_str(json_object *root, const char *path);

/* The integer at path (a JSON number or a decimal string); bails out when missing. */
long long mkt_json_int(json_object *root, const char *path);
