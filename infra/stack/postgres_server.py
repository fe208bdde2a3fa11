"""A throwaway PostgreSQL 15 cluster from the system binaries, for the local stack and tests.

PostgreSQL refuses to run as root, so when we are root the cluster belongs to the `postgres`
user and both `initdb` and the server run as that user. The switch happens inside the spawned
child (`Popen(user=...)`) rather than through `runuser`, because `runuser` changes credentials
itself, which clears the parent-death signal and leaves the server alive if we are killed.

Nothing is trusted: every connection, over TCP or the socket, authenticates with SCRAM-SHA-256.
The superuser's password is generated once, at `initdb`, and kept in `<data_dir>/superuser.password`
(0600); the application role gets a fresh password at every start, so a URL handed out by an
earlier run stops working. The URL with the password reaches processes through their private
credentials file (see `infra/stack/credentials.py`), never through argv or the environment.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import signal
from pathlib import Path

import psycopg
from psycopg import sql

from infra.stack.credentials import write_private
from infra.stack.ports import free_port
from infra.stack.process import ManagedProcess, ServerStartError, run_checked

POSTGRES_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
APP_ROLE = "orchestrator"
APP_DATABASE = "orchestrator"
_SUPERUSER = "postgres"
_SUPERUSER_PASSWORD_FILE = "superuser.password"  # noqa: S105 -- a file name
_AUTH_METHOD = "scram-sha-256"
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresServer(ManagedProcess):
    """PostgreSQL on 127.0.0.1:`port` with password (SCRAM) auth, cluster in `<data_dir>/pgdata`.

    On every start it makes sure the `orchestrator` role and database exist and gives the role
    a new password, so the URL it hands out works against a fresh cluster and a restarted one
    alike, and only until the next start.
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
        self._app_password = secrets.token_urlsafe(24)

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

    @property
    def display_url(self) -> str:
        """The application URL without its password, for tables and messages."""
        return f"postgresql+psycopg://{APP_ROLE}@127.0.0.1:{self.port}/{APP_DATABASE}"

    @property
    def superuser_password_file(self) -> Path:
        """Where the superuser's password is kept (0600), written at `initdb`."""
        return self.data_dir / _SUPERUSER_PASSWORD_FILE

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL of `database`, connecting as the application role with its password."""
        return (
            f"postgresql+psycopg://{APP_ROLE}:{self._app_password}@127.0.0.1:{self.port}/{database}"
        )

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create a database owned by the application role and return its URL: empty, or a
        copy of `template` (a database nobody is connected to)."""
        if not _DATABASE_NAME.match(name):
            raise ValueError(
                f"database name {name!r} must be lowercase letters, digits and underscores "
                "(at most 63, not starting with a digit)"
            )
        statement = sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(APP_ROLE)
        )
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with self._admin_connection() as conn:
            conn.execute(statement)
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
            password=self._superuser_password(),
            dbname="postgres",
            autocommit=True,
            connect_timeout=2,
        )

    def _superuser_password(self) -> str:
        try:
            return self.superuser_password_file.read_text().strip()
        except FileNotFoundError:
            raise ServerStartError(
                f"{self.superuser_password_file} is missing, so the cluster in {self.cluster_dir} "
                "cannot be administered (a cluster made before password authentication, with "
                "trust); remove that cluster's directory to create a new one"
            ) from None

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
            self._initdb(initdb, user)
        self._remove_stale_lock()
        self.socket_dir.mkdir(exist_ok=True)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(self.socket_dir, entry.pw_uid, entry.pw_gid)

    def _remove_stale_lock(self) -> None:
        """Delete the lock files of a killed server whose pid another process has now.

        PostgreSQL refuses to start while the pid in `postmaster.pid` (or in its socket's
        `.lock`) is alive and its user's, and after a crash (the stack SIGKILLed) that pid may
        be another process of the `postgres` user by then, a backend of another cluster: with
        `pid_max` at 32768 a busy host wraps around in minutes (a restart failed that way once).
        A lock holds only while its process is a postgres serving this very data directory.
        """
        locks = [self.cluster_dir / "postmaster.pid", *self.socket_dir.glob(".s.PGSQL.*.lock")]
        for lock in locks:
            try:
                pid = int(lock.read_text().split("\n", 1)[0])
            except (FileNotFoundError, ValueError):
                continue
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                argv = []
            serving_here = os.fsencode(str(self.cluster_dir)) in argv
            if argv and Path(os.fsdecode(argv[0])).name == "postgres" and serving_here:
                continue  # a live postmaster of this cluster: postgres refuses, as it must
            lock.unlink(missing_ok=True)

    def _initdb(self, initdb: str, user: str | None) -> None:
        """A new cluster whose superuser has a generated password and where no one is trusted."""
        password = secrets.token_urlsafe(24)
        write_private(self.superuser_password_file, password + "\n")
        # initdb reads the password from a file (never argv); it runs as `user`, who must read it.
        pwfile = self.data_dir / ".initdb-password"
        write_private(pwfile, password + "\n")
        try:
            if user is not None:
                entry = pwd.getpwnam(user)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            argv = [
                initdb,
                "--pgdata", str(self.cluster_dir),
                "--username", _SUPERUSER,
                "--pwfile", str(pwfile),
                "--auth-host", _AUTH_METHOD,
                "--auth-local", _AUTH_METHOD,
                "--encoding", "UTF8",
                "--locale", "C.UTF-8",
            ]  # fmt: skip
            if not self.fsync:
                argv.append("--no-sync")
            run_checked(argv, what="initdb", user=user)
        finally:
            pwfile.unlink(missing_ok=True)

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
            # A new password per start: URLs handed out by an earlier run stop working.
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(APP_ROLE), sql.Literal(self._app_password)
                )
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
