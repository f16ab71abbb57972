import math

import pytest

from masklab.model import schedules


def test_piecewise_is_the_seeds_table():
    pieces = [[0, 1.0], [40, 0.1], [60, 0.02], [80, 0.01]]
    f = lambda e: schedules.piecewise(e, 120, pieces)  # noqa: E731
    assert [f(0), f(39.99), f(40), f(59), f(60), f(80), f(119)] == [1.0, 1.0, 0.1, 0.1, 0.02, 0.01, 0.01]


def test_multistep_cosine_constant():
    assert schedules.multistep(7.9, 12, [8, 11], 0.1) == 1.0
    assert schedules.multistep(8, 12, [8, 11], 0.1) == pytest.approx(0.1)
    assert schedules.multistep(11, 12, [8, 11], 0.1) == pytest.approx(0.01)
    assert schedules.cosine(0, 10, 0.01) == pytest.approx(1.0)
    assert schedules.cosine(5, 10, 0.0) == pytest.approx(0.5)
    assert schedules.cosine(10, 10, 0.01) == pytest.approx(0.01)
    assert schedules.constant(3, 10) == 1.0


def test_linear_warmup():
    assert schedules.warmup(0, 100, 0.001) == pytest.approx(0.001)
    assert schedules.warmup(50, 100, 0.001) == pytest.approx(0.5005)
    assert schedules.warmup(100, 100, 0.001) == 1.0
    assert schedules.warmup(5, 0, 0.001) == 1.0


def test_module_applies_warmup_times_schedule_per_step(tiny_cfg):
    import lightning.pytorch as L
    from masklab.data.datamodule import build_datamodule
    from masklab.model.module import MaskRCNNModule

    cfg = tiny_cfg(["schedule=step", "schedule.epochs=3", "schedule.warmup_iters=2", "schedule.lr_lambda.milestones=[1,2]",
                    "optimizer.lr=0.1", "data.train.num_images=4"])  # 2 steps per epoch
    module = MaskRCNNModule(cfg)
    lrs = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    dm = build_datamodule(cfg)
    L.Trainer(max_epochs=3, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              callbacks=[Spy()]).fit(module, datamodule=dm)
    expected = [0.1 * 0.001, 0.1 * 0.5005, 0.01, 0.01, 0.001, 0.001]
    assert lrs == pytest.approx(expected)
    assert not any(math.isnan(x) for x in lrs)
