"""A user's data mistakes, said plainly: each defect found converting a real dataset has its outcome, its printed line
and its report entry (issue 31)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from conftest import ROOT, compose_cfg
from masklab import MasklabError
from masklab.data.datamodule import from_prepared
from masklab.data.prepare import prepare

POLY = [10, 10, 40, 10, 40, 40, 10, 40]


def images(folder, names, size=(60, 80)):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(np.full((*size, 3), 120, np.uint8)).save(folder / name)
    return folder


def coco(path, anns, files=("a.png",), first_id=1):
    ims = [{"id": first_id + i, "file_name": f, "height": 60, "width": 80} for i, f in enumerate(files)]
    path.write_text(json.dumps({"images": ims, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}))
    return path


def ann(i, image_id=1, **extra):
    return {"id": i, "image_id": image_id, "category_id": 1, "segmentation": [POLY], **extra}


def run_prepare(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / "prepare.py"), *args], capture_output=True, text=True, timeout=300
    )


def one_error_line(proc) -> str:
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def prepared(tmp_path, overrides):
    return prepare(compose_cfg([*overrides, f"data.root={tmp_path / 'out'}"], tiny=False), progress=False)


def test_per_split_coco_files_numbering_from_the_same_id_are_no_duplicates(tmp_path):
    img = images(tmp_path / "img", ["a.png", "b.png"])
    train = coco(tmp_path / "train.json", [ann(100), ann(101)], files=["a.png"])
    val = coco(tmp_path / "val.json", [ann(100)], files=["b.png"])
    report = prepared(
        tmp_path,
        [
            "data=coco",
            f"data.source.images={img}",
            f"data.source_splits={{train: {{annotations: {train}}}, val: {{annotations: {val}}}}}",
        ],
    )
    assert "duplicate_annotation_id" not in report["issue_counts"]
    ids = [
        a["id"]
        for s in ("train", "val")
        for a in json.loads((tmp_path / "out/annotations" / f"{s}.json").read_text())["annotations"]
    ]
    assert sorted(ids) == [1, 2, 1] or len(set(ids[:2])) == 2  # renumbered per written file, silently
    # the report names the split files instead of annotations: '???'
    assert report["source"]["splits"]["val"]["annotations"] == str(val) and "???" not in json.dumps(report["source"])
    assert str(train) in (tmp_path / "out" / "report.md").read_text()


def test_a_non_finite_source_box_is_rebuilt_from_the_mask(tmp_path):
    img = images(tmp_path / "img", ["a.png"])
    anns = coco(tmp_path / "a.json", [ann(1, bbox=[float("nan"), 10, 50, 50]), ann(2, bbox=[10, 10, 30, 30])])
    report = prepared(
        tmp_path,
        [
            "data=coco",
            f"data.source.annotations={anns}",
            f"data.source.images={img}",
            "data.prepare.split={train:1.0,val:0}",
        ],
    )
    assert report["issue_counts"] == {"box_not_finite": 1}
    entry = report["issues"][0]
    assert (
        entry["outcome"] == "fixed"
        and entry["record"] == "a.json: annotation 1"
        and "rebuilt from the mask" in entry["detail"]
    )
    assert report["splits"]["train"]["instances"] == {"thing": 2}


def via(path, regions_by_file, attribute="name"):
    data = {}
    for name, n in regions_by_file.items():
        regs = [
            {
                "shape_attributes": {
                    "name": "polygon",
                    "all_points_x": [10, 40, 40, 10],
                    "all_points_y": [10, 10, 40, 40],
                },
                "region_attributes": {attribute: "thing", "type": "x"},
            }
            for _ in range(n)
        ]
        data[name] = {"filename": name, "size": 1, "regions": regs}
    path.write_text(json.dumps(data))
    return path


def test_a_class_attribute_no_region_has_names_the_drops_and_the_attributes_there_are(tmp_path):
    img = images(tmp_path / "img", ["a.png", "b.png"])
    js = via(img / "via.json", {"a.png": 2, "b.png": 1})
    proc = run_prepare(
        "data=via",
        f"data.source.annotations={js}",
        "data.source.class_attribute=class",
        f"data.root={tmp_path / 'out'}",
    )
    line = one_error_line(proc)
    assert "unknown_category 3" in line and "no 'class' region attribute (its attributes: name, type" in line
    assert not (tmp_path / "out").exists()


def test_a_split_that_lost_every_instance_is_said_and_training_on_it_refuses(tmp_path):
    img = images(tmp_path / "img", ["a.png", "b.png"])
    train = via(img / "train.json", {"a.png": 2})
    val = via(img / "val.json", {"b.png": 2}, attribute="label")  # no 'name' here
    report = prepared(
        tmp_path,
        [
            "data=via",
            f"data.source.images={img}",
            f"data.source_splits={{train: {{annotations: {train}}}, val: {{annotations: {val}}}}}",
        ],
    )
    said = " ".join(report["advice"])
    assert "the val split has 1 images and no instances" in said
    assert "the val split has 1 images and no instances" in (tmp_path / "out" / "report.md").read_text()
    dm = from_prepared(str(tmp_path / "out"))
    with pytest.raises(MasklabError, match="the val split has no instances"):
        dm.setup("fit")


def test_missing_images_name_the_folder_searched_and_the_first_files(tmp_path):
    img = images(tmp_path / "img", [])
    anns = coco(tmp_path / "a.json", [ann(1), ann(2, image_id=2)], files=["one.png", "two.png"])
    line = one_error_line(
        run_prepare(
            "data=coco", f"data.source.annotations={anns}", f"data.source.images={img}", f"data.root={tmp_path / 'out'}"
        )
    )
    assert f"2 of 2 image files not found in {img}" in line and "one.png, two.png" in line
    line = one_error_line(
        run_prepare("data=coco", f"data.source.annotations={anns}", f"data.source.images={tmp_path / 'nope'}")
    )
    assert f"data.source.images={tmp_path / 'nope'}: no such folder" in line
    (img / "one.png").write_bytes(b"not a png")
    (img / "two.png").write_bytes(b"")
    line = one_error_line(
        run_prepare(
            "data=coco", f"data.source.annotations={anns}", f"data.source.images={img}", f"data.root={tmp_path / 'out'}"
        )
    )
    assert "one.png unreadable" in line


def test_a_source_whose_every_annotation_is_dropped_is_an_error_and_a_string_image_id_is_matched(tmp_path):
    img = images(tmp_path / "img", ["a.png"])
    good = coco(tmp_path / "good.json", [ann(1)])
    assert (
        run_prepare(
            "data=coco", f"data.source.annotations={good}", f"data.source.images={img}", f"data.root={tmp_path / 'out'}"
        ).returncode
        == 0
    )
    before = (tmp_path / "out" / "annotations" / "train.json").read_bytes()
    bad = coco(
        tmp_path / "bad.json",
        [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 5, 5]]},
            ann(2, bbox=[5, 5, 0, 10]),
            ann(3, category_id=7),
        ],
    )
    line = one_error_line(
        run_prepare(
            "data=coco", f"data.source.annotations={bad}", f"data.source.images={img}", f"data.root={tmp_path / 'out'}"
        )
    )
    assert "no instance left in 1 images" in line and "polygon_too_few_points 1" in line and "zero_area_box 1" in line
    assert "unknown_category 1" in line and "bad.json: annotation 2" in line  # the file, the record, the problem
    assert (tmp_path / "out" / "annotations" / "train.json").read_bytes() == before  # the previous dataset is kept
    strid = coco(tmp_path / "s.json", [ann(1, image_id="1")])
    report = prepared(
        tmp_path,
        [
            "data=coco",
            f"data.source.annotations={strid}",
            f"data.source.images={img}",
            "data.prepare.split={train:1.0,val:0}",
        ],
    )
    assert report["issue_counts"] == {"image_id_type": 1} and report["splits"]["train"]["instances"] == {"thing": 1}
    assert "image_id '1' is a string: matched to image 1" in report["issues"][0]["detail"]


def test_a_polygon_partly_outside_the_image_is_a_reported_fix(tmp_path):
    img = images(tmp_path / "img", ["a.png"])
    anns = coco(
        tmp_path / "a.json",
        [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[-5, -3, 30, 0, 30, 30, 0, 30]]}],
    )
    report = prepared(
        tmp_path,
        [
            "data=coco",
            f"data.source.annotations={anns}",
            f"data.source.images={img}",
            "data.prepare.split={train:1.0,val:0}",
        ],
    )
    assert report["issue_counts"] == {"polygon_outside_image": 1}
    assert (
        report["issues"][0]["outcome"] == "fixed"
        and "x -5..30, y -3..30, outside the 80x60 image" in report["issues"][0]["detail"]
    )
    assert "polygon_outside_image" in (tmp_path / "out" / "report.md").read_text()


def test_a_recipe_composes_with_another_data_option():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "experiments"), version_base="1.3"):
        cfg = compose(
            "pennfudan", overrides=[f"hydra.searchpath=[file://{ROOT / 'conf'}]", "data=prepared", "data.name=mine"]
        )
    needs = OmegaConf.to_container(cfg, resolve=True)["needs"]
    assert [n["path"] for n in needs[:2]] == [None, None] and needs[2]["path"].endswith(
        "mobilenet_v2_imagenet_features.pth"
    )


def test_a_missing_split_names_a_valid_example_and_evaluation_needs_no_train_split(tmp_path):
    img = images(tmp_path / "img", ["a.png", "b.png"])
    anns = coco(tmp_path / "a.json", [ann(1), ann(2, image_id=2)], files=["a.png", "b.png"])
    prepared(
        tmp_path,
        [
            "data=coco",
            f"data.source.annotations={anns}",
            f"data.source.images={img}",
            "data.prepare.split={train:0,val:1.0}",
        ],
    )
    dm = from_prepared(str(tmp_path / "out"))  # what evaluate.py builds: val is all it reads
    assert dm.datasets["train"] is None and len(dm.datasets["val"]) == 2 and dm.class_names == ["thing"]
    with pytest.raises(MasklabError, match=r"e\.g\. \{train: 0\.8, val: 0\.2\}"):
        dm.setup("fit")


def test_drops_found_while_reading_the_source_are_listed_with_their_record_in_report_md(tmp_path):
    img = images(tmp_path / "img", ["a.png"])
    anns = coco(tmp_path / "a.json", [ann(1), ann(2, category_id=99)])
    prepared(
        tmp_path,
        [
            "data=coco",
            f"data.source.annotations={anns}",
            f"data.source.images={img}",
            "data.prepare.split={train:1.0,val:0}",
        ],
    )
    md = (tmp_path / "out" / "report.md").read_text()
    assert "- a.json: annotation 2: category_id 99 is not in 'categories'" in md


def test_clis_the_suite_starts_write_their_run_folders_outside_the_checkout(tmp_path):
    before = set((ROOT / "outputs").rglob("*")) if (ROOT / "outputs").is_dir() else set()
    proc = run_prepare("data=coco", f"data.source.annotations={tmp_path / 'missing.json'}")
    assert proc.returncode == 1
    assert list((tmp_path / "outputs" / "prepare" / "coco").iterdir())  # its run folder, under the test's tmp_path
    after = set((ROOT / "outputs").rglob("*")) if (ROOT / "outputs").is_dir() else set()
    assert after == before
