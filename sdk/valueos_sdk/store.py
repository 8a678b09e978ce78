"""Local storage of the offline queue and of small durable state (a wallet's counter, a
mirror's cursor), behind one interface with three backends:

* :class:`SQLiteStore` (the default): WAL journal, ``synchronous=FULL``; every call is one
  committed transaction, so what a call returned survives a crash of the process;
* :class:`FileStore`: an append-only JSON-lines log, fsynced per record, replayed on open (a
  torn last line, from a crash mid-write, is ignored);
* :class:`MemoryStore`: nothing survives the process (tests, short-lived tools).

The queue's rows are append-only in spirit: a row is created PENDING with its idempotency key
and only ever moves once to DONE or FAILED with the server's answer.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

PENDING, DONE, FAILED = "PENDING", "DONE", "FAILED"


@dataclass(frozen=True, slots=True)
class Record:
    id: int
    key: str
    method: str
    path: str
    body: Any
    state: str = PENDING
    status: int | None = None
    response: Any = None
    created_at: float = 0.0


class Store(Protocol):
    def append(self, key: str, method: str, path: str, body: Any) -> Record:
        """Durably add a PENDING record (ids grow in order); before anything is sent."""

    def pending(self) -> list[Record]:
        """PENDING records, oldest first."""

    def finish(self, record_id: int, state: str, status: int | None, response: Any) -> None:
        """Record the answer (DONE or FAILED); a record already finished stays as it was."""

    def records(self) -> list[Record]: ...

    def get(self, name: str) -> Any:
        """A small durable value (None when unset)."""

    def put(self, name: str, value: Any) -> None: ...

    def close(self) -> None: ...


class MemoryStore:
    def __init__(self) -> None:
        self._records: dict[int, Record] = {}
        self._values: dict[str, Any] = {}
        self._lock = threading.Lock()

    def append(self, key: str, method: str, path: str, body: Any) -> Record:
        with self._lock:
            record = Record(len(self._records) + 1, key, method, path, body, created_at=time.time())
            self._records[record.id] = record
            return record

    def pending(self) -> list[Record]:
        return [r for r in self._records.values() if r.state == PENDING]

    def finish(self, record_id: int, state: str, status: int | None, response: Any) -> None:
        with self._lock:
            record = self._records[record_id]
            if record.state == PENDING:
                self._records[record_id] = replace(
                    record, state=state, status=status, response=response
                )

    def records(self) -> list[Record]:
        return list(self._records.values())

    def get(self, name: str) -> Any:
        return self._values.get(name)

    def put(self, name: str, value: Any) -> None:
        self._values[name] = value

    def close(self) -> None:
        pass


class FileStore(MemoryStore):
    """The memory store, rebuilt on open from an fsynced JSON-lines log of every change."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        if self.path.exists():
            good = 0
            with self.path.open("rb") as log:
                for line in log:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        break  # a torn last line: the write it belonged to never returned
                    if not line.endswith(b"\n"):
                        break
                    self._apply(event)
                    good += len(line)
            os.truncate(self.path, good)  # later records go after the last whole one
        self._file = self.path.open("a")

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event["e"]
        if kind == "append":
            rec = Record(event["id"], event["key"], event["method"], event["path"], event["body"],
                         created_at=event["at"])  # fmt: skip
            self._records[rec.id] = rec
        elif kind == "finish":
            super().finish(event["id"], event["state"], event["status"], event["response"])
        elif kind == "put":
            self._values[event["name"]] = event["value"]

    def _log(self, event: dict[str, Any]) -> None:
        self._file.write(json.dumps(event, separators=(",", ":")) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def append(self, key: str, method: str, path: str, body: Any) -> Record:
        with self._lock:
            rec_id = len(self._records) + 1
            at = time.time()
            self._log({"e": "append", "id": rec_id, "key": key, "method": method, "path": path,
                       "body": body, "at": at})  # fmt: skip
            record = Record(rec_id, key, method, path, body, created_at=at)
            self._records[rec_id] = record
            return record

    def finish(self, record_id: int, state: str, status: int | None, response: Any) -> None:
        if self._records[record_id].state != PENDING:
            return
        self._log({"e": "finish", "id": record_id, "state": state, "status": status,
                   "response": response})  # fmt: skip
        super().finish(record_id, state, status, response)

    def put(self, name: str, value: Any) -> None:
        self._log({"e": "put", "name": name, "value": value})
        super().put(name, value)

    def close(self) -> None:
        self._file.close()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'PENDING',
    status INTEGER,
    response TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SQLiteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def _row(self, row: tuple[Any, ...]) -> Record:
        rec_id, key, method, path, body, state, status, response, at = row
        return Record(rec_id, key, method, path, json.loads(body), state, status,
                      None if response is None else json.loads(response), at)  # fmt: skip

    _COLUMNS = "id, key, method, path, body, state, status, response, created_at"

    def append(self, key: str, method: str, path: str, body: Any) -> Record:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO outbox (key, method, path, body, created_at) VALUES (?, ?, ?, ?, ?) "
                f"RETURNING {self._COLUMNS}",
                (key, method, path, json.dumps(body), time.time()),
            )
            return self._row(cur.fetchone())

    def pending(self) -> list[Record]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {self._COLUMNS} FROM outbox WHERE state = 'PENDING' ORDER BY id"
            ).fetchall()
        return [self._row(r) for r in rows]

    def finish(self, record_id: int, state: str, status: int | None, response: Any) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET state = ?, status = ?, response = ? "
                "WHERE id = ? AND state = 'PENDING'",
                (state, status, json.dumps(response), record_id),
            )

    def records(self) -> list[Record]:
        with self._lock:
            rows = self._db.execute(f"SELECT {self._COLUMNS} FROM outbox ORDER BY id").fetchall()
        return [self._row(r) for r in rows]

    def get(self, name: str) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE name = ?", (name,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, name: str, value: Any) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO kv (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, json.dumps(value)),
            )

    def close(self) -> None:
        self._db.close()
