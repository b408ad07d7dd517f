/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Small language helpers shared by every layer: cleanup attributes (systemd style),
 * array sizes, visibility. Nothing here returns from the caller.
 */
#pragma once

#include <stddef.h>
#include <stdlib.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _public_ __attribute__((visibility("default")))
#define _warn_unused_result_ __attribute__((warn_unused_result))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

/* Defines `static inline void func##p(type *p)` calling func(*p) when *p is not NULL. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                                    \
	static inline void func##p(type *p)                                                        \
	{                                                                                          \
		if (*p)                                                                            \
			func(*p);                                                                  \
	}

static inline void freep(void *p)
{
	free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

/* Moves ownership out of a _cleanup_ variable: returns the pointer and leaves NULL behind. */
#define TAKE_PTR(p)                                                                                \
	({                                                                                         \
		__typeof__(p) _take_tmp = (p);                                                     \
		(p) = NULL;                                                                        \
		_take_tmp;                                                                         \
	})

#define MK_MIN(a, b) ((a) < (b) ? (a) : (b))
#define MK_MAX(a, b) ((a) > (b) ? (a) : (b))
