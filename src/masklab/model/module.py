"""The LightningModule: one step for train, val and test around torchvision's MaskRCNN.

Training loss = sum of torchvision's five losses. Validation also computes those losses, through
the model's training path with no gradients and batch-norm/dropout in eval mode (torchvision gives
no validation loss; the seeds plotted it), then predicts in eval mode for COCO AP.
"""

from __future__ import annotations

import logging
import math

import lightning.pytorch as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from masklab import CONFIG_DIR, MasklabError
from masklab.checks import check_least, check_numbers, in_range
from masklab.data.auto import resolved
from masklab.data.datamodule import DATA_NUMBERS
from masklab.metrics import registry
from masklab.metrics.coco import CocoEvaluator
from masklab.model.build import NET_NUMBERS, build_model, parameter_summary, set_trainable, todays_node
from masklab.model.schedules import SIZES as SCHEDULE_SIZES
from masklab.model.schedules import boundaries, warmup
from masklab.secrets import mask_all

log = logging.getLogger(__name__)

#: the optimizer's numeric keys (configure_optimizers reads them)
OPTIMIZER_NUMBERS = {
    "optimizer.lr": (in_range(0, None), "a number >= 0"),  # 0: a run that cannot learn (the pruning tests sweep one)
    "optimizer.weight_decay": (in_range(0, None), "a number >= 0"),
    "optimizer.momentum": (in_range(0, 1), "a number in [0, 1]"),
    "grad_clip_norm": (in_range(0, None), "a number >= 0 (0: no clipping)"),
}


class NonFiniteLossError(MasklabError):
    pass


def build_module(cfg: DictConfig, class_names=None) -> MaskRCNNModule:
    """The run's LightningModule: the numbers checked, ``model.net`` built for the data's classes (and
    ``model.weights``), then ``cfg.module`` instantiated around it. ``class_names``: the datamodule's; default
    ``cfg.data.class_names``. The resolved config goes into its checkpoints, from which evaluate/predict rebuild it."""
    cfg = resolved(cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg))  # train.py resolved and logged it
    check_numbers(cfg, {**OPTIMIZER_NUMBERS, **NET_NUMBERS, **DATA_NUMBERS})  # before ${mul:} reads them
    check_least(cfg, SCHEDULE_SIZES)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    if cfg.get("module") is None:  # a checkpoint from before conf/module: today's wiring of its own keys
        cfg.module = todays_node(cfg, "module", OmegaConf.load(CONFIG_DIR / "module" / "mask_rcnn.yaml"))
    names = list(class_names if class_names is not None else cfg.data.class_names)
    net = build_model(cfg, num_classes=len(names) + 1)
    module = instantiate(cfg.module, net=net, class_names=names, _convert_="partial")
    saved = mask_all(OmegaConf.to_container(cfg))  # a tracking URI's password stays out of every checkpoint
    module.save_hyperparameters({"cfg": saved, "class_names": names}, logger=False)
    return module


class MaskRCNNModule(L.LightningModule):
    """Training, validation and test around torchvision's ``MaskRCNN`` (``net``), from its parts:
    ``optimizer`` (params -> Optimizer), ``schedule`` (``epochs`` or ``steps``, ``warmup_iters``,
    ``warmup_factor``, ``lr_lambda(epoch, epochs)``), ``stages`` ([{epochs, trainable}], else one stage of
    ``trainable_layers``) and the data's ``class_names``; conf/module/mask_rcnn.yaml wires them from the config."""

    data_digest: str | None = None  # of the prepared data it trains on (set by training; kept in its checkpoints)

    def __init__(
        self,
        net: nn.Module,
        class_names,
        optimizer,
        schedule,
        stages=(),
        trainable_layers: str = "all",
        val_metrics=("coco",),
        optimized_metric: str = "",
        min_score: float = 0.5,
        max_dets: int = 100,
        channels_last: bool = False,
    ):
        super().__init__()
        self.class_names = list(class_names)
        self.model = net
        if channels_last:  # NHWC weights: the convolutions pick NHWC kernels (oneDNN on CPU, tensor cores on GPU)
            self.model.to(memory_format=torch.channels_last)
        self.optimizer, self.schedule = optimizer, dict(schedule)
        self.stages = [dict(s) for s in stages or []] or [{"trainable": trainable_layers}]
        self.evaluator = CocoEvaluator(self.class_names, max_dets=int(max_dets))
        self.val_metrics = registry.needed(list(val_metrics or []), optimized_metric or "")
        self.min_score = float(min_score)
        self._stage = None

    def setup(self, stage: str) -> None:
        # torchvision's CPU NMS has no float16/bfloat16 kernel: refuse before the first validation reaches it
        precision = str(self.trainer.precision)
        if precision in ("16-true", "bf16-true") and self.trainer.strategy.root_device.type == "cpu":
            raise MasklabError(
                f"trainer.precision={precision} on the CPU: torchvision's CPU NMS has no "
                f"{'bfloat16' if precision.startswith('bf') else 'float16'} kernel; use 32-true or bf16-mixed"
            )

    def on_fit_start(self) -> None:
        if self.trainer.is_global_zero:
            log.info("model: Mask R-CNN, %s", parameter_summary(self.model))
            for name in self.val_metrics[1:]:  # coco is always there: the others are opt-in, say what they cost
                log.info("validation also runs %s: %s", name, registry.EVALUATORS[name].cost)
            if self.model.transform._skip_resize:
                log.info(
                    "tiles: validation scores whole images at %s px; it logs no val loss, whose pass over every "
                    "mask at that scale costs 1.5x the prediction",
                    self.model.transform.min_size[0],
                )

    # ---- one step for every stage -------------------------------------------------------------
    def forward(self, images):
        return self.model(images)

    def _losses(self, images, targets, stage: str) -> torch.Tensor:
        loss_dict = self.model(list(images), list(targets))
        loss = sum(loss_dict.values())
        if not torch.isfinite(loss):
            parts = ", ".join(f"{k}={v.item():.4g}" for k, v in loss_dict.items())
            raise NonFiniteLossError(
                f"non-finite {stage} loss at epoch {self.current_epoch} step "
                f"{self.global_step}: {parts} (lower the LR, add warmup or grad_clip_norm)"
            )
        logs = {f"{stage}/{k}": v for k, v in loss_dict.items()}
        on_step = stage == "train"
        self.log_dict(logs, on_step=on_step, on_epoch=not on_step, batch_size=len(images), sync_dist=not on_step)
        self.log(
            f"{stage}/loss",
            loss,
            prog_bar=True,
            on_step=on_step,
            on_epoch=not on_step,
            batch_size=len(images),
            sync_dist=not on_step,
        )
        return loss

    def training_step(self, batch, batch_idx):
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        return self._losses(*batch, stage="train")

    def _eval_step(self, batch, stage: str):
        images, targets = batch
        if not self.model.transform._skip_resize:  # tiles: no loss on whole images (1.5x the prediction's cost)
            _loss_mode(self.model)
            self._losses(images, targets, stage)
        self.model.eval()
        # detections in fp32, as evaluate.py computes them (fp16 boxes step 0.5 px past 1024 px); losses keep precision
        with torch.autocast(device_type=self.device.type, enabled=False):
            predictions = self.model(list(images))
        self.evaluator.update(targets, predictions)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def _eval_epoch_end(self, stage: str):
        if self.trainer.world_size > 1:  # DDP: every rank scores the union of all ranks' images
            parts = [None] * self.trainer.world_size
            ev = self.evaluator
            torch.distributed.all_gather_object(parts, (ev.images, ev.gt, ev.dt))
            ev.merge(parts)
        metrics, _ = registry.compute(self.evaluator, self.val_metrics, self.class_names, stage, self.min_score)
        self.evaluator.reset()
        headline = f"{stage}/segm_AP"
        self.log(headline, metrics[headline], prog_bar=True, sync_dist=True)
        self.log_dict({k: v for k, v in metrics.items() if k != headline}, sync_dist=True)
        if not self.trainer.sanity_checking:
            loss = self.trainer.callback_metrics.get(f"{stage}/loss", float("nan"))
            log.info(
                "epoch %d %s: loss %.4f  segm_AP %.4f  segm_AP50 %.4f  bbox_AP %.4f",
                self.current_epoch,
                stage,
                float(loss),
                metrics[headline],
                metrics[f"{stage}/segm_AP50"],
                metrics[f"{stage}/bbox_AP"],
            )

    def on_validation_epoch_start(self):
        self.evaluator.reset()

    def on_validation_epoch_end(self):
        self._eval_epoch_end("val")

    def on_test_epoch_start(self):
        self.evaluator.reset()

    def on_test_epoch_end(self):
        self._eval_epoch_end("test")

    # ---- staged training ------------------------------------------------------------------------
    def stage_for_epoch(self, epoch: int) -> tuple[int, str]:
        """(index, trainable layers) of ``stages`` for ``epoch``."""
        start = 0
        for i, st in enumerate(self.stages):
            if st.get("epochs") is None or epoch < start + st["epochs"] or i == len(self.stages) - 1:
                return i, st["trainable"]
            start += st["epochs"]
        raise AssertionError("unreachable")

    def on_train_epoch_start(self):
        index, layers = self.stage_for_epoch(self.current_epoch)
        if index != self._stage:
            trainable, total = set_trainable(self.model, layers)
            log.info(
                "stage %d/%d from epoch %d: training '%s' (%.1fM of %.1fM parameters)",
                index + 1,
                len(self.stages),
                self.current_epoch,
                layers,
                trainable / 1e6,
                total / 1e6,
            )
            self._stage = index

    # ---- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self):
        # every parameter: frozen ones get no gradient, and a stage that unfreezes them needs no new optimizer
        optimizer = self.optimizer(self.model.parameters())
        sched, lr_lambda = self.schedule, self.schedule["lr_lambda"]
        _check_boundaries(sched)
        total = self.trainer.estimated_stepping_batches  # sets up the train loader, so its length is known
        batches = self.trainer.num_training_batches  # inf when max_epochs=-1 (a max_steps run): then total per epoch
        per_epoch = (
            total / max(self.trainer.max_epochs, 1)
            if math.isinf(batches)
            else batches / self.trainer.accumulate_grad_batches
        )
        steps_per_epoch = max(1, math.ceil(per_epoch))
        epochs = sched["steps"] / steps_per_epoch if sched.get("steps") else sched["epochs"]  # steps: fractional
        warm = sched["warmup_iters"], sched["warmup_factor"]

        def factor(step: int) -> float:
            return warmup(step, *warm) * lr_lambda(step / steps_per_epoch, epochs)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint):
        run_id = getattr(self.logger, "run_id", None)
        if run_id:
            checkpoint["mlflow_run_id"] = run_id
        checkpoint["data_digest"] = self.data_digest  # the prepared data it trained on


def _check_boundaries(sched: dict) -> None:
    """Say where a step/piecewise schedule changes the LR in this run, and warn about a change it never reaches
    (e.g. milestones given in this run's epochs while ``reference_epochs`` still scales them from 12)."""
    epochs, kwargs = sched["epochs"], dict(getattr(sched["lr_lambda"], "keywords", {}))  # the partial's arguments
    at = boundaries(epochs, **kwargs)
    if not at:
        return
    given = boundaries(epochs, **{**kwargs, "reference_epochs": None})  # as written in the config
    ref = kwargs.get("reference_epochs")
    scaled = bool(ref) and ref != epochs
    how = (
        f" ({list(given)} of a {ref}-epoch run, scaled: schedule.lr_lambda.reference_epochs={ref}; null takes them "
        "as given)"
    )
    log.info("schedule: LR changes at epochs %s of %d%s", [round(b, 2) for b in at], epochs, how if scaled else "")
    late = [round(b, 2) for b in at if b >= epochs]
    if late:
        hint = (
            f": {list(given)} are scaled by schedule.epochs / reference_epochs = {epochs}/{ref}; give them for a "
            f"{ref}-epoch run or set schedule.lr_lambda.reference_epochs=null to take them as given"
        )
        log.warning(
            "schedule: the LR change(s) at epoch %s never happen in a %d-epoch run%s",
            late,
            epochs,
            hint if scaled else "",
        )


def _loss_mode(model: nn.Module) -> None:
    """Training-mode forward (so torchvision returns losses) with BN statistics and dropout frozen."""
    model.train()
    for m in model.modules():
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout)):
            m.eval()
