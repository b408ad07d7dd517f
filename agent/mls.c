/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Placeholder: implemented in its issue's work. */
typedef int mk_placeholder_mls;
