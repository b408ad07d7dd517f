/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The libFuzzer entry point every target defines; replay.c drives it without libFuzzer. */
#pragma once

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken invariant: crash loudly so that libFuzzer (or the replay) reports the input. */
#define FUZZ_ASSERT(cond)                                                                          \
	do {                                                                                       \
		if (!(cond))                                                                       \
			__builtin_trap();                                                          \
	} while (0)
