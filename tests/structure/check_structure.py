#!/usr/bin/env python3
"""check_structure -- the tree's structural rules, checked on every test run.

1. No #include cycle among the modules of server/ (and of client/, worker/,
   common/, proto/): a module is a .c file with its .h of the same name; a
   private header NAME_internal.h belongs to module NAME, and so does every
   file NAME_*.c that includes it (the module's own files, split by role).
   Only files named NAME or NAME_* may include NAME_internal.h.
2. No production C file (outside tests/) over MAX_LINES lines.
3. Every production C/H file starts with a head comment "name -- purpose".

Usage: check_structure.py SOURCE_ROOT   (exit 0 when all hold, 1 otherwise)
"""
import os
import re
import sys

MAX_LINES = 1000
DIRS = ["server", "client", "worker", "common", "proto"]
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def module_of(fname):
    base = os.path.splitext(os.path.basename(fname))[0]
    if base.endswith("_internal"):
        base = base[: -len("_internal")]
    return base


def find_cycle(graph):
    """Return one cycle as a list of modules, or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = {m: WHITE for m in graph}
    stack = []

    def visit(m):
        color[m] = GREY
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if n not in color:
                continue
            if color[n] == GREY:
                return stack[stack.index(n):] + [n]
            if color[n] == WHITE:
                c = visit(n)
                if c:
                    return c
        stack.pop()
        color[m] = BLACK
        return None

    for m in sorted(graph):
        if color[m] == WHITE:
            c = visit(m)
            if c:
                return c
    return None


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    failures = []
    for d in DIRS:
        path = os.path.join(root, d)
        if not os.path.isdir(path):
            continue
        files = sorted(f for f in os.listdir(path) if f.endswith((".c", ".h")))
        texts = {}
        for f in files:
            with open(os.path.join(path, f), encoding="utf-8", errors="replace") as fh:
                texts[f] = fh.read()
        owner = {}
        for f in files:
            stem = os.path.splitext(f)[0]
            owner[f] = module_of(f)
            for inc in INCLUDE.findall(texts[f]):
                if not inc.endswith("_internal.h") or inc not in texts:
                    continue
                mod = inc[: -len("_internal.h")]
                if stem == mod or stem.startswith(mod + "_") or stem == mod + "_internal":
                    owner[f] = mod
                else:
                    failures.append("%s/%s includes %s, the private header of another module"
                                    % (d, f, inc))
        for f in files:  # a header belongs where its .c file belongs
            if f.endswith(".h") and f[:-2] + ".c" in owner:
                owner[f] = owner[f[:-2] + ".c"]
        local = set(owner.values())
        graph = {m: set() for m in local}
        for f in files:
            text = texts[f]
            n_lines = text.count("\n")
            if f.endswith(".c") and n_lines > MAX_LINES:
                failures.append("%s/%s: %d lines (limit %d): split it by role"
                                % (d, f, n_lines, MAX_LINES))
            head = text.lstrip()[:400]
            name = os.path.splitext(f)[0]
            if not re.match(r"/\*\s*" + re.escape(name) + r"\s+--\s+\S", head):
                failures.append("%s/%s: no '/* %s -- purpose' head comment" % (d, f, name))
            me = owner[f]
            for inc in INCLUDE.findall(text):
                other = owner.get(inc, module_of(inc))
                if other in local and other != me and os.path.exists(os.path.join(path, inc)):
                    graph[me].add(other)
        cycle = find_cycle(graph)
        if cycle:
            failures.append("%s/: include cycle: %s" % (d, " -> ".join(cycle)))
    for f in failures:
        print("check_structure: " + f)
    if failures:
        return 1
    print("check_structure: ok (%s)" % ", ".join(DIRS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
