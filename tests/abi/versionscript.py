# SPDX-License-Identifier: MIT
"""Reading src/libuffdmove.map (a GNU ld version script) for the abi checks."""

import re


def nodes(path):
    """Return [(node, [(scope, name), ...])] in the order of the script.

    scope is "global" or "local", or None before either is named; comments
    are dropped. What is allowed where is for the caller to judge.
    """
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"#[^\n]*", " ", text)
    out = []
    for node, body in re.findall(r"([A-Za-z_][\w.]*)\s*\{(.*?)\}[^;]*;",
                                 text, flags=re.S):
        entries, scope = [], None
        for stmt in body.split(";"):
            stmt = stmt.strip()
            m = re.match(r"(global|local)\s*:\s*(.*)", stmt, flags=re.S)
            if m:
                scope = m.group(1)
                stmt = m.group(2).strip()
            if stmt:
                entries.append((scope, stmt))
        out.append((node, entries))
    return out
