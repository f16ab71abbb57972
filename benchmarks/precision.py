#!/usr/bin/env python
"""Training speed by numeric precision on one GPU: images/s of the LightningModule at 32-true (with and
without TF32 matmuls), 16-mixed (fp16 autocast + loss scaling) and bf16-mixed, measured side by side.

Same model, data loader, batch size and seed for every mode; the modes alternate round by round
(A, B, C, D, A, B, ...) so all see the same machine state, the first ``--warmup`` batches of each
run are not timed, and the median over rounds is printed with the ratio to the first mode. The LR
is 5e-4 unless an override sets it: speed does not depend on it, and a from-scratch r50 at the
config's 0.02 (or 0.01 with clipping) went non-finite within 30 steps, which ends the run. Needs a
CUDA GPU. The end-to-end figures (AP and minutes of whole runs by precision) are in
benchmarks/RESULTS_NOTES.md.

    python benchmarks/precision.py                                    # the main job's config (shapes)
    python benchmarks/precision.py data=pennfudan backbone=r50 model=standard batch_size=4 backbone.weights=null
    python benchmarks/precision.py --modes 32-true,16-mixed batch_size=16     # AMP with bigger batches
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

#: mode -> (Lightning precision, TF32 matmuls and convolutions allowed)
MODES = {
    "32-true": ("32-true", False),
    "32-true+tf32": ("32-true", True),
    "16-mixed": ("16-mixed", False),
    "bf16-mixed": ("bf16-mixed", False),
}


def arguments() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=40, help="timed batches per run")
    p.add_argument("--warmup", type=int, default=5, help="untimed batches at the start of each run")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (each runs every mode once)")
    p.add_argument(
        "--warmup-rounds",
        type=int,
        default=1,
        help="untimed rounds first: on an H100 the first round of PennFudan ran at ~9 img/s in every mode "
        "and the later ones at 40-65 (the cause was not profiled)",
    )
    p.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated, first is the reference; of {','.join(MODES)}"
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides of conf/config.yaml")
    return p


if __name__ == "__main__":  # --help and a wrong argument answer before torch and Lightning are imported (5 s)
    arguments().parse_intermixed_args()


import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from masklab.data.datamodule import build_datamodule  # noqa: E402
from overhead import lightning_run  # noqa: E402


def main(argv=None) -> dict:
    p = arguments()
    args = p.parse_intermixed_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := [m for m in args.modes if m not in MODES]:
        p.error(f"--modes: unknown {', '.join(unknown)}; choose from {', '.join(MODES)}")
    if not torch.cuda.is_available():
        sys.exit("benchmarks/precision.py: no CUDA GPU is visible here; it compares GPU precisions")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["logger=none", "optimizer.lr=0.0005", *args.overrides])
    datamodule = build_datamodule(cfg)
    speeds = {m: [] for m in args.modes}
    for r in range(args.warmup_rounds + args.rounds):
        this_round = {}
        for mode in args.modes:
            precision, tf32 = MODES[mode]
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            this_round[mode] = lightning_run(cfg, datamodule, args.batches, args.warmup, "gpu", precision)
        timed = r >= args.warmup_rounds
        for mode, speed in this_round.items():
            speeds[mode] += [speed] * timed
        print(
            f"round {r + 1}{'' if timed else ' (warm-up, not counted)'}: "
            + ", ".join(f"{m} {v:.1f}" for m, v in this_round.items())
            + " img/s",
            flush=True,
        )
    base = statistics.median(speeds[args.modes[0]])
    print(
        f"\n{torch.cuda.get_device_name(0)}, batch {cfg.batch_size}, {args.batches} timed batches x "
        f"{args.rounds} rounds after {args.warmup_rounds} untimed (median):"
    )
    result = {}
    for mode, v in speeds.items():
        result[mode] = statistics.median(v)
        print(f"  {mode:14s} {result[mode]:7.1f} img/s   x{result[mode] / base:.2f} of {args.modes[0]}")
    return result


if __name__ == "__main__":
    main()
