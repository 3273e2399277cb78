#!/usr/bin/env python3
"""Lists src/ files over 600 lines and functions over 80 lines (test modules left out), the
limits STYLE.md sets; exits 1 with `--strict` when there is any. `make size-report`."""

import re
import sys
from pathlib import Path

MAX_FILE, MAX_FN = 600, 80


def braces_of(line):
    """The line without its comment, string and character literals (braces in them do not count)."""
    line = re.sub(r'b?"(?:\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(?:\\.|[^'\\])'", "' '", line)
    return line.split("//", 1)[0]


strict = "--strict" in sys.argv
found = []
for path in sorted(Path("src").rglob("*.rs")):
    lines = path.read_text().split("\n")
    cut = next((i for i, l in enumerate(lines) if l.strip() == "#[cfg(test)]"), len(lines))
    if cut > MAX_FILE:
        found.append(f"{path}: {cut} lines")
    i = 0
    while i < cut:
        m = re.match(r"\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?(?:const\s+)?fn\s+(\w+)", lines[i])
        if m and not lines[i].rstrip().endswith(";"):
            depth, j, opened = 0, i, False
            while j < cut:
                code = braces_of(lines[j])
                depth += code.count("{") - code.count("}")
                opened = opened or "{" in code
                if opened and depth <= 0:
                    break
                j += 1
            if j - i + 1 > MAX_FN:
                found.append(f"{path}:{i + 1}: fn {m.group(1)} is {j - i + 1} lines")
            i = j + 1 if opened else i + 1
        else:
            i += 1
for f in found:
    print(f)
print(f"{len(found)} over the limits (files {MAX_FILE} lines, functions {MAX_FN})")
sys.exit(1 if strict and found else 0)
