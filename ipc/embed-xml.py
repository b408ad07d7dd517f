#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
# Turns the interface XML into a C string, so that Introspect returns exactly the file
# that is installed to the D-Bus interfaces directory. Usage: embed-xml.py IN OUT NAME
import sys

src, out, name = sys.argv[1:4]
with open(src, encoding='utf-8') as f:
    text = f.read()
lines = ['/* Generated from %s by ipc/embed-xml.py; do not edit. */' % src.split('/')[-1],
         '#pragma once', '', 'static const char %s[] =' % name]
for line in text.splitlines(keepends=True):
    esc = line.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')
    lines.append('\t"%s"' % esc)
lines[-1] += ';'
with open(out, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
