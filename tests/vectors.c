/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fixture.h"
#include "tests/tap.h"
#include "tests/vectors.h"

json_object *mkt_vector_load(const char *name)
{
	char path[1024];
	json_object *o;

	snprintf(path, sizeof(path), "%s/%s", mkt_vectors_dir(), name);
	o = json_object_from_file(path);
	if (!o)
		mkt_bail("cannot read vector file %s", path);
	return o;
}

json_object *mkt_json_path(json_object *root, const char *path)
{
	char buf[256], *save = NULL, *tok;
	json_object *o = root;

	snprintf(buf, sizeof(buf), "%s", path);
	for (tok = strtok_r(buf, ".", &save); tok && o; tok = strtok_r(NULL, ".", &save)) {
		json_object *next = NULL;

		if (json_object_is_type(o, json_type_array))
			next = json_object_array_get_idx(o, (size_t)atoi(tok));
		else if (!json_object_object_get_ex(o, tok, &next))
			next = NULL;
		o = next;
	}
	return o;
}

void mkt_json_hex(json_object *root, const char *path, mk_bytes *ret)
{
	json_object *o = mkt_json_path(root, path);

	if (!o || !json_object_is_type(o, json_type_string))
		mkt_bail("vector field %s missing", path);
	if (mk_hex_decode(json_object_get_string(o), ret) < 0)
		mkt_bail("vector field %s is not hex", path);
}

const char *mkt_json_str(json_object *root, const char *path)
{
	json_object *o = mkt_json_path(root, path);

	if (!o || !json_object_is_type(o, json_type_string))
		mkt_bail("vector field %s missing", path);
	return json_object_get_string(o);
}

long long mkt_json_int(json_object *root, const char *path)
{
	json_object *o = mkt_json_path(root, path);

	if (!o)
		mkt_bail("vector field %s missing", path);
	if (json_object_is_type(o, json_type_string))
		return strtoll(json_object_get_string(o), NULL, 10);
	return json_object_get_int64(o);
}
