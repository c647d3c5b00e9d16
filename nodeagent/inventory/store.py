"""Storage behind one interface, two backends: SQLite (embedded, WAL) and PostgreSQL.

The SQL is shared; a dialect object supplies what differs (placeholders, the
auto-increment column, the liveness write's durability). Calls run in a thread
pool so the gRPC loop never blocks on the database: one thread for SQLite (one
writer at a time is SQLite's rule), a connection pool for PostgreSQL. Schema
changes are numbered migrations recorded in `schema_migrations`.

Liveness (last_seen of every heartbeat) lives in a narrow table and is written
in batches by the service; everything else (registrations, state changes,
inventories) is committed before the RPC answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import Message

T = TypeVar("T")


class StoreError(RuntimeError):
    """The database failed (gone, full, locked): the RPC answers UNAVAILABLE."""


class NotFound(KeyError):
    pass


class Conflict(ValueError):
    pass


def _migrations(serial: str) -> list[str]:
    return [
        f"""
        CREATE TABLE nodes (
            id TEXT PRIMARY KEY,
            identity_key TEXT NOT NULL UNIQUE,
            dmi_key TEXT NOT NULL DEFAULT '',
            hw_ids TEXT NOT NULL DEFAULT '[]',
            hostname TEXT NOT NULL DEFAULT '',
            state INTEGER NOT NULL,
            held_from INTEGER NOT NULL DEFAULT 0,
            state_reason TEXT NOT NULL DEFAULT '',
            pool TEXT NOT NULL DEFAULT '',
            role TEXT NOT NULL DEFAULT '',
            cluster TEXT NOT NULL DEFAULT '',
            profile TEXT NOT NULL DEFAULT '',
            labels TEXT NOT NULL DEFAULT '{{}}',
            taints TEXT NOT NULL DEFAULT '[]',
            gpu_model TEXT NOT NULL DEFAULT '',
            gpu_count INTEGER NOT NULL DEFAULT 0,
            inventory TEXT NOT NULL DEFAULT '',
            inventory_hash TEXT NOT NULL DEFAULT '',
            cert_not_after DOUBLE PRECISION NOT NULL DEFAULT 0,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX nodes_state ON nodes (state);
        CREATE INDEX nodes_pool ON nodes (pool);
        CREATE INDEX nodes_gpu_model ON nodes (gpu_model);
        CREATE INDEX nodes_cluster ON nodes (cluster);
        CREATE INDEX nodes_dmi_key ON nodes (dmi_key);
        CREATE TABLE liveness (
            node_id TEXT PRIMARY KEY,
            last_seen DOUBLE PRECISION NOT NULL,
            phase TEXT NOT NULL DEFAULT '',
            reachable INTEGER NOT NULL DEFAULT 1
        );
        CREATE TABLE node_events (
            seq {serial},
            node_id TEXT NOT NULL,
            time DOUBLE PRECISION NOT NULL,
            actor TEXT NOT NULL,
            from_state INTEGER NOT NULL,
            to_state INTEGER NOT NULL,
            reason TEXT NOT NULL
        );
        CREATE INDEX node_events_node ON node_events (node_id, seq);
        CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            secret_hash TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            max_uses INTEGER NOT NULL,
            uses INTEGER NOT NULL DEFAULT 0,
            revoked INTEGER NOT NULL DEFAULT 0,
            preset TEXT NOT NULL DEFAULT '{{}}',
            description TEXT NOT NULL DEFAULT '',
            created_by TEXT NOT NULL DEFAULT ''
        );
        """,
        # 2: Kubespray clusters, node addresses, join jobs and the per-cluster job lease
        f"""
        CREATE TABLE clusters (
            name TEXT PRIMARY KEY,
            spec TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        );
        CREATE TABLE node_addresses (
            node_id TEXT PRIMARY KEY,
            ansible_host TEXT NOT NULL DEFAULT '',
            ip TEXT NOT NULL DEFAULT '',
            access_ip TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE node_label_cache (
            node_id TEXT PRIMARY KEY,
            fingerprint TEXT NOT NULL,
            labels TEXT NOT NULL
        );
        CREATE TABLE join_jobs (
            id TEXT PRIMARY KEY,
            cluster TEXT NOT NULL,
            state INTEGER NOT NULL,
            batch_size INTEGER NOT NULL,
            current_batch INTEGER NOT NULL DEFAULT 0,
            message TEXT NOT NULL DEFAULT '',
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            owner TEXT NOT NULL DEFAULT '',
            attempts INTEGER NOT NULL DEFAULT 0,
            retry_of TEXT NOT NULL DEFAULT '',
            created_by TEXT NOT NULL DEFAULT '',
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX join_jobs_cluster ON join_jobs (cluster, state);
        CREATE TABLE join_job_nodes (
            job_id TEXT NOT NULL,
            node_id TEXT NOT NULL,
            hostname TEXT NOT NULL,
            batch INTEGER NOT NULL,
            state INTEGER NOT NULL,
            failed_task TEXT NOT NULL DEFAULT '',
            message TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (job_id, node_id)
        );
        CREATE TABLE join_job_events (
            seq {serial},
            job_id TEXT NOT NULL,
            time DOUBLE PRECISION NOT NULL,
            kind TEXT NOT NULL,
            node_id TEXT NOT NULL DEFAULT '',
            hostname TEXT NOT NULL DEFAULT '',
            batch INTEGER NOT NULL DEFAULT 0,
            message TEXT NOT NULL DEFAULT '',
            job_state INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX join_job_events_job ON join_job_events (job_id, seq);
        CREATE TABLE cluster_leases (
            cluster TEXT PRIMARY KEY,
            job_id TEXT NOT NULL,
            owner TEXT NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL
        );
        """,
        # 3: what each node sees of the fabric, and its tiers from the last fleet grouping
        """
        CREATE TABLE fabric (
            node_id TEXT PRIMARY KEY,
            observation TEXT NOT NULL,
            tiers TEXT NOT NULL DEFAULT '',
            updated_at DOUBLE PRECISION NOT NULL
        );
        """,
        # 4: every issued certificate (revocation list, proof of a node's current key) and
        # re-enrol tokens bound to one node
        """
        CREATE TABLE certificates (
            serial TEXT PRIMARY KEY,
            subject TEXT NOT NULL,
            role TEXT NOT NULL,
            node_id TEXT NOT NULL DEFAULT '',
            spki_sha256 TEXT NOT NULL DEFAULT '',
            issued_at DOUBLE PRECISION NOT NULL,
            not_after DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION NOT NULL DEFAULT 0,
            revoked_by TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX certificates_node ON certificates (node_id);
        CREATE INDEX certificates_revoked ON certificates (revoked_at);
        ALTER TABLE tokens ADD COLUMN reenrol_node TEXT NOT NULL DEFAULT ''
        """,
        # 5: the failing preflight checks a node's agent last reported (why it stays put)
        """
        ALTER TABLE nodes ADD COLUMN blocking TEXT NOT NULL DEFAULT '[]'
        """,
        # 6: the Ansible environment a join job ran its playbooks with
        """
        ALTER TABLE join_jobs ADD COLUMN ansible_env TEXT NOT NULL DEFAULT '';
        ALTER TABLE join_jobs ADD COLUMN ansible_core_version TEXT NOT NULL DEFAULT ''
        """,
        # issue 16, the cluster side of a node's life: each cluster's kubeconfig (a secret,
        # never returned), what the reconciler did to each node's Node object, remove jobs,
        # the count of settings that drifted from each node's profile (health_watch.py)
        """
        CREATE TABLE cluster_kubeconfigs (
            cluster TEXT PRIMARY KEY,
            kubeconfig TEXT NOT NULL,
            source TEXT NOT NULL DEFAULT '',
            api_server TEXT NOT NULL DEFAULT '',
            updated_at DOUBLE PRECISION NOT NULL
        );
        CREATE TABLE node_kube (
            node_id TEXT PRIMARY KEY,
            cluster TEXT NOT NULL,
            node_name TEXT NOT NULL DEFAULT '',
            joined_at DOUBLE PRECISION NOT NULL DEFAULT 0,
            ready INTEGER NOT NULL DEFAULT 0,
            validated INTEGER NOT NULL DEFAULT 0,
            devices_ok INTEGER NOT NULL DEFAULT 0,
            cordoned INTEGER NOT NULL DEFAULT 0,
            taint TEXT NOT NULL DEFAULT '',
            retire_step TEXT NOT NULL DEFAULT '',
            remove_job TEXT NOT NULL DEFAULT '',
            settled_state INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_try DOUBLE PRECISION NOT NULL DEFAULT 0,
            last_error TEXT NOT NULL DEFAULT ''
        );
        ALTER TABLE join_jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'join';
        ALTER TABLE nodes ADD COLUMN drift_count INTEGER NOT NULL DEFAULT 0
        """,
        # issue 15, the node side: the label map and addresses each agent reports, and the
        # join hooks (pre-join, post-join) a job asks of its nodes and how they ended
        """
        CREATE TABLE node_reports (
            node_id TEXT PRIMARY KEY,
            labels TEXT NOT NULL DEFAULT '',
            network TEXT NOT NULL DEFAULT '',
            hook_phases TEXT NOT NULL DEFAULT '[]',
            updated_at DOUBLE PRECISION NOT NULL
        );
        CREATE TABLE node_hooks (
            node_id TEXT NOT NULL,
            request_id TEXT NOT NULL,
            phase TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'asked',
            message TEXT NOT NULL DEFAULT '',
            updated_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (node_id, request_id, phase)
        );
        ALTER TABLE fabric ADD COLUMN tiers_at DOUBLE PRECISION NOT NULL DEFAULT 0
        """,
        # issue 17, acceptance tests: a report per run each node's agent sent (the whole
        # ValidationReport as JSON), and the remote runs operators asked for
        # (nodeagent/inventory/acceptance.py)
        """
        CREATE TABLE acceptance_reports (
            node_id TEXT NOT NULL,
            run_id TEXT NOT NULL,
            level TEXT NOT NULL DEFAULT '',
            outcome TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL DEFAULT '',
            report TEXT NOT NULL,
            received_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (node_id, run_id)
        );
        CREATE TABLE acceptance_requests (
            request_id TEXT PRIMARY KEY,
            node_id TEXT NOT NULL,
            level TEXT NOT NULL DEFAULT '',
            state TEXT NOT NULL DEFAULT 'asked',
            run_id TEXT NOT NULL DEFAULT '',
            actor TEXT NOT NULL DEFAULT '',
            asked_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        )
        """,
        # issue 20, fleet scale: every replica asks for the nodes changed since its last
        # look every report_poll_seconds (sessions.changed_since); without the index that
        # read walks every row, and SQLite every row's inventory to reach updated_at
        """
        CREATE INDEX nodes_updated_at ON nodes (updated_at)
        """,
        # a count of the reasons a node_kube row must be looked at again (the agent's
        # device report, a new kubeconfig): the reconciler settles a row only when the
        # count is the one it read, so a report that lands mid-round is not lost
        """
        ALTER TABLE node_kube ADD COLUMN touched INTEGER NOT NULL DEFAULT 0
        """,
        # the nodes whose agents count tuning drift (health_watch.drifted_nodes), a few of a
        # fleet: without the index the read walks every row, and SQLite every row's
        # inventory to reach a column added after it
        """
        CREATE INDEX nodes_drifting ON nodes (drift_count) WHERE drift_count > 0
        """,
    ]


def _private_sqlite_files(path: str) -> None:
    """Make the SQLite database and its WAL files 0600 whatever the umask.

    The file holds token hashes, every node's inventory and the certificate records, and
    SQLite creates it 0666 less the umask (0644 under the usual 022) when the service is
    started outside systemd. Created here first, 0600, SQLite keeps that mode and gives
    the -wal and -shm files it creates the database's own mode; files left by an earlier
    start under a looser umask are tightened.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.close(fd)
    for name in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        with contextlib.suppress(FileNotFoundError):
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)


@dataclass
class Dialect:
    name: str
    serial: str
    param: str

    def sql(self, text: str) -> str:
        return text if self.param == "?" else text.replace("?", "%s")


SQLITE = Dialect("sqlite", "INTEGER PRIMARY KEY AUTOINCREMENT", "?")
POSTGRES = Dialect("postgresql", "BIGSERIAL PRIMARY KEY", "%s")


class Store:
    """SQL store; open with `Store.open(url)`: `sqlite:///path.db` or `postgresql://...`."""

    def __init__(self, dialect: Dialect, connect: Callable[[], Any], workers: int) -> None:
        self.dialect = dialect
        self._connect = connect
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="db")
        self._conns: list[Any] = []
        self._lock = threading.Lock()
        # told every transaction's duration and whether the database failed it (the
        # service's metrics); called in the worker thread
        self.on_tx: Callable[[float, bool], None] = lambda seconds, failed: None

    @classmethod
    def open(cls, url: str) -> Store:
        if url.startswith("sqlite:///"):
            path = url[len("sqlite:///") :]
            _private_sqlite_files(path)

            def connect_sqlite() -> sqlite3.Connection:
                conn = sqlite3.connect(
                    path, isolation_level=None, check_same_thread=False, timeout=30
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
                return conn

            store = cls(SQLITE, connect_sqlite, workers=1)
        elif url.startswith(("postgresql://", "postgres://")):
            import psycopg

            def connect_pg() -> Any:
                return psycopg.connect(url, autocommit=True, connect_timeout=5)

            store = cls(POSTGRES, connect_pg, workers=16)
        else:
            raise ValueError(f"database url must be sqlite:///PATH or postgresql://...: {url!r}")
        store.migrate_sync()
        return store

    # --- plumbing ------------------------------------------------------------------------
    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _drop_conn(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    @contextlib.contextmanager
    def tx(self) -> Iterator[Any]:
        """A transaction in this worker thread; errors roll back and surface as StoreError.
        Timed for `on_tx`, a refusal of ours (NotFound, ...) counting as no failure."""
        started, failed = time.monotonic(), False
        try:
            with self._tx() as cur:
                yield cur
        except StoreError:
            failed = True
            raise
        finally:
            self.on_tx(time.monotonic() - started, failed)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Any]:
        try:
            conn = self._conn()
            cur = conn.cursor()
        except Exception as exc:  # the server is down or restarting: UNAVAILABLE, retry later
            self._drop_conn()
            raise StoreError(f"database unavailable: {exc}".splitlines()[0]) from exc
        try:
            cur.execute("BEGIN IMMEDIATE" if self.dialect is SQLITE else "BEGIN")
            yield cur
            cur.execute("COMMIT")
        except (NotFound, Conflict, ValueError):  # refusals of ours: nothing is written
            with contextlib.suppress(Exception):
                cur.execute("ROLLBACK")
            raise
        except Exception as exc:
            with contextlib.suppress(Exception):
                cur.execute("ROLLBACK")
            self._drop_conn()  # a broken connection (server restart) is not reused
            raise StoreError(f"database error: {exc}".splitlines()[0]) from exc

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    def q(self, text: str) -> str:
        return self.dialect.sql(text)

    def migrate_sync(self) -> None:
        with self.tx() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)"
            )
            cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            current = int(cur.fetchone()[0])
            for version, script in enumerate(_migrations(self.dialect.serial), start=1):
                if version <= current:
                    continue
                for statement in (s.strip() for s in script.split(";")):
                    if statement:
                        cur.execute(statement)
                cur.execute(
                    self.q("INSERT INTO schema_migrations (version) VALUES (?)"), (version,)
                )

    def close(self) -> None:
        def close_all() -> None:
            with self._lock:
                for conn in self._conns:
                    with contextlib.suppress(Exception):
                        conn.close()
                self._conns.clear()

        self._pool.submit(close_all).result()
        self._pool.shutdown(wait=True)

    # --- events --------------------------------------------------------------------------
    def add_event(
        self, cur: Any, node_id: str, actor: str, from_state: int, to_state: int, reason: str
    ) -> None:
        cur.execute(
            self.q(
                "INSERT INTO node_events (node_id, time, actor, from_state, to_state, "
                "reason) VALUES (?, ?, ?, ?, ?, ?)"
            ),
            (node_id, time.time(), actor, from_state, to_state, reason[:1000]),
        )

    def events_after(self, seq: int, limit: int = 500) -> list[tuple[Any, ...]]:
        with self.tx() as cur:
            cur.execute(
                self.q(
                    "SELECT seq, node_id, time, actor, from_state, to_state, reason "
                    "FROM node_events WHERE seq > ? ORDER BY seq LIMIT ?"
                ),
                (seq, limit),
            )
            return list(cur.fetchall())

    def node_events(self, node_id: str, limit: int) -> list[tuple[Any, ...]]:
        with self.tx() as cur:
            cur.execute(
                self.q(
                    "SELECT seq, node_id, time, actor, from_state, to_state, reason "
                    "FROM node_events WHERE node_id = ? ORDER BY seq DESC LIMIT ?"
                ),
                (node_id, limit),
            )
            return list(reversed(cur.fetchall()))

    # --- liveness ------------------------------------------------------------------------
    def write_liveness(self, rows: list[tuple[str, float, str]]) -> None:
        """One transaction for a batch of heartbeats (node, last_seen, phase)."""
        if not rows:
            return
        with self.tx() as cur:
            if self.dialect is POSTGRES:
                # one statement for the batch: executemany adapts and pipelines row by row in
                # Python, in a pool thread that holds the GIL the event loop needs (issue 20)
                cur.execute("SET LOCAL synchronous_commit = off")
                ids, seen, phases = (list(c) for c in zip(*rows, strict=True))
                cur.execute(
                    "INSERT INTO liveness (node_id, last_seen, phase, reachable) "
                    "SELECT n, s, p, 1 FROM unnest(%s::text[], %s::float8[], %s::text[]) "
                    "AS b (n, s, p) "
                    "ON CONFLICT (node_id) DO UPDATE SET last_seen = excluded.last_seen, "
                    "phase = excluded.phase",
                    (ids, seen, phases),
                )
                return
            cur.executemany(
                self.q(
                    "INSERT INTO liveness (node_id, last_seen, phase, reachable) "
                    "VALUES (?, ?, ?, 1) "
                    "ON CONFLICT (node_id) DO UPDATE SET last_seen = excluded.last_seen, "
                    "phase = excluded.phase"
                ),
                rows,
            )

    def sweep_reachability(self, deadline: float) -> list[tuple[str, bool]]:
        """Flip `reachable` for nodes that crossed the deadline either way; one query each
        way, and their events in batches of EVENT_BATCH: a fleet coming back after an
        outage crosses all at once, and an event written node by node (two statements
        each) held a pool thread, and the GIL the heartbeats need, for a second at 10,000
        nodes (issue 20)."""
        changed: list[tuple[str, bool]] = []
        with self.tx() as cur:
            for up, was, where, reason in (
                (False, 1, "last_seen < ?", "unreachable: missed heartbeats"),
                (True, 0, "last_seen >= ?", "reachable again"),
            ):
                cur.execute(
                    self.q(
                        f"UPDATE liveness SET reachable = {int(up)} WHERE reachable = {was} "
                        f"AND {where} RETURNING node_id"
                    ),
                    (deadline,),
                )
                ids = [str(r[0]) for r in cur.fetchall()]
                changed += [(node_id, up) for node_id in ids]
                now = time.time()
                for start in range(0, len(ids), EVENT_BATCH):
                    batch = ids[start : start + EVENT_BATCH]
                    cur.execute(
                        self.q(
                            "INSERT INTO node_events (node_id, time, actor, from_state, "
                            "to_state, reason) SELECT id, ?, 'system', state, state, ? "
                            f"FROM nodes WHERE id IN ({', '.join('?' for _ in batch)}) "
                            "ORDER BY id"
                        ),
                        (now, reason, *batch),
                    )
        return changed


TIMESTAMP = "google.protobuf.Timestamp"
EVENT_BATCH = 500  # node ids per statement: SQLite's limit on parameters is 32,766


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


M = TypeVar("M", bound=Message)


def message_from_row(cls: type[M], fields: Sequence[str], row: Sequence[Any]) -> M:
    """A protobuf message from a row whose columns are named, in order, by `fields`.

    A field of type Timestamp takes epoch seconds (0: unset); a bool takes 0/1; a
    field named "" drops its column. One mapping instead of a constructor per table.
    """
    msg = cls()
    for name, value in zip(fields, row, strict=True):
        if not name or value is None:
            continue
        field = msg.DESCRIPTOR.fields_by_name[name]
        if field.message_type is not None and field.message_type.full_name == TIMESTAMP:
            if value:
                getattr(msg, name).FromNanoseconds(int(value * 1e9))
        elif field.type == field.TYPE_BOOL:
            setattr(msg, name, bool(value))
        else:
            setattr(msg, name, value)
    return msg
