#!/usr/bin/python3
"""check_includes -- no #include cycle among server/ modules.

A module is a file stem up to its first '_' (server.c, server.h,
server_internal.h and server_metrics.* are the module "server"; dispatch*.c
and dispatch*.h are "dispatch"; jobs_*.c belong to "jobs"; commit_events
is "commit"). An edge A -> B means a file of A includes a header of B.
Fails (exit 1) printing the cycle when the module graph has one.
Usage: check_includes.py SERVER_DIR
"""
import os
import re
import sys


def module(name):
    stem = os.path.splitext(name)[0]
    return stem.split("_")[0]


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "server"
    files = [f for f in os.listdir(root) if f.endswith((".c", ".h"))]
    local = {f for f in files if f.endswith(".h")}
    graph = {}
    inc = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
    for f in files:
        a = module(f)
        graph.setdefault(a, set())
        with open(os.path.join(root, f)) as fh:
            for line in fh:
                m = inc.match(line)
                if m and m.group(1) in local:
                    b = module(m.group(1))
                    if b != a:
                        graph[a].add(b)
    # main is the top: nothing may include it anyway.
    state = {}
    stack = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                cyc = stack[stack.index(m):] + [m]
                print("include cycle: " + " -> ".join(cyc))
                return False
            if m not in state and not visit(m):
                return False
        stack.pop()
        state[n] = 2
        return True

    for n in sorted(graph):
        if n not in state and not visit(n):
            return 1
    for n in sorted(graph):
        print("%-10s -> %s" % (n, ", ".join(sorted(graph[n])) or "-"))
    print("no include cycle among %d modules" % len(graph))
    return 0


if __name__ == "__main__":
    sys.exit(main())
