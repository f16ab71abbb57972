"""The benchmarks' own arithmetic (their runs are too long for the suite; benchmarks/run_all.py runs them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import pruning  # noqa: E402
import run_all  # noqa: E402


def _trial(*values):
    return SimpleNamespace(intermediate_values=dict(enumerate(values)))


def test_epochs_to_best_counts_every_epoch_until_the_best_is_within_tol():
    trials = [_trial(0.1, 0.2, 0.3), _trial(0.05), _trial(0.2, 0.395, 0.40), _trial(0.1, 0.2)]
    # final best 0.40; trial 2 reaches >= 0.39 at its 2nd epoch but counts whole: 3 + 1 + 3 = 7
    assert pruning.epochs_to_best(trials, tol=0.01) == (7, 0.40, 9)
    # a loose tolerance is met by the first trial already
    assert pruning.epochs_to_best(trials, tol=0.15) == (3, 0.40, 9)


def test_epochs_to_a_common_bar_and_never():
    trials = [_trial(0.1, 0.2), _trial(0.05), _trial(0.3, 0.35)]
    assert pruning.epochs_to(trials, 0.2) == 2
    assert pruning.epochs_to(trials, 0.3) == 5
    assert pruning.epochs_to(trials, 0.36) is None


def test_epochs_to_best_ignores_trials_that_reported_nothing():
    trials = [_trial(), _trial(0.3, 0.5), _trial()]  # e.g. failed in the first epoch
    assert pruning.epochs_to_best(trials, tol=0.01) == (2, 0.5, 2)


def test_results_table_has_one_row_per_benchmark_and_keeps_the_notes(tmp_path, monkeypatch):
    monkeypatch.setattr(run_all, "HERE", tmp_path)
    (tmp_path / "RESULTS_NOTES.md").write_text("## GPU\nnone lent\n")
    rows = [
        {"benchmark": "a", "figure": "1.0", "target": ">= 1", "met": True, "detail": "d", "command": "python a.py"},
        {"benchmark": "b", "figure": "0.9", "target": ">= 1", "met": False, "detail": "e", "command": "python b.py"},
        {
            "benchmark": "c",
            "figure": "0.5",
            "target": "(reference)",
            "met": None,
            "detail": "f",
            "command": "python c.py",
        },
    ]
    text = run_all.write(rows, quick=False, path=tmp_path / "RESULTS.md")
    assert (tmp_path / "RESULTS.md").read_text() == text
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert [line.split(" | ")[3] for line in table[1:]] == ["yes", "NO", "-"]
    assert "torch" in text and text.rstrip().endswith("none lent")


def test_one_benchmark_run_again_replaces_its_rows_and_keeps_the_others_and_the_notes(tmp_path, monkeypatch):
    monkeypatch.setattr(run_all, "HERE", tmp_path)
    (tmp_path / "RESULTS_NOTES.md").write_text("## Notes\n| your data: a notes table line | 1 |\n")
    row = {"target": "t", "met": True, "detail": "d", "command": "c"}
    old = [{**row, "benchmark": "a", "figure": "1"}, {**row, "benchmark": "your data: x", "figure": "0.1"}]
    run_all.write(old, quick=False, path=tmp_path / "RESULTS.md")
    (tmp_path / "RESULTS_NOTES.md").write_text("## Notes\n| your data: a notes table line | 2 |\n")  # edited since
    new = [{**row, "benchmark": "your data: x", "figure": "0.8"}, {**row, "benchmark": "your data: y", "figure": "0.7"}]
    text = run_all.replace_rows("your_data", new, path=tmp_path / "RESULTS.md")
    table = [line.split(" | ")[:2] for line in text.split("## Notes")[0].splitlines() if line.startswith("| ")][1:]
    assert table == [["| a", "1"], ["| your data: x", "0.8"], ["| your data: y", "0.7"]]
    assert text.splitlines()[0].endswith("; your_data rows " + run_all.dt.date.today().isoformat() + ")")
    assert text.rstrip().endswith("| your data: a notes table line | 2 |")  # today's notes, not part of the table


def test_pruning_rows_of_a_second_draw_name_their_seed_and_command():
    study = {"epochs_to_bar": 40, "epochs_to_own_best": 40, "best_segm_AP": 0.8, "total_epochs": 240, "pruned": 0}
    pr = {
        "rows": {
            "no pruning": study,
            "median (replay)": {**study, "epochs_to_bar": 30, "total_epochs": 120, "pruned": 9},
        },
        "ratios": {"median (replay)": {"ratio": 0.75, "own_best_ratio": 0.75, "total_ratio": 0.5}},
        "bar": 0.79,
        "trials": 20,
        "epochs": 12,
        "images": 288,
        "sampler": "random",
    }
    (first,) = run_all.pruning_rows(pr)
    assert (
        first["benchmark"] == "pruning savings (median (replay))" and first["command"] == "python benchmarks/pruning.py"
    )
    assert first["figure"] == "0.75" and first["met"] is False and "30 vs 40" in first["detail"]
    (second,) = run_all.pruning_rows({**pr, "seed": 1})
    assert second["benchmark"] == "pruning savings (median (replay)), sampler seed 1"
    assert (
        second["command"]
        == "python benchmarks/pruning.py --seed 1 --pruners"
        == "python benchmarks/pruning.py " + " ".join(run_all.SECOND_DRAW)
    )


def test_precision_row_gives_amp_speed_as_a_ratio_of_fp32():
    row = run_all.precision_row({"32-true": 40.0, "32-true+tf32": 38.0, "16-mixed": 32.0, "bf16-mixed": 36.0})
    assert row["figure"] == "0.80x / 0.90x" and row["met"] is None
    assert row["detail"].startswith("32-true 40.0, 32-true+tf32 38.0, 16-mixed 32.0, bf16-mixed 36.0 img/s")


def _done(*values, state="COMPLETE"):
    return SimpleNamespace(intermediate_values=dict(enumerate(values)), state=pruning.TrialState[state])


def test_replay_stops_a_trial_where_the_median_pruner_would():
    # masklab's median defaults: 3 finished trials first, no pruning at the first epoch (step 0)
    good = [_done(0.1, 0.3, 0.5)] * 3
    slow = _done(0.05, 0.1, 0.2)  # best 0.1 < median 0.3 of the finished trials at step 1: pruned there
    fast = _done(0.2, 0.4, 0.6)
    curves = pruning.replay([*good, slow, fast], "median")
    assert curves == [[0.1, 0.3, 0.5]] * 3 + [[0.05, 0.1], [0.2, 0.4, 0.6]]


def test_replay_follows_successive_halving_rungs():
    # masklab's default min_resource 1: rung 0 at step 1, only the best of < 4 trials there promoted
    trials = [_done(0.1, 0.3, 0.5), _done(0.2, 0.4, 0.6), _done(0.05, 0.1, 0.2), _done(0.3, 0.5, 0.7)]
    assert [len(c) for c in pruning.replay(trials, "successive_halving")] == [3, 3, 2, 3]
    assert [len(c) for c in pruning.replay(trials, "none")] == [3, 3, 3, 3]
    # the 2nd trial is compared with the 1st; with Optuna's min_resource="auto" the 1st is never recorded
    trials = [_done(0.1, 0.3, 0.5), _done(0.05, 0.1, 0.2)]
    assert [len(c) for c in pruning.replay(trials, "successive_halving")] == [3, 2]
    assert [len(c) for c in pruning.replay(trials, "successive_halving", {"min_resource": "auto"})] == [3, 3]


def test_replayed_curves_count_like_trials():
    curves = pruning.replay([_done(0.1, 0.3, 0.5)] * 3 + [_done(0.05, 0.1, 0.2), _done(0.2, 0.4, 0.6)], "median")
    assert pruning.epochs_to_best([pruning._Curve(c) for c in curves], tol=0.01) == (14, 0.6, 14)


def test_over_orders_without_a_pruner_is_always_one_and_counts_every_order():
    trials = [_done(0.1, 0.3, 0.5), _done(0.0, 0.0, 0.0), _done(0.2, 0.4, 0.6), _done(0.05, 0.1, 0.2)]
    stats = pruning.over_orders(trials, "none", n=30)
    assert stats == {"orders": 30, "median": 1.0, "share_le_0.5": 0.0, "share_never": 0.0}


def test_replay_on_val_loss_prunes_where_ap_is_still_tied_at_zero():
    # AP is 0 for every trial in its first two epochs (as on shapes at 12 steps per epoch); val loss already differs
    def trial(ap, loss):
        return pruning._Curve(ap, signals={pruning.LOSS: [-v for v in loss]})

    good = [trial([0.0, 0.0, 0.3], [1.0, 0.8, 0.6])] * 3
    slow = trial([0.0, 0.0, 0.1], [1.5, 1.4, 1.3])  # worse loss than the median at step 1: pruned there
    assert [len(c) for c in pruning.replay([*good, slow], "median")] == [3, 3, 3, 3]  # on AP: tied, kept
    assert [len(c) for c in pruning.replay([*good, slow], "median", on=pruning.LOSS)] == [3, 3, 3, 2]
    assert pruning.replay([*good, slow], "median", on=pruning.LOSS)[3] == [0.0, 0.0]  # AP prefix, not the loss
    assert slow.prefix(2).signals[pruning.LOSS] == [-1.5, -1.4]


def test_oracle_runs_best_so_far_trials_in_full_and_stops_the_others_after_one_epoch():
    trials = [
        _done(0.1, 0.2, 0.3),
        _done(0.0, 0.1, 0.2),
        _done(0.2, 0.4, 0.5),
        _done(0.0, 0.0, 0.5),
        _done(0.1, 0.3, 0.45),
    ]
    curves = pruning.replay(trials, pruning.ORACLE)
    # records: trial 0 (0.3), trial 2 (0.5); trial 3 only ties 0.5 and trial 4 is below: one epoch each
    assert curves == [[0.1, 0.2, 0.3], [0.0], [0.2, 0.4, 0.5], [0.0], [0.1]]
    # no pruner that lets best-so-far trials finish reaches the best in fewer epochs here: 3 + 1 + 3 = 7 of 9
    assert pruning.epochs_to([pruning._Curve(c) for c in curves], 0.5) == 7


def test_hyperband_replay_is_reproducible():
    # Hyperband puts trials in brackets by a hash of the study name: the replay names its study as the real one
    trials = [_done(0.1 * (i % 4), 0.1 * (i % 5), 0.1 * (i % 7)) for i in range(12)]
    assert pruning.replay(trials, "hyperband") == pruning.replay(trials, "hyperband")


def test_reuse_rescores_recorded_curves_and_keeps_the_epoch_size(tmp_path):
    # a result of before 2026-11-22 has no "images": its studies ran 96-image epochs
    curves = [
        [0, "COMPLETE", [0.1, 0.2, 0.3], [2.0, 1.8, 1.6]],
        [1, "COMPLETE", [0.0, 0.1, 0.5], [2.0, 1.5, 1.0]],
        [2, "COMPLETE", [0.0, 0.0, 0.1], [2.2, 2.1, 2.0]],
    ]
    old = {
        "prune_on": pruning.AP,
        "trials": 3,
        "epochs": 3,
        "sampler": "random",
        "rows": {
            "no pruning": {
                "trials": curves,
                "epochs_to_own_best": 6,
                "best_segm_AP": 0.5,
                "total_epochs": 9,
                "minutes": 1.0,
                "pruned": 0,
                "pruner_kwargs": {},
            }
        },
    }
    path = tmp_path / "pruning.json"
    path.write_text(json.dumps(old))
    result = pruning.main(["--reuse", str(path), "--orders", "5", "--replay", "median", pruning.ORACLE])
    assert (result["images"], result["val_images"]) == (96, 32)
    assert result["rows"]["no pruning"]["epochs_to_bar"] == 6  # trial 1 reaches 0.5 - 0.01 at the 6th epoch
    assert result["ratios"]["oracle (replay)"]["ratio"] == 1.0  # trials 0 and 1 are records: nothing to cut before 1
    path.write_text(json.dumps({**old, "images": 288}))
    assert pruning.main(["--reuse", str(path), "--orders", "5", "--replay", "median"])["images"] == 288


def test_replay_takes_a_pruner_with_its_own_kwargs(tmp_path):
    assert pruning.parse_spec("median") == ("median", None)
    assert pruning.parse_spec("percentile:percentile=25,n_startup_trials=1,n_warmup_steps=0") == (
        "percentile",
        {"percentile": 25, "n_startup_trials": 1, "n_warmup_steps": 0},
    )
    # trial 2 trails trial 0 from its first epoch: masklab's median defaults (3 start-up trials) keep it,
    # one start-up trial and no warm-up prune it at step 0; the kwargs are scored over orders too
    curves = [
        [0, "COMPLETE", [0.1, 0.3, 0.5], [2.0, 1.8, 1.6]],
        [1, "COMPLETE", [0.2, 0.4, 0.6], [2.0, 1.5, 1.0]],
        [2, "COMPLETE", [0.0, 0.1, 0.2], [2.2, 2.1, 2.0]],
    ]
    path = tmp_path / "pruning.json"
    path.write_text(
        json.dumps(
            {
                "prune_on": pruning.AP,
                "trials": 3,
                "epochs": 3,
                "sampler": "random",
                "images": 288,
                "rows": {
                    "no pruning": {
                        "trials": curves,
                        "epochs_to_own_best": 6,
                        "best_segm_AP": 0.6,
                        "total_epochs": 9,
                        "minutes": 1.0,
                        "pruned": 0,
                        "pruner_kwargs": {},
                    }
                },
            }
        )
    )
    eager = "median:n_startup_trials=1,n_warmup_steps=0"
    result = pruning.main(
        ["--reuse", str(path), "--orders", "4", "--replay-on", pruning.AP, "--replay", "median", eager]
    )
    assert result["rows"]["median (replay)"]["total_epochs"] == 9
    assert result["rows"][f"{eager} (replay)"]["total_epochs"] == 7
    assert result["rows"][f"{eager} (replay)"]["pruner_kwargs"] == {"n_startup_trials": 1, "n_warmup_steps": 0}
    assert result["orders"][eager]["orders"] == 4 and result["orders"][eager]["share_never"] == 0.0
    assert result["seed"] == 0  # a result without a seed (before stop 22): the default draw
    path.write_text(json.dumps({**json.loads(path.read_text()), "seed": 2, "warmup_iters": 20}))
    result = pruning.main(["--reuse", str(path), "--orders", "2", "--replay-on", pruning.AP, "--replay", "median"])
    assert (result["seed"], result["warmup_iters"]) == (2, 20)  # the draw it re-scores, not --seed's default


def test_asha_replay_trains_segments_and_a_recorded_asha_study_is_checked_against_it(tmp_path):
    # rungs 1, 2, 4 (factor 2): the schedule tests/test_asha.py works out by hand for these curves
    ap = [[0.1, 0.2, 0.3, 0.4], [0.3, 0.5, 0.6, 0.7], [0.0, 0.1, 0.1, 0.1], [0.2, 0.3, 0.35, 0.36]]
    unpruned = [[n, "COMPLETE", c, [1.0] * 4] for n, c in enumerate(ap)]
    parts, pruned = pruning.segments(
        pruning._recorded({"trials": unpruned})[1], "asha", {"min_resource": 1, "reduction_factor": 2}
    )
    assert [(t.span, len(t.values)) for t in parts] == [
        ((0, 0), 1),
        ((1, 0), 1),
        ((1, 1), 1),
        ((2, 0), 1),
        ((3, 0), 1),
        ((3, 1), 1),
        ((1, 2), 2),
    ]
    assert pruned == 3  # configurations 0, 2, 3 never reach their last epoch
    # the bar (0.7 - 0.01) is reached in the last segment: 8 epochs against 8 unpruned (trials 0 and 1 in full)
    assert (
        pruning.epochs_to(parts, 0.69) == 8 and pruning.epochs_to(pruning._recorded({"trials": unpruned})[1], 0.69) == 8
    )
    # a real asha study as run_study records it: each trial a segment, named by its configuration's first trial
    # and first epoch; numbered in the order the study ran them (the configuration 1 is the study's trial 1)
    real = [
        [0, "PRUNED", [0.1], [1.0], [0, 0]],
        [1, "PRUNED", [0.3], [1.0], [1, 0]],
        [2, "PRUNED", [0.5], [1.0], [1, 1]],
        [3, "PRUNED", [0.0], [1.0], [3, 0]],
        [4, "PRUNED", [0.2], [1.0], [4, 0]],
        [5, "PRUNED", [0.3], [1.0], [4, 1]],
        [6, "COMPLETE", [0.6, 0.7], [1.0, 1.0], [1, 2]],
    ]
    row = {"epochs_to_own_best": 8, "best_segm_AP": 0.7, "total_epochs": 16, "minutes": 1.0, "pruned": 0}
    path = tmp_path / "pruning.json"
    path.write_text(
        json.dumps(
            {
                "prune_on": pruning.AP,
                "trials": 4,
                "epochs": 4,
                "sampler": "random",
                "images": 288,
                "rows": {
                    "no pruning": {**row, "trials": unpruned, "pruner_kwargs": {}},
                    "asha": {**row, "trials": real, "pruner_kwargs": {"min_resource": 1, "reduction_factor": 2}},
                },
            }
        )
    )
    result = pruning.main(
        [
            "--reuse",
            str(path),
            "--orders",
            "3",
            "--replay-on",
            pruning.AP,
            "--replay",
            "asha:min_resource=1,reduction_factor=2",
        ]
    )
    assert result["rows"]["asha"]["replay_matches"] is True
    assert result["rows"]["asha"]["epochs_to_bar"] == 8 and result["ratios"]["asha"]["ratio"] == 1.0
    real[-1][4] = [0, 2]  # had the study resumed another configuration, its replay would say so
    path.write_text(
        json.dumps(
            {
                **json.loads(path.read_text()),
                "rows": {
                    **json.loads(path.read_text())["rows"],
                    "asha": {**row, "trials": real, "pruner_kwargs": {"min_resource": 1, "reduction_factor": 2}},
                },
            }
        )
    )
    result = pruning.main(["--reuse", str(path), "--orders", "1", "--replay-on", pruning.AP, "--replay", "oracle"])
    assert result["rows"]["asha"]["replay_matches"] is False


def test_baseline_stands_in_for_the_unpruned_study_only_if_it_ran_the_same_study(tmp_path, capsys, monkeypatch):
    curves = [[0, "COMPLETE", [0.1, 0.2, 0.3], [2.0, 1.8, 1.6]], [1, "COMPLETE", [0.0, 0.1, 0.5], [2.0, 1.5, 1.0]]]
    old = {
        "prune_on": pruning.AP,
        "trials": 2,
        "epochs": 3,
        "images": 288,
        "val_images": 32,
        "sampler": "random",
        "seed": 0,
        "warmup_iters": 0,
        "rows": {
            "no pruning": {
                "trials": curves,
                "epochs_to_own_best": 6,
                "best_segm_AP": 0.5,
                "total_epochs": 6,
                "minutes": 1.0,
                "pruned": 0,
                "pruner_kwargs": {},
            }
        },
    }
    path, saved = tmp_path / "base.json", tmp_path / "results" / "out.json"  # a folder not there yet
    path.write_text(json.dumps(old))
    (tmp_path / "weights.pth").touch()  # as where ../shared has them (the trials would start from them)
    monkeypatch.setattr(pruning, "WEIGHTS", tmp_path / "weights.pth")
    # no --pruners: nothing trains, the baseline's curves are scored and the result saved
    result = pruning.main(
        [
            "--baseline",
            str(path),
            "--trials",
            "2",
            "--epochs",
            "3",
            "--pruners",
            "--orders",
            "3",
            "--replay",
            pruning.ORACLE,
            "--save",
            str(saved),
        ]
    )
    assert result["rows"]["no pruning"]["epochs_to_bar"] == 6
    assert json.loads(saved.read_text())["rows"]["no pruning"]["trials"] == curves
    try:
        pruning.main(["--baseline", str(path), "--trials", "2", "--epochs", "6", "--pruners", "median"])
    except SystemExit as e:
        assert str(e) == f"--baseline {path}: its unpruned study ran another study: epochs 3 here 6"
    else:
        raise AssertionError("a baseline of 3-epoch trials stood in for 6-epoch ones")
    # a checkout whose ../shared has no ImageNet weights trains from scratch: not the recorded (pretrained) study
    monkeypatch.setattr(pruning, "WEIGHTS", tmp_path / "no-such.pth")
    with pytest.raises(SystemExit, match=f"backbone {pruning.PRETRAINED} here {pruning.SCRATCH}"):
        pruning.main(["--baseline", str(path), "--trials", "2", "--epochs", "3", "--pruners", "median"])


def test_precision_benchmark_refuses_unknown_modes_and_a_machine_without_gpu(capsys, monkeypatch):
    import precision

    with pytest.raises(SystemExit):
        precision.main(["--modes", "32-true,fp8"])
    assert "--modes: unknown fp8; choose from 32-true, 32-true+tf32, 16-mixed, bf16-mixed" in capsys.readouterr().err
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA GPU is visible here; it compares GPU precisions"):
        precision.main(["--modes", "32-true,16-mixed"])
