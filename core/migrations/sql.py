"""Helpers shared by the migrations: schema SQL lives in them as plain scripts."""

from __future__ import annotations

from alembic import op


def statements(script: str) -> list[str]:
    """Split a SQL script on top-level semicolons (not inside $$-quoted bodies): the
    driver runs one statement per call."""
    out, current, quoted = [], [], False
    for line in script.splitlines():
        quoted ^= line.count("$$") % 2 == 1
        current.append(line)
        if not quoted and line.rstrip().endswith(";"):
            out.append("\n".join(current).strip())
            current = []
    tail = "\n".join(current).strip()
    if tail and not all(x.strip().startswith("--") for x in tail.splitlines() if x.strip()):
        out.append(tail)
    return out


def run_script(script: str) -> None:
    """Execute a SQL script one statement at a time (asyncpg runs one per call)."""
    for statement in statements(script):
        op.execute(statement)
