"""A real, throwaway PostgreSQL server for tests (Debian's ``postgresql`` package).

``make test`` installs the package with apt-get when it is missing; nothing here skips: a
missing server is an error that says so. The server lives in a fresh temporary directory,
listens on 127.0.0.1 on a free port (its unix socket stays in that directory, never in
/var/run/postgresql) and is removed on exit::

    from postgres_support import postgres_server

    with postgres_server() as server:
        url = server.create_database("study")  # postgresql+psycopg://...@127.0.0.1:<port>/study

initdb refuses to run as root, so as root the server runs as the ``postgres`` user the
Debian package creates (the temporary directory is handed to it); as anyone else it runs as
the current user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# D2V_PG_BINDIR overrides where initdb / pg_ctl are looked for (another distribution's path)
BINDIR_ENV = "D2V_PG_BINDIR"
INSTALL_HINT = (
    "run `make test` (it installs Debian's postgresql package with apt-get), or "
    "`apt-get install postgresql`, or set D2V_PG_BINDIR to the folder holding initdb and pg_ctl"
)
USER = "d2v"  # the server's superuser (password authentication over TCP)
START_TIMEOUT_S = 120  # generous: the machine is shared


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are missing or the server did not start."""


def find_bindir() -> Path:
    """The folder with initdb and pg_ctl: D2V_PG_BINDIR, else Debian's newest
    /usr/lib/postgresql/<version>/bin, else the one on PATH."""
    candidates = []
    if os.environ.get(BINDIR_ENV):
        candidates.append(Path(os.environ[BINDIR_ENV]))
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    versions.sort(key=lambda p: [int(x) for x in re.findall(r"\d+", p)], reverse=True)
    candidates += [Path(p) for p in versions]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if all(os.access(folder / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return folder
    looked = ", ".join(str(c) for c in candidates) or "/usr/lib/postgresql/*/bin and PATH"
    raise PostgresUnavailable(f"PostgreSQL initdb/pg_ctl not found (looked in {looked}): "
                              f"{INSTALL_HINT}")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    """A running server: its port, superuser password and data folder."""

    port: int
    password: str
    root: Path

    def url(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` on this server (psycopg 3 driver)."""
        return f"postgresql+psycopg://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"database name {name!r}: use lower-case letters, digits and _")
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=USER, password=self.password,
            dbname="postgres", autocommit=True, connect_timeout=30,
        ) as conn:  # fmt: skip
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def _as_server_user(argv: list[str]) -> list[str]:
    """Run ``argv`` as the postgres user when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return argv
    try:
        pwd.getpwnam("postgres")
    except KeyError as err:
        raise PostgresUnavailable(
            f"running as root but there is no `postgres` user to run the server as: {INSTALL_HINT}"
        ) from err
    return ["runuser", "-u", "postgres", "--", *argv]


def _run(argv: list[str], what: str, log: Path | None = None) -> None:
    proc = subprocess.run(_as_server_user(argv), capture_output=True, text=True,
                          timeout=START_TIMEOUT_S)  # fmt: skip
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:] if log and log.is_file() else ""
        raise PostgresUnavailable(
            f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}{tail}"
        )


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a private server (initdb in a temporary folder), yield it, stop it, delete it."""
    bindir = find_bindir()
    root = Path(tempfile.mkdtemp(prefix="d2v-postgres-"))
    started = False
    try:
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(root, entry.pw_uid, entry.pw_gid)
        password = secrets.token_hex(12)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        data, log = root / "data", root / "server.log"
        _run(
            [str(bindir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={pwfile}",
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
             "--locale=C", "--no-sync"],
            "initdb",
        )  # fmt: skip
        pwfile.unlink()
        for attempt in range(3):  # another process may grab the free port before we bind it
            port = _free_port()
            # a throwaway server: durability settings off, so the tests stay fast
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                _run(
                    [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w",
                     "-t", str(START_TIMEOUT_S), "-o", options, "start"],
                    "pg_ctl start", log,
                )  # fmt: skip
                started = True
                break
            except PostgresUnavailable:
                if attempt == 2:
                    raise
        yield PostgresServer(port=port, password=password, root=root)
    finally:
        if started:
            for mode in ("fast", "immediate"):  # immediate only if a fast stop fails
                try:
                    _run(
                        [str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", mode, "-w",
                         "-t", str(START_TIMEOUT_S), "stop"],
                        "pg_ctl stop",
                    )  # fmt: skip
                    break
                except (PostgresUnavailable, subprocess.TimeoutExpired):
                    continue
        shutil.rmtree(root, ignore_errors=True)
