#!/usr/bin/env python
"""How many training epochs pruning saves: the same Optuna study with and without the pruner.

Every study runs through the real sweeper (``python src/train.py -m hydra/sweeper=optuna``) on
shapes with the same space, sampler and sampler seed; only ``hydra.sweeper.pruner`` differs: none,
then each of ``--pruners`` (default: ``asha``, the product's default; ASHA (``successive_halving``) and
``hyperband`` are replayed, see below). For each study: trials in order,
epochs each trained (validation epochs reported to Optuna), and the total epochs spent until the
best segm AP so far is within ``--tol`` of the final best of the study *without* pruning: the epochs
each needs to reach the quality a full search reaches (the headline ratio; a pruner that stopped the
winner and never gets there has no ratio). Also printed: epochs to within ``--tol`` of each study's
own final best, total epochs, and the final bests.

Training is deterministic (same seed and configuration -> the same curve), so a pruned trial trains
a prefix of its unpruned curve, and what any pruner does can also be *replayed* on the unpruned
study's curves without training (``--replay``: each trial reports its recorded curve to an in-memory
study with that pruner). The real pruned studies are checked against their replay (the output says
"= its replay"), and the replay shows the pruners there was no time to run. ``asha`` (masklab's own,
which pauses trials and resumes the leaders: masklab.sweep.asha) is replayed by the sweeper's own rule
on the same curves; its study's trials are segments of configurations, counted in the order they ran.
A resumed trial does not train exactly its unpruned curve (Lightning does not restore the RNG state, so
its data order after the pause differs), so its real study may part from its replay after a promotion.

    python benchmarks/pruning.py                      # 20 trials x 12 epochs of 288 images; ~2 h on 2 cores
    python benchmarks/pruning.py --trials 10 --epochs 8 --pruners median hyperband
    python benchmarks/pruning.py --save u.json --pruners             # the unpruned study alone (~63 min) ...
    python benchmarks/pruning.py --baseline u.json --pruners successive_halving   # ... then pruned studies beside it
    python benchmarks/pruning.py --sampler tpe        # the product's default sampler (see below)

The sampler is ``random`` by default: with one seed it proposes the same configuration for trial k
in every study, whatever was pruned before, so the studies differ only by what the pruner stopped
and the ratio measures the pruner. TPE learns from the trials it has seen, and a pruned study has
seen different ones: from trial ``n_startup_trials`` on, the two studies try different
configurations and the ratio mixes pruning with where TPE happened to look (measured: the unpruned
TPE study's best was 0.098 in one run and 0.208 in the next, same seed).

Trials start from the ImageNet MobileNetV2 in ../shared/weights when it is there (from scratch a few
epochs of shapes learn too little for the curves to tell trials apart), with gradient clipping and
no LR warmup (``--warmup-iters``: the default 20 steps took the first two epochs at 12 steps per
epoch, whose AP was then ~0 for every trial: nothing for a pruner to act on); the learning rate
(SGD) spans 1e-4 (learns slowly: the pruner's target) to 5e-2 (diverges: FAIL). An epoch is
``--images`` 288 shapes images, 36 steps (the main job's is 1100): with 96 (12 steps, until
2026-11-22) every trial's segm AP after its first epoch was <= 0.004 and the winner's after two
was 0.009 against 0.038 for a trial that ended at 0.17, so the first rungs ranked noise, and every
trial was still in its first rise when it ended (each one's best was its last epoch). With 288 the
winner led after its first epoch and no pruner on AP stopped it in any of 200 trial orders
(benchmarks/RESULTS_NOTES.md).
A trial is 12 epochs (until 2026-11-22 19:30: 6, shapes' own suggestion): what the step and constant
schedules train on a user's dataset. A pruned trial costs its first rung, a fixed number of epochs,
so how much pruning can save depends on the trial's length; at 6 epochs not even the oracle (below)
reached 0.5 in the study's trial order.
Target: epochs(pruned) / epochs(unpruned) <= 0.5.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import optuna  # noqa: E402
import yaml  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from masklab.sweep import asha  # noqa: E402
from masklab.sweep.schedulers import build_pruner, pruner_spec  # noqa: E402
from masklab.sweep.storage import open_storage  # noqa: E402

SWEEPER_PRUNERS = ("asha",)  # the sweeper schedules these itself (Optuna's pruner prunes nothing)


def pruner_kwargs(name: str, kwargs: dict | None = None, epochs: int | None = None) -> dict:
    """The kwargs ``name`` is built with: ``kwargs``, or its file's (conf/hydra/sweeper/pruner/) when null."""
    return {k: v for k, v in pruner_spec(name, kwargs, epochs).items() if not k.startswith("_")}


WEIGHTS = ROOT.parent / "shared" / "weights" / "mobilenet_v2_imagenet_features.pth"
#: what a result's trials started from (results before 2026-11-24 do not say: all of them had the weights)
PRETRAINED, SCRATCH = "mobilenet_v2 imagenet", "shapes default, from scratch"


def backbone() -> list[str]:
    return ["backbone=mobilenet_v2", f"backbone.weights={WEIGHTS}"] if WEIGHTS.is_file() else []


def backbone_name() -> str:
    return PRETRAINED if WEIGHTS.is_file() else SCRATCH


AP, LOSS = "val/segm_AP", "val/loss"
ORACLE = "oracle"  # not an Optuna pruner: the bound of those that let best-so-far trials finish (see _oracle)
#: the kwargs real studies ran with before results recorded them (2026-11-22): successive_halving then
#: had Optuna's defaults (min_resource "auto"), not masklab's
LEGACY_KWARGS = {"successive_halving": {}}


def _on(signal: str) -> str:
    """Label suffix of a study or replay that prunes on ``signal`` ("" for the objective, segm AP)."""
    return "" if signal == AP else f" on {signal}"


def simulate_asha(
    curves: list[list[float]], rung_epochs: list[int], reduction_factor: int
) -> list[tuple[int, int, int]]:
    """The segments a single worker trains with ASHA on configurations whose curves (value per epoch,
    larger is better) are known: ``(config index, first epoch, end epoch)`` in order. A curve shorter
    than a rung (a trial that failed or diverged) stops there. Used by the pruning benchmark's replay."""
    configs: list[asha.Config] = []
    out = []
    started = 0
    while True:
        job = asha.promotion(configs, rung_epochs, reduction_factor)
        if job is not None:
            c = next(c for c in configs if c.root == job[0])
            k, c.paused_at = job[1] + 1, None
            begin = rung_epochs[job[1]]
        elif started < len(curves):
            c, k, begin = asha.Config(started), 0, 0
            configs.append(c)
            started += 1
        else:
            return out
        end = min(rung_epochs[k], len(curves[c.root]))
        c.values.update({e: curves[c.root][e] for e in range(begin, end)})
        out.append((c.root, begin, end))
        if end == rung_epochs[k] and k < len(rung_epochs) - 1:
            c.paused_at = k


def run_study(work: Path, name: str, pruner: str, args) -> tuple[list, float]:
    cmd = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        "-m",
        "hydra/sweeper=optuna",
        f"paths.root_dir={work}",
        f"experiment_name={name}",
        "logger=none",
        "hparams_search=none",
        f"hydra.sweeper.pruner={pruner}",
        f"hydra.sweeper.prune_on={args.prune_on}",
        f"hydra.sweeper.n_trials={args.trials}",
        f"hydra.sweeper.seed={args.seed}",
        f"hydra.sweeper.sampler={args.sampler}",
        *(["hydra.sweeper.sampler_kwargs={n_startup_trials:4}"] if args.sampler == "tpe" else []),
        "optimizer=sgd",
        "optimizer.lr=tag(log,interval(0.0001,0.05))",
        f"schedule.warmup_iters={args.warmup_iters}",
        "grad_clip_norm=5",
        "anchors=choice(tiny,small)",
        f"schedule.epochs={args.epochs}",
        f"data.train.num_images={args.images}",
        f"data.val.num_images={args.val_images}",
        "num_workers=0",
        "+trainer.enable_progress_bar=false",
        *backbone(),
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        sys.exit(f"study {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    storage = open_storage(f"journal:{work}/multirun/{name}/{name}/optuna.journal")
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    # an asha trial trains a segment of its configuration, whose folder (and history) is its first trial's
    return [
        _from_history(t, work / "multirun" / name / name / str(asha.asha_root(t)) / "history.csv")
        for t in sorted(trials, key=lambda t: t.number)
    ], time.perf_counter() - start


def _from_history(trial, path: Path) -> _Curve:
    """A trial's per-epoch segm AP and val loss from its history.csv (what it reported to Optuna may be either)."""
    rows = list(csv.DictReader(path.open())) if path.is_file() else []
    rows = [r for r in rows if r.get(AP)]  # validated epochs (a diverged epoch has no AP)
    span = None
    if "asha_rung" in trial.user_attrs:  # its own epochs of its configuration's history
        rows = [r for r in rows if int(r["epoch"]) in trial.intermediate_values]
        span = (asha.asha_root(trial), min(trial.intermediate_values, default=0))
    curve = _Curve(
        [float(r[AP]) for r in rows],
        trial.state.name,
        number=trial.number,
        signals={LOSS: [-float(r[LOSS]) for r in rows]},
        span=span,
    )  # negated: the study maximises
    reported = [v for _, v in sorted(trial.intermediate_values.items())]
    on = {AP: curve.values, LOSS: curve.signals[LOSS]}
    if not any(len(reported) == len(c) and all(abs(a - b) < 1e-6 for a, b in zip(reported, c)) for c in on.values()):
        sys.exit(f"trial {trial.number}: its history {path} does not match what it reported to Optuna")
    return curve


def _best(t) -> float:
    return max(t.intermediate_values.values()) if t.intermediate_values else float("-inf")


def epochs_to(trials, bar: float) -> int | None:
    """Epochs spent (trials in order, every reported epoch counted) until a trial's best is >= ``bar``."""
    spent = 0
    for t in trials:
        spent += len(t.intermediate_values)
        if _best(t) >= bar:
            return spent
    return None


def epochs_to_best(trials, tol: float) -> tuple[int, float, int]:
    """(epochs spent until best-so-far >= this study's final best - tol, final best, total epochs)."""
    final = max(_best(t) for t in trials)
    return epochs_to(trials, final - tol), final, sum(len(t.intermediate_values) for t in trials)


def replay(trials, pruner: str, kwargs: dict | None = None, on: str = AP) -> list[list[float]]:
    """The AP curves each trial of an unpruned study would have trained under ``pruner`` (trials in order).

    Each trial reports its recorded curve of ``on`` (segm AP, or val loss negated: the study maximises
    AP) epoch by epoch to an in-memory study with that pruner, as the sweeper's pruning callback does
    (``hydra.sweeper.prune_on``), and stops where the pruner says so. This is exactly what a
    pruned study does when training is deterministic (same seed, same configuration -> same curve,
    so a pruned trial trains a prefix of its unpruned curve); the benchmark checks it against the
    pruned studies it really runs, and uses it to show more pruners than it has time to run.
    """
    if pruner == ORACLE:
        return _oracle(trials)
    if pruner in SWEEPER_PRUNERS:
        raise ValueError("asha trains segments, not prefixes: use segments()")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # named as run_study names the real one: Hyperband assigns trials to brackets by a hash of the study name
    epochs = max((len(t.intermediate_values) for t in trials), default=None)  # as the sweeper resolves hyperband's
    study = optuna.create_study(
        study_name=pruner,
        direction="maximize",
        pruner=build_pruner(pruner_spec(pruner, kwargs, epochs=epochs))[0],
    )
    out = []
    for t in trials:
        trial, seen = study.ask(), []
        signal = getattr(t, "signals", {}).get(on) if on != AP else None
        for step, value in sorted(t.intermediate_values.items()):
            trial.report(value if signal is None else signal[step], step)
            seen.append(value)
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            if t.state == TrialState.FAIL or not seen:
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, max(seen))  # what train.py returns: the best value of the metric
        out.append(seen)
    return out


def segments(trials, pruner: str, kwargs: dict | None = None, on: str = AP) -> tuple[list[_Curve], int]:
    """What a study with ``pruner`` trains on the unpruned study's trials, in order, as (segments, pruned):
    one prefix per trial, or for ``asha`` every paused and resumed stretch of a trial as its own curve (the
    sweeper's trials), ranked on ``on`` by the sweeper's own rule (``masklab.sweep.asha``); ``pruned`` counts
    trials stopped before their last epoch."""
    if pruner not in SWEEPER_PRUNERS:
        curves = replay(trials, pruner, kwargs, on=on)
        return [t.prefix(len(c)) for c, t in zip(curves, trials)], sum(
            len(c) < len(t.values) for c, t in zip(curves, trials)
        )
    epochs = max(len(t.values) for t in trials)
    settings = asha.Asha(**(kwargs or {})).settings
    ranked = [t.values if on == AP else t.signals[on] for t in trials]
    jobs = simulate_asha(ranked, asha.rungs(epochs, **settings), int(settings["reduction_factor"]))
    out = [trials[i].part(begin, end) for i, begin, end in jobs]
    reached = {i: end for i, _, end in jobs}
    return out, sum(reached[i] < len(t.values) for i, t in enumerate(trials))


def _oracle(trials) -> list[list[float]]:
    """The bound of every pruner that lets a trial run on while it is the best so far: each trial that
    ends as the best so far (a *record*) runs in full, every other one is stopped after its first epoch.
    It knows each trial's future, so no pruner of that kind does better on the same trials in the same
    order. Median, ASHA and Hyperband are of that kind as long as curves do not cross: a record beats
    every earlier trial. A pruner that stops trials before it has anything to compare them with (an
    absolute threshold, ASHA's ``bootstrap_count``) can go below it, at the risk of stopping the winner."""
    best, out = float("-inf"), []
    for t in trials:
        values = [v for _, v in sorted(t.intermediate_values.items())]
        final = max(values, default=float("-inf"))
        out.append(values if final > best else values[:1])
        best = max(best, final)
    return out


def parse_spec(spec: str) -> tuple[str, dict | None]:
    """``--replay`` entry -> (pruner, kwargs): ``median`` (masklab's defaults, kwargs None) or
    ``median:n_startup_trials=1,n_warmup_steps=0`` (exactly these kwargs, as ``hydra.sweeper.pruner_kwargs``)."""
    name, _, given = spec.partition(":")
    if not given:
        return name, None
    try:
        kwargs = {k.strip(): yaml.safe_load(v) for k, v in (item.split("=", 1) for item in given.split(","))}
    except ValueError:
        sys.exit(f"--replay {spec}: write a pruner with kwargs as name:key=value,key=value")
    return name, kwargs


class _Curve:
    """One trial's per-epoch segm AP (``intermediate_values``, as a FrozenTrial has them), its ``state``
    and its other pruning ``signals`` (``val/loss``, negated) for replaying and counting."""

    def __init__(
        self,
        values,
        state: str = "COMPLETE",
        number: int | None = None,
        signals: dict | None = None,
        span: tuple[int, int] | None = None,
    ):
        self.values = list(values)
        self.intermediate_values = dict(enumerate(self.values))
        self.state, self.number, self.signals = TrialState[state], number, dict(signals or {})
        self.span = tuple(span) if span else None  # asha: (its configuration's index or first trial, first epoch)

    def prefix(self, n: int) -> _Curve:
        return _Curve(self.values[:n], self.state.name, self.number, {k: v[:n] for k, v in self.signals.items()})

    def part(self, begin: int, end: int) -> _Curve:
        """Epochs ``[begin, end)`` as an asha segment of this trial's configuration."""
        return _Curve(
            self.values[begin:end],
            self.state.name,
            self.number,
            {k: v[begin:end] for k, v in self.signals.items()},
            span=(self.number, begin),
        )


def over_orders(
    trials, pruner: str, n: int = 200, seed: int = 0, tol: float = 0.01, on: str = AP, kwargs: dict | None = None
) -> dict:
    """The headline ratio over ``n`` random orders of the unpruned study's trials.

    A random sampler's trials are independent draws, so every order of them is as likely as the one
    that ran; the ratio of one study mostly says where its winner happened to come (the trials before
    it are what a pruner can cut, and a trial that is the best so far mostly runs in full, see ``_oracle``).
    Each order is replayed (see ``replay``), so this costs no training.
    """
    rng = random.Random(seed)
    bar = max(_best(t) for t in trials) - tol
    ratios, never = [], 0
    for _ in range(n):
        order = rng.sample(list(trials), len(trials))
        trained = (
            segments(order, pruner, kwargs, on=on)[0]
            if pruner in SWEEPER_PRUNERS
            else [_Curve(c) for c in replay(order, pruner, kwargs, on=on)]
        )
        reached = epochs_to(trained, bar)
        if reached is None:
            never += 1
        else:
            ratios.append(reached / epochs_to(order, bar))
    return {
        "orders": n,
        "median": statistics.median(ratios) if ratios else None,
        "share_le_0.5": sum(r <= 0.5 for r in ratios) / n,
        "share_never": never / n,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=20, help="trials per study (the sweeper's default n_trials)")
    p.add_argument(
        "--epochs",
        type=int,
        default=12,
        help="epochs per trial: the schedules' default length on a user's dataset (constant, step: 12)",
    )
    p.add_argument(
        "--images",
        type=int,
        default=288,
        help="shapes training images per epoch (36 steps of 8; the main job's epoch is 1100, see above)",
    )
    p.add_argument("--val-images", type=int, default=32, help="shapes validation images (scored every epoch)")
    p.add_argument(
        "--pruners",
        nargs="*",
        default=["asha"],
        help="pruned studies really run beside the unpruned one (conf/hydra/sweeper/optuna.yaml: pruner)",
    )
    p.add_argument(
        "--sampler",
        choices=["random", "tpe"],
        default="random",
        help="random: trial k has the same configuration in every study; tpe: the product's default",
    )
    p.add_argument("--seed", type=int, default=0, help="sampler seed (the same for every study)")
    p.add_argument("--warmup-iters", type=int, default=0, help="LR warmup steps of every trial")
    p.add_argument("--tol", type=float, default=0.01)
    p.add_argument(
        "--replay",
        nargs="*",
        default=["asha", "median", "successive_halving", "hyperband", ORACLE],
        help="pruners replayed on the unpruned study's curves (no training; see replay()), each with "
        "masklab's defaults or given kwargs (percentile:percentile=25,n_startup_trials=1); "
        "oracle: the bound of any pruner that lets the best-so-far trials finish",
    )
    p.add_argument("--orders", type=int, default=200, help="random trial orders each replayed pruner is scored on")
    p.add_argument(
        "--prune-on",
        default=AP,
        choices=[AP, LOSS],
        help="what the really pruned studies watch (hydra.sweeper.prune_on); the objective is segm AP either way",
    )
    p.add_argument(
        "--replay-on",
        nargs="*",
        default=[AP, LOSS],
        choices=[AP, LOSS],
        help="signals every replayed pruner is replayed on",
    )
    p.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="a result JSON of an earlier run (run_all.py keeps them in benchmarks/.results): re-score its "
        "recorded curves (replays, orders) without training; --pruners/--prune-on are taken from it",
    )
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="a result JSON (--save) whose unpruned study stands in for a new one: only the --pruners studies "
        "train (same trials, epochs, images, sampler and seed, or it refuses)",
    )
    p.add_argument("--save", type=Path, default=None, help="also write the result (curves included) as JSON here")
    args = p.parse_args(argv)
    if args.reuse and args.baseline:
        p.error("--reuse re-scores a result without training, --baseline trains its --pruners: give one")
    if args.save:  # now, not after an hour of training: a --save into a folder not there yet lost the result
        args.save.parent.mkdir(parents=True, exist_ok=True)
    args.backbone = backbone_name()
    if not args.reuse and args.backbone == SCRATCH:
        print(
            f"note: no {WEIGHTS}: trials train from scratch, unlike the recorded results (benchmarks/RESULTS.md)",
            flush=True,
        )
    studies, rows = {}, {}
    if args.reuse:
        old = json.loads(args.reuse.read_text())
        args.prune_on = old.get("prune_on", AP)
        args.trials, args.epochs, args.sampler = old["trials"], old["epochs"], old["sampler"]
        args.images, args.val_images = old.get("images", 96), old.get("val_images", 32)  # before 2026-11-22: 96 / 32
        # the draw it scored (a --seed 2 result was printed and saved as seed 0); results before stop 22 have none
        args.seed, args.warmup_iters = old.get("seed", args.seed), old.get("warmup_iters", args.warmup_iters)
        args.backbone = old.get("backbone", PRETRAINED)
        real = [
            (label, label.split(" ")[0]) for label, r in old["rows"].items() if "minutes" in r and label != "no pruning"
        ]
        for label in ("no pruning", *(lb for lb, _ in real)):
            rows[label], studies[label] = _recorded(old["rows"][label])
    else:
        real = [(f"{p}{_on(args.prune_on)}", p) for p in args.pruners]
        if args.baseline:
            _take_baseline(args, studies, rows)
        run_all_studies(args, real, studies, rows)
    result = score(args, real, studies, rows)
    if args.save:
        args.save.write_text(json.dumps(result, indent=1, default=str))
        print(f"result written to {args.save}")
    return result


def _recorded(row: dict) -> tuple[dict, list]:
    """A study's row of a saved result without its scores (they are recomputed), and its trials' curves."""
    kept = {k: v for k, v in row.items() if k not in ("epochs_to_bar", "replay_matches")}
    return kept, [
        _Curve(ap, state, number, {LOSS: [-v for v in loss]}, span=span[0] if span else None)
        for number, state, ap, loss, *span in row["trials"]
    ]


def _take_baseline(args, studies: dict, rows: dict) -> None:
    """The unpruned study of an earlier result (``--baseline``), if it ran the study this one would."""
    try:
        old = json.loads(args.baseline.read_text())
        row = old["rows"]["no pruning"]
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"--baseline {args.baseline}: not a pruning.py result with an unpruned study ({e})")
    wanted = {
        "trials": args.trials,
        "epochs": args.epochs,
        "images": args.images,
        "val_images": args.val_images,
        "sampler": args.sampler,
        "seed": args.seed,
        "warmup_iters": args.warmup_iters,
        "backbone": args.backbone,
    }
    # a copy of the repo outside ../shared's parent trained from scratch and was compared with pretrained curves
    had = {**old, "backbone": old.get("backbone", PRETRAINED)}
    differs = {k: (had.get(k), v) for k, v in wanted.items() if had.get(k) != v}
    if differs:
        sys.exit(
            f"--baseline {args.baseline}: its unpruned study ran another study: "
            + ", ".join(f"{k} {a} here {b}" for k, (a, b) in differs.items())
        )
    rows["no pruning"], studies["no pruning"] = _recorded(row)


def run_all_studies(args, real, studies: dict, rows: dict) -> None:
    """Train the unpruned study (unless ``--baseline`` gave it) and each really pruned one."""
    work = Path(tempfile.mkdtemp(prefix="masklab-pruning-"))
    try:
        for label, pruner in ((("no pruning", "none"),) if "no pruning" not in studies else ()) + tuple(real):
            trials, seconds = run_study(work, pruner, pruner, args)
            studies[label] = trials
            rows[label] = _row(
                trials,
                args.tol,
                minutes=seconds / 60,
                pruner_kwargs=pruner_kwargs(pruner, epochs=args.epochs),
                pruned=_pruned(trials, args.epochs),
                # unrounded: --baseline/--reuse re-score them, and a pruner's ties follow the last digits
                curves=[
                    [
                        t.number,
                        t.state.name,
                        list(t.values),
                        [-v for v in t.signals[LOSS]],
                        *([list(t.span)] if t.span else []),
                    ]
                    for t in trials
                ],
            )
            print(
                f"{label:30s} best segm AP {rows[label]['best_segm_AP']:.4f}  epochs to within {args.tol} of it: "
                f"{rows[label]['epochs_to_own_best']:3d}  total epochs {rows[label]['total_epochs']:3d}  "
                f"pruned {rows[label]['pruned']:2d}  ({seconds / 60:.1f} min)",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _pruned(trials, epochs: int) -> int:
    """Trials (for asha: configurations) that stopped before their last epoch."""
    if not any(t.span for t in trials):
        return sum(t.state.name == "PRUNED" for t in trials)
    reached = {}
    for t in trials:
        reached[t.span[0]] = t.span[1] + len(t.values)
    return sum(end < epochs for end in reached.values())


def score(args, real, studies: dict, rows: dict) -> dict:
    unpruned = studies["no pruning"]
    replayed = [
        (f"{spec}{_on(on)} (replay)", *parse_spec(spec), on)
        for on in args.replay_on
        for spec in args.replay
        if spec != ORACLE or on == AP
    ]  # the oracle knows the AP curves: no signal to choose
    for label, name, kwargs, on in replayed:
        studies[label], pruned = segments(unpruned, name, kwargs, on=on)
        rows[label] = _row(
            studies[label],
            args.tol,
            pruned=pruned,
            **({"pruner_kwargs": pruner_kwargs(name, kwargs, epochs=args.epochs)} if name != ORACLE else {}),
        )
    for label, pruner in real:  # the real pruned study against its replay: equal when training is deterministic
        kwargs = rows[label].setdefault("pruner_kwargs", LEGACY_KWARGS.get(pruner, pruner_kwargs(pruner)))
        again = segments(unpruned, pruner, kwargs, on=args.prune_on)[0]
        # asha: the same segments of the same configurations (the study numbers a configuration by its first trial)
        firsts = {}
        for t in studies[label]:
            firsts.setdefault(t.span[0] if t.span else t.number, len(firsts))
        trained = [(firsts[t.span[0]], t.span[1], len(t.values)) if t.span else len(t.values) for t in studies[label]]
        rows[label]["replay_matches"] = trained == [
            (t.span[0], t.span[1], len(t.values)) if pruner in SWEEPER_PRUNERS else len(t.values) for t in again
        ]
    orders = {
        label[: -len(" (replay)")]: over_orders(unpruned, name, n=args.orders, tol=args.tol, on=on, kwargs=kwargs)
        for label, name, kwargs, on in replayed
    }
    base = rows["no pruning"]
    bar = base["best_segm_AP"] - args.tol
    for label, trials in studies.items():
        rows[label]["epochs_to_bar"] = epochs_to(trials, bar)
    ratios = {}
    for label in [*(lb for lb, _ in real), *(lb for lb, *_ in replayed)]:
        r = rows[label]
        ratios[label] = {
            "ratio": r["epochs_to_bar"] / base["epochs_to_bar"] if r["epochs_to_bar"] else None,
            "own_best_ratio": r["epochs_to_own_best"] / base["epochs_to_own_best"],
            "total_ratio": r["total_epochs"] / base["total_epochs"],
        }
    print(
        f"\n{args.trials} trials x {args.epochs} epochs of {args.images} images, "
        f"{args.sampler} sampler seed {args.seed}, "
        f"this machine (pruned / unpruned):\n"
        f"  epochs to segm AP >= {bar:.4f} (the unpruned study's best - {args.tol}; target <= 0.5): "
        f"unpruned {base['epochs_to_bar']}"
    )
    for label, r in ratios.items():
        head = (
            f"{r['ratio']:.2f} ({rows[label]['epochs_to_bar']} epochs)" if r["ratio"] is not None else "never reached"
        )
        check = {True: "   (= its replay)", False: "   (differs from its replay: training not deterministic?)"}.get(
            rows[label].get("replay_matches"), ""
        )
        print(
            f"  {label:40s} {head}   to its own best {r['own_best_ratio']:.2f}   total epochs {r['total_ratio']:.2f}   "
            f"final best {rows[label]['best_segm_AP']:.4f} vs {base['best_segm_AP']:.4f}   "
            f"pruned {rows[label]['pruned']}{check}"
        )
    for name, o in orders.items():
        print(
            f"  {name} over {o['orders']} random orders of these trials: median ratio "
            f"{o['median'] if o['median'] is None else round(o['median'], 2)}, <= 0.5 in {o['share_le_0.5']:.0%}, "
            f"bar never reached in {o['share_never']:.0%}"
        )
    return {
        "rows": rows,
        "ratios": ratios,
        "bar": bar,
        "sampler": args.sampler,
        "trials": args.trials,
        "epochs": args.epochs,
        "images": args.images,
        "val_images": args.val_images,
        "orders": orders,
        "prune_on": args.prune_on,
        "seed": args.seed,
        "warmup_iters": args.warmup_iters,
        "backbone": args.backbone,
    }


def _row(trials, tol: float, curves=None, **extra) -> dict:
    reached, final, total = epochs_to_best(trials, tol)
    return {
        "epochs_to_own_best": reached,
        "best_segm_AP": final,
        "total_epochs": total,
        **extra,
        **({"trials": curves} if curves is not None else {}),
    }


if __name__ == "__main__":
    main()
