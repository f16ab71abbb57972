"""The study's storage: the one truth a sweep's workers share, and the one module that calls Optuna's storage.

Workers share the storage and nothing else (ASHA adds a checkpoint folder); README: *Sweeps on several machines*.
The budget and trial numbers: a worker counts and asks while it holds the storage's lock (a PostgreSQL advisory
lock, a file lock beside a SQLite or journal file), as it creates the tables, study and MLflow parent run.
``hydra.sweeper.proxy`` sends Optuna's calls, not the lock, through a ``GrpcStorageProxy``. Liveness: a trial is
created with its owner in one write, its worker's thread beats every ``heartbeat_s``, and any live worker fails a
RUNNING trial whose owner on its own host is gone, whose beat is older than ``stale_after_s`` (another host: clocks
in sync, NTP) or that has no owner (not a masklab worker's).

Attributes kept. Study: ``masklab_pruner`` (trials rebuild their pruner and signal from it), ``masklab_uid``,
``mlflow_parent_run_id``, ``masklab_sessions``, ``masklab_data`` {digest, folder, host} (the prepared data every
worker must have), ``masklab_checkpoints`` {token, host, folder} (a token in ``checkpoint_dir``, seen by every worker).
Trial: ``masklab_owner`` {host, pid, start, boot}, ``masklab_heartbeat``, ``fixed``, ``same_as``, ``note``, ``metrics``,
``mlflow_run_id``, ``fail_reason``, ``prune_reason``, ``asha_root``, ``asha_rung``, ``asha_paused``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import sys
import threading
import time
import uuid
import warnings
import zlib
from datetime import datetime
from pathlib import Path

import optuna
import psutil
from filelock import FileLock
from optuna.trial import FrozenTrial, TrialState

from masklab import MasklabError, causes, first_line
from masklab.errors import raised_in
from masklab.paths import hostname, read_text, write_text
from masklab.secrets import mask, reveal

log = logging.getLogger("masklab.sweep")
WORKER_DIED = "worker died (killed or crashed) mid-trial"
NO_OWNER = "it has no owner (not asked for by a masklab worker)"
INTERRUPTED = "interrupted mid-trial (Ctrl-C or SIGTERM)"
_LOCK_KEY = zlib.crc32(b"masklab.sweep")  # one advisory lock per database: asks take milliseconds
# what Optuna imports lazily as it opens a database (0.35 s) or asks through a proxy: imported before the lock
DB_IMPORTS = ("alembic.command", "alembic.config", "alembic.migration", "alembic.script", "optuna.storages._rdb.models")
PROXY_IMPORTS = ("optuna.storages._grpc.servicer",)
PROXY_WAIT_S = 10.0  # how long a worker waits for a gRPC storage proxy to answer at start
PROXY_DB = "An exception is raised during the commit"  # Optuna's StorageInternalError, as a proxy passes it on
SILENCE_S = 10.0  # a database that acknowledges nothing for this long is taken as cut off (Store: heartbeat_s)
_PROC = Path("/proc/self/stat").exists()  # Linux: a process's start in clock ticks since boot
_BOOT = Path("/proc/sys/kernel/random/boot_id")  # Linux: one per boot (a pid and start may recur after a reboot)
_BOOT_ID = _BOOT.read_text().strip() if _BOOT.exists() else None
_OPENED: dict[tuple, optuna.storages.BaseStorage] = {}
_SILENT: dict[str, tuple[float, float]] = {}  # storage -> (first, last) monotonic s it did not answer


def scheme(spec: str) -> str:
    return spec.split(":", 1)[0].split("+", 1)[0]


def shared(spec: str) -> bool:
    """A storage workers on several machines reach (a database server, not a file)."""
    return scheme(spec) == "postgresql"


def open_storage(spec: str, proxy: str | None = None, silence_s: float = SILENCE_S) -> optuna.storages.BaseStorage:
    """Optuna's storage of ``spec``, or of the gRPC ``proxy`` (``host:port``) that serves ``spec``'s database."""
    spec = reveal(spec)
    if "://" in spec and scheme(spec) not in ("sqlite", "postgresql"):  # no lock we can take there (see lock)
        raise MasklabError(
            f"hydra.sweeper.storage={mask(spec)}: {scheme(spec)} is not supported: give postgresql://... (several "
            "machines: the budget's lock is PostgreSQL's advisory lock), sqlite:///<file> or journal:<file>"
        )
    if proxy:
        return _proxy(spec, str(proxy))
    if spec.startswith("journal:"):
        path = Path(spec[len("journal:") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = optuna.storages.journal.JournalFileOpenLock(str(path))
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path), lock_obj=lock))
    for attempt in (1, 2):
        try:
            engine_kwargs = {"pool_pre_ping": True, **_bounds(spec, silence_s)}
            storage = optuna.storages.RDBStorage(spec, engine_kwargs=engine_kwargs)
            _server_bounds(storage.engine, spec, silence_s)
            return storage
        except Exception as exc:  # sqlalchemy: unparsable URL, missing driver, unreachable server
            # a reader outside our lock (a dashboard, a script) stamps Optuna's alembic table while we create it
            if attempt == 1 and "UniqueViolation" in type(exc).__name__ + str(exc):
                time.sleep(1.0)
                continue
            raise _cannot_open(spec, exc) from None


def _process_storage(spec: str, proxy: str | None, silence_s: float = SILENCE_S) -> optuna.storages.BaseStorage:
    """One storage for a worker and the trials it runs in its process: the trials' connections are the worker's."""
    key = (reveal(spec), proxy, os.getpid(), os.getcwd())  # a file's path may be relative; a fork reopens
    if key not in _OPENED:
        _OPENED[key] = open_storage(key[0], proxy, silence_s)
    return _OPENED[key]


def _bounds(spec: str, silence_s: float) -> dict:
    """libpq's limits on a silent network (a cut, not a refusal): without them a call waits out TCP's ~15 min."""
    if not shared(spec):
        return {}
    return {"connect_args": {"connect_timeout": max(1, round(silence_s)), "keepalives": 1, **_tcp(silence_s)}}


def _tcp(silence_s: float) -> dict:
    """TCP's bounds on a silent peer, by libpq's names (the server's settings: the same, ``tcp_``-prefixed)."""
    s = max(1, round(silence_s))
    keepalives = {"keepalives_idle": s, "keepalives_interval": max(1, s // 3), "keepalives_count": 3}
    return {**keepalives, "tcp_user_timeout": s * 1000}


def _proxy(spec: str, address: str) -> optuna.storages.BaseStorage:
    """Optuna's ``GrpcStorageProxy`` at ``address``, checked now (a typo would otherwise fail every later call)."""
    if not shared(spec):  # the budget's lock is the database's: workers must reach it too
        raise MasklabError(f"hydra.sweeper.proxy={address} needs hydra.sweeper.storage=<the database it serves>")
    host, _, port = address.rpartition(":")
    try:
        with warnings.catch_warnings():  # "experimental" on every worker's console: the user chose it
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.GrpcStorageProxy(host=host or "localhost", port=int(port))
        storage.wait_server_ready(timeout=PROXY_WAIT_S)
    except Exception as exc:  # grpcio missing, a port that is not a number, nothing answering
        hint = ' (pip install -e ".[distributed]")' if isinstance(exc, ImportError) else ""
        raise MasklabError(
            f"hydra.sweeper.proxy={address}: no Optuna storage proxy answers there within {PROXY_WAIT_S:g} s "
            f"({first_line(exc)}){hint}; start one beside the database (README: Sweeps on several machines)"
        ) from None
    return storage


def unreachable(exc: BaseException) -> BaseException | None:
    """The error in ``exc``'s causes saying the database, or the gRPC proxy before it, does not answer (down,
    restarting, cut off), or None."""
    sa, grpc = sys.modules.get("sqlalchemy.exc"), sys.modules.get("grpc")  # None: never opened
    for e in causes(exc, 8):
        if sa and isinstance(e, (sa.OperationalError, sa.InterfaceError)):
            return None if raised_in(e, "mlflow") else e  # MLflow's database is not the study's
        # the proxy itself, or its database: the proxy passes on Optuna's words for a SQLAlchemy error, no more
        if grpc and isinstance(e, grpc.RpcError) and (e.code() == grpc.StatusCode.UNAVAILABLE or PROXY_DB in str(e)):
            return e
    return None


def patiently(call, spec: str, wait_s: float, every_s: float = SILENCE_S):
    """``call()``, again every ``every_s`` while the database does not answer (a restart, a network cut), for up to
    ``wait_s`` since this process found it silent (a trial's wait, then its worker's, count as one); then one line.
    Other errors raise at once."""
    key, cut = mask(spec), None
    while True:
        try:
            result = call()
        except Exception as exc:
            if (new := unreachable(exc)) is None:
                raise
            now = time.monotonic()
            first, last = _SILENT.get(key, (now, now))
            first = first if now - last < 2 * every_s + 5 else now  # else what it saw was an earlier outage
            _SILENT[key] = (first, now)
            if (waited := now - first) >= wait_s:
                raise MasklabError(
                    f"hydra.sweeper.storage={mask(spec)}: the database has not answered for {waited:.0f} s "
                    f"({mask(first_line(new))}); the study is kept there: run the same command once it is back"
                ) from None
            if cut is None:
                log.warning("the study's database does not answer (%s): trying again every %g s for up to %g s",
                            mask(first_line(new)), every_s, wait_s)  # fmt: skip
            cut = new
            time.sleep(every_s)
            continue
        _SILENT.pop(key, None)
        if cut is not None:
            log.info("the study's database answers again")
        return result


def _cannot_open(spec: str, exc: Exception) -> MasklabError:
    first = first_line(exc)
    hint = ' (pip install -e ".[distributed]")' if "import" in first.lower() else ""
    return MasklabError(
        f"hydra.sweeper.storage={mask(spec)}: Optuna cannot open it ({mask(first)}){hint}; give journal:<file> "
        "or a database URL such as sqlite:///optuna.db or postgresql://user@host/db (password: see README)"
    )


@contextlib.contextmanager
def lock(spec: str, sweep_dir: Path, silence_s: float = SILENCE_S):
    """The storage's lock: held while counting and asking, creating the study or the MLflow parent run."""
    spec = reveal(spec)
    if shared(spec):
        from sqlalchemy import text  # 0.2 s: only where a database is

        try:
            conn = _engine(spec, silence_s).connect()
        except Exception as exc:
            raise _cannot_open(spec, exc) from exc  # its cause: a database that went away (unreachable)
        with conn:  # a dead process's connection closes, and the server frees its lock
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
                conn.commit()
        return
    # not "<journal>.lock": that name is Optuna's own lock of the journal file
    local = spec[len("journal:") :] if spec.startswith("journal:") else spec.removeprefix("sqlite:///")
    path = Path(f"{local}.masklab-lock") if local and local != spec else Path(sweep_dir) / "optuna.masklab-lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path), timeout=600):
        yield


@functools.cache
def _engine(spec: str, silence_s: float):
    """One small connection pool per database for the lock (a new connection costs a password handshake)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(spec, pool_size=1, max_overflow=1, pool_pre_ping=True, **_bounds(spec, silence_s))
    return _server_bounds(engine, spec, silence_s)


def _server_bounds(engine, spec: str, silence_s: float):
    """``engine``, whose connections have the server drop them after ``silence_s`` without an answer: a worker cut
    off while it holds the lock or a trial's row (Optuna's calls lock it) loses it in seconds, not the OS's 2 h."""
    import sqlalchemy

    def bound(dbapi, _record) -> None:
        with contextlib.closing(dbapi.cursor()) as cursor:  # a cursor: any DB-API driver (psycopg 2 or 3)
            for name, value in _tcp(silence_s).items():
                cursor.execute(f"SET tcp_{name.removeprefix('tcp_')} = {value}")
        dbapi.commit()  # a SET rolls back with its transaction

    if shared(spec):
        sqlalchemy.event.listen(engine, "connect", bound)
        engine.dispose()  # a connection made before (Optuna's table checks) would go without
    return engine


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started, in s since boot where /proc says (a step of the wall clock, by NTP or a VM's
    resume, leaves it as it was: psutil's epoch time moves with it), else psutil's; None: no such process."""
    if _PROC:
        try:
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class Store:
    """One worker's handle on the study: ask under the lock, tell, attributes, liveness."""

    def __init__(self, spec: str, sweep_dir: Path, stale_after_s: float, heartbeat_s: float = SILENCE_S, on_dead=None,
                 proxy=None, **study_kwargs):  # fmt: skip
        self.spec, self.sweep_dir, self.stale_after_s = spec, Path(sweep_dir), float(stale_after_s)
        self.heartbeat_s = float(heartbeat_s)  # how often it beats, and how long a silent database may take
        self.on_dead = on_dead or (lambda trial, reason: None)  # e.g. end the trial's MLflow run
        if proxy:  # its server made the tables: opening it (gRPC's import, 0.25 s) need not hold the lock
            _process_storage(spec, proxy)
        logging.getLogger("alembic").setLevel(logging.WARNING)  # its "setup plugin ..." lines as it is imported
        for module in PROXY_IMPORTS if proxy else DB_IMPORTS if "://" in spec else ():
            with contextlib.suppress(ImportError):  # only a speed-up: another Optuna's modules (tests name them)
                importlib.import_module(module)
        with self.lock():  # PostgreSQL: workers creating the tables together collide (UniqueViolation)
            storage = _process_storage(spec, proxy, self.heartbeat_s)
            self.study = optuna.create_study(storage=storage, load_if_exists=True, **study_kwargs)
        self.current: int | None = None  # the id of this worker's RUNNING trial

    def lock(self):
        return lock(self.spec, self.sweep_dir, self.heartbeat_s)

    def new_session(self) -> None:
        """Count this worker's session; after the first, reseed the sampler: a seeded sampler draws the same
        sequence in every process (a resumed study re-proposed trial 0's parameters, two workers the same ones)."""
        session = int(self.study.user_attrs.get("masklab_sessions", 0))
        self.study.set_user_attr("masklab_sessions", session + 1)
        if session:
            self.study.sampler.reseed_rng()

    def same_data(self, digest: str | None, folder: str) -> None:
        """Keep the study's data (``digest`` of ``folder``) at its first session; refuse a worker with other data."""
        known = self.study.user_attrs.get("masklab_data")
        if digest is None or (known or {}).get("digest") == digest:
            return
        if known is None:
            self.study.set_user_attr("masklab_data", {"digest": digest, "folder": folder, "host": hostname()})
            return
        raise MasklabError(
            f"study {self.study.study_name!r} trains on other data: {folder} here (annotations {digest}) is not the "
            f"study's ({known['digest']}: {known['folder']} on {known['host']}); copy the study's data to {folder}, so "
            "every trial trains on the same data, or start another study (hydra.sweeper.study_name=<new name>)"
        )

    def same_checkpoints(self, folder: str | None) -> None:
        """Keep a token where the study's checkpoints go; refuse a worker of another host that does not see it
        there (a folder that is not shared: no other worker could resume or evaluate its trials)."""
        if not folder:
            return
        key, marker = "hydra.sweeper.checkpoint_dir", f"{folder}/{self.study.study_name}/.masklab-study"
        known, seen = self.study.user_attrs.get("masklab_checkpoints"), read_text(marker, key)
        if known and seen == known["token"]:
            return
        if known and known["host"] != hostname():
            here = "another study's" if seen else "missing"
            raise MasklabError(
                f"{key}={folder}: this machine does not see the study's checkpoints there: {known['host']} keeps them "
                f"in {known['folder']}, and {marker} here is {here}; "
                "give a folder every machine mounts, or an fsspec URL (s3://...), so that any worker can resume and "
                "evaluate any trial"
            )
        token = known["token"] if known else uuid.uuid4().hex  # on its own host: the folder was emptied or changed
        write_text(marker, token, key)
        self.study.set_user_attr("masklab_checkpoints", {"token": token, "host": hostname(), "folder": folder})

    def patiently(self, call):
        return patiently(call, self.spec, self.stale_after_s, self.heartbeat_s)

    def trials(self, *states: TrialState) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states or None)

    def frozen(self, trial: optuna.Trial | int) -> FrozenTrial:
        """The trial (or trial id) as the storage has it now (what its job wrote)."""
        return self.study._storage.get_trial(trial if isinstance(trial, int) else trial._trial_id)

    def ask(self, params: dict | None = None, dists: dict | None = None, **attrs) -> int:
        """The id of a new RUNNING trial owned by this worker, created with its owner and ``attrs`` in one write
        (``params`` of ``dists``: a promoted configuration's values); :meth:`trial` makes it a trial after the lock."""
        own = {"host": hostname(), "pid": os.getpid(), "start": _process_start(os.getpid()), "boot": _BOOT_ID}
        template = FrozenTrial(
            number=-1, state=TrialState.RUNNING, value=None, datetime_start=datetime.now(), datetime_complete=None,
            params=dict(params or {}), distributions={k: (dists or {})[k] for k in params or {}},
            user_attrs={"masklab_owner": own, **attrs}, system_attrs={}, intermediate_values={}, trial_id=-1,
        )  # fmt: skip
        self.current = self.study._storage.create_new_trial(self.study._study_id, template_trial=template)
        return self.current  # heartbeat counts from its start until the first beat

    def trial(self, trial_id: int, dists: dict) -> optuna.Trial:
        """Trial ``trial_id`` with its parameters drawn (as ``study.ask(dists)`` does), outside the lock: reading
        the trial back and the sampler's reading of the study need not hold up other workers."""
        trial = optuna.Trial(self.study, trial_id)
        for name, dist in dists.items():
            trial._suggest(name, dist)  # a promotion's given parameters stay as they are
        return trial

    def tell(self, trial: optuna.Trial, values=None, state: TrialState | None = None, **attrs) -> None:
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        self.study.tell(trial, values, state=state)
        self.current = None

    def trial_id(self, trial: optuna.Trial) -> int:
        return trial._trial_id  # how a job finds its trial (trial_of)

    # ---- liveness ----------------------------------------------------------------------------------
    def dead(self, t: FrozenTrial) -> str | None:
        """Why RUNNING trial ``t``'s worker is gone, or None while it may be alive."""
        own, beat = t.user_attrs.get("masklab_owner"), t.user_attrs.get("masklab_heartbeat")
        if own is None:  # masklab's workers create trials with their owner, in one write
            return NO_OWNER
        if own["host"] == hostname():  # the same process: its pid, its start since boot, this boot
            start = _process_start(int(own["pid"]))
            same = start is not None and abs(start - (own.get("start") or start)) <= 1
            return None if same and own.get("boot", _BOOT_ID) == _BOOT_ID else WORKER_DIED
        beat = beat or (t.datetime_start.timestamp() if t.datetime_start else time.time())
        return WORKER_DIED if time.time() - float(beat) > self.stale_after_s else None

    def fail_dead(self) -> list[FrozenTrial]:
        """Fail the RUNNING trials whose worker is gone; return the trials as they are then."""
        trials, failed = self.trials(), False
        for t in trials:
            if t.state != TrialState.RUNNING or (reason := self.dead(t)) is None:
                continue
            failed = True
            with contextlib.suppress(Exception):  # MLflow unreachable: the trial is FAIL all the same
                if self.fail(t._trial_id, reason):
                    host = owner_host(t) or "no owner"
                    log.warning("trial %d (on %s) was left RUNNING (%s): marked FAIL", t.number, host, reason)
                    self.on_dead(t, reason)
        return self.trials() if failed else trials

    def fail(self, trial_id: int, reason: str) -> bool:
        """Mark RUNNING trial ``trial_id`` FAIL with ``reason``; False when it ended meanwhile (another worker)."""
        try:
            self.study._storage.set_trial_user_attr(trial_id, "fail_reason", reason)
            self.study._storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except Exception:  # optuna's UpdateFinishedTrialError, or a storage hiccup: it is not ours to fail now
            return False
        return True

    @contextlib.contextmanager
    def heartbeat(self):
        """A thread that, every ``heartbeat_s``, writes the current trial's heartbeat and fails dead ones."""
        stop, every_s = threading.Event(), self.heartbeat_s

        def beat():
            while not stop.wait(every_s):
                with contextlib.suppress(Exception):  # a trial told meanwhile; a storage hiccup: next beat
                    if (trial_id := self.current) is not None:
                        self.study._storage.set_trial_user_attr(trial_id, "masklab_heartbeat", time.time())
                    self.fail_dead()

        thread = threading.Thread(target=beat, name="masklab-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=every_s + 5)


def owner_host(t: FrozenTrial) -> str | None:
    """The host of the worker that asked for trial ``t`` (``masklab_owner``); None for a trial with no owner."""
    return t.user_attrs.get("masklab_owner", {}).get("host")


def trial_of(study_name: str, spec: str, trial_id: int, proxy=None, silence_s: float = SILENCE_S):
    """A job's own (study, trial), in the launcher's process or another."""
    study = optuna.load_study(study_name=study_name, storage=_process_storage(spec, proxy, silence_s))
    return study, optuna.Trial(study, int(trial_id))
