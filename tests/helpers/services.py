"""Real services for the several-machines tests: a throwaway PostgreSQL cluster and an ``mlflow server``, both on
127.0.0.1 at free ports, in a temp folder, stopped after. ``.ci/run`` installs PostgreSQL (Debian's package) when
it is missing; without it these tests skip and say how to get it."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PASSWORD = "pw-Zq81-never-logged"  # grepped for in every log, file and database dump


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian keeps them out of PATH)."""
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1:]), None)
    return Path(os.path.realpath(found)).parent if found else None


class Postgres:
    """A cluster owned by the ``postgres`` user when run as root (the server refuses root), password auth on TCP."""

    def __init__(self):
        # its own temp folder: the postgres user cannot enter pytest's (root's, mode 700)
        self.bin, self.root, self.port = pg_bin(), Path(tempfile.mkdtemp(prefix="masklab-pg-")), free_port()
        self.data = self.root / "data"
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self.as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> Postgres:
        self.root.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / "pw"
        pwfile.write_text("superpw\n")
        if self.as_user:
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", f"--pwfile={pwfile}",
                  "--auth-local=trust", "--auth-host=scram-sha-256")  # fmt: skip
        self.serve()
        self.sql(f"CREATE ROLE ml LOGIN PASSWORD '{PASSWORD}'")
        return self

    def serve(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "start"
        )

    def down_for(self, seconds: float) -> None:
        """The server stopped for ``seconds``, then started again (a restart, a network cut): calls fail meanwhile."""
        self.halt()
        time.sleep(seconds)
        self.serve()

    def halt(self) -> None:
        """The server stopped (its clients' connections closed) until :meth:`serve`."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def sql(self, query: str, db: str = "postgres") -> str:
        cmd = ["psql", "-h", str(self.root), "-p", str(self.port), "-U", "postgres", "-d", db, "-tAc", query]
        return subprocess.run([*self.as_user, *cmd], check=True, capture_output=True, text=True).stdout

    def database(self, name: str) -> str:
        """A new empty database owned by ``ml``: its URL, password included."""
        self.sql(f"CREATE DATABASE {name} OWNER ml")
        return f"postgresql://ml:{PASSWORD}@127.0.0.1:{self.port}/{name}"

    def dump(self, name: str) -> str:
        cmd = [str(self.bin / "pg_dump"), "-h", str(self.root), "-p", str(self.port), "-U", "postgres", name]
        return subprocess.run([*self.as_user, *cmd], check=True, capture_output=True, text=True).stdout

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


class MlflowServer:
    """``mlflow server`` on a PostgreSQL database, artifacts served from a temp folder."""

    def __init__(self, backend: str, root: Path):
        self.port, self.root = free_port(), Path(root)
        self.uri = f"http://127.0.0.1:{self.port}"
        where = [
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--artifacts-destination",
            str(self.root / "artifacts"),
        ]
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--workers", "1", *where]
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = self.root / "server.log"
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout_s: float = 120) -> MlflowServer:
        end = time.time() + timeout_s
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"mlflow server not up after {timeout_s} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        os.killpg(self.proc.pid, 15)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # its gunicorn/uvicorn workers too: the whole group
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=30)


PROXY_SERVER = """
import os, sys, optuna
storage = optuna.storages.get_storage(os.environ["OPTUNA_STORAGE"])  # the README's way: Optuna's trial cache
asked, count = storage.create_new_trial, sys.argv[2]
def create_new_trial(*args, **kwargs):  # counted: the workers' trials came through this proxy
    with open(count, "a") as f:
        f.write("+")
    return asked(*args, **kwargs)
storage.create_new_trial = create_new_trial
optuna.storages.run_grpc_proxy_server(storage, host="127.0.0.1", port=int(sys.argv[1]))
"""


class StorageProxy:
    """Optuna's gRPC storage proxy in front of a database (``run_grpc_proxy_server``), counting created trials."""

    def __init__(self, url: str, root: Path):
        self.url, self.port, self.count = url, free_port(), Path(root) / "proxy-trials"
        self.address = f"127.0.0.1:{self.port}"
        self._serve()

    def _serve(self) -> None:
        env = {**os.environ, "OPTUNA_STORAGE": self.url}  # not on the command line: ps shows that to everyone
        cmd = [sys.executable, "-c", PROXY_SERVER, str(self.port), str(self.count)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def down_for(self, seconds: float) -> None:
        """The proxy stopped for ``seconds``, then started again on its port (a restart): calls fail meanwhile."""
        self.stop()
        time.sleep(seconds)
        self._serve()

    def wait(self, timeout_s: float = 60) -> StorageProxy:
        """Until a worker would get through to it (the server imports Optuna first)."""
        from masklab import MasklabError
        from masklab.sweep.storage import open_storage

        end = time.time() + timeout_s
        while True:
            try:
                open_storage(self.url, self.address)
                return self
            except MasklabError:
                if time.time() > end or self.proc.poll() is not None:
                    raise

    def trials_created(self) -> int:
        return len(self.count.read_text()) if self.count.is_file() else 0

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
