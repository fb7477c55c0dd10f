#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Every exported call has a man page that renders, and uffdmove.7 exists.

For each name under global: in src/libuffdmove.map, man/<name>.3 must be a
full page whose NAME section mentions the name: not a '.so' alias, which
does not render with `man -l` from the tree. Every page must render with
man -l (or groff -man where man is missing) without a warning, and its
rendering must show the name. When the build installs man pages
(-Dman=true), each of them must also be among the files `meson install`
installs.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

import versionscript


def map_names(path):
    """Every name under global:, as listed (symbols-check judges the list)."""
    return [name for _, entries in versionscript.nodes(path)
            for scope, name in entries if scope == "global"]


def so_target(text):
    """The page a '.so' alias points to, or None for a full page."""
    lines = [l for l in text.splitlines()
             if l.strip() and not l.startswith(('.\\"', "'\\\""))]
    if len(lines) == 1:
        m = re.match(r"\.so\s+(\S+)", lines[0])
        if m:
            return os.path.basename(m.group(1))
    return None


def name_section(text):
    m = re.search(r"^\.SH\s+\"?NAME\"?\s*$(.*?)^\.SH", text,
                  flags=re.S | re.M)
    if not m:
        return ""
    return re.sub(r"\\f[BIRP]|\\f\(..|\\&", "", m.group(1))


def render(page):
    """The page as a reader sees it, and what the formatter complained of;
    (None, why) when no formatter is installed."""
    env = dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING="0",
               LC_ALL="C.UTF-8")
    if shutil.which("man"):
        cmd = ["man", "--warnings", "-l", "-P", "cat", page]
    elif shutil.which("groff"):
        cmd = ["groff", "-man", "-Tutf8", "-ww", page]
    else:
        return None, "neither man nor groff is installed"
    r = subprocess.run(cmd, capture_output=True, text=True, env=env,
                       cwd=os.path.dirname(page) or ".")
    out = re.sub(r".\x08", "", r.stdout)
    return out, (r.stderr.strip() or
                 (f"exit status {r.returncode}" if r.returncode else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--map", required=True)
    ap.add_argument("--mandir", required=True)
    ap.add_argument("--installed", help="meson-info/intro-installed.json")
    ap.add_argument("--man-option", default="true",
                    help="value of -Dman (false: skip the install check)")
    args = ap.parse_args()

    problems = []
    names = map_names(args.map)
    pages = [os.path.join(args.mandir, "uffdmove.7")]
    if not os.path.isfile(pages[0]):
        problems.append("man/uffdmove.7 is missing (concepts, error "
                        "vocabulary, kernel requirements)")

    for name in names:
        page = os.path.join(args.mandir, name + ".3")
        if not os.path.isfile(page):
            problems.append(f"{name}: man/{name}.3 is missing "
                            "(a page, or a '.so man3/<page>.3' alias)")
            continue
        pages.append(page)
        text = open(page, encoding="utf-8", errors="replace").read()
        target = so_target(text)
        if target:
            problems.append(f"{name}: man/{name}.3 is a '.so' alias, which "
                            "does not render with man -l from the tree: "
                            "write a page of its own")
        if target:
            tpath = os.path.join(args.mandir, target)
            if not os.path.isfile(tpath):
                problems.append(f"{name}: man/{name}.3 is an alias to "
                                f"{target}, which does not exist")
                continue
            text = open(tpath, encoding="utf-8", errors="replace").read()
            if so_target(text):
                problems.append(f"{name}: alias target {target} is itself "
                                "an alias")
                continue
            where = target
        else:
            where = name + ".3"
        if not re.search(r"\b%s\b" % re.escape(name), name_section(text)):
            problems.append(f"{name}: the NAME section of man/{where} does "
                            "not mention it (whatis/apropos use it)")

    rendered = 0
    for page in pages:
        if not os.path.isfile(page):
            continue
        out, why = render(page)
        if out is None:
            print(f"note: pages not rendered: {why}")
            break
        base = os.path.basename(page)
        title = base.rsplit(".", 1)[0]
        if why:
            problems.append(f"man/{base} does not render cleanly: {why}")
        elif title not in out:
            problems.append(f"man/{base} renders without its name")
        else:
            rendered += 1

    known = {n + ".3" for n in names}
    if os.path.isdir(args.mandir):
        for f in sorted(os.listdir(args.mandir)):
            if f.endswith(".3") and f not in known:
                print(f"note: man/{f} documents no exported call")

    if args.man_option == "true" and args.installed and \
            os.path.isfile(args.installed):
        with open(args.installed, encoding="utf-8") as f:
            dests = set(json.load(f).values())
        for page in pages:
            if not os.path.isfile(page):
                continue
            base = os.path.basename(page)
            section = "man" + base.rsplit(".", 1)[1]
            if not any(d.endswith(f"/{section}/{base}") for d in dests):
                problems.append(f"man/{base} is not installed (install it "
                                f"to share/man/{section} in man/meson.build)")

    present = sum(os.path.isfile(p) for p in pages)
    print(f"{len(names)} exported calls; {present} of the {len(names) + 1} "
          f"man pages they need (with uffdmove.7) are present, {rendered} "
          "rendered")
    for p in problems:
        print("FAIL:", p)
    if problems:
        print(f"man coverage check FAILED: {len(problems)} problem(s)")
        return 1
    print("man coverage check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
