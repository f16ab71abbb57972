#!/usr/bin/env python
"""Run one of the seeds' studies as a recipe: check its data, prepare it, train (or sweep) it.

    python experiments/run.py shapes                     # train the recipe experiments/shapes.yaml
    python experiments/run.py balloon --sweep            # its Optuna study (the recipe's hparams_search)
    python experiments/run.py clothing schedule.epochs=5 # any Hydra override after the name
    python experiments/run.py --list

Each recipe is a Hydra config (``experiments/<name>.yaml``) on top of ``conf/``; ``needs`` lists the
files it reads, and a missing one stops here with where to put what. The same recipe runs without
this script: ``python src/train.py --config-dir experiments --config-name <name>``.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


def recipes() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.yaml"))


def load(name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(HERE), version_base="1.3"):
        return compose(name, overrides=[f"hydra.searchpath=[file://{ROOT / 'conf'}]", *overrides])


def single_valued(overrides: list[str]) -> list[str]:
    """The overrides a single run takes: a sweep's own (``hydra.*``) and swept values (``a=1,2``, ``choice(...)``,
    ``interval(...)``) are the sweeper's, and composing or preparing with them failed before the sweep began."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [o.input_line for o in parsed if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")]


def missing_data(cfg: DictConfig) -> list[str]:
    # a need whose path is null is switched off by an override (e.g. backbone.weights=null: from scratch)
    return [
        f"  {need.path}\n      {need.what}"
        for need in cfg.get("needs") or []
        if need.path and not Path(need.path).exists()
    ]


def _die_with_parent(parent: int) -> None:
    """Linux, in the child before exec: SIGTERM when run.py dies. A SIGKILLed run.py (a scheduler, ``kill -9``) left
    its training running, orphaned, holding the GPU and writing to the experiment's outputs."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # run.py died before the line above
        os._exit(1)


def cli(script: str, name: str, overrides: list[str], *extra: str) -> None:
    cmd = [
        sys.executable,
        str(ROOT / "src" / script),
        "--config-dir",
        str(HERE),
        "--config-name",
        name,
        *extra,
        *overrides,
    ]
    print("+", " ".join(cmd[1:]), flush=True)
    on_linux = sys.platform.startswith("linux")
    code = subprocess.call(cmd, preexec_fn=functools.partial(_die_with_parent, os.getpid()) if on_linux else None)
    if code:
        sys.exit(code)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", nargs="?", help=f"one of: {', '.join(recipes())}")
    p.add_argument("--sweep", action="store_true", help="run the recipe's Optuna study instead of one training")
    p.add_argument("--list", action="store_true", help="list the recipes")
    p.add_argument("overrides", nargs="*", help="Hydra overrides (key=value, group=option)")
    args = p.parse_intermixed_args(argv)  # overrides may follow --sweep (parse_args refused them there)
    if args.list or not args.recipe:
        print("\n".join(f"{r:10s} {(HERE / f'{r}.yaml').read_text().splitlines()[0].lstrip('# ')}" for r in recipes()))
        return
    if args.recipe not in recipes():
        sys.exit(f"error: no recipe {args.recipe!r}; there are: {', '.join(recipes())}")
    single = single_valued(args.overrides) if args.sweep else args.overrides
    cfg = load(args.recipe, single)
    missing = missing_data(cfg)
    if missing:
        sys.exit(f"error: recipe {args.recipe!r} needs data that is not there; put it here:\n" + "\n".join(missing))
    if (
        cfg.data.get("source") is not None
        and cfg.data.get("root")
        and not (Path(cfg.data.root) / "annotations").is_dir()
    ):
        cli("prepare.py", args.recipe, single)
    if args.sweep:
        cli("train.py", args.recipe, args.overrides, "-m", "hydra/sweeper=optuna")
        return
    best = Path(cfg.paths.output_root) / cfg.experiment_name / "best.ckpt"
    cli("train.py", args.recipe, [f"export.checkpoint={best}", *args.overrides])
    for target in cfg.get("splash") or []:
        if Path(target).exists():
            cli("predict.py", args.recipe, [f"ckpt={best}", f"input={target}", "mode=splash", *args.overrides])


if __name__ == "__main__":
    main()
