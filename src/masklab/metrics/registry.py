"""The evaluators: every metric that training validation and evaluate.py report, from one evaluator state.

An evaluator takes the COCO-form records of a split (``images``, ``gt``, ``dt`` as :class:`CocoEvaluator`
keeps them), the class names and ``min_score``, and returns ``{"<prefix>/<name>": value}``. Training validation
runs the ones named in ``val_metrics`` (plus the one ``optimized_metric`` needs); evaluate.py runs all of them,
so a name means the same number in MLflow, DVC, Optuna and evaluate.py's metrics.json.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from masklab import MasklabError
from masklab.metrics import voc
from masklab.metrics.coco import CocoEvaluator


@dataclass(frozen=True)
class Evaluator:
    compute: Callable  # (ev, class_names, prefix, min_score) -> (metrics, extra)
    names: tuple[str, ...]  # metric names it returns (without prefix; per-class ones are ``<name>_<class>``)
    cost: str  # what it costs, said when training validation runs it


def _coco(ev: CocoEvaluator, class_names, prefix: str, min_score: float):
    return ev.compute(prefix), {}


def _voc(ev: CocoEvaluator, class_names, prefix: str, min_score: float):
    return {f"{prefix}/voc_mAP50": voc.voc_map50(ev.images, ev.gt, ev.dt)}, {}


def _prf(ev: CocoEvaluator, class_names, prefix: str, min_score: float):
    matrix = voc.confusion(ev.images, ev.gt, ev.dt, len(class_names), min_score)
    metrics = {f"{prefix}/{k}": v for k, v in voc.precision_recall(matrix, class_names).items()}
    return metrics, {"confusion": matrix, "counted_score": min_score}


#: name -> evaluator; ``coco`` first (its state is what the others read)
EVALUATORS = {
    "coco": Evaluator(
        _coco,
        ("segm_AP", "segm_AP50", "segm_AP75", "bbox_AP", "bbox_AP50", "bbox_AP75"),
        "COCO AP (bbox and segm): the validation default",
    ),
    "voc": Evaluator(_voc, ("voc_mAP50",), "VOC mAP@0.5 the seeds' way: one mask IoU matrix per image"),
    "prf": Evaluator(
        _prf, ("precision", "recall", "f1"), "precision/recall/F1 at min_score: one mask IoU matrix per image"
    ),
}


def headline() -> list[str]:
    """Every evaluator's overall metric names (the columns of a table of settings)."""
    return [n for e in EVALUATORS.values() for n in e.names]


def evaluator_of(metric: str) -> str | None:
    """The evaluator that returns ``metric`` or its per-class form (``val/voc_mAP50`` -> ``voc``,
    ``val/recall_<class>`` -> ``prf``), or None (a loss, COCO's size ranges)."""
    name = metric.split("/", 1)[-1]
    for key, e in EVALUATORS.items():
        if name in e.names or any(name.startswith(f"{n}_") for n in e.names):
            return key
    return None


def per_class(metric: str) -> bool:
    """A per-class metric: an evaluator's name followed by ``_<class>`` (``segm_AP_<class>``, ``precision_<class>``)."""
    name = metric.split("/", 1)[-1]
    return any(name.startswith(f"{n}_") for e in EVALUATORS.values() for n in e.names)


def needed(names, *metrics: str) -> list[str]:
    """``names`` (checked) plus the evaluators ``metrics`` need, in registry order, ``coco`` always included."""
    unknown = [n for n in names if n not in EVALUATORS]
    if unknown:
        raise MasklabError(f"val_metrics {unknown}: unknown evaluator(s); choose from {list(EVALUATORS)}")
    wanted = {"coco", *names, *(e for e in map(evaluator_of, metrics) if e)}
    return [n for n in EVALUATORS if n in wanted]


def compute(ev: CocoEvaluator, names, class_names, prefix: str, min_score: float = 0.0) -> tuple[dict, dict]:
    """(metrics, extra) of the evaluators ``names`` on one state; ``extra`` holds the confusion matrix."""
    metrics, extra = {}, {}
    for n in names:
        m, x = EVALUATORS[n].compute(ev, class_names, prefix, min_score)
        metrics.update(m)
        extra.update(x)
    return metrics, extra
