"""The CLIs' ``--help`` text (config groups, keys, the sweeper's keys) and their quieter Lightning start-up."""

from __future__ import annotations

import logging

from masklab.paths import CONFIG_DIR


class _DropLightningTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def quiet_lightning() -> None:
    """Leave out two start-up lines of Lightning 2.6 a masklab user cannot act on: its advertisement for its cloud
    logger (``💡 Tip: ... litlogger``; masklab logs to MLflow) and torch's deprecation warning about Lightning's own
    use of ``LeafSpec`` (``lightning/pytorch/utilities/_pytree.py``). Everything else Lightning says is kept, printed
    once and plainly, also when Lightning was imported after Hydra set up logging (call it after that import)."""
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric"):  # what Lightning does when imported before any logging
        logger = logging.getLogger(name)
        if not logger.handlers:  # else its lines also reach the root's handlers (Hydra's): printed twice
            logger.addHandler(logging.StreamHandler())
        logger.propagate = False

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
