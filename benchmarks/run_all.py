#!/usr/bin/env python
"""Every benchmark of the project in one command; one table of ratios and figures -> benchmarks/RESULTS.md.

    python benchmarks/run_all.py            # everything (hours on 2 cores: pruning, PennFudan, your_data)
    python benchmarks/run_all.py --quick    # shorter versions of each (minutes; figures less representative)
    python benchmarks/run_all.py --resume   # keep finished benchmarks' figures (benchmarks/.results/)
    python benchmarks/run_all.py --only your_data   # run one benchmark, replace its rows, keep the others

Ratios are measured side by side within each benchmark; absolute times are this machine's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))


def arguments() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--resume", action="store_true", help="reuse benchmarks/.results/<name>.json of finished benchmarks")
    only = "run this benchmark alone and replace its rows in RESULTS.md"
    p.add_argument("--only", choices=["your_data"], help=only)  # ALONE's keys (below, after the imports)
    return p


if __name__ == "__main__":  # --help and a wrong argument answer before torch and Lightning are imported (5 s)
    arguments().parse_args()


import torch  # noqa: E402

import dataloader  # noqa: E402
import eval_speed  # noqa: E402
import memory  # noqa: E402
import overhead  # noqa: E402
import pennfudan  # noqa: E402
import precision  # noqa: E402
import pruning  # noqa: E402
import your_data  # noqa: E402


def machine() -> str:
    import lightning
    import psutil
    import torchvision

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"{os.cpu_count()} CPU cores, {psutil.virtual_memory().total / 1024**3:.0f} GiB RAM, GPU: {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"Lightning {lightning.__version__}"
    )


CACHE = HERE / ".results"


MET = {True: "yes", False: "NO", None: "-"}  # None: a reference figure (a bound), not measured against a target


def cached(name: str, resume: bool, fn, argv: list[str]) -> dict:
    """Run one benchmark's main(argv), keeping its result so --resume can skip it after a later failure."""
    path = CACHE / f"{name}.json"
    if resume and path.is_file():
        print(f"{name}: reusing {path}")
        return json.loads(path.read_text())
    result = fn(argv)
    CACHE.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    return result


def _kwargs(kwargs: dict) -> str:
    """Optuna kwargs as the sweeper's command line writes them: {min_resource:1}; {} for Optuna's defaults."""
    return "{" + ",".join(f"{k}:{v}" for k, v in kwargs.items()) + "}"


#: the second draw of trials (sampler seed 1, every pruner replayed): how much one draw's ranking of pruners holds
SECOND_DRAW = ["--seed", "1", "--pruners"]


def pruning_rows(pr: dict) -> list[dict]:
    """The table's rows of one pruning.py result (its real pruned studies, replays and the oracle bound);
    a draw other than seed 0 says so in each row's name and command."""
    rows = []
    none = pr["rows"]["no pruning"]
    draw = f", sampler seed {pr['seed']}" if pr.get("seed") else ""
    command = "python benchmarks/pruning.py" + (f" --seed {pr['seed']} --pruners" if draw else "")
    for name, r in pr["ratios"].items():
        row = pr["rows"][name]
        o = pr.get("orders", {}).get(name.replace(" (replay)", ""))
        spread = (
            (
                f"; over {o['orders']} random orders of the same trials: median ratio "
                f"{'never' if o['median'] is None else format(o['median'], '.2f')}, <= 0.5 in {o['share_le_0.5']:.0%}, "
                f"bar never reached in {o['share_never']:.0%}"
            )
            if o and name.endswith("(replay)")
            else ""
        )
        bound = name.startswith(pruning.ORACLE)
        rows.append(
            {
                "benchmark": (
                    f"pruning savings ({name})"
                    if not bound
                    else "pruning savings: bound of pruners that let best-so-far trials finish (oracle replay)"
                )
                + draw,
                "figure": "never" if r["ratio"] is None else f"{r['ratio']:.2f}",
                "target": "<= 0.5" if not bound else "(reference)",
                "met": None if bound else r["ratio"] is not None and r["ratio"] <= 0.5,
                "detail": f"{pr.get('trials', 10)} trials x {pr.get('epochs', 6)} epochs "
                f"of {pr.get('images', 96)} images, "
                f"{pr.get('sampler', 'tpe')} sampler; "
                f"epochs until a trial reaches segm AP {pr['bar']:.3f} (the unpruned study's best - 0.01): "
                f"{'never' if row['epochs_to_bar'] is None else row['epochs_to_bar']} vs {none['epochs_to_bar']}; "
                f"to within 0.01 of its own best "
                f"{row['epochs_to_own_best']} vs {none['epochs_to_own_best']} ({r['own_best_ratio']:.2f}); "
                f"final best {row['best_segm_AP']:.3f} vs {none['best_segm_AP']:.3f}; total epochs "
                f"{row['total_epochs']} vs {none['total_epochs']}, {row['pruned']} pruned, "
                + (f"pruner_kwargs {_kwargs(row['pruner_kwargs'])}, " if "pruner_kwargs" in row else "")
                + (
                    f"{row['minutes']:.1f} vs {none['minutes']:.1f} min"
                    if "minutes" in row
                    else "replayed on the unpruned study's curves"
                )
                + {True: " (its replay gives the same epochs)", False: " (differs from its replay)"}.get(
                    row.get("replay_matches"), ""
                )
                + spread,
                "command": command,
            }
        )
    return rows


def precision_row(pc: dict) -> dict:
    """The row of one precision.py result (images/s by mode, 32-true first): AMP's speed as a ratio of fp32's."""
    amp = {m: pc[m] / pc["32-true"] for m in ("16-mixed", "bf16-mixed") if m in pc}
    return {
        "benchmark": "mixed precision speed (GPU, images/s vs 32-true)",
        "figure": " / ".join(f"{r:.2f}x" for r in amp.values()),
        "target": "(reference: sets trainer=gpu's precision)",
        "met": None,
        "detail": ", ".join(f"{m} {v:.1f}" for m, v in pc.items()) + " img/s, the main job's config",
        "command": "python benchmarks/precision.py",
    }


def run(quick: bool, resume: bool = False) -> list[dict]:
    rows = []
    o = cached(
        "overhead", resume, overhead.main, ["--batches", "10" if quick else "30", "--rounds", "1" if quick else "3"]
    )
    rows.append(
        {
            "benchmark": "framework overhead",
            "figure": f"{o['ratio']:.3f}",
            "target": ">= 0.97",
            "met": o["ratio"] >= 0.97,
            "detail": f"Lightning {o['lightning_img_s']:.2f} vs bare {o['bare_img_s']:.2f} img/s",
            "command": "python benchmarks/overhead.py",
        }
    )
    d = cached("dataloader", resume, dataloader.main, ["--batches", "20" if quick else "40"])
    rows.append(
        {
            "benchmark": "data loading vs training",
            "figure": f"{d['ratio']:.1f}x",
            "target": ">= 3x",
            "met": d["ratio"] >= 3,
            "detail": f"{d['loading_img_s']:.0f} vs {d['training_img_s']:.2f} img/s (full augmentation, 2 workers)",
            "command": "python benchmarks/dataloader.py",
        }
    )
    e = cached("eval_speed", resume, eval_speed.main, ["--images", "500", "--repeats", "1" if quick else "3"])
    rows.append(
        {
            "benchmark": "COCO evaluation speed",
            "figure": f"{e['ratio']:.1f}x",
            "target": ">= 3x",
            "met": e["ratio"] >= 3,
            "detail": f"pycocotools {e['pycocotools_s']:.2f} s vs masklab {e['masklab_s']:.2f} s, "
            "500 images, numbers identical",
            "command": "python benchmarks/eval_speed.py",
        }
    )
    pr = cached("pruning", resume, pruning.main, ["--trials", "6", "--epochs", "3", "--images", "96"] if quick else [])
    rows += pruning_rows(pr)
    if not quick:  # another draw of 20 configurations (~70 min): one draw ranked the pruners, the next did not
        rows += pruning_rows(cached("pruning_seed1", resume, pruning.main, SECOND_DRAW))
    m = cached("memory", resume, memory.main, ["schedule.epochs=1"] if quick else [])
    rows.append(
        {
            "benchmark": "peak RSS of the main job",
            "figure": f"{m['main_peak_gib']:.2f} GiB",
            "target": "<= 4 GiB",
            "met": m["main_peak_gib"] <= 4,
            "detail": f"with the 2 loader workers (PSS) {m['tree_peak_gib']:.2f} GiB; run took {m['minutes']:.1f} min",
            "command": "python benchmarks/memory.py",
        }
    )
    if torch.cuda.is_available():  # precision.py compares GPU precisions: nothing to measure on a CPU
        rows.append(
            precision_row(
                cached("precision", resume, precision.main, ["--rounds", "1", "--batches", "10"] if quick else [])
            )
        )
    pf = cached("pennfudan", resume, pennfudan.main, ["--epochs", "3"] if quick else [])
    if pf:
        pre, scr = pf["pretrained (ImageNet)"], pf["scratch"]
        rows.append(
            {
                "benchmark": "PennFudan transfer (test segm AP50)",
                "figure": f"{pre['test/segm_AP50']:.3f} vs {scr['test/segm_AP50']:.3f}",
                "target": ">= 0.85 pretrained, in 20 min",
                "met": pre["test/segm_AP50"] >= 0.85 and pre["minutes"] <= 20,
                "detail": f"pretrained: segm AP {pre['test/segm_AP']:.3f}, bbox AP50 {pre['test/bbox_AP50']:.3f}, "
                f"{pre['minutes']:.1f} min; scratch: segm AP {scr['test/segm_AP']:.3f}, "
                f"bbox AP50 {scr['test/bbox_AP50']:.3f}, "
                f"{scr['minutes']:.1f} min",
                "command": "python benchmarks/pennfudan.py",
            }
        )
    rows += ALONE["your_data"][1](quick, resume)
    return rows


def _your_data_detail(v: dict) -> str:
    recall = v["anchor_recall"]
    recall = "- (no statistics)" if recall != recall else f"{recall:.3f}"  # NaN: shapes has no prepared statistics
    crops = f" (crops {v['crop_size']})" if v.get("crop_size") else ""
    budget = f"{v['steps']} steps" if v.get("steps") else f"{v['epochs']} epochs"
    return (
        f"AP50 {v['segm_AP50']:.3f}, AP {v['segm_AP']:.3f}, anchor recall {recall}, {v['image_size']} px{crops}, "
        f"anchors {v['anchors']}, {budget}, {v['minutes']:.1f} min"
    )


def your_data_rows(yd: dict) -> list[dict]:
    """One row per dataset of your_data.py: segm AP50 with the derived settings vs the fixed ones, and anchor recall."""
    rows = []
    for name, r in yd.items():
        a, f = r.get("auto"), r.get("fixed")
        target = {
            "dense_small": ">= 0.5 auto, < 0.2 fixed, in 20 min",
            "pennfudan": ">= 0.86 auto (AP >= 0.42)",
            "shapes": ">= 0.924 (the main job), in 10 min",
        }.get(name, "(reference)")
        met = {
            "dense_small": bool(a and f and a["segm_AP50"] >= 0.5 and f["segm_AP50"] < 0.2 and a["minutes"] <= 20),
            "pennfudan": bool(a and a["segm_AP50"] >= 0.86 and a["segm_AP"] >= 0.42),
            "shapes": bool(a and a["segm_AP50"] >= 0.924 and a["minutes"] <= 10),
        }.get(name)
        detail = "; ".join(
            f"{k}: "
            + _your_data_detail(v)
            + (f" ({v['note']})" if v.get("note") else "")  # how a run was made when not by the row's command alone
            for k, v in r.items()
        )
        split = next(iter(r.values()))
        rows.append(
            {
                "benchmark": f"your data: {name} ({split['split']} split, {split['images']} images; segm AP50)",
                "figure": " vs ".join(f"{v['segm_AP50']:.3f}" for v in r.values()),
                "target": target,
                "met": met,
                "detail": detail,
                "command": f"python benchmarks/your_data.py --only {name}",
            }
        )
    return rows


def _line(r: dict) -> str:
    """One row of the results table."""
    met = MET.get(r["met"], "NO")
    return f"| {r['benchmark']} | {r['figure']} | {r['target']} | {met} | {r['detail']} | `{r['command']}` |"


def _notes() -> list[str]:
    """The hand-written notes (GPU figures, what limits a target), appended after the table; kept across runs."""
    notes = HERE / "RESULTS_NOTES.md"
    return ["", notes.read_text().rstrip()] if notes.is_file() else []


def write(rows: list[dict], quick: bool, path: Path = HERE / "RESULTS.md") -> str:
    lines = [
        f"# Benchmark results ({dt.date.today().isoformat()}{', --quick' if quick else ''})",
        "",
        f"Machine: {machine()}.",
        "",
        "Ratios are measured side by side in one run; times are this machine's.",
        "",
        "| benchmark | figure | target | met | detail | reproduce |",
        "|---|---|---|---|---|---|",
    ]
    lines += [_line(r) for r in rows] + _notes()
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


#: benchmarks that can be re-run alone (--only): their rows, by the prefix of their "benchmark" cell
ALONE = {"your_data": ("your data:", lambda quick, resume: your_data_rows(
    cached("your_data", resume, your_data.main, ["--steps", "40"] if quick else [])))}  # fmt: skip


def replace_rows(name: str, rows: list[dict], path: Path = HERE / "RESULTS.md") -> str:
    """RESULTS.md with benchmark ``name``'s rows measured again (dated in the title), every other row kept and the
    notes taken again from RESULTS_NOTES.md."""
    prefix, lines = f"| {ALONE[name][0]}", path.read_text().splitlines()
    notes = next((k for k, x in enumerate(lines) if x.startswith("## ")), len(lines))
    end = max(i for i in range(notes) if lines[i].startswith("| "))  # the table's last row
    head = [x for x in lines[: end + 1] if not x.startswith(prefix)]
    title = head[0].split(";")[0].rstrip(")") + f"; {name} rows {dt.date.today().isoformat()})"
    tail = _notes() or lines[end + 1 :]
    text = "\n".join([title, *head[1:], *map(_line, rows), *tail]) + "\n"
    path.write_text(text)
    return text


def main(argv=None) -> None:
    args = arguments().parse_args(argv)
    if args.only:
        print(replace_rows(args.only, ALONE[args.only][1](args.quick, args.resume)))
        return
    print(write(run(args.quick, args.resume), args.quick))


if __name__ == "__main__":
    main()
