"""User errors: one line on stderr and exit code 1 (:func:`exit_on_error`); anything else keeps its traceback."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading

from masklab import secrets


class MasklabError(Exception):
    """An error with a one-line message for the user (the CLIs print it and exit non-zero)."""


class StudySettingError(MasklabError):
    """A mistake in a sweep's own settings (not in a trial's sampled values): every trial would fail the same
    way, so the sweeper stops the study at the first instead of at ``max_failures``."""


def user_message(exc: BaseException, oom_advice: str | None = None) -> str | None:
    """The one line to show for ``exc``, or None for an error that is a bug (it keeps its traceback).

    A :class:`MasklabError`, also when Hydra's ``instantiate`` wrapped it (a reader or the datamodule
    raised it while being built), a required key left unset (``???`` in the config), and a value a config
    interpolation cannot use (``optimizer.lr=abc`` where the search space computes ``${mul:${optimizer.lr},0.25}``),
    the GPU running out of memory (a batch or image size too big for it: torch's traceback ends in a conv;
    ``oom_advice``: the keys that help, training's by default), and MLflow's tracking store not answering."""
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    torch = sys.modules.get("torch")  # an out-of-memory can only come from a loaded torch
    for seen in causes(exc):  # Hydra wraps once: "Error in call to target ...", the MasklabError as its cause
        if isinstance(seen, MasklabError):
            return str(seen)
        if isinstance(seen, MissingMandatoryValue):
            key = seen.full_key or "a required key"
            return f"{key} is required: give {key}=<value> on the command line (--help says what it takes)"
        if isinstance(seen, InterpolationResolutionError):  # e.g. optimizer.lr=abc read by ${mul:${optimizer.lr},0.25}
            return f"{seen.full_key}: {first_line(seen)}"
        if torch is not None and isinstance(seen, torch.OutOfMemoryError):
            return out_of_memory(str(seen), oom_advice or TRAINING_OOM_ADVICE)
    if "mlflow" in sys.modules:  # its tracking store not answering: only a loaded MLflow raises that
        from masklab.track.mlflow_utils import tracking_failure

        return tracking_failure(exc)
    return None


#: what lowers the memory a step needs, per CLI (evaluate.py and predict.py have no precision key; their
#: test-time size is image_min_size / image_max_size, applied to the loaded model)
TRAINING_OOM_ADVICE = (
    "lower batch_size or the image size (data.image_size), or train in mixed precision (trainer.precision=16-mixed)"
)
EVALUATE_OOM_ADVICE = "lower batch_size or the test-time image size (image_min_size, image_max_size), or use device=cpu"
PREDICT_OOM_ADVICE = "lower the test-time image size (image_min_size, image_max_size), or use device=cpu"


def out_of_memory(torch_message: str, advice: str = TRAINING_OOM_ADVICE) -> str:
    """One line for torch's out-of-memory error: its first sentences (what it tried to allocate, what the GPU has
    free, what this process holds; the rest is allocator advice) and ``advice``: the keys that lower the memory a
    step needs."""
    said = []
    for sentence in torch_message.strip().split(". ")[:4]:
        if sentence.startswith(("If ", "See ")):
            break
        said.append(sentence)
    said = ". ".join(said).rstrip(".")
    return f"{said}: {advice}"


def missing_cuda(accelerator) -> bool:
    """``trainer.accelerator`` asks for a CUDA GPU and none is visible here (``trainer=gpu`` on a CPU machine)."""
    if str(accelerator) not in ("gpu", "cuda"):
        return False
    import torch  # 1.3 s: not for a CPU trainer's check

    return not torch.cuda.is_available()


def first_line(exc: BaseException, with_type: bool = False) -> str:
    """The first line of ``exc``'s message (``with_type``: after its type's name), or its type's name when it has
    none: for one-line errors."""
    text = str(exc).strip()
    if callable(getattr(exc, "details", None)):  # a gRPC error: its status and details, not its repr's header
        text = f"{exc.code().name}: {exc.details()}"
    line = text.splitlines()[0] if text else ""
    if not line:
        return type(exc).__name__
    if line.endswith(":") and exc.__cause__ is not None:  # Hydra's "Error in call to target 'X':": its cause says why
        line = f"{line} {first_line(exc.__cause__, with_type=True)}"
    return f"{type(exc).__name__}: {line}" if with_type else line


def causes(exc: BaseException, depth: int = 5):
    """``exc`` and the exceptions it was raised from (``__cause__``), outermost first: what Hydra's
    ``instantiate`` or Lightning wrapped."""
    while exc is not None and depth > 0:
        yield exc
        exc, depth = exc.__cause__, depth - 1


def raised_in(exc: BaseException, package: str) -> bool:
    """Whether ``exc`` was raised in, or passed through, a module of ``package`` (e.g. MLflow's database errors,
    which are SQLAlchemy's, as the study's database's are)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").split(".", 1)[0] == package:
            return True
        tb = tb.tb_next
    return False


_SIGTERM = threading.Event()  # set by the handler: an error after it is the stop's doing (a killed DataLoader worker)


def _sigterm(signum, frame):
    _SIGTERM.set()
    if signal.getsignal(signal.SIGTERM) is _sigterm:  # else Lightning's handler called it (mid-fit): it stops itself
        raise SystemExit(143)


def terminating() -> bool:
    """Whether a SIGTERM (a cluster stopping or preempting the job) came under :func:`on_interrupt`."""
    return _SIGTERM.is_set()


@contextlib.contextmanager
def on_interrupt(then):
    """Ctrl-C or SIGTERM: ``then()`` (end what was under way, say how to go on), then exit 130 (143 for SIGTERM).
    SIGTERM raises wherever the program is, as Ctrl-C does; mid-fit, Lightning stops after the batch (a SystemExit)."""
    main = threading.current_thread() is threading.main_thread()  # signal handlers: the main thread's only
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    if main:
        signal.signal(signal.SIGTERM, _sigterm)
    try:
        yield
    except BaseException as exc:
        if not isinstance(exc, (KeyboardInterrupt, SystemExit)) and not terminating():
            raise
        for s in previous:  # a second signal must not cut the cleanup short
            signal.signal(s, signal.SIG_IGN)
        try:
            then()
        except Exception as err:  # e.g. the tracking server unreachable: still the stop's exit code, and one line
            logging.getLogger("masklab").warning("while stopping: %s", first_line(err, with_type=True))
        raise SystemExit(143 if terminating() else 130) from None
    finally:
        _SIGTERM.clear()
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def exit_on_error(log: logging.Logger | None = None, oom_advice: str | None = None):
    """The CLIs' contract: a user error (see :func:`user_message`) becomes one ``error:`` line on stderr
    and exit code 1, Ctrl-C one ``interrupted`` line and exit code 130, SIGTERM (a cluster's stop) likewise with
    143; anything else keeps its traceback. Both signals unwind: what is being written is finished or removed."""
    secrets.install()  # a tracking or storage URL's password: in no log line either
    main = threading.current_thread() is threading.main_thread()  # signal handlers: the main thread's only
    previous = signal.signal(signal.SIGTERM, _sigterm) if main else None
    try:
        yield
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(130)
    except BaseException as exc:
        if terminating():  # the stop, or an error it caused (a DataLoader worker killed by the same SIGTERM)
            print("interrupted (SIGTERM)", file=sys.stderr)
            sys.exit(143)
        message = None if isinstance(exc, SystemExit) else user_message(exc, oom_advice)
        if message is None:
            raise
        message = secrets.mask(message)  # e.g. "no MLflow run ... in postgresql://user:***@host/db"
        if log is not None:
            _log_to_files(log, message)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
            _SIGTERM.clear()


def _log_to_files(log: logging.Logger, message: str) -> None:
    """Record why the run stopped in its log file (Hydra's ``<job>.log``) only: logged as usual, Hydra's console
    handler printed the message a second time above the ``error:`` line."""
    record = log.makeRecord(log.name, logging.ERROR, "(exit_on_error)", 0, "%s", (message,), None)
    logger: logging.Logger | None = log
    while logger is not None:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
                handler.handle(record)
        logger = logger.parent if logger.propagate else None
