"""evaluate.py, inference-only re-tuning, predict.py (splash, video), end-of-training plots and report.py."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image
from torch import nn

from conftest import ROOT, compose_cfg, make_tiny_prepared
from masklab.data.datamodule import build_datamodule
from masklab.eval import runner
from masklab.eval.checkpoint import load_checkpoint
from masklab.metrics.coco import CocoEvaluator
from masklab.model.inference import detection_settings
from masklab.viz import draw

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for 3 epochs, tracked in its own MLflow store: (checkpoint, tracking uri, run dir)."""
    from masklab.training import train

    tmp = tmp_path_factory.mktemp("trained")
    uri = f"sqlite:///{tmp}/mlflow.db"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    GlobalHydra.instance().clear()
    cfg = compose_cfg(
        [
            "logger=mlflow",
            "schedule.epochs=3",
            "data.train.num_images=16",
            "data.val.num_images=6",
            "batch_size=4",
            "experiment_name=ev",
            f"paths.tracking_uri={uri}",
            "schedule.warmup_iters=5",
            "log_predictions=2",
            "seed=1",  # a 12-step model on a knife's edge: seed 1's scores reach 0.18, seed 42's stay under 0.06
        ]
    )
    train(cfg, tmp / "run")
    return tmp / "run" / "checkpoints" / "last.ckpt", uri, tmp / "run"


def env_for(uri):
    return {**os.environ, "MLFLOW_TRACKING_URI": uri}


def test_inference_only_retuning_equals_rerunning_the_model(trained):
    module, cfg, _ = load_checkpoint(trained[0])
    model, names = module.model, module.class_names
    loader = build_datamodule(cfg).val_dataloader()
    gt, raw = runner.run_network(model, loader, score_floor=0.05, progress=False)
    counts = []
    for setting in [(0.05, 0.5, 100), (0.1, 0.3, 5), (0.2, 0.7, 20)]:
        full = CocoEvaluator(names)
        with detection_settings(model, *setting), torch.no_grad():
            for images, targets in loader:
                full.update(targets, model(list(images)))
        expected = full.compute("val")
        got, ours, _ = runner.evaluate_setting(gt, raw, names, *setting, prefix="val")
        counts.append(len(full.dt))
        assert len(ours.dt) == len(full.dt)
        for k, v in expected.items():
            assert (math.isnan(v) and math.isnan(got[k])) or got[k] == pytest.approx(v, abs=1e-12), (setting, k)
    assert counts[0] > counts[1] > 0  # detections to compare, and the settings really change them


def test_precision_recall_and_confusion_count_detections_scoring_at_least_min_score():
    # one ground-truth square; the network found it (0.9) and a weak detection where nothing is (0.2). At the
    # detection min confidence of 0.05 (what AP wants) the weak one was half the "precision"
    square = torch.zeros(1, 64, 64, dtype=torch.uint8)
    square[0, 10:30, 10:30] = 1
    gt = CocoEvaluator([])
    gt.add_targets(
        [
            {
                "image_id": torch.tensor(1),
                "boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0]]),
                "labels": torch.tensor([1]),
                "masks": square,
            }
        ]
    )
    raw = {
        1: {
            "boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0], [40.0, 40.0, 60.0, 60.0]]),
            "scores": torch.tensor([0.9, 0.2]),
            "labels": torch.tensor([1, 1]),
            "mask_probs": torch.ones(2, 1, 28, 28),
            "image_size": (64, 64),
            "original_size": (64, 64),
        }
    }
    counted = {s: runner.evaluate_setting(gt, raw, ["one"], 0.05, 0.5, 100, "val", min_score=s) for s in (0.5, 0.0)}
    (strict, _, at_half), (loose, _, at_zero) = counted[0.5], counted[0.0]
    assert at_half["confusion"].tolist() == [[0, 0], [0, 1]] and at_zero["confusion"].tolist() == [[0, 1], [0, 1]]
    assert strict["val/precision"] == strict["val/recall"] == strict["val/f1"] == 1.0
    assert loose["val/precision"] == 0.5 and loose["val/recall"] == 1.0
    # AP ranks every detection the setting keeps, whatever min_score says
    assert strict["val/segm_AP50"] == loose["val/segm_AP50"] == 1.0 and strict["val/segm_AP"] == loose["val/segm_AP"]
    assert len(at_half["predictions"][1]["scores"]) == 2
    assert (at_half["counted_score"], at_zero["counted_score"]) == (0.5, 0.05)  # what confusion_matrix.png's title says


def test_evaluate_cli_writes_everything_and_logs_to_the_training_run(trained, tmp_path):
    ckpt, uri, _ = trained
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "evaluate.py"),
            f"ckpt={ckpt}",
            f"hydra.run.dir={tmp_path}",
            "retune.score_thresh=[0.05,0.5,0.9]",
            "retune.nms_thresh=[0.3,0.5]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env_for(uri),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(tmp_path.glob("*.log"))  # no 0-byte evaluate.log: its lines go to the console
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in (
        "val/segm_AP",
        "val/segm_AP50",
        "val/segm_AP75",
        "val/segm_APs",
        "val/bbox_AP",
        "val/voc_mAP50",
        "val/precision",
        "val/recall",
        "val/segm_AP_square",
    ):
        assert key in metrics
    for name in ("pr_curves.png", "confusion_matrix.png", "coco_results.json", "raw_predictions.pt", "retune.md"):
        assert (tmp_path / name).stat().st_size > 0, name
    results = json.loads((tmp_path / "coco_results.json").read_text())
    assert results and {"image_id", "category_id", "bbox", "score", "segmentation"} <= set(results[0])
    rows = (tmp_path / "retune.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3 * 2 and "Best setting per metric" in proc.stdout
    client = mlflow.MlflowClient(uri)
    run_id = torch.load(ckpt, map_location="cpu", weights_only=False)["mlflow_run_id"]
    run = client.get_run(run_id)
    assert run.data.metrics["eval/val/segm_AP"] == pytest.approx(metrics["val/segm_AP"])
    assert "evaluate/pr_curves.png" in {a.path for a in client.list_artifacts(run_id, "evaluate")}
    # the cached detections re-tune without the network, with the same numbers
    # ... and ckpt= may name the MLflow run instead of the file (its best checkpoint: same classes, the cache's network)
    again = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "evaluate.py"),
            f"ckpt=runs:/{run_id}",
            f"cache={tmp_path / 'raw_predictions.pt'}",
            f"hydra.run.dir={tmp_path / 'again'}",
            "log_mlflow=false",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env_for(uri),
    )
    assert again.returncode == 0 and json.loads((tmp_path / "again" / "metrics.json").read_text()) == metrics
    assert (
        f"ckpt=runs:/{run_id}: MLflow run {run.info.run_name}, best checkpoint {run.data.tags['best_checkpoint']}"
        in again.stdout
    )


def test_ckpt_names_an_mlflow_run_or_a_study_and_says_when_it_cannot(trained, tmp_path):
    from mlflow import MlflowClient

    from masklab import MasklabError
    from masklab.eval.checkpoint import checkpoint_path

    last, uri, run_dir = trained
    run_id = torch.load(last, map_location="cpu", weights_only=False)["mlflow_run_id"]
    best = checkpoint_path(run_id, uri)  # a path or an fsspec URL, as the run's tag says
    assert Path(best).parent == run_dir / "checkpoints" and Path(best).name.startswith("best-epoch")
    assert Path(best).is_file()
    assert checkpoint_path(f"runs:/{run_id}", uri) == best and checkpoint_path(str(last), uri) == str(last)
    # a study's parent run: its best trial's run; trial 2 repeated trial 0's setting (not trained: no checkpoint)
    db = tmp_path / "study.db"
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.create_experiment("s")
    parent = client.create_run(exp, tags={"masklab.role": "study", "study": "s", "best_trial": "2"}).info.run_id
    children = [({"best_checkpoint": str(best)}), ({"best_checkpoint": str(last)}), ({"same_as": "0"})]
    for number, tags in enumerate(children):
        client.create_run(exp, tags={"mlflow.parentRunId": parent, "trial_number": str(number), **tags})
    assert checkpoint_path(parent, f"sqlite:///{db}") == best
    gone = client.create_run(exp, tags={"best_checkpoint": str(tmp_path / "moved.ckpt")}, run_name="gone").info.run_id
    elsewhere = client.create_run(exp, tags={"best_checkpoint": "/there/b.ckpt", "host": "gpu7"}, run_name="far")
    unborn = client.create_run(exp, tags={"masklab.role": "study", "study": "t"}).info.run_id
    never = client.create_run(exp, run_name="never").info.run_id
    cases = [
        (gone, "MLflow run gone's best checkpoint " + str(tmp_path / "moved.ckpt") + " is not on this machine"),
        (
            elsewhere.info.run_id,
            "MLflow run far's best checkpoint /there/b.ckpt is not on this machine (trained on gpu7, moved or deleted)",
        ),  # the machine to look on
        (unborn, "study t has no best trial yet"),
        (never, "MLflow run never has no best checkpoint"),
        ("0" * 32, f"no MLflow run {'0' * 32} in sqlite:///{db}"),
    ]
    for spec, said in cases:
        with pytest.raises(MasklabError, match="^" + re.escape(f"ckpt={spec}: {said}")):
            checkpoint_path(spec, f"sqlite:///{db}")
    with pytest.raises(MasklabError, match=re.escape(f"ckpt={run_id}: no MLflow database at {tmp_path / 'nope.db'}")):
        checkpoint_path(run_id, f"sqlite:///{tmp_path / 'nope.db'}")
    assert not (tmp_path / "nope.db").exists()  # looking did not create an empty store


def test_network_keys_given_at_evaluation_reach_the_model(trained, tmp_path):
    # image size and RPN NMS are baked into the model when it is built: given to evaluate.py/predict.py,
    # nms.rpn_nms_thresh went into the run's config but the network ran at the checkpoint's value (the same
    # numbers), and image_min_size, a plain key, was a ValueError traceback out of runtime_config
    from hydra import compose, initialize_config_dir

    from masklab.eval.checkpoint import load_for_inference

    given = ["image_min_size=40", "image_max_size=40", "nms.rpn_nms_thresh=0.3"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"ckpt={trained[0]}", *given])
    base, trained_cfg, unchanged, _ = load_for_inference(cfg, overridden=[])
    assert unchanged == [] and base.model.transform.min_size == (64,) and base.model.rpn.nms_thresh == 0.7
    module, rcfg, changed, _ = load_for_inference(cfg, overridden=given)
    assert changed == ["image_min_size=40", "image_max_size=40", "nms.rpn_nms_thresh=0.3"]
    assert module.model.transform.min_size == (40,) and module.model.transform.max_size == 40
    assert module.model.rpn.nms_thresh == 0.3
    loader = build_datamodule(trained_cfg).val_dataloader()
    _, raw64 = runner.run_network(base.model, loader, score_floor=0.05, progress=False)
    _, raw40 = runner.run_network(module.model, loader, score_floor=0.05, progress=False)
    assert raw64.keys() == raw40.keys() and sum(len(r["scores"]) for r in raw64.values()) > 0
    assert not any(torch.equal(raw64[i]["boxes"], raw40[i]["boxes"]) for i in raw64)  # another network pass
    # cached detections cannot show another network pass: one line, not the cache's numbers under the new setting
    from masklab import MasklabError
    from masklab.evaluation import evaluate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "evaluate", overrides=[f"ckpt={trained[0]}", f"cache={trained[0]}", "image_min_size=40", "log_mlflow=false"]
        )
    with pytest.raises(MasklabError) as err:
        evaluate(cfg, tmp_path, overridden=["image_min_size=40"])
    assert str(err.value) == (
        f"cache={trained[0]}: image_min_size=40 changes the network pass, which cache= skips; "
        "drop cache= to run the network at that setting"
    )


def test_evaluate_bad_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"not a checkpoint")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "src" / "evaluate.py"), f"ckpt={bad}", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {bad}: not a masklab checkpoint")


def test_bad_runtime_options_are_one_line_before_the_network_runs(trained, tmp_path):
    from hydra import compose, initialize_config_dir

    from masklab import MasklabError
    from masklab.eval.checkpoint import resolve_device
    from masklab.evaluation import evaluate

    ckpt = trained[0]
    cases = [
        (["device=gpu"], "device=gpu: choose auto, cpu, cuda or cuda:<index>"),
        ([f"cache={tmp_path / 'gone.pt'}"], f"cache={tmp_path / 'gone.pt'}: file not found"),
        ([f"cache={ckpt}"], f"cache={ckpt}: not an evaluate.py raw_predictions.pt"),
        (["retune.score_thresh=[0.5,abc]"], r"retune.score_thresh=[0.5, 'abc']: numbers expected, not ['abc']"),
        (["retune.score_thresh=[0.01,0.5]"], "retune.score_thresh=[0.01, 0.5]: below score_floor=0.05"),
        (["split=test"], "split=test: choose one of the held-out splits this data has: ['val']"),
    ]
    if not torch.cuda.is_available():
        cases.append((["device=cuda"], "device=cuda: no CUDA GPU is visible here; use device=cpu (or auto)"))
    for overrides, message in cases:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("evaluate", overrides=[f"ckpt={ckpt}", "log_mlflow=false", *overrides])
        with pytest.raises(MasklabError) as err:
            evaluate(cfg, tmp_path)
        assert str(err.value).startswith(message), (overrides, str(err.value))
    # an nms key is the checkpoint's unless given on the command line (Hydra's overrides): checked as given
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"ckpt={ckpt}", "log_mlflow=false", "nms.box_nms_thresh=abc"])
    with pytest.raises(MasklabError, match=r"^nms.box_nms_thresh=abc: must be an IoU in \[0, 1\]$"):
        evaluate(cfg, tmp_path, overridden=["nms.box_nms_thresh=abc"])
    assert not (tmp_path / "raw_predictions.pt").exists()  # none of them ran the network
    assert resolve_device("cpu") == "cpu" and resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_evaluate_on_data_with_other_classes_is_one_line(trained, tmp_path):
    # a 1-class dataset against the 4-class shapes model: every "object" was scored as the model's "square"
    other = make_tiny_prepared(tmp_path / "other")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "evaluate.py"),
            f"ckpt={trained[0]}",
            "data=prepared",
            "data.name=tiny",
            f"data.root={other}",
            "log_mlflow=false",
            f"hydra.run.dir={tmp_path / 'ev'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env_for(trained[1]),
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: ckpt={trained[0]}: the model was trained on classes ['square', 'circle', 'triangle', 'ellipse'] "
        "but data=tiny has ['object']; evaluate it on data with the same classes in the same order"
    )
    assert not (tmp_path / "ev" / "raw_predictions.pt").exists()


def test_splash_keeps_instances_in_colour_and_grays_the_rest():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    masks = torch.zeros(2, 1, 40, 50)
    masks[0, 0, 5:15, 5:20], masks[1, 0, 25:35, 30:45] = 0.9, 0.6
    masks[1, 0, 0:3, 0:3] = 0.3  # below 0.5: not part of the instance
    out = draw.splash(image, {"masks": masks})
    inside = (masks[:, 0] >= 0.5).any(0).numpy()
    assert np.array_equal(out[inside], image[inside])
    outside = out[~inside]
    assert (outside[:, 0] == outside[:, 1]).all() and (outside[:, 1] == outside[:, 2]).all()
    assert not np.array_equal(outside, image[~inside])  # it really changed the background
    none = draw.splash(image, {"masks": torch.zeros(0, 1, 40, 50)})
    assert (none[..., 0] == none[..., 2]).all()


def test_predict_video_in_video_out_same_frames_and_rate(trained, tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (64, 64))
    from masklab.data.shapes import ShapesDataset

    frames = ShapesDataset(9, 64, seed=4)
    for i in range(len(frames)):
        writer.write(cv2.cvtColor(frames[i][0], cv2.COLOR_RGB2BGR))
    writer.release()
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "predict.py"),
            f"ckpt={trained[0]}",
            f"input={video}",
            "mode=splash",
            f"output={tmp_path / 'out'}",
            "results_json=true",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip_splash.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 9 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 9
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert len(preds["images"]) == 9


def test_a_video_interrupted_midway_keeps_the_frames_drawn_as_a_playable_video(tmp_path):
    from masklab.prediction import predict_video

    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (64, 64))
    for _ in range(9):
        writer.write(np.zeros((64, 64, 3), np.uint8))
    writer.release()

    class CtrlCAtFrame5:  # a Predictor as predict_video calls it: (rgb, frame index) -> drawn rgb
        mode = "splash"

        def __call__(self, rgb, i):
            if i == 5:
                raise KeyboardInterrupt
            return rgb

    with pytest.raises(KeyboardInterrupt) as stopped:  # its traceback keeps the writer alive, as a handler may
        predict_video(CtrlCAtFrame5(), video, tmp_path)
    cap = cv2.VideoCapture(str(tmp_path / "clip_splash.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 5 and stopped.value is not None  # released at once: an mp4 is unreadable until its index is written


def test_a_cluster_stopping_predict_midway_leaves_a_playable_video_and_exit_143(trained, tmp_path):
    import time

    video, n_frames = tmp_path / "long.mp4", 3000  # ~1 min of work here: the stop comes well before the end
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (64, 64))
    for i in range(n_frames):
        writer.write(np.full((64, 64, 3), i % 255, np.uint8))
    writer.release()
    out = tmp_path / "out" / "long_splash.mp4"
    cmd = [sys.executable, str(ROOT / "src" / "predict.py"), f"ckpt={trained[0]}", f"input={video}", "mode=splash",
           f"output={out.parent}", f"hydra.run.dir={tmp_path}"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not out.exists() and time.time() < deadline:  # the writer opens once the model is loaded
        time.sleep(0.2)
    time.sleep(2.0)
    assert proc.poll() is None, "predict ended before the stop"
    os.killpg(proc.pid, signal.SIGTERM)  # as SLURM or Kubernetes stop a job: every process of it
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.splitlines()[-1] == "interrupted (SIGTERM)"
    cap, n = cv2.VideoCapture(str(out)), 0
    while cap.read()[0]:
        n += 1
    assert 0 < n < n_frames  # the frames drawn before the stop, readable: the mp4 was finished, not cut off


def test_predict_images_instances(trained, tmp_path):
    from masklab.data.shapes import ShapesDataset

    (tmp_path / "in").mkdir()
    for i in range(2):
        cv2.imwrite(
            str(tmp_path / "in" / f"s{i}.png"), cv2.cvtColor(ShapesDataset(2, 64, seed=9)[i][0], cv2.COLOR_RGB2BGR)
        )
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "predict.py"),
            f"ckpt={trained[0]}",
            f"input={tmp_path / 'in'}",
            f"output={tmp_path / 'out'}",
            "nms.box_score_thresh=0.0",
            "min_score=0",
            "results_json=true",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(tmp_path.glob("*.log"))  # no 0-byte predict.log
    drawn = cv2.imread(str(tmp_path / "out" / "s0_instances.png"))
    original = cv2.imread(str(tmp_path / "in" / "s0.png"))
    assert drawn.shape == (64, 64, 3)
    assert (drawn != original).any(axis=2).mean() > 0.05  # with confidence 0 there are instances, and they are drawn
    found = json.loads((tmp_path / "out" / "predictions.json").read_text())["annotations"]
    assert f"{len(found)} instances scoring >= 0 in 2 images" in proc.stdout.splitlines() and found
    # min_score (default 0.5) keeps what is drawn and written to the confident ones: above every score, nothing;
    # and a stem shared by two images (s0.png, s0.jpg) gives each its own drawing (s0_instances.png was written twice);
    # input= a glob pattern, as Hydra passes it
    cv2.imwrite(str(tmp_path / "in" / "s0.jpg"), 255 - original)
    top = max(a["score"] for a in found)
    strict = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "predict.py"),
            f"ckpt={trained[0]}",
            f"input={tmp_path / 'in'}/s*",
            f"output={tmp_path / 'strict'}",
            "nms.box_score_thresh=0.0",
            f"min_score={min(1, top + 1e-3)}",
            "results_json=true",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert strict.returncode == 0, strict.stderr[-3000:]
    assert json.loads((tmp_path / "strict" / "predictions.json").read_text())["annotations"] == []
    assert sorted(p.name for p in (tmp_path / "strict").glob("*.png")) == [
        "s0.jpg_instances.png",
        "s0.png_instances.png",
        "s1_instances.png",
    ]
    assert np.array_equal(cv2.imread(str(tmp_path / "strict" / "s0.png_instances.png")), original)
    assert "0 instances scoring >= " in strict.stdout and " in 3 images" in strict.stdout
    bad = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "predict.py"),
            f"ckpt={trained[0]}",
            f"input={tmp_path / 'in'}",
            "min_score=1.5",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert (
        bad.returncode == 1 and bad.stderr.strip().splitlines()[-1] == "error: min_score=1.5: must be a score in [0, 1]"
    )
    # a file that is not an image is skipped in a folder; alone, it is an error (it said "written to" with exit 0)
    (tmp_path / "in" / "notes.png").write_text("not an image")
    fake = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "predict.py"),
            f"ckpt={trained[0]}",
            f"input={tmp_path / 'in' / 'notes.png'}",
            f"output={tmp_path / 'out2'}",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert fake.returncode == 1 and "Traceback" not in fake.stderr
    assert fake.stderr.strip().splitlines()[-2:] == [
        f"skipped {tmp_path / 'in' / 'notes.png'}: not a readable image",
        f"error: input={tmp_path / 'in' / 'notes.png'}: no readable image (1 skipped, see above)",
    ]


def test_predict_input_patterns_and_output_names_that_do_not_overwrite(tmp_path):
    from masklab import MasklabError
    from masklab.eval.inputs import image_paths, output_names

    for rel in ("x/a.jpg", "y/a.jpg", "y/b.png", "y/b.jpg", "y/c.png", "y/notes.txt", "z/deep/d.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = image_paths(f"{tmp_path}/**/*")
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "x/a.jpg",
        "y/a.jpg",
        "y/b.jpg",
        "y/b.png",
        "y/c.png",
        "z/deep/d.png",
    ]
    assert output_names(found) == ["x__a.jpg", "y__a.jpg", "b.jpg", "b.png", "c", "d"]  # none the same
    assert image_paths(str(tmp_path / "y")) == [tmp_path / "y" / n for n in ("a.jpg", "b.jpg", "b.png", "c.png")]
    assert output_names(image_paths(f"{tmp_path}/y/[ac].*")) == ["a", "c"]
    for spec, said in [
        (f"{tmp_path}/*.gif", "no image (.png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp) matches the pattern"),
        (f"{tmp_path}/nothing.png", "not found"),
        (str(tmp_path / "z"), "no images (.png"),
    ]:
        with pytest.raises(MasklabError, match="^" + re.escape(f"input={spec}: {said}")):
            image_paths(spec)


def test_report_sorts_by_a_metric_it_does_not_show_and_names_bad_choices(caplog):
    from types import SimpleNamespace

    from masklab import MasklabError
    from masklab.track.report import table

    def run(name, **metrics):
        return SimpleNamespace(
            info=SimpleNamespace(run_name=name, status="FINISHED", run_id=name),
            data=SimpleNamespace(tags={}, params={}, metrics=metrics),
        )

    runs = [
        run("a", **{"val/segm_AP": 0.5, "val/segm_AP75": 0.2}),
        run("b", **{"val/segm_AP": 0.4, "val/segm_AP75": 0.3}),
        run("c", **{"val/segm_AP": 0.6}),
    ]
    rows = table(runs, [], ["val/segm_AP"], "val/segm_AP75", "max")  # AP75 is not among the shown metrics
    assert [r["run"] for r in rows] == ["b", "a", "c"] and rows[0]["val/segm_AP75"] == 0.3
    assert [r["run"] for r in table(runs, [], ["val/segm_AP"], "val/segm_AP", "min")] == ["b", "a", "c"]
    with pytest.raises(
        MasklabError, match=r"metric=val/bogus: no run of this experiment logged it; logged: \['val/segm_AP'"
    ):
        table(runs, [], [], "val/bogus", "max")
    with pytest.raises(MasklabError, match="mode=up: choose max or min"):
        table(runs, [], [], "val/segm_AP", "up")
    assert "data" not in rows[0]  # one data (none tagged): no column
    first, again = "6de9457baf19", "0123456789ab"  # again: trained after the data was prepared again
    runs[0].data.tags["data_digest"] = runs[2].data.tags["data_digest"] = first
    runs[1].data.tags["data_digest"] = again
    with caplog.at_level("WARNING", logger="masklab.report"):
        rows = table(runs, [], ["val/segm_AP"], "val/segm_AP", "max")
    assert [(r["run"], r["data"]) for r in rows] == [("c", first), ("a", first), ("b", again)]
    assert "the runs trained on 2 different data" in caplog.text


def test_report_on_a_database_that_does_not_exist_is_one_line_and_creates_none(tmp_path):
    db = tmp_path / "typo.db"  # MLflow created an empty database there and said the experiment was missing
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "report.py"),
            f"paths.tracking_uri=sqlite:///{db}",
            f"hydra.run.dir={tmp_path / 'out'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: no MLflow database at {db}: train first")
    assert not db.exists()


def test_training_leaves_loss_and_ap_plots_and_report_compares_runs(trained, tmp_path):
    ckpt, uri, run_dir = trained
    assert (run_dir / "loss_curves.png").stat().st_size > 0 and (run_dir / "ap_curves.png").stat().st_size > 0
    history = (run_dir / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 3 and "train/loss_mask" in history[0] and "val/loss_mask" in history[0]
    client = mlflow.MlflowClient(uri)
    run_id = torch.load(ckpt, map_location="cpu", weights_only=False)["mlflow_run_id"]
    rows = list(csv.DictReader(history))
    for key in ("val/segm_AP", "val/bbox_AP50", "val/loss"):  # each epoch's row has that epoch's values
        logged = [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
        assert [round(float(r[key]), 5) for r in rows] == [round(v, 5) for v in logged], key
    assert {"plots/loss_curves.png", "plots/ap_curves.png", "plots/history.csv"} <= {
        a.path for a in client.list_artifacts(run_id, "plots")
    }
    drawn = sorted(p.name for p in (run_dir / "predictions").iterdir())  # log_predictions=2: the first two val images
    assert drawn == ["val_000.png", "val_001.png"]
    assert {a.path for a in client.list_artifacts(run_id, "predictions")} == {f"predictions/{f}" for f in drawn}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "src" / "report.py"), "experiment=ev", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env_for(uri),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "runs.md").read_text()
    assert "val/segm_AP" in table and "mobilenet_v3_large" in table
    assert (tmp_path / "losses_val.png").stat().st_size > 0 and (tmp_path / "runs.csv").exists()
    sheet = np.asarray(Image.open(tmp_path / "predictions.png"))  # the ground truth, then each run's prediction
    own = np.asarray(Image.open(run_dir / "predictions" / "val_000.png"))
    w = (own.shape[1] - 4) // 2
    assert sheet.shape == (
        own.shape[0],
        2 * (w + 4),
        3,
    )  # the ground truth and the 1 run: no blank cells, one title each
    assert np.array_equal(sheet[18:, :w], own[18:, :w]) and np.array_equal(
        sheet[18:, w + 4 : 2 * w + 4], own[18:, w + 4 :]
    )
    missing = subprocess.run(
        [sys.executable, str(ROOT / "src" / "report.py"), "experiment=nope", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env_for(uri),
    )
    assert missing.returncode == 1 and "no MLflow experiment 'nope'" in missing.stderr


def test_the_prediction_gallery_draws_the_ground_truth_on_its_object(tmp_path):
    """Ground truth on the left, the model's prediction on the right, both scaled up to be read (64 -> 384 px)."""
    from masklab.eval.gallery import HEADER, val_gallery

    image = torch.zeros(3, 64, 64)
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:30, 20:50] = 1
    target = {"boxes": torch.tensor([[20.0, 10.0, 50.0, 30.0]]), "labels": torch.tensor([1]), "masks": masks}
    nothing = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "scores": torch.zeros(0),
        "masks": torch.zeros(0, 1, 64, 64),
    }
    model = nn.Module()
    model.forward = lambda images: [nothing for _ in images]  # a model that finds nothing
    [path] = val_gallery(model, [(image, target)], ["thing"], 5, tmp_path)
    drawn = np.asarray(Image.open(path))[HEADER:]
    left, right = drawn[:, :384], drawn[:, 388:]
    assert drawn.shape == (384, 2 * 384 + 4, 3) and not right.any()  # nothing predicted: the black image
    painted = left.any(axis=2)
    inside = np.zeros((384, 384), bool)
    inside[60:180, 120:300] = True  # the mask, 6x
    assert painted[inside].mean() == 1.0 and painted[~inside].mean() < 0.03  # outside: the outline and box only


def test_the_gallery_leaves_weak_detections_out_and_draws_the_strongest_on_top(tmp_path):
    """At the run's detection min confidence (0.05) weak duplicates covered an object and its label; torchvision lists
    detections strongest first, so the strongest was drawn first and painted over."""
    from masklab.eval.gallery import HEADER, MIN_SCORE, val_gallery

    image = torch.zeros(3, 64, 64)
    masks = torch.zeros(3, 1, 64, 64)
    masks[0, 0, 10:30, 10:30] = masks[1, 0, 10:30, 10:30] = 1  # the object and a weaker duplicate of it
    masks[2, 0, 40:60, 40:60] = 1  # a weak detection elsewhere
    pred = {
        "boxes": torch.tensor([[10.0, 10, 30, 30], [10, 10, 30, 30], [40, 40, 60, 60]]),
        "labels": torch.tensor([1, 1, 1]),
        "scores": torch.tensor([0.9, 0.6, MIN_SCORE - 0.01]),
        "masks": masks,
    }
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 64, 64)}
    model = nn.Module()
    model.forward = lambda images: [pred for _ in images]
    [path] = val_gallery(model, [(image, empty)], ["thing"], 1, tmp_path)
    right = np.asarray(Image.open(path).convert("RGB"))[HEADER:, 388:]
    assert not right[240:360, 240:360].any()  # the weak detection (6x) is not drawn
    inside = right[90:150, 90:150].reshape(-1, 3)  # the object's inside, away from outlines and labels
    first, second = draw.palette(3)[:2]
    once = (np.zeros(3) * 0.55 + np.array(second) * 0.45).astype(np.uint8)
    on_top = (once * 0.55 + np.array(first) * 0.45).astype(np.uint8)  # the duplicate, then the strongest over it
    assert (inside == on_top).all()
    assert draw.confident(pred, 0.6)["scores"].tolist() == pytest.approx([0.9, 0.6])
    assert draw.confident(empty, 0.6) is empty  # ground truth has no scores: all of it


def test_a_gallery_that_cannot_be_drawn_warns_and_the_finished_run_stands(tmp_path, caplog):

    from masklab.eval.gallery import log_predictions

    with caplog.at_level("WARNING", "masklab.train"):
        log_predictions(2, nn.Module(), None, str(tmp_path / "gone.ckpt"), tmp_path, None)
    assert "predictions of the first 2 val images not drawn: FileNotFoundError" in caplog.text


@pytest.mark.parametrize("cli", ["evaluate", "predict"])
def test_running_out_of_gpu_memory_in_evaluate_or_predict_names_their_own_keys(cli, trained, tmp_path):
    """Their out-of-memory line suggested training's trainer.precision=16-mixed, which neither has. The network pass
    raises torch's error (patched in, as a GPU raised it: OUT_OF_MEMORY) and the CLI runs as ``python src/<cli>.py``."""
    from conftest import OUT_OF_MEMORY

    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    where = {"evaluate": ("masklab.eval.runner", "run_network"), "predict": ("masklab.viz.draw", "confident")}[cli]
    args = [
        f"ckpt={trained[0]}",
        f"hydra.run.dir={tmp_path / 'out'}",
        *(["log_mlflow=false"] if cli == "evaluate" else [f"input={image}"]),
    ]
    code = (
        f"import importlib, runpy, sys, torch\nsys.path.insert(0, {str(ROOT / 'src')!r})\n"
        f"def oom(*a, **k): raise torch.OutOfMemoryError({OUT_OF_MEMORY!r})\n"
        f"setattr(importlib.import_module({where[0]!r}), {where[1]!r}, oom)\n"
        f"sys.argv = [{cli!r}, *{args!r}]\nrunpy.run_path({str(ROOT / 'src' / f'{cli}.py')!r}, run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    advice = {
        "evaluate": "lower batch_size or the test-time image size (image_min_size, image_max_size), or use device=cpu",
        "predict": "lower the test-time image size (image_min_size, image_max_size), or use device=cpu",
    }[cli]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: CUDA out of memory. Tried to allocate 20.00 MiB. "
        "GPU 0 has a total capacity of 79.18 GiB of which 74.61 GiB "
        f"is free. Including non-PyTorch memory, this process has 4.56 GiB memory in use: {advice}"
    )


def test_evaluate_warns_when_the_data_is_not_what_the_model_trained_on(tmp_path, caplog):
    # data prepared again with another split: its val images may be ones the model trained on, AP too high
    from hydra import compose, initialize_config_dir

    from conftest import TINY_MODEL
    from masklab.data.canonical import digest
    from masklab.evaluation import evaluate
    from masklab.training import train

    root = make_tiny_prepared(tmp_path / "first")
    GlobalHydra.instance().clear()
    overrides = [o for o in TINY_MODEL if not o.startswith("data.image_size")]
    train(compose_cfg(["data=prepared", "data.name=x", f"data.root={root}", *overrides], tiny=False), tmp_path / "r")
    ckpt = tmp_path / "r" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False, map_location="cpu")["data_digest"] == digest(root)
    again = make_tiny_prepared(tmp_path / "again", n=6)
    for data, warned in ((root, False), (again, True)):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            given = ["data=prepared", "data.name=x", f"data.root={data}"]
            cfg = compose("evaluate", overrides=[f"ckpt={ckpt}", "log_mlflow=false", *given])
        caplog.clear()
        evaluate(cfg, tmp_path, overridden=given)
        said = [r.getMessage() for r in caplog.records if "trained on data whose annotations" in r.getMessage()]
        assert said == ([f"ckpt={ckpt} trained on data whose annotations are {digest(root)}; {again} holds "
                         f"{digest(again)} (other data, or prepared again: then its val split may hold images the "
                         "model trained on, and the metrics are too high)"] if warned else [])  # fmt: skip
