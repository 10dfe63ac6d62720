"""A throwaway PostgreSQL server for the tests: Debian's `postgresql` binaries, a cluster in a temporary directory,
listening on 127.0.0.1 on a free port, stopped (and its directory removed) at the end of the session.

`scripts/test` installs Debian's package when it is missing; `SIGNALBOT_TEST_POSTGRES_URL` (a
`postgresql+asyncpg://` URL of a server the tests may create and drop databases on) uses an existing server
instead. As root the cluster runs as the `postgres` user, since PostgreSQL refuses to run as root.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ENV_URL = "SIGNALBOT_TEST_POSTGRES_URL"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (or the server would not start)."""


def find_bindir() -> Path:
    """The directory holding initdb and pg_ctl: $PG_BINDIR, Debian's /usr/lib/postgresql/N/bin (newest), or PATH."""
    candidates = [os.environ.get("PG_BINDIR", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's package "
        "('apt-get install postgresql', which scripts/test does as root), set PG_BINDIR, "
        f"or point {ENV_URL} at a server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """One running server. `url(db)` is the SQLAlchemy URL of database `db` on it."""

    bindir: Path
    root: Path
    port: int
    user: str = "signalbot"
    _run_as: str | None = field(default=None, repr=False)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """The libpq form (for asyncpg.connect, pg_dump, psql)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _cmd(self, *args: str) -> list[str]:
        return (["runuser", "-u", self._run_as, "--"] if self._run_as else []) + list(args)

    def _run(self, *args: str, timeout: float = 60) -> None:
        proc = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=timeout)
        if proc.returncode:
            raise PostgresUnavailable(f"{' '.join(args[:2])} failed: {(proc.stderr or proc.stdout).strip()[-800:]}")

    @classmethod
    def start(cls) -> Cluster:
        bindir = find_bindir()
        run_as = "postgres" if os.geteuid() == 0 else None
        root = Path(tempfile.mkdtemp(prefix="signalbot-pg-"))
        cluster = cls(bindir=bindir, root=root, port=_free_port(), _run_as=run_as)
        if run_as:
            pw = pwd.getpwnam(run_as)
            os.chown(root, pw.pw_uid, pw.pw_gid)
        try:
            cluster._run(str(bindir / "initdb"), "-D", str(cluster.data), "-U", cluster.user, "--auth=trust",
                         "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
            # a test server: no fsync (an OS crash could lose data; a killed server cannot), so creating a
            # database per test is cheap. synchronous_commit stays on: with it off, a server killed by the
            # outage drill loses commits it had acknowledged (rows the worker recorded SENT came back SENDING)
            with open(cluster.data / "postgresql.conf", "a") as conf:
                conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {cluster.port}\n"
                           f"unix_socket_directories = '{root}'\nfsync = off\n"
                           "full_page_writes = off\nmax_connections = 200\n")
            cluster._pg_ctl_start()
        except (PostgresUnavailable, OSError, subprocess.TimeoutExpired) as exc:
            log = root / "server.log"
            tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresUnavailable(f"{exc} {tail}".strip()) from exc
        return cluster

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except (PostgresUnavailable, subprocess.TimeoutExpired):
            pass
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def stop_server(self) -> None:
        """Stop the server as a crash would (`-m immediate`); its data stays for `start_server()`."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def start_server(self) -> None:
        """Start it again on the same port."""
        self._pg_ctl_start()

    def _pg_ctl_start(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-w", "-t", "60", "start", timeout=90)


@dataclass
class External:
    """A server the tests were pointed at ($SIGNALBOT_TEST_POSTGRES_URL); never stopped by them."""

    base: str

    def url(self, database: str = "postgres") -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.base).set(drivername="postgresql+asyncpg", database=database) \
            .render_as_string(hide_password=False)

    def dsn(self, database: str = "postgres") -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.base).set(drivername="postgresql", database=database) \
            .render_as_string(hide_password=False)

    def stop(self) -> None:
        pass


Server = Cluster | External


def server() -> Server:
    """The server for this test session: $SIGNALBOT_TEST_POSTGRES_URL's, or a throwaway cluster started here."""
    url = os.environ.get(ENV_URL)
    return External(url) if url else Cluster.start()


def _in_thread(coro_fn, *args):  # noqa: ANN001, ANN002, ANN202
    """Run an asyncpg coroutine on a loop of its own (callers may be inside a running loop)."""
    import asyncio
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_fn(*args))).result(timeout=60)


async def _admin(dsn: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(srv: Server, name: str) -> str:
    """A new empty database `name` on `srv`; its SQLAlchemy URL."""
    _in_thread(_admin, srv.dsn(), f'CREATE DATABASE "{name}" TEMPLATE template0')
    return srv.url(name)


def drop_database(srv: Server, name: str) -> None:
    _in_thread(_admin, srv.dsn(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
