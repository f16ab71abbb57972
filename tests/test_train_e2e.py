"""End-to-end runs of src/train.py: MLflow contents, resume after a kill, non-finite loss, --help."""

from __future__ import annotations

import csv
import math
import os
import re
import signal
import subprocess
import sys
import time

import mlflow
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from conftest import OUT_OF_MEMORY, ROOT, SRC, TINY, compose_cfg, sigint_as_in_a_terminal
from masklab.track.history import read_csv

pytestmark = pytest.mark.slow
LOSSES = ["loss", "loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"]


def cli(*overrides, tmp_path, timeout=600, wait=True, merge=True, **popen):
    """train.py with the tiny config in ``tmp_path``: its CompletedProcess, or (``wait=False``) the running Popen
    (``popen``: more of its arguments), whose stderr goes to its stdout unless ``merge=False``."""
    args = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        *[o for o in TINY if not o.startswith("logger=")],
        f"hydra.run.dir={tmp_path}/run",
        f"paths.output_root={tmp_path}/outputs",
        *overrides,
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    if not wait:
        return subprocess.Popen(
            args,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge else subprocess.PIPE,
            text=True,
            **popen,
        )
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


def test_mlflow_run_has_params_curves_metrics_and_artifacts(tmp_path):
    from masklab.training import train

    GlobalHydra.instance().clear()
    cfg = compose_cfg(
        [
            "logger=mlflow",
            "schedule.epochs=2",
            "trainer.log_every_n_steps=1",
            "experiment_name=e2e",
            f"paths.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        ]
    )
    value = train(cfg, tmp_path / "run")
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("e2e")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # mlflow ui opens on its runs, not Traces
    (run,) = client.search_runs([exp.experiment_id])
    params = run.data.params
    assert params["max_gt_instances"] == "100" and params["rois_per_image"] == "32"  # auto without statistics: fixed
    assert params["backbone.arch"] == "mobilenet_v3_large" and params["anchors.sizes"] == "[8, 16, 32, 64, 128]"
    assert params["optimizer.lr"] == "0.02" and params["data.image_size"] == "64"
    for stage in ("train", "val"):
        for name in LOSSES:
            history = client.get_metric_history(run.info.run_id, f"{stage}/{name}")
            assert history, f"{stage}/{name} missing"
            assert all(torch.isfinite(torch.tensor(m.value)) for m in history)
    assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 2  # one point per epoch
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 4  # one per step (2 x 2)
    metrics = run.data.metrics
    for iou in ("bbox", "segm"):
        for k in ("AP", "AP50", "AP75"):
            assert 0.0 <= metrics[f"val/{iou}_{k}"] <= 1.0
        for k in ("APs", "APm", "APl", "AP_square", "AP_circle", "AP_triangle", "AP_ellipse"):
            v = metrics[f"val/{iou}_{k}"]  # NaN where the val images hold no such object
            assert math.isnan(v) or 0.0 <= v <= 1.0
    assert value == pytest.approx(float(run.data.tags["best_score"]), abs=1e-6)
    assert os.path.isfile(run.data.tags["best_checkpoint"])
    assert run.info.artifact_uri.startswith((tmp_path / "mlruns").as_uri())  # beside the database, not in the cwd
    config = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config.yaml")
    assert "mobilenet_v3_large" in config and "${" not in config


@pytest.mark.parametrize("epochs,validated", [(3, [1, 2]), (1, [0])])
def test_the_last_epoch_is_validated_when_the_val_interval_does_not_divide_the_epochs(tmp_path, epochs, validated):
    # Lightning alone validates at epochs 2, 4, ... of check_val_every_n_epoch=2: the 3rd epoch was trained
    # but never judged, and a 1-epoch run had no validation, no best checkpoint and a NaN result
    import csv

    from masklab.training import train

    GlobalHydra.instance().clear()
    cfg = compose_cfg([f"schedule.epochs={epochs}", "trainer.check_val_every_n_epoch=2"])
    value = train(cfg, tmp_path / "run")
    with open(tmp_path / "run" / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == validated
    assert math.isfinite(value) and 0.0 <= value <= 1.0
    assert list((tmp_path / "run" / "checkpoints").glob("best-epoch*.ckpt"))


def test_resume_after_kill_continues_from_the_last_epoch(tmp_path):
    proc = cli(
        "schedule.epochs=40",
        "data.train.num_images=8",
        "logger=mlflow",
        "trainer.log_every_n_steps=1",
        tmp_path=tmp_path,
        wait=False,
    )
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # let the checkpoint finish writing
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists(), "the run never reached the end of an epoch"
    killed = torch.load(last, map_location="cpu", weights_only=False)
    epoch, step = killed["epoch"], killed["global_step"]
    assert epoch < 39, "killed too late to test resuming"
    resume_started_ms = time.time() * 1000
    resumed = cli(
        f"schedule.epochs={epoch + 3}",
        "data.train.num_images=8",
        "logger=mlflow",
        "trainer.log_every_n_steps=1",
        f"resume={last}",
        f"hydra.run.dir={tmp_path}/run2",
        tmp_path=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = torch.load(tmp_path / "run2" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert final["epoch"] == epoch + 2  # two more epochs, not epoch + 3 from zero
    assert final["global_step"] == step + 2 * 4  # 8 images / batch 2 = 4 steps per epoch
    assert final["mlflow_run_id"] == killed["mlflow_run_id"]  # the same MLflow run goes on
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    history = client.get_metric_history(final["mlflow_run_id"], "train/loss")
    steps = sorted(m.step for m in history if m.timestamp >= resume_started_ms)
    assert steps == list(range(step, final["global_step"]))  # the resumed process went on from `step`


@pytest.mark.parametrize("grid", [False, True])  # one run; a job of a plain Hydra grid (-m a=1,2)
def test_ctrl_c_exits_130_and_says_how_to_go_on(tmp_path, grid):
    jobs = ["hydra.mode=MULTIRUN", "seed=1,2", f"hydra.sweep.dir={tmp_path}/grid"] if grid else []
    proc = cli("schedule.epochs=40", "data.train.num_images=8", *jobs, tmp_path=tmp_path, wait=False,
               preexec_fn=sigint_as_in_a_terminal)  # fmt: skip
    run = tmp_path / ("grid/0" if grid else "run")
    last, deadline = run / "checkpoints" / "last.ckpt", time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # Ctrl-C, once an epoch has finished
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out[-3000:]  # a grid's job: Lightning's exit(1), and no word of what to do
    if not grid:
        assert f"interrupted: add resume={last} to the same command to go on from its last epoch" in out
        return
    said = out.split("interrupted at job #0: `")[1].split("`")[0]
    assert said.startswith("python src/train.py ") and said.endswith(f" seed=1 resume={last}")
    assert "the grid's later jobs did not run" in out and not (tmp_path / "grid" / "1").exists()


def test_a_password_given_on_the_command_line_is_masked_in_the_lines_and_configs_hydra_saves(tmp_path):
    url = "postgresql://ml:pw-on-the-command-line@db.invalid/mlflow"  # logger=none: never connected to
    grid = ["hydra.mode=MULTIRUN", "seed=1", f"hydra.sweep.dir={tmp_path}/grid"]  # a grid saves multirun.yaml too
    done = cli("logger=none", f"paths.tracking_uri={url}", *grid, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = sorted(tmp_path.rglob("*.yaml"))
    assert {p.name for p in saved} >= {"multirun.yaml", "config.yaml", "hydra.yaml", "overrides.yaml"}
    assert not [p for p in saved if "pw-on-the-command-line" in p.read_text()]
    assert "postgresql://ml:***@db.invalid/mlflow" in (tmp_path / "grid" / "0" / ".hydra" / "config.yaml").read_text()
    assert "pw-on-the-command-line" not in done.stdout + done.stderr  # Hydra's "#0 : ..." line included


def test_a_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    # exact resume: the loader order and augmentation draws come from (seed, epoch, image), the generators of the
    # RPN/RoI samplers and dropout are restored from the checkpoint, the history and best score carry over
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "tests" / "helpers"), str(SRC)]))
    common = ["schedule.epochs=4", "data.train.num_images=6", "num_workers=1", "box_head_dropout=0.2"]
    whole = cli(*common, f"hydra.run.dir={tmp_path}/whole", tmp_path=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    kill = "+callbacks.kill={_target_: killer.KillAtEpoch, epoch: 2}"
    killed = cli(*common, f"hydra.run.dir={tmp_path}/killed", kill, tmp_path=tmp_path)
    assert killed.returncode == -signal.SIGKILL
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 1  # epochs 0 and 1 trained
    resumed = cli(*common, f"hydra.run.dir={tmp_path}/resumed", f"resume={last}", tmp_path=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (torch.load(tmp_path / d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
            for d in ("whole", "resumed"))  # fmt: skip
    assert a["epoch"] == b["epoch"] == 3 and a["global_step"] == b["global_step"] == 12
    differ = [k for k, v in a["state_dict"].items() if not torch.equal(v, b["state_dict"][k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
    whole_rows, resumed_rows = (read_csv(tmp_path / d / "history.csv") for d in ("whole", "resumed"))
    assert [r["epoch"] for r in resumed_rows] == [0, 1, 2, 3]  # every epoch once, the killed run's two included
    for x, y in zip(whole_rows, resumed_rows, strict=True):
        assert x.keys() == y.keys() and all(x[k] == y[k] or (x[k] != x[k] and y[k] != y[k]) for k in x), (x, y)
    best = [ln for ln in (whole.stdout + resumed.stdout).splitlines() if "best = " in ln]
    assert len(best) == 2 and best[0].split("best = ")[1] == best[1].split("best = ")[1], best


def test_resuming_another_model_or_optimizer_is_one_line_naming_what_differs(tmp_path):
    # it was a page of "size mismatch for model.backbone..." (another backbone) or KeyError: 'step' (another optimizer)
    from masklab import MasklabError
    from masklab.model.module import build_module
    from masklab.track.resume import check_resumable

    assert cli(tmp_path=tmp_path).returncode == 0
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    instead = f"resume with the settings it was trained with, or start a new run from its weights: model.weights={last}"
    names = ["square", "circle", "triangle", "ellipse"]
    cases = [
        (
            ["backbone=r18"],
            names,
            r"it is a checkpoint of another model \(\d+ tensors differ, e\.g\. model\.backbone\.body"
            r".*backbone\.arch: mobilenet_v3_large -> resnet18\); ",
        ),
        (
            ["model.fpn_channels=16"],
            names,
            r"it is a checkpoint of another model \(\d+ tensors differ.*model\.fpn_channels: 32 -> 16\); ",
        ),
        (
            [],
            ["a", "b", "c", "d"],
            r"it is a checkpoint of another model \(the classes differ; classes \['square', 'circle', 'triangle', "
            r"'ellipse'\] -> \['a', 'b', 'c', 'd'\]\); ",
        ),
        (
            ["optimizer=adamw"],
            names,
            r"it was trained with torch\.optim\.SGD, this run has torch\.optim\.AdamW, and an "
            r"optimizer's state cannot continue in another; ",
        ),
    ]
    for overrides, classes, message in cases:
        GlobalHydra.instance().clear()
        cfg = compose_cfg(overrides)
        with pytest.raises(MasklabError, match=f"^resume={re.escape(str(last))}: {message}{re.escape(instead)}$"):
            check_resumable(str(last), build_module(cfg, class_names=classes), cfg)
    GlobalHydra.instance().clear()
    cfg = compose_cfg(["optimizer.lr=0.01", "schedule.epochs=3"])  # what resuming may change
    check_resumable(str(last), build_module(cfg, class_names=names), cfg)
    out = cli("backbone=r18", f"resume={last}", f"hydra.run.dir={tmp_path}/run2", tmp_path=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: resume={last}: it is a checkpoint of another model")


def _all_runs(tmp_path):
    """Every MLflow run of the test's own store (the one ``_isolated`` points MLFLOW_TRACKING_URI at)."""
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_a_trainer_lightning_refuses_is_one_line(tmp_path):
    # trainer=gpu on a machine without one was Hydra's "Error in call to target ... MisconfigurationException"
    from masklab import MasklabError
    from masklab.model.trainer import make_trainer

    GlobalHydra.instance().clear()
    with pytest.raises(
        MasklabError,
        match=r"^trainer \(accelerator=cpu, devices=0, strategy=auto\): `Trainer\(devices=0\)` "
        r"value is not a valid input using cpu accelerator\.$",
    ):
        make_trainer(compose_cfg(["trainer.devices=0"]).trainer)
    if torch.cuda.is_available():
        return
    out = cli("trainer=gpu", tmp_path=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    message = (
        "trainer (accelerator=gpu, devices=1, strategy=auto): No supported gpu backend found!; "
        "no CUDA GPU is visible here: use trainer=cpu (or trainer.accelerator=auto)"
    )
    assert out.stderr.strip().splitlines()[-1] == f"error: {message}"
    # once on the console (Hydra's console handler printed the logged copy too), and in the run's log file
    assert (out.stdout + out.stderr).count(message) == 1
    assert f"[ERROR] - {message}" in (tmp_path / "run" / "train.log").read_text()
    # the MLflow run it had opened is FAILED with its params written (it stayed RUNNING, and MLflow's queue
    # printed "Failed to submit batch" after the error line at exit)
    runs = _all_runs(tmp_path)
    assert [r.info.status for r in runs] == ["FAILED"] and runs[0].data.params["trainer.accelerator"] == "gpu"


def test_half_precision_on_the_cpu_is_one_line(tmp_path):
    # it was a RuntimeError traceback from torchvision's CPU NMS at the first validation batch (both run side by side)
    cases = {"bf16-true": "bfloat16", "16-true": "float16"}
    procs = {
        p: cli(f"trainer.precision={p}", "schedule.epochs=1", tmp_path=tmp_path / p, wait=False, merge=False)
        for p in cases
    }
    for precision, dtype in cases.items():
        _, stderr = procs[precision].communicate(timeout=600)
        assert procs[precision].returncode == 1 and "Traceback" not in stderr, stderr[-2000:]
        assert stderr.strip().splitlines()[-1] == (
            f"error: trainer.precision={precision} on the CPU: torchvision's CPU NMS "
            f"has no {dtype} kernel; use 32-true or bf16-mixed"
        )
        assert [r.info.status for r in _all_runs(tmp_path / precision)] == ["FAILED"]


def test_export_copies_a_best_checkpoint_kept_at_an_fsspec_url(tmp_path):
    import fsspec
    from omegaconf import OmegaConf

    from masklab.track.summary import export_files

    with fsspec.open("memory://export-test/best.ckpt", "wb") as f:  # a sweep's or a run's checkpoints on s3://...
        f.write(b"the weights")
    export = OmegaConf.create({"checkpoint": str(tmp_path / "model.ckpt"), "metrics": None, "history": None})
    export_files(export, "memory://export-test/best.ckpt", {}, math.nan, tmp_path / "history.csv")
    assert (tmp_path / "model.ckpt").read_bytes() == b"the weights"


@pytest.mark.parametrize("where", ["make_trainer", "export_files"])
def test_a_run_that_fails_outside_fit_is_failed_in_mlflow(where, tmp_path, monkeypatch):
    # Lightning finalizes the MLflow run only when fit/test raise: a run failing before fit (here: reading its
    # Trainer) stayed RUNNING, one failing after it (writing export files) said FINISHED for a failed command
    from masklab import MasklabError
    from masklab import training as train

    def fail(*args, **kwargs):
        raise MasklabError(f"{where} failed")

    monkeypatch.setattr(train, where, fail)
    GlobalHydra.instance().clear()
    cfg = compose_cfg(["logger=mlflow", f"paths.output_root={tmp_path}/outputs"])
    with pytest.raises(MasklabError, match=f"^{where} failed$"):
        train.train(cfg, tmp_path / "run")
    runs = _all_runs(tmp_path)
    assert [r.info.status for r in runs] == ["FAILED"] and runs[0].data.params["optimizer.lr"] == str(cfg.optimizer.lr)
    assert ("val/segm_AP" in runs[0].data.metrics) == (where == "export_files")  # it trained before failing


def test_running_out_of_gpu_memory_is_one_line_and_a_failed_run(tmp_path, monkeypatch):
    # torch's OutOfMemoryError was a 170-line traceback through conv2d (seen on an H100 capped at 4 GiB, batch 512);
    # the training step raises it here as it did there
    from masklab import training as train
    from masklab import user_message
    from masklab.model.module import MaskRCNNModule

    def step(self, batch, batch_idx):
        raise torch.OutOfMemoryError(OUT_OF_MEMORY)

    monkeypatch.setattr(MaskRCNNModule, "training_step", step)
    GlobalHydra.instance().clear()
    with pytest.raises(torch.OutOfMemoryError) as oom:
        train.train(compose_cfg(["logger=mlflow", f"paths.output_root={tmp_path}/outputs"]), tmp_path / "run")
    assert user_message(oom.value) == (
        "CUDA out of memory. Tried to allocate 20.00 MiB. "
        "GPU 0 has a total capacity of 79.18 GiB of which 74.61 GiB is free. "
        "Including non-PyTorch memory, this process has 4.56 GiB memory in use: lower batch_size or the image size "
        "(data.image_size), or train in mixed precision (trainer.precision=16-mixed)"
    )
    assert [r.info.status for r in _all_runs(tmp_path)] == ["FAILED"]


def test_a_plain_multirun_runs_every_job_and_names_the_failed_ones(tmp_path):
    # Hydra's own grid stopped at the first failing job with a traceback, and the other jobs never ran
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            "-m",
            *TINY,
            "optimizer.lr=1e30,0.01",
            "schedule.warmup_iters=0",
            f"hydra.sweep.dir={tmp_path}/grid",
            f"paths.output_root={tmp_path}/outputs",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-2:] == [
        "error: 1 job(s) of the multirun failed:",
        f"#0 {tmp_path}/grid/0: non-finite train loss at epoch 0 step 1: loss_classifier=nan, loss_box_reg=nan, "
        "loss_mask=nan, loss_objectness=nan, loss_rpn_box_reg=nan (lower the LR, add warmup or grad_clip_norm)",
    ]
    assert list((tmp_path / "grid" / "1" / "checkpoints").glob("best-epoch*.ckpt"))  # the job after it ran
    assert not (tmp_path / "grid" / "0" / "checkpoints").exists() or not list(
        (tmp_path / "grid" / "0" / "checkpoints").glob("best*")
    )


def test_mixed_precision_trains_and_validates(tmp_path):
    # bf16-mixed (what 16-mixed becomes on a CPU) crashed at the first validation: "unsupported ScalarType BFloat16"
    out = cli("trainer.precision=bf16-mixed", "schedule.epochs=2", tmp_path=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with open(tmp_path / "run" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1] and all(math.isfinite(float(r["train/loss"])) for r in rows)
    # start-up: the model's size by part, once; not Lightning's cloud-logger tip or torch's deprecation warning
    # about Lightning's own code
    said = out.stdout + out.stderr
    assert (
        said.count("model: Mask R-CNN, ") == 1 and "backbone " in said.split("model: Mask R-CNN, ")[1].splitlines()[0]
    )
    assert "Tip:" not in said and "LeafSpec" not in said


def test_lightning_summary_table_is_off_unless_asked_for():
    # its one row read "model | MaskRCNN | 7.7 M | train | 0" and "Total FLOPs: 0" (the model has no example input)
    from lightning.pytorch.callbacks import ModelSummary

    from masklab.data.auto import resolved
    from masklab.model.trainer import make_trainer

    GlobalHydra.instance().clear()
    summaries = [
        [
            c
            for c in make_trainer(resolved(compose_cfg(over, tiny=False)).trainer, logger=False).callbacks
            if isinstance(c, ModelSummary)
        ]
        for over in ([], ["+trainer.enable_model_summary=true"])
    ]
    assert [len(s) for s in summaries] == [0, 1]


def test_ddp_on_cpu_processes_trains_and_validates(tmp_path):
    # the only DDP run these machines can make (gloo, 2 CPU processes): trainer=ddp's sync_batchnorm raised
    # "SyncBatchNorm layers only work with GPU modules" there, and rank 1 failed logging params to MLflow
    out = cli(
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "data.val.num_images=3",
        "logger=mlflow",
        tmp_path=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "trainer.sync_batchnorm off: SyncBatchNorm needs CUDA" in out.stdout + out.stderr
    assert out.stdout.count("best checkpoint:") == 1  # the summary once, from rank 0
    assert (out.stdout + out.stderr).count("model: Mask R-CNN, ") == 1
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("masklab").experiment_id])
    assert run.data.params["trainer.strategy"] == "ddp" and run.info.status == "FINISHED"
    assert list((tmp_path / "run" / "checkpoints").glob("best-epoch000.ckpt"))
    with open(tmp_path / "run" / "history.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert math.isfinite(float(row["val/loss"])) and 0.0 <= float(row["val/segm_AP"]) <= 1.0


def test_resume_true_without_checkpoint_is_one_clear_line(tmp_path):
    out = cli("resume=true", tmp_path=tmp_path)
    assert out.returncode == 1
    assert "error: resume=true: no */checkpoints/last.ckpt under" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_non_finite_loss_stops_with_a_clear_message(tmp_path):
    out = cli(
        "optimizer.lr=1e30",
        "schedule.warmup_iters=0",
        "schedule.epochs=3",
        "data.train.num_images=8",
        tmp_path=tmp_path,
    )
    assert out.returncode == 1
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "non-finite train loss at epoch" in lines[0] and "loss_classifier=" in lines[0]
    assert "Traceback" not in out.stderr + out.stdout


def _helps(*commands: tuple[str, ...]) -> list[str]:
    """stdout of ``python src/<script>.py <args> --help`` for each command, run side by side (each pays the imports)."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "src" / f"{script}.py"), *args, "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for script, *args in commands
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    return [out for out, _ in outs]


def test_prepare_report_and_help_start_without_torch():
    # Hydra imports every plugin module (our sweeper's included) when any CLI starts: 5 s of Lightning for nothing;
    # train.py, evaluate.py and predict.py import their run after Hydra has answered --help
    code = (
        "import sys, hydra_plugins.masklab_sweeper, masklab.data.prepare, masklab.track.report; "
        "import train, evaluate, predict; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=SRC)
    assert out.stdout.strip() == "[]", out.stderr[-2000:]


def test_help_lists_groups_options_and_each_tools_own_keys():
    train, study, evaluate, predict, report = _helps(
        ("train",), ("train", "hydra/sweeper=optuna"), ("evaluate",), ("predict",), ("report",)
    )
    for group, options in {
        "backbone": "mobilenet_v2, mobilenet_v3, r101, r18, r50, x101",
        "anchors": "auto, default, small, tiny",
        "schedule": "constant, cosine, piecewise, step",
        "trainer": "cpu, ddp, gpu",
    }.items():
        assert f"{group}: {options}" in train
    assert "dataset_defaults" not in train  # included by the data options, not a group to pick (Hydra listed it)
    assert "hydra.sweeper" in train and "n_trials" not in train  # where the study's keys are, not them
    keys = study.split("== Optuna study (-m hydra/sweeper=optuna; hydra.sweeper.key=value) ==\n", 1)[1]
    for line in (
        "n_trials: 20               # trained COMPLETE + PRUNED trials in total",
        "pruner: asha ",
        "max_failures: 5 ",
        "duplicates: reuse ",
    ):
        assert any(ln.startswith(line) for ln in keys.splitlines()), line
    assert "_target_: hydra_plugins" not in keys
    # the other tools printed train's groups and ~170 lines of its composed config, their own keys at the bottom
    for out, own in [
        (
            evaluate,
            [
                "ckpt: ???",
                "score_floor: 0.05          # detections above it",
                "retune:",
                "  nms_thresh: null",
                "data: balloon, coco",
                "nms: default, rpn08, rpn09",
            ],
        ),
        (predict, ["input: ???", "mode: instances            # instances", "nms: default, rpn08, rpn09"]),
        (report, ["experiment: ${experiment_name}", "include_children: true"]),
    ]:
        keys = out.split("== Keys (key=value) ==\n", 1)[1]
        for line in own:
            assert any(ln.startswith(line) for ln in keys.splitlines()), line
        assert "backbone: " not in out and "_target_" not in out and len(out.splitlines()) < 40
        if out is not report:  # every key evaluate/predict take from the command line over the checkpoint's
            assert "image_min_size / image_max_size" in keys and "nms=<option> and nms.*" in keys


def test_prepare_pennfudan_then_train_on_it(tmp_path):
    from conftest import TINY_MODEL, needs_shared

    needs_shared("data", "PennFudanPed")
    root = tmp_path / "pf"
    prep = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "prepare.py"),
            "data=pennfudan",
            f"data.root={root}",
            "data.prepare.max_image_size=160",
            f"hydra.run.dir={tmp_path}/prep",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert prep.returncode == 0, prep.stderr[-2000:]
    assert "| train | 119 | 0 | 294 | 294 |" in prep.stdout  # the report table, printed
    # train with the command prepare.py printed (it said data.name=pf, which looked in data/prepared/pf)
    (hint,) = [ln.split("train on it: ", 1)[1] for ln in prep.stdout.splitlines() if ln.startswith("train on it: ")]
    assert hint == f"python src/train.py data=prepared data.name=pf data.root={root}"
    args = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        *TINY_MODEL,
        *hint.split()[2:],
        "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=2",
        f"hydra.run.dir={tmp_path}/run",
        f"paths.output_root={tmp_path}/outputs",
    ]
    proc = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "val/segm_AP_pedestrian" in proc.stdout and "test/segm_AP" in proc.stdout  # class name from the data
    assert (proc.stdout + proc.stderr).count("GPU available:") == 1  # Lightning, imported after Hydra's logging
    ckpt = torch.load(
        next((tmp_path / "run" / "checkpoints").glob("best-*.ckpt")), map_location="cpu", weights_only=False
    )
    assert ckpt["hyper_parameters"]["class_names"] == ["pedestrian"]
