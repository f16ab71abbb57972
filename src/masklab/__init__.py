"""masklab: a hyperparameter experiment platform for Mask R-CNN transfer learning."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"

#: The project root: the folder holding ``conf/`` (the repository), else the working directory.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
if not (PROJECT_ROOT / "conf").is_dir():  # installed into site-packages without the repo
    PROJECT_ROOT = Path.cwd()
CONFIG_DIR = PROJECT_ROOT / "conf"


class MasklabError(Exception):
    """An error with a one-line message for the user (the CLIs print it and exit non-zero)."""


def user_message(exc: BaseException, oom_advice: str | None = None) -> str | None:
    """The one line to show for ``exc``, or None for an error that is a bug (it keeps its traceback).

    A :class:`MasklabError`, also when Hydra's ``instantiate`` wrapped it (a reader or the datamodule
    raised it while being built), a required key left unset (``???`` in the config), and a value a config
    interpolation cannot use (``optimizer.lr=abc`` where the search space computes ``${mul:${optimizer.lr},0.25}``),
    and the GPU running out of memory (a batch or image size too big for it: torch's traceback ends in a conv;
    ``oom_advice``: the keys that help, training's by default)."""
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    torch = sys.modules.get("torch")  # an out-of-memory can only come from a loaded torch
    for seen in causes(exc):  # Hydra wraps once: "Error in call to target ...", the MasklabError as its cause
        if isinstance(seen, MasklabError):
            return str(seen)
        if isinstance(seen, MissingMandatoryValue):
            key = seen.full_key or "a required key"
            return f"{key} is required: give {key}=<value> on the command line (--help says what it takes)"
        if isinstance(seen, InterpolationResolutionError):  # e.g. optimizer.lr=abc read by ${mul:${optimizer.lr},0.25}
            return f"{seen.full_key}: {str(seen).splitlines()[0]}"
        if torch is not None and isinstance(seen, torch.OutOfMemoryError):
            return out_of_memory(str(seen), oom_advice or TRAINING_OOM_ADVICE)
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
    import torch

    return str(accelerator) in ("gpu", "cuda") and not torch.cuda.is_available()


def causes(exc: BaseException, depth: int = 5):
    """``exc`` and the exceptions it was raised from (``__cause__``), outermost first: what Hydra's
    ``instantiate`` or Lightning wrapped."""
    while exc is not None and depth > 0:
        yield exc
        exc, depth = exc.__cause__, depth - 1


@contextlib.contextmanager
def exit_on_error(log: logging.Logger | None = None, oom_advice: str | None = None):
    """The CLIs' contract: a user error (see :func:`user_message`) becomes one ``error:`` line on stderr
    and exit code 1; anything else keeps its traceback."""
    try:
        yield
    except Exception as exc:
        message = user_message(exc, oom_advice)
        if message is None:
            raise
        if log is not None:
            _log_to_files(log, message)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)


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


class _DropLightningTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def quiet_lightning() -> None:
    """Leave out two start-up lines of Lightning 2.6 a masklab user cannot act on: its advertisement for its cloud
    logger (``💡 Tip: ... litlogger``; masklab logs to MLflow) and torch's deprecation warning about Lightning's own
    use of ``LeafSpec`` (``lightning/pytorch/utilities/_pytree.py``). Everything else Lightning says is kept."""
    import warnings

    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning_utilities.core.rank_zero",
    ):  # whichever is rank_zero_info's logger
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLightningTip) for f in logger.filters):
            logger.addFilter(_DropLightningTip())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


#: folders under conf/ that are included by other configs, not groups to pick from (``--help`` leaves them out)
INCLUDE_ONLY = ("hydra", "dataset_defaults", "tuned")


def help_groups(*only: str) -> str:
    """``--help``'s "group: option, ..." lines for the groups under conf/ (or ``only`` these), without the
    include-only folders that Hydra's ``$APP_CONFIG_GROUPS`` lists as if they were choices."""
    lines = []
    for folder in sorted(p for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name not in INCLUDE_ONLY):
        options = sorted(f.stem for f in folder.glob("*.yaml"))
        if options and (not only or folder.name in only):
            lines.append(f"{folder.name}: {', '.join(options)}")
    return "\n".join(lines)


def help_keys(name: str) -> str:
    """``--help``'s list of the keys ``conf/<name>.yaml`` sets, as written there (with their comments): its
    top-level keys but the defaults list, the ``hydra:`` block and ``_target_``. ``$`` doubled for the
    ``string.Template`` Hydra passes the help text through."""
    lines, inside = [], False
    for line in (CONFIG_DIR / f"{name}.yaml").read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith(("#", "-")):  # a top-level key
            inside = line.split(":", 1)[0] not in ("defaults", "hydra", "_target_")
        if inside:
            lines.append(line)
    return "\n".join(lines).strip().replace("$", "$$")


def help_sweeper(*, _root_) -> str:
    """train.py ``--help`` (its footer): the Optuna sweeper's keys when it is picked (``hydra/sweeper=optuna --help``),
    else how to see them."""
    if _root_.hydra.runtime.choices.get("hydra/sweeper") == "optuna":
        return "== Optuna study (-m hydra/sweeper=optuna; hydra.sweeper.key=value) ==\n" + help_keys(
            "hydra/sweeper/optuna"
        )
    return "The Optuna study's keys (hydra.sweeper.*):  python src/train.py hydra/sweeper=optuna --help"


if not OmegaConf.has_resolver("help_groups"):
    OmegaConf.register_new_resolver("help_groups", help_groups)
    OmegaConf.register_new_resolver("help_keys", help_keys)
    OmegaConf.register_new_resolver("help_sweeper", help_sweeper)
if not OmegaConf.has_resolver("masklab_root"):
    OmegaConf.register_new_resolver("masklab_root", lambda: str(PROJECT_ROOT))
if not OmegaConf.has_resolver("mul"):  # search spaces relative to a config value: ${mul:${optimizer.lr},0.25}
    OmegaConf.register_new_resolver("mul", lambda a, b: float(a) * float(b))
if not OmegaConf.has_resolver(
    "px"
):  # image sizes relative to the data's: ${px:${data.image_size},1.25} (multiple of 32)
    OmegaConf.register_new_resolver("px", lambda size, factor: _px(size, factor))


def _px(size, factor) -> int:
    """``size`` x ``factor`` in multiples of 32 (at least 32); ``auto`` sizes have their own multiplier."""
    if size == "auto":
        raise ValueError(
            "data.image_size=auto: the default space scales a plain size; prepared data's own space "
            "(hparams_search=prepared) scales the derived one (data.auto.scale), or give data.image_size=<px>"
        )
    return max(32, int(float(size) * float(factor) / 32 + 0.5) * 32)
