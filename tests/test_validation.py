"""A corpus of broken inputs, at least one per validation rule: each gets its documented outcome in the report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image

from conftest import ROOT, compose_cfg, imported_modules, sigint_as_in_a_terminal
from masklab import MasklabError
from masklab.data.dataset import CocoDataset
from masklab.data.prepare import prepare
from masklab.data.validate import RULES

H, W = 30, 40


def rle(mask):
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(mask.shape), "counts": r["counts"].decode()}


def square(h=H, w=W):
    m = np.zeros((h, w), np.uint8)
    m[5:15, 5:15] = 1
    return m


POLY = [[5, 5, 15, 5, 15, 15, 5, 15]]

#: annotation id -> (the broken thing, the rule it must trigger); id 1 is the healthy reference
CASES = {
    1: ({"segmentation": POLY}, None),
    2: ({"segmentation": [[1, 1, 5, 5]]}, "polygon_too_few_points"),
    3: ({"segmentation": rle(np.zeros((H, W)))}, "empty_mask"),
    4: ({"segmentation": POLY, "bbox": [5, 5, 0, 10]}, "zero_area_box"),
    5: ({"segmentation": POLY, "bbox": [-4, 5, 60, 10]}, "box_outside_image"),
    -3: ({"segmentation": POLY}, "bad_annotation_id"),
    7: ({"segmentation": POLY, "category_id": 99}, "unknown_category"),
    8: ({"segmentation": rle(np.kron(square(), np.ones((2, 2))))}, "mask_size_mismatch"),  # the square at 2x
    9: ({"segmentation": {"size": [H, W], "counts": [0, 50, 10, H * W]}}, "rle_out_of_bounds"),
    10: ({"segmentation": POLY, "image_id": 42}, "unknown_image"),
    # were tracebacks: an RLE of no size, a flat list for a list of polygons, a coordinate that is no number
    12: ({"segmentation": {"size": [0, 0], "counts": ""}}, "rle_out_of_bounds"),
    13: ({"segmentation": {"size": ["a", 3], "counts": []}}, "rle_out_of_bounds"),
    14: ({"segmentation": POLY[0]}, "empty_mask"),
    15: ({"segmentation": [[5, 5, 15, "x", 15, 15]]}, "polygon_too_few_points"),
}


def broken_coco(tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(img / "ok.png")
    (img / "garbage.jpg").write_bytes(b"this is not a jpeg")
    anns = [{"id": i, "image_id": 1, "category_id": 1, **extra} for i, (extra, _) in CASES.items()]
    anns += [{"id": 11, "image_id": 1, "category_id": 1, "segmentation": POLY}] * 2  # duplicated id
    data = {
        "images": [
            {"id": 1, "file_name": "ok.png", "height": H, "width": W},
            {"id": 2, "file_name": "missing.png"},
            {"id": 3, "file_name": "garbage.jpg"},
        ],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": anns,
    }
    (tmp_path / "broken.json").write_text(json.dumps(data))
    return tmp_path / "broken.json"


def cfg_for(tmp_path, annotations, *extra):
    (tmp_path / "img").mkdir(exist_ok=True)  # a folder that does not exist is its own one-line error
    return compose_cfg(
        [
            "data=coco",
            f"data.source.annotations={annotations}",
            f"data.source.images={tmp_path / 'img'}",
            f"data.root={tmp_path / 'out'}",
            "data.prepare.split.val=0",
            *extra,
        ],
        tiny=False,
    )


def test_every_rule_in_the_corpus_gets_its_documented_outcome(tmp_path):
    report = prepare(cfg_for(tmp_path, broken_coco(tmp_path)), progress=False)
    by_record = {}
    for e in report["issues"]:
        by_record.setdefault(e["record"], []).append(e)
    for ann_id, (_, rule) in CASES.items():
        got = [e["rule"] for e in by_record.get(f"broken.json: annotation {ann_id}", [])]
        assert got == ([rule] if rule else []), (ann_id, got)
    for e in report["issues"]:
        assert e["outcome"] == RULES[e["rule"]][0] and e["detail"]
    counts = report["issue_counts"]
    assert counts["duplicate_annotation_id"] == 2 and counts["image_missing"] == 1 and counts["image_unreadable"] == 1
    # kept: the reference, the clamped box, the renumbered id, the resized mask, the two duplicates
    target = CocoDataset(tmp_path / "out", "train").target(0)
    assert len(target["labels"]) == 6
    assert target["boxes"].tolist()[1] == [5.0, 5.0, 15.0, 15.0]  # clamped = the tight box of the mask
    assert np.array_equal(target["masks"][3].numpy(), square())  # 60x80 mask resized to the 30x40 image
    written = json.loads((tmp_path / "out" / "annotations" / "train.json").read_text())
    assert sorted(a["id"] for a in written["annotations"]) == list(range(1, 7))
    md = (tmp_path / "out" / "report.md").read_text()
    assert all(rule in md for _, rule in CASES.values() if rule)


def run_cli(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / "prepare.py"), *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "not valid JSON"),
        ('["a", "list"]', "expected a JSON dict"),
        ('{"images": [], "annotations": {}}', "needs a 'annotations' list"),
    ],
)
def test_unusable_file_is_one_line_nonzero_exit_and_keeps_previous_output(tmp_path, content, problem):
    good = broken_coco(tmp_path)
    out = tmp_path / "out"
    images = f"data.source.images={tmp_path / 'img'}"
    assert run_cli("data=coco", f"data.source.annotations={good}", images, f"data.root={out}").returncode == 0
    before = (out / "annotations" / "train.json").read_bytes()
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    proc = run_cli("data=coco", f"data.source.annotations={bad}", images, f"data.root={out}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0] and problem in lines[0]
    assert (out / "annotations" / "train.json").read_bytes() == before  # nothing already written is lost
    assert not list(tmp_path.glob(".out.partial-*"))


def test_failure_while_writing_leaves_no_half_written_output(tmp_path, monkeypatch):
    from masklab.data import canonical

    cfg = cfg_for(tmp_path, broken_coco(tmp_path))
    prepare(cfg, progress=False)
    before = (tmp_path / "out" / "report.json").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(canonical, "coco_json", boom)
    with pytest.raises(OSError, match="disk full"):
        prepare(cfg, progress=False)
    assert (tmp_path / "out" / "report.json").read_bytes() == before
    assert not list(tmp_path.glob(".out.*"))


def test_other_bad_inputs_name_file_and_problem(tmp_path):
    from masklab.data.formats import DatasetError

    (tmp_path / "x.csv").write_text("ImageId,Height\n1,2\n")
    with pytest.raises(DatasetError, match=r"x.csv: header: missing columns \['EncodedPixels', 'ClassId', 'Width'\]"):
        prepare(
            compose_cfg(
                [
                    "data=imaterialist",
                    f"data.source.annotations={tmp_path / 'x.csv'}",
                    f"data.source.images={tmp_path}",
                    "data.source.class_names=[a]",
                    f"data.root={tmp_path / 'o'}",
                ],
                tiny=False,
            ),
            progress=False,
        )
    with pytest.raises(Exception, match="has no 'source'"):
        prepare(compose_cfg(["data=prepared", "data.name=x"], tiny=False), progress=False)
    # a required source key left unset: named (it read "???: file not found"), per split with source_splits
    with pytest.raises(
        MasklabError,
        match=r"^data.source.annotations is required for data=via: give "
        r"data.source.annotations=<path>; the format's keys: python src/prepare.py data=via --help$",
    ):
        prepare(compose_cfg(["data=via", f"data.root={tmp_path / 'o'}"], tiny=False), progress=False)
    with pytest.raises(
        MasklabError, match=r"give data.source.annotations=<path> \(or data.source_splits.val.annotations\)"
    ):
        prepare(
            compose_cfg(
                [
                    "data=via",
                    f"data.root={tmp_path / 'o'}",
                    f"data.source_splits={{val: {{images: {tmp_path}}}, "
                    f"train: {{annotations: {tmp_path / 'a.json'}}}}}",
                ],
                tiny=False,
            ),
            progress=False,
        )


def test_readme_documents_every_rule_with_its_outcome():
    readme = (ROOT / "README.md").read_text()
    for rule, (outcome, _) in RULES.items():
        assert f"| `{rule}` | {outcome} |" in readme


def test_instance_that_vanishes_when_max_image_size_shrinks_the_image_is_reported(tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(img / "big.png")
    dot = np.zeros((100, 100), np.uint8)
    dot[51, 51] = 1  # a 1-px instance: gone at 1/10 scale (nearest neighbour samples every 10th pixel)
    block = np.zeros((100, 100), np.uint8)
    block[20:80, 20:80] = 1
    data = {
        "images": [{"id": 1, "file_name": "big.png", "height": 100, "width": 100}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle(block)},
            {"id": 2, "image_id": 1, "category_id": 1, "segmentation": rle(dot)},
        ],
    }
    (tmp_path / "small.json").write_text(json.dumps(data))
    report = prepare(cfg_for(tmp_path, tmp_path / "small.json", "data.prepare.max_image_size=10"), progress=False)
    assert [(e["rule"], e["record"]) for e in report["issues"]] == [("vanished_on_resize", "small.json: annotation 2")]
    target = CocoDataset(tmp_path / "out", "train").target(0)
    assert len(target["labels"]) == 1 and target["masks"].shape[-2:] == (10, 10)
    assert target["boxes"].tolist() == [[2.0, 2.0, 8.0, 8.0]]


def test_user_errors_raised_while_hydra_builds_an_object_or_a_required_key_left_unset_are_one_line():
    from hydra.errors import InstantiationException
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    from masklab import MasklabError, user_message

    try:  # what hydra.utils.instantiate raises when the target raised a MasklabError
        raise InstantiationException(
            "Error in call to target 'x.from_prepared':\nMasklabError('a.json not found')"
        ) from MasklabError("a.json not found: run prepare.py first")
    except InstantiationException as exc:
        assert user_message(exc) == "a.json not found: run prepare.py first"
    with pytest.raises(MissingMandatoryValue) as missing:
        _ = OmegaConf.create({"ckpt": "???"}).ckpt
    assert user_message(missing.value).startswith("ckpt is required: give ckpt=<value>")
    with pytest.raises(Exception) as bad_value:  # ${mul:...} is masklab's resolver (registered on import)
        _ = OmegaConf.create({"optimizer": {"lr": "abc"}, "space": {"lr": "${mul:${optimizer.lr},0.25}"}}).space.lr
    assert user_message(bad_value.value) == (
        "space.lr: ValueError raised while resolving interpolation: could not convert string to float: 'abc'"
    )
    assert user_message(ValueError("a bug")) is None  # keeps its traceback
    assert user_message(InstantiationException("a bug in a target")) is None


def test_the_first_line_of_an_error_is_never_empty_and_never_raises():
    from hydra.errors import InstantiationException

    from masklab import first_line

    assert first_line(ValueError("\n  low > high\nsecond line")) == "low > high"
    assert first_line(EOFError()) == "EOFError"  # str() is '': indexing its lines raised IndexError in the handler
    assert first_line(KeyError("ckpt"), with_type=True) == "KeyError: 'ckpt'"
    assert first_line(EOFError(), with_type=True) == "EOFError"  # not "EOFError: EOFError"
    try:  # Hydra's instantiate: "Error in call to target 'X':", the reason in its cause
        try:
            raise ImportError("Install s3fs to access S3")
        except ImportError as exc:
            raise InstantiationException("Error in call to target 'X':\nImportError(...)\nfull_key: k") from exc
    except InstantiationException as exc:
        wrapped = exc
    assert first_line(wrapped) == "Error in call to target 'X': ImportError: Install s3fs to access S3"


CLI_CASES = [
    ("evaluate.py", [], "error: ckpt is required: give ckpt=<value>"),
    ("evaluate.py", ["ckpt=model.ckpt", "min_score=1.5"], "error: min_score=1.5: must be a score in [0, 1]"),
    ("evaluate.py", ["ckpt=nosuch://b/best.ckpt"], "error: ckpt=nosuch://b/best.ckpt: fsspec cannot open it here"),
    ("evaluate.py", ["ckpt=no.ckpt", "data=coco"], "error: no.ckpt: checkpoint not found"),  # prepare's ??? unread
    ("predict.py", ["ckpt=model.ckpt"], "error: input is required: give input=<value>"),
    (
        "predict.py",
        ["ckpt=model.ckpt", "input=photo.jpg", "mode=splsh"],
        "error: mode=splsh: choose instances or splash",
    ),
    ("train.py", ["data=coco"], "annotations/train.json not found: run `python src/prepare.py"),
    ("train.py", ["schedule.epochs=0"], "error: schedule.epochs=0: must be an integer >= 1"),  # the module's check
    ("train.py", ["log_predictions=-1"], "error: log_predictions=-1: must be an integer >= 0"),  # the gallery's
]


def test_clis_say_what_is_missing_in_one_line(tmp_path):
    # the processes run side by side: each spends its ~6 s importing torch and Hydra, but for a required key
    procs = []
    for i, (script, args, _) in enumerate(CLI_CASES):
        (tmp_path / str(i)).mkdir()
        procs.append(
            subprocess.Popen(
                [sys.executable, str(ROOT / "src" / script), f"paths.root_dir={tmp_path / str(i)}", *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=tmp_path / str(i),
                env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},
            )
        )
    for proc, (script, args, expected) in zip(procs, CLI_CASES):
        _, stderr = proc.communicate(timeout=300)
        imported, stderr = imported_modules(stderr)
        case = f"{script} {' '.join(args)}: {stderr[-2000:]}"
        assert proc.returncode == 1 and "Traceback" not in stderr and "HYDRA_FULL_ERROR" not in stderr, case
        (line,) = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert expected in line, case
        assert "torch" not in imported or "is required" not in expected, case  # said in ~1 s, not ~6 s


@pytest.mark.parametrize("sig, status, said", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_stop_while_preparing_is_one_line_and_the_prepared_data_before_it_stays(tmp_path, sig, status, said):
    import time

    before = tmp_path / "data" / "prepared" / "dense_small"
    before.mkdir(parents=True)
    (before / "report.md").write_text("the dataset prepared before")
    cmd = [sys.executable, str(ROOT / "src" / "prepare.py"), "data=dense_small", f"paths.root_dir={tmp_path}"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_as_in_a_terminal
    )
    deadline = time.time() + 120
    while not list(tmp_path.glob("outputs/prepare/dense_small/*")) and time.time() < deadline:  # Hydra's run folder
        time.sleep(0.2)
    time.sleep(2.0)  # into its work: generating and writing 50 images take ~20 s
    assert proc.poll() is None, "prepare ended before Ctrl-C"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.splitlines()[-1] == f"interrupted ({said})"
    assert (before / "report.md").read_text() == "the dataset prepared before"
    assert not list(before.parent.glob(".dense_small.*"))  # no half-written copy beside it


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])  # Ctrl-C; a cluster's stop
def test_a_signal_anywhere_under_on_interrupt_runs_the_cleanup_once_and_exits_130_or_143(sig, status):
    import os
    import time

    from masklab import on_interrupt
    from masklab.errors import terminating

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a test worker may ignore it)
    cleaned = []
    try:
        with pytest.raises(SystemExit) as exited, on_interrupt(lambda: cleaned.append(signal.getsignal(sig))):
            os.kill(os.getpid(), sig)
            time.sleep(30)  # no training under way: the signal stops this
        assert exited.value.code == status and cleaned == [signal.SIG_IGN]  # a second signal waits for the cleanup
        assert signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]  # handlers restored after
        assert not terminating()  # a later sweep in this process does not take its trials' errors for a stop
    finally:
        signal.signal(signal.SIGINT, before[signal.SIGINT])


def test_a_cleanup_that_fails_after_ctrl_c_is_one_line_and_keeps_the_exit_code(caplog):
    from masklab import on_interrupt

    def cleanup():
        raise ConnectionError("tracking server unreachable")

    with pytest.raises(SystemExit) as exited, on_interrupt(cleanup):
        raise KeyboardInterrupt
    assert exited.value.code == 130
    assert "while stopping: ConnectionError: tracking server unreachable" in caplog.text


def test_counts_and_sizes_torch_would_reject_in_a_traceback_are_one_line():
    from masklab import MasklabError
    from masklab.data.datamodule import build_datamodule

    for override, message in [
        ("batch_size=0", "batch_size=0: must be an integer >= 1"),
        ("num_workers=-1", "num_workers=-1: must be an integer >= 0"),
        ("data.image_size=0", "data.image_size=0: must be an integer >= 8"),
        ("data.train.num_images=0", "data.train.num_images=0: must be an integer >= 1"),
        ("batch_size=2.5", "batch_size=2.5: must be an integer >= 1"),
    ]:
        with pytest.raises(MasklabError) as err:
            build_datamodule(compose_cfg([override]))
        assert str(err.value) == message
    assert build_datamodule(compose_cfg(["batch_size=1", "num_workers=0"])).batch_size == 1


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.lr=abc", "optimizer.lr=abc: must be a number >= 0"),  # torch's TypeError in fit
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1: must be a number >= 0"),  # torch's ValueError in fit
        ("optimizer.weight_decay=-1e-4", "optimizer.weight_decay=-0.0001: must be a number >= 0"),
        ("optimizer.momentum=1.5", "optimizer.momentum=1.5: must be a number in [0, 1]"),
        (
            "nms.box_score_thresh=high",
            "nms.box_score_thresh=high: must be a confidence in [0, 1]",
        ),  # TypeError in validation
        ("nms.rpn_nms_thresh=1.5", "nms.rpn_nms_thresh=1.5: must be an IoU in [0, 1]"),  # no NMS at all, silently
        ("nms.box_nms_thresh=nan", "nms.box_nms_thresh=nan: must be an IoU in [0, 1]"),
        ("nms.box_detections_per_img=0", "nms.box_detections_per_img=0: must be an integer >= 1"),
        ("rois_per_image=2.5", "rois_per_image=2.5: must be an integer >= 1"),
        ("max_gt_instances=0", "max_gt_instances=0: must be an integer >= 1"),
        ("grad_clip_norm=-1", "grad_clip_norm=-1: must be a number >= 0 (0: no clipping)"),
        ("box_head_dropout=1", "box_head_dropout=1: must be a probability in [0, 1)"),
    ],
)
def test_model_and_optimizer_numbers_out_of_range_are_one_line_before_anything_is_built(override, message):
    from masklab import MasklabError
    from masklab.model.module import build_module

    with pytest.raises(MasklabError) as err:
        build_module(compose_cfg(["hparams_search=none", override]))
    assert str(err.value) == message


def test_a_bad_number_is_named_before_the_search_space_reads_it():
    # the default space computes ${mul:${optimizer.lr},0.25}: resolving it first named hparams_search.optimizer.lr
    from masklab import MasklabError
    from masklab.model.module import build_module

    with pytest.raises(MasklabError, match=r"^optimizer.lr=abc: must be a number >= 0$"):
        build_module(compose_cfg(["optimizer.lr=abc"]))


def test_model_numbers_at_their_limits_are_accepted():
    from masklab.model.module import build_module

    cfg = compose_cfg(
        [
            "nms.rpn_nms_thresh=1.0",
            "nms.box_score_thresh=0",
            "grad_clip_norm=0",
            "box_head_dropout=0.5",
            "optimizer.weight_decay=0",
            "optimizer.momentum=0",
            "optimizer.lr=0",
        ]
    )
    assert build_module(cfg).model.rpn.nms_thresh == 1.0


def test_a_split_missing_from_a_prepared_set_says_how_to_prepare_it(tmp_path):
    # it said "run prepare.py first" about a set prepare.py had written with data.prepare.split val=0
    from conftest import make_tiny_prepared
    from masklab import MasklabError

    root = make_tiny_prepared(tmp_path)
    (root / "annotations" / "val.json").unlink()
    with pytest.raises(
        MasklabError,
        match=rf"^{root}/annotations/val.json not found: {root} was prepared with the splits "
        r"\['train'\] only; prepare it again with a val share in data.prepare.split",
    ):
        CocoDataset(root, "val")
    (root / "annotations" / "train.json").unlink()
    with pytest.raises(MasklabError, match=r"train.json not found: run `python src/prepare.py.*goes to [^;]*\)$"):
        CocoDataset(root, "train")
    # a name that is not there (data=prepared data.name=<typo>) lists the names that are
    other = tmp_path / "other"
    (other / "annotations").mkdir(parents=True)
    (other / "annotations" / "val.json").write_text("{}")
    with pytest.raises(
        MasklabError, match=rf"\(the canonical dataset goes to {tmp_path}/typo\); prepared in {tmp_path}: other$"
    ):
        CocoDataset(tmp_path / "typo", "train")


#: EXIF orientation -> how the stored pixels were turned from the upright photo (the inverse of what shows them upright)
STORED_FROM_UPRIGHT = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def photo(h=24, w=36):
    """An upright photo with one off-centre red block (no flip or turn of it looks the same) and the block's mask."""
    block = np.zeros((h, w), np.uint8)
    block[4:10, 6:20] = 1
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[block == 1] = (220, 0, 0)
    return Image.fromarray(rgb), block


def save_with_orientation(im: Image.Image, path, orientation: int):
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, exif=exif)


def test_photos_with_an_exif_orientation_are_written_upright_with_their_masks(tmp_path):
    """A phone photo stores its pixels turned and says how in its EXIF orientation; annotation tools (labelme, VIA in
    a browser, CVAT) draw on the upright photo. Before, the pixels were copied as stored and the masks drawn upright:
    every mask of a turned photo missed its object."""
    (tmp_path / "img").mkdir()
    upright, block = photo()
    images, anns = [], []
    for o, turn in STORED_FROM_UPRIGHT.items():  # one photo per orientation, annotated upright (no size declared)
        save_with_orientation(upright if turn is None else upright.transpose(turn), tmp_path / "img" / f"o{o}.png", o)
        images.append({"id": o, "file_name": f"o{o}.png"})
        anns.append({"id": o, "image_id": o, "category_id": 1, "segmentation": rle(block)})
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # orientation 6: stored 36 high, 24 wide
    stored_block = np.asarray(Image.fromarray(block).transpose(Image.Transpose.ROTATE_90))
    save_with_orientation(stored, tmp_path / "img" / "declared_stored.png", 6)  # a tool that drew on the stored pixels
    images.append({"id": 9, "file_name": "declared_stored.png", "height": 36, "width": 24})
    anns.append({"id": 9, "image_id": 9, "category_id": 1, "segmentation": rle(stored_block)})
    save_with_orientation(stored, tmp_path / "img" / "mask_of_stored.png", 6)  # an RLE of the stored pixels' size
    images.append({"id": 10, "file_name": "mask_of_stored.png"})
    anns.append({"id": 10, "image_id": 10, "category_id": 1, "segmentation": rle(stored_block)})
    save_with_orientation(stored, tmp_path / "img" / "half_mask_of_stored.png", 6)  # OpenImages: masks at another size
    images.append({"id": 11, "file_name": "half_mask_of_stored.png"})
    anns.append({"id": 11, "image_id": 11, "category_id": 1, "segmentation": rle(stored_block[::2, ::2])})
    data = {"images": images, "categories": [{"id": 1, "name": "block"}], "annotations": anns}
    (tmp_path / "photos.json").write_text(json.dumps(data))
    report = prepare(cfg_for(tmp_path, tmp_path / "photos.json"), progress=False)

    details = {e["record"]: e["detail"] for e in report["issues"] if e["rule"] == "exif_orientation"}
    assert len(details) == 10 and "o1.png" not in str(details)  # orientation 1 needs nothing
    assert (
        "declares the stored size 24x36: pixels kept as stored" in details["photos.json: image 9 (declared_stored.png)"]
    )
    assert "written upright (36x24)" in details["photos.json: image 6 (o6.png)"]
    ds = CocoDataset(tmp_path / "out", "train")
    assert len(ds) == 11
    for i, info in enumerate(ds.images):
        image, mask = ds.load_image(i), ds.target(i)["masks"][0].numpy()
        with Image.open(tmp_path / "out" / "images" / info["file_name"]) as im:
            assert im.getexif().get(0x0112, 1) == 1  # no reader turns it again
        red = image[..., 0] > 110
        if info["file_name"] == "half_mask_of_stored.png":  # turned, then resized: to a pixel of the block's edge
            assert mask.shape == red.shape and (red & (mask == 1)).sum() / (red | (mask == 1)).sum() > 0.7
            continue
        assert red.sum() == 6 * 14 and np.array_equal(red, mask == 1), info["file_name"]  # the mask is on its block
        expect = stored_block.shape if info["file_name"] == "declared_stored.png" else block.shape
        assert mask.shape == expect == (info["height"], info["width"])
    prepare(cfg_for(tmp_path, tmp_path / "photos.json", "data.prepare.max_image_size=30"), progress=False)
    ds = CocoDataset(tmp_path / "out", "train")
    for i, info in enumerate(ds.images):  # turned, then shrunk (36 -> 30 px), the masks with them
        red, mask = ds.load_image(i)[..., 0] > 110, ds.target(i)["masks"][0].numpy() == 1
        assert max(red.shape) == 30 and (red & mask).sum() / (red | mask).sum() > 0.6, info["file_name"]


def test_an_image_of_another_size_than_declared_is_scaled_or_left_out(tmp_path):
    """COCO and labelme declare each image's size and their coordinates refer to it; it was ignored, so polygons of
    an image shrunk or swapped after annotating were drawn at the wrong scale."""
    (tmp_path / "img").mkdir()
    upright, block = photo()
    upright.save(tmp_path / "img" / "full.png")
    half = block[::2, ::2]
    data = {
        "images": [
            {"id": 1, "file_name": "full.png", "height": 12, "width": 18},  # annotated at half the size
            {"id": 2, "file_name": "full.png", "height": 36, "width": 24},
        ],  # another aspect ratio
        "categories": [{"id": 1, "name": "block"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle(half)},
            {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [[3, 2, 10, 2, 10, 5, 3, 5]]},
            {"id": 3, "image_id": 2, "category_id": 1, "segmentation": rle(block)},
        ],
    }
    (tmp_path / "sizes.json").write_text(json.dumps(data))
    report = prepare(cfg_for(tmp_path, tmp_path / "sizes.json"), progress=False)
    assert report["issue_counts"] == {"image_resized": 1, "image_size_mismatch": 1}  # not mask_size_mismatch per mask
    rules = {e["rule"]: e["detail"] for e in report["issues"]}
    assert rules["image_resized"].endswith("declares 18x12, the image is 36x24: its annotations are scaled by 2")
    assert rules["image_size_mismatch"].endswith("declares 24x36, the image is 36x24 (another aspect ratio)")
    ds = CocoDataset(tmp_path / "out", "train")
    masks = ds.target(0)["masks"].numpy()
    assert len(ds) == 1 and np.array_equal(masks[0], block)  # the half-size RLE, scaled 2x
    assert (masks[1] & block).sum() / (masks[1] | block).sum() > 0.75  # the polygon of the half-size image


@pytest.mark.parametrize(
    "size, shown",
    [
        ({"height": "tall", "width": 40}, "'tall'/40"),
        ({"height": 30, "width": -40}, "30/-40"),
        ({"height": 30.5, "width": 40}, "30.5/40"),
    ],
)
def test_a_declared_size_that_is_no_size_is_one_line(tmp_path, size, shown):
    data = {"images": [{"id": 1, "file_name": "ok.png", **size}], "categories": [], "annotations": []}
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(
        MasklabError,
        match=rf"^{tmp_path / 'bad.json'}: images\[0\]: image height/width must be "
        rf"positive integers, got {shown}$",
    ):
        prepare(cfg_for(tmp_path, tmp_path / "bad.json"), progress=False)


def test_exif_orientation_stored_keeps_the_pixels_for_annotations_drawn_on_them(tmp_path):
    """VIA in a browser before 2020 showed a photo as stored: data.prepare.exif_orientation=stored keeps that frame."""
    (tmp_path / "img").mkdir()
    upright, _ = photo()
    save_with_orientation(upright.transpose(Image.Transpose.ROTATE_90), tmp_path / "img" / "phone.png", 6)
    drawn = [[4, 16, 10, 16, 10, 30, 4, 30]]  # the block on the stored pixels (36 high, 24 wide)
    data = {
        "images": [{"id": 1, "file_name": "phone.png"}],
        "categories": [{"id": 1, "name": "block"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": drawn}],
    }
    (tmp_path / "via_2018.json").write_text(json.dumps(data))
    for mode, shape, iou in (("stored", (36, 24), 0.7), ("upright", (24, 36), 0.0)):
        report = prepare(
            cfg_for(tmp_path, tmp_path / "via_2018.json", f"data.prepare.exif_orientation={mode}"), progress=False
        )
        # upright, the stored frame's block reaches y 30 of a 24-high image: said, a hint that the frame is wrong
        assert report["issue_counts"] == (
            {"exif_orientation": 1} if mode == "stored" else {"exif_orientation": 1, "polygon_outside_image": 1}
        )
        ds = CocoDataset(tmp_path / "out", "train")
        red, mask = ds.load_image(0)[..., 0] > 110, ds.target(0)["masks"][0].numpy() == 1
        assert red.shape == shape and ((red & mask).sum() / (red | mask).sum() > iou if iou else not (red & mask).any())
    with pytest.raises(MasklabError, match="^data.prepare.exif_orientation must be upright or stored, got 'raw'$"):
        prepare(cfg_for(tmp_path, tmp_path / "via_2018.json", "data.prepare.exif_orientation=raw"), progress=False)


def test_coco_ids_used_twice_are_one_line_and_a_shared_name_is_one_class(tmp_path):
    """A second category or image with an id already used took it over silently: the first one's annotations got
    the second's class or were drawn on the second's image."""
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    ann = {"image_id": 1, "segmentation": POLY}
    for images, cats, problem in (
        (
            [{"id": 1, "file_name": "a.png"}],
            [{"id": 1, "name": "cat"}, {"id": 1, "name": "dog"}],
            r"categories\[1\]: category id 1 is used twice",
        ),
        (
            [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}],
            [{"id": 1, "name": "cat"}],
            r"images\[1\]: image id 1 is used twice \(a.png, b.png\)",
        ),
    ):
        (tmp_path / "twice.json").write_text(
            json.dumps({"images": images, "categories": cats, "annotations": [{"id": 1, "category_id": 1, **ann}]})
        )
        with pytest.raises(MasklabError, match=rf"^{tmp_path / 'twice.json'}: {problem}$"):
            prepare(cfg_for(tmp_path, tmp_path / "twice.json"), progress=False)
    data = {
        "images": [{"id": 1, "file_name": "a.png"}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 7, "name": "cat"}],
        "annotations": [{"id": 1, "category_id": 1, **ann}, {"id": 2, "category_id": 7, **ann}],
    }
    (tmp_path / "same_name.json").write_text(json.dumps(data))
    report = prepare(cfg_for(tmp_path, tmp_path / "same_name.json"), progress=False)
    assert report["issue_counts"] == {"category_merged": 1} and report["class_names"] == ["cat"]
    assert "categories [1, 7] are all named 'cat'" in report["issues"][0]["detail"]
    assert CocoDataset(tmp_path / "out", "train").target(0)["labels"].tolist() == [1, 1]
