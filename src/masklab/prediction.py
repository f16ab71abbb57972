"""One prediction run (``python src/predict.py``): load checkpoint -> read frames -> model -> draw instances or
splash -> write images / video (+ COCO results JSON). Same frame count and frame rate for a video; progress bar on
long work.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from masklab import MasklabError
from masklab.checks import check_numbers, in_range
from masklab.data.rle import encode_masks
from masklab.eval.checkpoint import load_for_inference, resolve_device
from masklab.eval.inputs import image_paths, output_names
from masklab.model.inference import detection_settings
from masklab.viz import draw

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
MODES = ("instances", "splash")


class Predictor:
    def __init__(self, cfg: DictConfig):
        module, rcfg, _, _ = load_for_inference(cfg)
        self.device = resolve_device(cfg.device)
        self.model, self.names, self.nms, self.mode = (
            module.model.to(self.device).eval(),
            module.class_names,
            rcfg.nms,
            cfg.mode,
        )
        self.min_score = float(cfg.min_score)
        self.results = []

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray, image_id: int) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div(255).to(self.device)
        with detection_settings(
            self.model, self.nms.box_score_thresh, self.nms.box_nms_thresh, self.nms.box_detections_per_img
        ):
            pred = draw.confident({k: v.cpu() for k, v in self.model([x])[0].items()}, self.min_score)
        boxes = pred["boxes"].numpy()
        for rle, box, label, score in zip(
            encode_masks(draw.binary_masks(pred)), boxes, pred["labels"].tolist(), pred["scores"].tolist()
        ):
            self.results.append(
                {
                    "image_id": image_id,
                    "category_id": label,
                    "category": self.names[label - 1],
                    "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                    "score": score,
                    "segmentation": rle,
                }
            )
        return draw.splash(rgb, pred) if self.mode == "splash" else draw.instances(rgb, pred, self.names)


def predict_images(predictor: Predictor, paths: list[Path], out: Path) -> list[dict]:
    """Each image drawn as ``<name>_<mode>.png`` (:func:`output_names`: none overwrites another)."""
    files = []
    for i, (path, name) in enumerate(
        zip(tqdm(paths, desc="images", unit="img", disable=len(paths) < 2), output_names(paths))
    ):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            print(f"skipped {path}: not a readable image", file=sys.stderr)
            continue
        drawn = predictor(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), i)
        cv2.imwrite(str(out / f"{name}_{predictor.mode}.png"), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        files.append({"id": i, "file_name": str(path)})
    return files


def predict_video(predictor: Predictor, path: Path, out: Path) -> list[dict]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise MasklabError(f"{path}: cannot open the video")
    fps, total = cap.get(cv2.CAP_PROP_FPS) or 25.0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    target = out / f"{path.stem}_{predictor.mode}.mp4"
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    frames = 0
    try:
        with tqdm(total=total or None, desc="frames", unit="frame") as bar:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                drawn = predictor(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), frames)
                writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                frames += 1
                bar.update()
    finally:  # Ctrl-C or an error: the frames drawn so far are a playable video (mp4 is finished on release)
        cap.release(), writer.release()
        print(f"{target}: {frames} frames at {fps:g} fps")
    return [{"id": i, "file_name": f"{path}#frame{i}"} for i in range(frames)]


def run(cfg: DictConfig, out: Path) -> Path:
    src = Path(str(cfg.input))
    if cfg.mode not in MODES:
        raise MasklabError(f"mode={cfg.mode}: choose {' or '.join(MODES)}")
    check_numbers(cfg, {"min_score": (in_range(0, 1), "a score in [0, 1]")})
    video = src.suffix.lower() in VIDEO_EXTENSIONS and src.is_file()
    paths = [] if video else image_paths(str(cfg.input))  # checked before the model loads
    out.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(cfg)
    if video:
        images = predict_video(predictor, src, out)
    else:
        images = predict_images(predictor, paths, out)
        if not images:  # one file, or a folder of files, none of which decoded: nothing was written
            raise MasklabError(f"input={src}: no readable image ({len(paths)} skipped, see above)")
    if cfg.results_json:
        (out / "predictions.json").write_text(json.dumps({"images": images, "annotations": predictor.results}))
    print(
        f"{len(predictor.results)} instances scoring >= {predictor.min_score:g} in {len(images)} "
        f"{'frames' if video else 'images'}"
    )
    return out
