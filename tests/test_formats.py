"""Every reader: tiny fixtures written here, round trip source -> canonical -> masks, and the real data in ../shared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image

from conftest import compose_cfg, needs_shared
from masklab.data.dataset import CocoDataset
from masklab.data.formats import DatasetError, Drop, imaterialist, labelme, openimages, via
from masklab.data.prepare import prepare
from masklab.data.target import validate_target

H, W = 30, 40


def write_image(path, h=H, w=W, value=120):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)
    return path


def blob(y1, y2, x1, x2, h=H, w=W):
    m = np.zeros((h, w), np.uint8)
    m[y1:y2, x1:x2] = 1
    return m


def ring():
    """A mask no polygon describes exactly: a square with a hole and a lone pixel."""
    m = blob(5, 20, 5, 25)
    m[9:15, 10:18] = 0
    m[27, 38] = 1
    return m


def run_prepare(tmp_path, data_option, source: dict, extra=()):
    overrides = [f"data={data_option}", f"data.root={tmp_path / 'out'}", "data.prepare.split.val=0.0"]
    overrides += [f"data.source.{k}={v}" for k, v in source.items()] + list(extra)
    cfg = compose_cfg(overrides, tiny=False)
    report = prepare(cfg, progress=False)
    return report, CocoDataset(tmp_path / "out", "train")


def decoded(ds: CocoDataset) -> dict[str, list[np.ndarray]]:
    """{file_name: [masks in annotation order]} of a canonical split."""
    return {ds.images[i]["file_name"]: list(ds.target(i)["masks"].numpy()) for i in range(len(ds))}


def uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE by hand: alternating 0/1 run lengths over the column-major pixels, from 0s."""
    col = mask.flatten(order="F").astype(int)
    cuts = np.flatnonzero(np.diff(col)) + 1
    runs = np.diff(np.r_[0, cuts, len(col)]).tolist()
    return ([0] if col[0] else []) + runs


def test_coco_polygons_rle_crowd_background_and_odd_ids_round_trip(tmp_path):
    write_image(tmp_path / "img" / "a.png")
    rle = mask_utils.encode(np.asfortranarray(ring()))
    counts = uncompressed_counts(ring())
    data = {
        "images": [{"id": 0, "file_name": "a.png", "height": H, "width": W}],
        "categories": [{"id": 0, "name": "_background_"}, {"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}],
        "annotations": [
            {
                "id": 0,
                "image_id": 0,
                "category_id": 7,
                "segmentation": [[2, 2, 12, 2, 12, 9, 2, 9]],
                "bbox": [2, 2, 10, 7],
            },
            {
                "id": 5,
                "image_id": 0,
                "category_id": 9,
                "segmentation": {"size": [H, W], "counts": rle["counts"].decode()},
            },
            {
                "id": 5,
                "image_id": 0,
                "category_id": 9,
                "segmentation": {"size": [H, W], "counts": counts},
                "iscrowd": 1,
            },
            {"id": 6, "image_id": 0, "category_id": 0, "segmentation": [[0, 0, 5, 0, 5, 5]]},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    report, ds = run_prepare(tmp_path, "coco", {"annotations": tmp_path / "ann.json", "images": tmp_path / "img"})
    assert ds.class_names == ["cat", "dog"]  # _background_ never a class; ids 7/9 -> labels 1/2
    polygon = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([[2, 2, 12, 2, 12, 9, 2, 9]], H, W)))
    masks = decoded(CocoDataset(tmp_path / "out", "train", train=False))["a.png"]
    assert np.array_equal(masks[0], polygon) and np.array_equal(masks[1], ring()) and np.array_equal(masks[2], ring())
    target = CocoDataset(tmp_path / "out", "train", train=False).target(0)
    assert target["labels"].tolist() == [1, 2, 2] and target["iscrowd"].tolist() == [0, 0, 1]
    rules = report["issue_counts"]
    assert rules == {"background_category": 1, "bad_annotation_id": 1, "duplicate_annotation_id": 2}
    written = json.loads((tmp_path / "out" / "annotations" / "train.json").read_text())
    assert [a["id"] for a in written["annotations"]] == [1, 2, 3] and written["images"][0]["id"] == 1
    assert CocoDataset(tmp_path / "out", "train", train=True).target(0)["labels"].tolist() == [1, 2]  # no crowd


def test_coco_polygon_rectangle_is_the_expected_pixels(tmp_path):
    """An axis-aligned polygon from (2,2) to (12,9) covers pixels x 2..11, y 2..8: its area, 10 x 7."""
    write_image(tmp_path / "a.png")
    (tmp_path / "ann.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.png"}],
                "categories": [{"id": 1, "name": "box"}],
                "annotations": [
                    {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[2, 2, 12, 2, 12, 9, 2, 9]]}
                ],
            }
        )
    )
    _, ds = run_prepare(tmp_path, "coco", {"annotations": tmp_path / "ann.json"})
    mask = ds.target(0)["masks"][0].numpy()
    ys, xs = np.nonzero(mask)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (2, 11, 2, 8) and mask.sum() == 10 * 7


def via_regions(shapes, attrs):
    return [{"shape_attributes": s, "region_attributes": a} for s, a in zip(shapes, attrs)]


@pytest.mark.parametrize("version", ["1.x", "2.x"])
def test_via_shapes_classes_and_round_trip(tmp_path, version):
    write_image(tmp_path / "a.jpg")
    shapes = [
        {"name": "polygon", "all_points_x": [2, 12, 12, 2], "all_points_y": [2, 2, 9, 9]},
        {"name": "polyline", "all_points_x": [20, 30, 25], "all_points_y": [2, 2, 12]},
        {"name": "rect", "x": 2, "y": 15, "width": 10, "height": 7},
        {"name": "circle", "cx": 30, "cy": 20, "r": 5},
        {"name": "ellipse", "cx": 20, "cy": 22, "rx": 6, "ry": 3, "theta": 0.3},
        {"name": "point", "cx": 1, "cy": 1},
    ]
    attrs = [
        {"kind": "hat"},
        {"kind": {"mask": True, "hat": False}},
        {"kind": "hat"},
        {},
        {"kind": "mask"},
        {"kind": "hat"},
    ]
    regions = via_regions(shapes, attrs)
    record = {"filename": "a.jpg", "size": 1234, "regions": regions if version == "2.x" else dict(enumerate(regions))}
    data = (
        {"_via_settings": {}, "_via_img_metadata": {"a.jpg1234": record}} if version == "2.x" else {"a.jpg1234": record}
    )
    (tmp_path / "via.json").write_text(json.dumps(data))
    report, ds = run_prepare(
        tmp_path, "via", {"annotations": tmp_path / "via.json", "class_attribute": "kind", "default_class": "mask"}
    )
    assert ds.class_names == ["hat", "mask"]
    target = ds.target(0)
    assert target["labels"].tolist() == [1, 2, 1, 2, 2]  # the point region is dropped
    assert report["issue_counts"] == {"bad_shape": 1}
    source = via.read(tmp_path / "via.json", class_attribute="kind", default_class="mask")
    expected = [inst.decode(H, W) for inst in source.images[0].instances]
    assert all(np.array_equal(a, b) for a, b in zip(target["masks"].numpy(), expected))
    rect = target["masks"][2].numpy()
    assert rect.sum() == 10 * 7 and rect[15:22, 2:12].all()  # x 2, y 15, width 10, height 7
    circle = target["masks"][3].numpy()
    assert abs(int(circle.sum()) - np.pi * 25) < 0.15 * np.pi * 25  # a 64-gon of radius 5


def via3_project(regions: list[tuple[list, dict]], attribute: dict) -> dict:
    """A VIA 3 project of a.jpg (view 1) and an unannotated b.jpg (view 2), as via_image_annotator saves it."""
    return {
        "project": {"pid": "__VIA_PROJECT_ID__", "vid_list": ["1", "2"], "data_format_version": "3.1.1"},
        "config": {},
        "attribute": {"1": attribute, "2": {"aname": "note", "anchor_id": "FILE1_Z0_XY0", "type": 1}},
        "file": {
            "1": {"fid": "1", "fname": "a.jpg", "type": 2, "loc": 1, "src": ""},
            "2": {"fid": "2", "fname": "https://example.org/pics/b.jpg", "type": 2, "loc": 2, "src": ""},
        },
        "view": {"1": {"fid_list": ["1"]}, "2": {"fid_list": ["2"]}},
        "metadata": {
            "1_file": {"vid": "1", "flg": 0, "z": [], "xy": [], "av": {"2": "a file attribute"}},
            **{f"1_r{i}": {"vid": "1", "flg": 0, "z": [], "xy": xy, "av": av} for i, (xy, av) in enumerate(regions)},
        },
    }


def test_via_3_projects_give_the_masks_of_the_same_regions_in_2_x(tmp_path):
    """VIA 3 (via_image_annotator, the current release) keeps regions as [shape id, coordinates] and classes as option
    ids; it was refused as "not a VIA image record"."""
    write_image(tmp_path / "a.jpg")
    write_image(tmp_path / "b.jpg")
    shapes = [
        {"name": "polygon", "all_points_x": [2, 12, 12, 2], "all_points_y": [2, 2, 9, 9]},
        {"name": "polyline", "all_points_x": [20, 30, 25], "all_points_y": [2, 2, 12]},
        {"name": "rect", "x": 2, "y": 15, "width": 10, "height": 7},
        {"name": "circle", "cx": 30, "cy": 20, "r": 5},
        {"name": "ellipse", "cx": 20, "cy": 22, "rx": 6, "ry": 3},
        {"name": "rect", "x": 14, "y": 24, "width": 9, "height": 5},
        {"name": "circle", "cx": 8, "cy": 25, "r": 4},
        {"name": "point", "cx": 1, "cy": 1},
    ]
    kinds = ["hat", "mask", "hat", None, "mask", "mask", "hat", "hat"]
    xys = [
        [7, 2, 2, 12, 2, 12, 9, 2, 9],
        [6, 20, 2, 30, 2, 25, 12],
        [2, 2, 15, 10, 7],
        [3, 30, 20, 5],
        [4, 20, 22, 6, 3],
        [8, 14, 26, 18, 24, 23, 27, 20, 29],  # extreme rectangle: left, top, right, bottom points
        [9, 4, 25, 12, 25, 8, 21],  # extreme circle: three points of the circle around (8, 25) of radius 4
        [1, 1, 1],
    ]
    options = {"0": "hat", "1": "mask"}
    avs = [{"1": {"hat": "0", "mask": "1"}[k]} if k else {} for k in kinds]
    (tmp_path / "via3.json").write_text(
        json.dumps(
            via3_project(
                list(zip(xys, avs)),
                {"aname": "kind", "anchor_id": "FILE1_Z0_XY1", "type": 3, "options": options, "default_option_id": ""},
            )
        )
    )
    regions = via_regions(shapes, [{"kind": k} if k else {} for k in kinds])
    (tmp_path / "via2.json").write_text(
        json.dumps(
            {
                "_via_img_metadata": {
                    "a.jpg1": {"filename": "a.jpg", "size": 1, "regions": regions},
                    "b.jpg1": {"filename": "b.jpg", "size": 1, "regions": []},
                }
            }
        )
    )
    got = {}
    for version in ("via2", "via3"):
        report, ds = run_prepare(
            tmp_path / version,
            "via",
            {
                "annotations": tmp_path / f"{version}.json",
                "images": tmp_path,
                "class_attribute": "kind",
                "default_class": "mask",
            },
        )
        assert report["issue_counts"] == {"bad_shape": 1}, version  # the point
        got[version] = (ds.class_names, [im["file_name"] for im in ds.images], ds.target(0))
    (names2, files2, t2), (names3, files3, t3) = got["via2"], got["via3"]
    assert names3 == names2 == ["hat", "mask"] and files3 == files2 == ["a.jpg", "b.jpg"]
    assert t3["labels"].tolist() == t2["labels"].tolist() == [1, 2, 1, 2, 2, 2, 1]
    for i, (m3, m2) in enumerate(zip(t3["masks"].numpy(), t2["masks"].numpy())):
        assert (m3 & m2).sum() / (m3 | m2).sum() >= (1.0 if i < 6 else 0.9), i  # the circle of three points: rounding
    assert t3["masks"][5].numpy()[24:29, 14:23].all() and t3["masks"][5].sum() == 9 * 5  # the box of the 4 points


@pytest.mark.parametrize(
    "xy, why",
    [
        ([9, 1, 1, 2, 2, 3, 3], "its three points are on one line"),
        ([2, 1, 2, 3], "a rect needs 4 coordinates, it has 3"),
        ([8, 1, "a", 3, 4, 5, 6, 7, 8], "could not convert string to float: 'a'"),
    ],
)
def test_an_unusable_via_3_region_is_dropped_with_the_reason(xy, why):
    with pytest.raises(Drop, match=rf"^r: region xy .* unusable \({why}\)$") as drop:
        via.shape_3x(xy, "r")
    assert drop.value.rule == "bad_shape"


def test_malformed_via_2_regions_are_dropped_with_the_reason(tmp_path):
    """A region that is no object, or whose attributes are no objects, was an AttributeError traceback."""
    write_image(tmp_path / "a.jpg")
    good = {"shape_attributes": {"name": "rect", "x": 2, "y": 2, "width": 10, "height": 7}, "region_attributes": {}}
    regions = [
        good,
        "rect",
        {"shape_attributes": [1, 2], "region_attributes": {}},
        {"shape_attributes": good["shape_attributes"], "region_attributes": ["mask"]},
    ]
    (tmp_path / "via.json").write_text(
        json.dumps({"_via_img_metadata": {"a": {"filename": "a.jpg", "size": 1, "regions": regions}}})
    )
    source = via.read(tmp_path / "via.json", default_class="mask")
    assert len(source.images[0].instances) == 1 and source.images[0].instances[0].decode(H, W).sum() == 10 * 7
    assert source.issues == [
        ("bad_shape", "via.json: a.jpg region 1", "the region is a str, not an object with 'shape_attributes'"),
        ("bad_shape", "via.json: a.jpg region 2", "'shape_attributes' is a list, not an object"),
        ("bad_shape", "via.json: a.jpg region 3", "'region_attributes' is a list, not an object"),
    ]
    (tmp_path / "via.json").write_text(json.dumps({"a": {"filename": "a.jpg", "size": 1, "regions": "none"}}))
    with pytest.raises(
        DatasetError, match=r"via.json: record 'a': 'regions' is a str, not a list or object of regions$"
    ):
        via.read(tmp_path / "via.json")


def test_a_via_3_view_without_its_file_is_one_line(tmp_path):
    (tmp_path / "v.json").write_text(
        json.dumps({"project": {}, "file": {}, "view": {"7": {"fid_list": ["3"]}}, "metadata": {}})
    )
    with pytest.raises(DatasetError, match=r"v.json: view '7': a view needs a 'fid_list' of a file with a 'fname'$"):
        via.read(tmp_path / "v.json")


def test_openimages_masks_at_another_resolution_are_resized(tmp_path):
    write_image(tmp_path / "images" / "img1.jpg", 30, 40)
    big = np.kron(blob(4, 16, 6, 30), np.ones((2, 2), np.uint8))  # the same shape at 2x: 60x80
    (tmp_path / "masks").mkdir()
    Image.fromarray(big * 255).save(tmp_path / "masks" / "img1_m01_abc.png")
    (tmp_path / "classes.csv").write_text("/m/01,Suit\n/m/02,Dress\n")
    (tmp_path / "seg.csv").write_text(
        "MaskPath,ImageID,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,BoxYMax,PredictedIoU,Clicks\n"
        "img1_m01_abc.png,img1,/m/01,abc,0.15,0.75,0.13,0.53,0.9,\n"
        "img1_m03_x.png,img1,/m/03,x,0.1,0.2,0.1,0.2,0.9,\n"
    )
    report, ds = run_prepare(
        tmp_path,
        "openimages",
        {
            "annotations": tmp_path / "seg.csv",
            "masks": tmp_path / "masks",
            "images": tmp_path / "images",
            "class_descriptions": tmp_path / "classes.csv",
        },
    )
    assert ds.class_names == ["Suit"]  # classes come from the instances; /m/03 is not described
    target = ds.target(0)
    assert np.array_equal(target["masks"][0].numpy(), blob(4, 16, 6, 30))  # equal after the documented resize
    assert report["issue_counts"] == {"unknown_category": 1, "mask_size_mismatch": 1}
    with open(tmp_path / "seg.csv", "a") as f:  # a download cut short mid-line: was a TypeError from float(None)
        f.write("img1_m01_abd.png,img1,/m/01,abd,0.1")
    with pytest.raises(DatasetError, match=r"seg.csv: line 4: the line has 5 of the columns .* \(cut short\?\)$"):
        openimages.read(tmp_path / "seg.csv", tmp_path / "masks", tmp_path / "images", tmp_path / "classes.csv")


def test_instance_png_ids_round_trip(tmp_path):
    write_image(tmp_path / "images" / "p1.png")
    ids = np.zeros((H, W), np.uint8)
    ids[2:10, 3:9], ids[12:25, 20:35], ids[26:28, 1:4] = 1, 2, 7
    (tmp_path / "masks").mkdir()
    Image.fromarray(ids, mode="L").save(tmp_path / "masks" / "p1_mask.png")
    write_image(tmp_path / "images" / "p2.png")  # no mask file
    # lossless WebP (a third the size of PNG for photos) is read like PNG; it was skipped as "not an image"
    Image.fromarray(np.full((H, W, 3), 77, np.uint8)).save(tmp_path / "images" / "p3.webp", lossless=True)
    Image.fromarray((ids == 2).astype(np.uint8) * 5, mode="L").save(tmp_path / "masks" / "p3_mask.png")
    report, ds = run_prepare(
        tmp_path, "instance_png", {"images": tmp_path / "images", "masks": tmp_path / "masks", "class_name": "person"}
    )
    assert len(ds) == 2
    masks = ds.target(0)["masks"].numpy()
    assert [np.array_equal(m, ids == v) for m, v in zip(masks, (1, 2, 7))] == [True] * 3
    assert ds.images[1]["file_name"] == "p3.webp" and np.array_equal(ds.target(1)["masks"].numpy(), [ids == 2])
    assert np.array_equal(np.asarray(ds.load_image(1)), np.full((H, W, 3), 77, np.uint8))
    assert report["issue_counts"] == {"mask_missing": 1}


def kaggle_rle(mask: np.ndarray) -> str:
    col = np.r_[0, mask.flatten(order="F"), 0]
    edges = np.flatnonzero(np.diff(col))
    starts, ends = edges[0::2] + 1, edges[1::2] + 1  # 1-based
    return " ".join(f"{s} {e - s}" for s, e in zip(starts, ends))


def test_imaterialist_rle_csv_round_trip(tmp_path):
    write_image(tmp_path / "images" / "f1.jpg")
    a, b = ring(), blob(20, 29, 0, 40)
    (tmp_path / "labels.json").write_text(
        json.dumps({"categories": [{"id": 0, "name": "shirt"}, {"id": 6, "name": "pants"}]})
    )
    (tmp_path / "train.csv").write_text(
        "ImageId,EncodedPixels,Height,Width,ClassId\n"
        f"f1,{kaggle_rle(a)},{H},{W},0\n"
        f"f1,{kaggle_rle(b)},{H},{W},6_28_31\n"
        f"f1,1190 20,{H},{W},6\n"
    )  # runs past the 1200-pixel image
    report, ds = run_prepare(
        tmp_path,
        "imaterialist",
        {
            "annotations": tmp_path / "train.csv",
            "images": tmp_path / "images",
            "label_descriptions": tmp_path / "labels.json",
        },
    )
    target = ds.target(0)
    assert ds.class_names == ["shirt", "pants"] and target["labels"].tolist() == [1, 2]
    assert np.array_equal(target["masks"][0].numpy(), a) and np.array_equal(target["masks"][1].numpy(), b)
    assert report["issue_counts"] == {"rle_out_of_bounds": 1}


def test_imaterialist_decoder_is_one_based_column_major():
    mask = imaterialist.rle_to_mask(3, 2, runs="2 2", size=(3, 2), record="r")
    assert mask.tolist() == [[0, 0], [1, 0], [1, 0]]  # pixels 2, 3 go down the first column
    mask = imaterialist.rle_to_mask(3, 2, runs="3 2", size=(3, 2), record="r")
    assert mask.tolist() == [[0, 1], [0, 0], [1, 0]]


def test_split_ratios_classes_and_min_instances(tmp_path):
    ids = np.zeros((H, W), np.uint8)
    ids[2:10, 3:9] = 1
    for i in range(10):
        write_image(tmp_path / "images" / f"p{i}.png")
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(ids, mode="L").save(tmp_path / "masks" / f"p{i}_mask.png")
    cfg = compose_cfg(
        [
            "data=instance_png",
            f"data.root={tmp_path / 'out'}",
            f"data.source.images={tmp_path / 'images'}",
            f"data.source.masks={tmp_path / 'masks'}",
            "data.prepare.split={train:0.6,val:0.2,test:0.2}",
        ],
        tiny=False,
    )
    report = prepare(cfg, progress=False)
    assert {s: t["images"] for s, t in report["splits"].items()} == {"train": 6, "val": 2, "test": 2}
    files = {
        s: {
            im["file_name"] for im in json.loads((tmp_path / "out" / "annotations" / f"{s}.json").read_text())["images"]
        }
        for s in ("train", "val", "test")
    }
    assert set.union(*files.values()) == {f"p{i}.png" for i in range(10)} and not files["train"] & files["val"]
    prepare(cfg, progress=False)  # same seed, same split
    again = {
        im["file_name"] for im in json.loads((tmp_path / "out" / "annotations" / "train.json").read_text())["images"]
    }
    assert again == files["train"]
    with pytest.raises(Exception, match="no class left"):
        prepare(compose_cfg([*cfg_overrides(cfg), "data.prepare.min_instances=11"], tiny=False), progress=False)


def cfg_overrides(cfg):
    return [
        "data=instance_png",
        f"data.root={cfg.data.root}",
        f"data.source.images={cfg.data.source.images}",
        f"data.source.masks={cfg.data.source.masks}",
    ]


# ---- the real data in ../shared ---------------------------------------------------------------


def test_pennfudan_gives_170_images_and_423_instances(tmp_path):
    needs_shared("data", "PennFudanPed")
    cfg = compose_cfg(["data=pennfudan", f"data.root={tmp_path / 'pf'}"], tiny=False)
    report = prepare(cfg, progress=False)
    assert sum(t["images"] for t in report["splits"].values()) == 170
    assert sum(t["instances"]["pedestrian"] for t in report["splits"].values()) == 423
    assert report["issues"] == []
    ds = CocoDataset(tmp_path / "pf", "val")
    image, target = ds[0]
    validate_target(target, image.shape[:2])


def test_balloon_val_gives_13_images_and_50_instances(tmp_path):
    needs_shared("data", "balloon_val")
    report = prepare(compose_cfg(["data=balloon", f"data.root={tmp_path / 'b'}"], tiny=False), progress=False)
    assert sum(t["images"] for t in report["splits"].values()) == 13
    assert sum(t["instances"]["balloon"] for t in report["splits"].values()) == 50


def test_labelme_shapes_groups_and_labels(tmp_path):
    write_image(tmp_path / "imgs" / "a.png")
    shapes = [
        {"label": "cat", "points": [[12, 9], [2, 2]], "shape_type": "rectangle", "group_id": None},  # dragged up-left
        {"label": "dog", "points": [[20, 5], [30, 5], [30, 10]], "shape_type": "polygon", "group_id": 1},
        {"label": "dog", "points": [[20, 20], [30, 20], [30, 25], [20, 25]], "shape_type": "polygon", "group_id": 1},
        {"label": "dog", "points": [[5, 20], [8, 20], [8, 24]], "shape_type": "polygon", "group_id": None},  # its own
        {"label": "cat", "points": [[35, 15], [35, 19]], "shape_type": "circle"},
        {"label": "cat", "points": [[1, 1], [5, 5]], "shape_type": "line"},
        {"label": "__ignore__", "points": [[0, 0], [3, 0], [3, 3]], "shape_type": "polygon"},
        {"label": "bird", "points": [[0, 0], [3, 0], [3, 3]], "shape_type": "polygon"},
    ]
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "a.json").write_text(
        json.dumps(
            {"shapes": shapes, "imagePath": "..\\imgs\\a.png", "imageHeight": H, "imageWidth": W, "imageData": None}
        )
    )
    (tmp_path / "labels.txt").write_text("__ignore__\n_background_\ndog\ncat\n")
    source = labelme.read(tmp_path / "ann", labels=tmp_path / "labels.txt")
    assert source.categories == ["dog", "cat"] and source.images[0].path == tmp_path / "ann" / ".." / "imgs" / "a.png"
    assert sorted((rule, rec) for rule, rec, _ in source.issues) == [
        ("background_category", "a.json: shape 6"),
        ("bad_shape", "a.json: shape 5"),
        ("unknown_category", "a.json: shape 7"),
    ]
    insts = source.images[0].instances
    assert [i.category for i in insts] == ["cat", "dog", "dog", "cat"]  # the two dog polygons of group 1 are one
    masks = [i.decode(H, W) for i in insts]
    assert (
        masks[0][3:9, 3:12].all() and masks[0][11:].sum() == 0 and masks[0][:, 14:].sum() == 0
    )  # corners swapped back
    assert masks[1][6, 25] and masks[1][22, 25] and not masks[1][15, 25]  # both parts, nothing between them
    assert (
        masks[3][15, 32] and masks[3][12, 35] and not masks[3][15, 29] and not masks[3][9, 35]
    )  # radius 4 around (35, 15)
    # without labels.txt: every label seen, sorted; one-line errors for what is not labelme
    assert labelme.read(tmp_path / "ann").categories == ["bird", "cat", "dog"]
    (tmp_path / "b.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match=r"b.json: not a labelme file \(needs a 'shapes' list and 'imagePath'\)$"):
        labelme.read(tmp_path / "b.json")
    with pytest.raises(DatasetError, match=r"empty: no labelme .json files in this folder$"):
        (tmp_path / "empty").mkdir(), labelme.read(tmp_path / "empty")


def test_labelme_mask_shapes_and_an_embedded_image(tmp_path):
    # labelme 5's "mask" shapes (AI masks: a PNG bitmap in base64 over a box) were dropped as bad_shape, and a
    # labelme JSON whose image file is not beside it (labelme embeds it as imageData) lost its image
    import base64
    import io

    def b64png(array, mode=None):
        buffer = io.BytesIO()
        Image.fromarray(array, mode).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    pixels = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    ring = np.ones((5, 6), bool)
    ring[1:4, 1:5] = False  # a 6x5 bitmap with a hole, top-left pixel (10, 4)
    shapes = [
        {"label": "cat", "points": [[10, 4], [15, 8]], "shape_type": "mask", "mask": b64png(ring), "group_id": None},
        {
            "label": "dog",
            "points": [[30, 20], [31, 21]],
            "shape_type": "mask",
            "mask": b64png(np.ones((2, 2), bool)),
            "group_id": 3,
        },
        {"label": "dog", "points": [[20, 20], [25, 20], [25, 25], [20, 25]], "shape_type": "polygon", "group_id": 3},
        {"label": "cat", "points": [[38, 28], [41, 31]], "shape_type": "mask", "mask": b64png(np.ones((4, 4), bool))},
        {"label": "cat", "points": [[0, 0], [2, 2]], "shape_type": "mask"},  # no bitmap
        {"label": "cat", "points": [[0, 0], [2, 2]], "shape_type": "mask", "mask": "bm90IGEgcG5n"},  # base64, not a PNG
        {
            "label": "cat",
            "points": [[0, 0], [2, 2]],
            "shape_type": "mask",
            "mask": b64png(np.ones((2, 2), bool)),
        },  # 3x3 box
    ]
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "a.json").write_text(
        json.dumps(
            {"shapes": shapes, "imagePath": "a.png", "imageHeight": H, "imageWidth": W, "imageData": b64png(pixels)}
        )
    )
    report, ds = run_prepare(tmp_path, "labelme", {"annotations": tmp_path / "ann"})
    assert report["issue_counts"] == {"bad_shape": 3, "image_embedded": 1}
    assert [e["detail"] for e in report["issues"] if e["rule"] == "bad_shape"] == [
        "a.json: shape 4: mask shape without its 'mask' (a base64 PNG)",
        "a.json: shape 5: its 'mask' is not a base64 PNG (its bytes are no image)",
        "a.json: shape 6: its 2x2 mask does not fill its box (0, 0)-(2, 2), 3x3 px",
    ]
    image, target = ds[0]
    assert np.array_equal(np.asarray(image), pixels)  # the embedded image, written out as its PNG bytes
    masks = {
        (int(label), tuple(np.argwhere(m.numpy()).min(0))): m.numpy()
        for label, m in zip(target["labels"], target["masks"])
    }
    cat, dog = ds.class_names.index("cat") + 1, ds.class_names.index("dog") + 1
    expected = np.zeros((H, W), np.uint8)
    expected[4:9, 10:16] = ring
    assert np.array_equal(masks[(cat, (4, 10))], expected)  # pasted at its first point, hole kept
    corner = np.zeros((H, W), np.uint8)
    corner[28:, 38:] = 1  # a bitmap running past the image is cut at its edge
    assert np.array_equal(masks[(cat, (28, 38))], corner)
    dog_mask = masks[(dog, (20, 20))]
    assert (
        dog_mask[20:22, 30:32].all() and dog_mask[20:25, 20:25].all() and dog_mask.sum() == 4 + 25
    )  # one instance: the
    # 2x2 bitmap and the 5x5 pixels COCO rasterises the square with corners 20 and 25 to
    assert len(masks) == 3


def test_an_embedded_image_that_is_no_image_is_one_report_line(tmp_path):
    import base64

    from masklab.data.canonical import collect
    from masklab.data.validate import Report

    (tmp_path / "a.json").write_text(
        json.dumps({"shapes": [], "imagePath": "a.png", "imageData": base64.b64encode(b"junk").decode()})
    )
    report = Report()
    assert collect(labelme.read(tmp_path), report, progress=False) == []
    assert [(e["rule"], e["detail"]) for e in report.entries] == [
        (
            "image_unreadable",
            "a.json: a.png (embedded in the annotation, the file is missing) unreadable (its bytes are no image)",
        )
    ]


def test_labelme_json_gives_the_masks_labelme2coco_gave_the_same_images(tmp_path):
    # ../shared has the labelme sample in labelme's own format and as labelme2coco.py converted it:
    # read natively, the same 3 images, 12 instances (group_id joins polygons), classes and masks
    root = needs_shared("data", "labelme_coco")
    ours, ds = run_prepare(
        tmp_path / "lm", "labelme", {"annotations": root / "data_annotated", "labels": root / "labels.txt"}
    )
    theirs, cds = run_prepare(tmp_path / "co", "coco", {"annotations": root / "data_dataset_coco" / "annotations.json"})
    assert ours["class_names"] == theirs["class_names"] and len(ours["class_names"]) == 20
    assert ours["issue_counts"] == {"background_category": 2}  # the two __ignore__ regions

    def by_image(ds):
        out = {}
        for i in range(len(ds)):
            t = ds.target(i)
            out[Path(ds.images[i]["file_name"]).name] = sorted(
                (int(lb), m.numpy().tobytes()) for lb, m in zip(t["labels"], t["masks"])
            )
        return out

    masks = by_image(ds)
    assert sorted(masks) == ["2011_000003.jpg", "2011_000006.jpg", "2011_000025.jpg"]
    assert sum(map(len, masks.values())) == 12 and masks == by_image(cds)


def test_labelme_coco_gives_3_images_12_instances_and_no_background(tmp_path):
    root = needs_shared("data", "labelme_coco", "data_dataset_coco")
    cfg = compose_cfg(
        ["data=coco", f"data.root={tmp_path / 'l'}", f"data.source.annotations={root / 'annotations.json'}"], tiny=False
    )
    report = prepare(cfg, progress=False)
    assert "_background_" not in report["class_names"]
    assert sum(t["images"] for t in report["splits"].values()) == 3
    assert sum(sum(t["instances"].values()) for t in report["splits"].values()) == 12
    assert report["issue_counts"] == {"bad_annotation_id": 1}  # labelme numbers annotations from 0


def test_dense_small_proxy_is_what_its_docstring_says():
    import cv2

    from masklab.data.formats.dense_small import CLASS_NAMES, generate

    image, masks, names = generate(7)
    again, masks2, _ = generate(7)
    assert np.array_equal(image, again) and np.array_equal(masks, masks2)  # (seed, index) decide it
    h, w, _ = image.shape
    assert 512 <= min(h, w) and max(h, w) <= 768 and 20 <= len(masks) <= 120 and set(names) <= set(CLASS_NAMES)
    sides = [max(np.ptp(np.nonzero(m)[0]), np.ptp(np.nonzero(m)[1])) + 1 for m in masks]
    assert min(sides) >= 3 and max(sides) <= 62 and 8 <= np.median(sides) <= 18  # small objects, ~13 px median
    # low contrast: an object's mean colour is near its surroundings' (the first, saturated proxy: median 85 levels)
    contrast = []
    for m in masks.astype(bool):
        ring = cv2.dilate(m.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~masks.any(0)
        if ring.sum() >= 5:
            contrast.append(np.abs(image[m].mean(0) - image[ring].mean(0)).max())
    assert np.median(contrast) < 50
