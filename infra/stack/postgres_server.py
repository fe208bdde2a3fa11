"""A throwaway PostgreSQL 15 cluster from the system binaries, for the local stack and tests.

PostgreSQL refuses to run as root, so when we are root the cluster belongs to the `postgres`
user and both `initdb` and the server run as that user. The switch happens inside the spawned
child (`Popen(user=...)`) rather than through `runuser`, because `runuser` changes credentials
itself, which clears the parent-death signal and leaves the server alive if we are killed.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
from pathlib import Path

import psycopg
from psycopg import sql

from infra.stack.ports import free_port
from infra.stack.process import ManagedProcess, ServerStartError, run_checked

POSTGRES_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
APP_ROLE = "orchestrator"
APP_DATABASE = "orchestrator"
_SUPERUSER = "postgres"
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresServer(ManagedProcess):
    """PostgreSQL on 127.0.0.1:`port` with trust auth on loopback, cluster in `<data_dir>/pgdata`.

    On every start it makes sure the `orchestrator` role and database exist, so the URL it
    hands out works against a fresh cluster and a restarted one alike.
    """

    # SIGTERM is PostgreSQL's "smart" shutdown, which waits for every client to disconnect;
    # SIGINT is the "fast" one that rolls back open transactions and exits promptly.
    stop_signal = signal.SIGINT

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        fsync: bool = True,
        bin_dir: Path = POSTGRES_BIN_DIR,
    ) -> None:
        super().__init__("postgres", data_dir)
        self.port = port or free_port()
        self.fsync = fsync
        self.bin_dir = bin_dir

    @property
    def cluster_dir(self) -> Path:
        """PGDATA."""
        return self.data_dir / "pgdata"

    @property
    def socket_dir(self) -> Path:
        """Unix socket directory, kept inside the data directory so clusters never collide."""
        return self.data_dir / "run"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the application database."""
        return self.url_for(APP_DATABASE)

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL of `database`, connecting as the application role."""
        return f"postgresql+psycopg://{APP_ROLE}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database owned by the application role and return its URL."""
        if not _DATABASE_NAME.match(name):
            raise ValueError(
                f"database name {name!r} must be lowercase letters, digits and underscores "
                "(at most 63, not starting with a digit)"
            )
        with self._admin_connection() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(APP_ROLE)
                )
            )
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop `name`, disconnecting whoever still uses it (test teardown)."""
        with self._admin_connection() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def _admin_connection(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=_SUPERUSER,
            dbname="postgres",
            autocommit=True,
            connect_timeout=2,
        )

    def _run_as(self) -> str | None:
        return _SUPERUSER if os.geteuid() == 0 else None

    def _binary(self, name: str) -> str:
        path = self.bin_dir / name
        if not path.is_file():
            raise FileNotFoundError(
                f"PostgreSQL binary {path} not found; install it with "
                "`apt-get install postgresql` (version 15)"
            )
        return str(path)

    def _prepare(self) -> None:
        initdb = self._binary("initdb")
        user = self._run_as()
        if user is not None:
            entry = pwd.getpwnam(user)
            _require_reachable(self.data_dir, entry.pw_uid, entry.pw_gid)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        if not (self.cluster_dir / "PG_VERSION").exists():
            argv = [
                initdb,
                "--pgdata", str(self.cluster_dir),
                "--username", _SUPERUSER,
                "--auth", "trust",
                "--encoding", "UTF8",
                "--locale", "C.UTF-8",
            ]  # fmt: skip
            if not self.fsync:
                argv.append("--no-sync")
            run_checked(argv, what="initdb", user=user)
        self.socket_dir.mkdir(exist_ok=True)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(self.socket_dir, entry.pw_uid, entry.pw_gid)

    def _command(self) -> list[str]:
        argv = [
            self._binary("postgres"),
            "-D", str(self.cluster_dir),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"port={self.port}",
            "-c", f"unix_socket_directories={self.socket_dir}",
            "-c", "max_connections=300",
        ]  # fmt: skip
        if not self.fsync:
            argv += [
                "-c", "fsync=off",
                "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off",
            ]  # fmt: skip
        return argv

    def _is_ready(self) -> bool:
        try:
            with self._admin_connection() as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def _on_ready(self) -> None:
        with self._admin_connection() as conn:
            role_exists = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)
            ).fetchone()
            if role_exists is None:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN CREATEDB").format(sql.Identifier(APP_ROLE))
                )
            database_exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (APP_DATABASE,)
            ).fetchone()
            if database_exists is None:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(APP_DATABASE), sql.Identifier(APP_ROLE)
                    )
                )


def _require_reachable(path: Path, uid: int, gid: int) -> None:
    """Fail early, and say how to fix it, when the postgres user cannot reach the data dir."""
    for ancestor in path.parents:
        st = ancestor.stat()
        if st.st_uid == uid:
            allowed = st.st_mode & 0o100
        elif st.st_gid == gid:
            allowed = st.st_mode & 0o010
        else:
            allowed = st.st_mode & 0o001
        if not allowed:
            raise ServerStartError(
                f"PostgreSQL runs as the postgres user, which cannot enter {ancestor} "
                f"(mode {st.st_mode & 0o777:o}) on the way to {path}; choose a data directory "
                f"the postgres user can reach, or allow it with `chmod o+x {ancestor}`"
            )
