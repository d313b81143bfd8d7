"""A throwaway PostgreSQL server for the tests that need one: a new cluster from Debian's
`postgresql` package in a temporary folder, listening on a Unix socket there only, removed when
stopped. initdb and pg_ctl refuse to run as root, so as root they run as the `postgres` user."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


class PostgresServer:
    def __init__(self) -> None:
        bin_dir = binaries()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian's postgresql package)")
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="sam3web-pg-"))
        self.data = self.root / "data"
        self.user = "postgres" if os.geteuid() == 0 else ""
        if self.user:
            shutil.chown(self.root, user=self.user)
        self.url = f"postgres://postgres@/sam3web?host={self.root}"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=120)

    def start(self) -> PostgresServer:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust")
        options = f"-c listen_addresses='' -c unix_socket_directories={self.root} -c fsync=off"
        log = str(self.root / "server.log")  # not our pipes: the server outlives pg_ctl
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", options, "-w", "start"
        )
        self._run(str(self.bin / "createdb"), "-h", str(self.root), "-U", "postgres", "sam3web")
        return self

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def migrate(self, env: Mapping[str, str], cwd: Path) -> None:
        """Make sam3web's tables in this server's database (``env`` names it in DATABASE_URL)."""
        done = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=cwd,
            env={**env, "DATABASE_URL": self.url},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr


def main(argv: list[str]) -> int:
    """``python -m tests.postgres_server COMMAND...``: run COMMAND with DATABASE_URL naming a
    throwaway PostgreSQL server started for it, and stopped (its folder removed) afterwards,
    however COMMAND ends."""
    if not argv:
        print("usage: python -m tests.postgres_server COMMAND [ARG...]", file=sys.stderr)
        return 2
    server = PostgresServer().start()
    try:
        command = subprocess.Popen(argv, env={**os.environ, "DATABASE_URL": server.url})
        while True:
            try:
                return command.wait()
            except KeyboardInterrupt:
                # Ctrl+C reached COMMAND too (the same process group): let it end as it ends
                # (pytest prints its summary), then stop the server.
                continue
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
