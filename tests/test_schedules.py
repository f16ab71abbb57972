import math

import pytest

from masklab.model import schedules


def test_piecewise_is_the_seeds_table():
    pieces = [[0, 1.0], [40, 0.1], [60, 0.02], [80, 0.01]]
    f = lambda e: schedules.piecewise(e, 120, pieces)  # noqa: E731
    assert [f(0), f(39.99), f(40), f(59), f(60), f(80), f(119)] == [1.0, 1.0, 0.1, 0.1, 0.02, 0.01, 0.01]


def test_milestones_of_a_reference_run_move_in_proportion_to_the_run():
    # torchvision's 12-epoch step schedule (x0.1 at 8 and 11) in a 6-epoch run: at 4 and 5.5
    f = lambda e: schedules.multistep(e, 6, [8, 11], 0.1, reference_epochs=12)  # noqa: E731
    assert [f(3.99), f(4), f(5.49), f(5.5)] == pytest.approx([1.0, 0.1, 0.1, 0.01])
    assert schedules.multistep(8, 12, [8, 11], 0.1, reference_epochs=12) == pytest.approx(0.1)  # exact at its length
    assert schedules.multistep(4, 6, [8, 11], 0.1, reference_epochs=None) == 1.0  # null: the epochs as given
    # the seeds' 120-epoch table in 6 epochs: LR/10 from 2, /50 from 3, /100 from 4
    g = lambda e: schedules.piecewise(e, 6, [[0, 1.0], [40, 0.1], [60, 0.02], [80, 0.01]], reference_epochs=120)  # noqa: E731
    assert [g(0), g(1.99), g(2), g(3), g(4), g(5.9)] == [1.0, 1.0, 0.1, 0.02, 0.01, 0.01]


def test_schedule_options_take_the_data_options_length_and_keep_their_shape():
    from hydra.utils import instantiate

    from conftest import compose_cfg

    # (epoch, LR factor) in the 6-epoch run data=shapes suggests: step decays at 4, piecewise at 2 (and 3, 4)
    for name, points in {
        "step": [(0, 1.0), (4.2, 0.1), (5.9, 0.01)],
        "piecewise": [(0, 1.0), (2.5, 0.1), (5.9, 0.01)],
    }.items():
        cfg = compose_cfg([f"schedule={name}"], tiny=False)
        f = instantiate(cfg.schedule.lr_lambda)
        assert cfg.schedule.epochs == 6
        assert [f(epoch, 6) for epoch, _ in points] == pytest.approx([factor for _, factor in points])
    assert compose_cfg(["schedule=constant"], tiny=False).schedule.epochs == 6
    assert compose_cfg(["data=pennfudan"], tiny=False).schedule.epochs == "auto"  # prepared data: from data.steps
    other = compose_cfg(
        ["data=pennfudan", "~data.epochs", "schedule=piecewise"], tiny=False
    )  # no suggestion: the seeds' 120
    assert other.schedule.epochs == 120 and instantiate(other.schedule.lr_lambda)(40, 120) == pytest.approx(0.1)


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
    from masklab.model.module import build_module

    cfg = tiny_cfg(
        [
            "schedule=step",
            "schedule.epochs=3",
            "schedule.warmup_iters=2",
            "schedule.lr_lambda.milestones=[1,2]",
            "schedule.lr_lambda.reference_epochs=null",
            "optimizer.lr=0.1",
            "data.train.num_images=4",
        ]
    )  # 2 steps per epoch
    module = build_module(cfg)
    lrs = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    dm = build_datamodule(cfg)
    L.Trainer(
        max_epochs=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[Spy()],
    ).fit(module, datamodule=dm)
    expected = [0.1 * 0.001, 0.1 * 0.5005, 0.01, 0.01, 0.001, 0.001]
    assert lrs == pytest.approx(expected)
    assert not any(math.isnan(x) for x in lrs)


def test_the_run_says_where_the_lr_changes_and_warns_about_changes_it_never_reaches(tiny_cfg, caplog):
    from hydra.utils import instantiate

    from masklab.model.module import _check_boundaries

    with caplog.at_level("INFO", logger="masklab.model.module"):
        _check_boundaries(instantiate(tiny_cfg(["schedule=step", "schedule.epochs=6"]).schedule))
    assert "LR changes at epochs [4.0, 5.5] of 6 ([8, 11] of a 12-epoch run, scaled" in caplog.text
    assert "never" not in caplog.text
    caplog.clear()
    # milestones written in this run's epochs, but still scaled from 12: 20 and 30 of 40 would land at 66.67 and 100
    with caplog.at_level("INFO", logger="masklab.model.module"):
        _check_boundaries(
            instantiate(
                tiny_cfg(["schedule=step", "schedule.epochs=40", "schedule.lr_lambda.milestones=[20,30]"]).schedule
            )
        )
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "[66.67, 100.0] never happen in a 40-epoch run" in warning.message
    assert "[20, 30] are scaled by schedule.epochs / reference_epochs = 40/12" in warning.message
    assert "reference_epochs=null" in warning.message
    caplog.clear()
    with caplog.at_level("INFO", logger="masklab.model.module"):
        _check_boundaries(
            instantiate(
                tiny_cfg(
                    [
                        "schedule=step",
                        "schedule.epochs=40",
                        "schedule.lr_lambda.milestones=[20,30]",
                        "schedule.lr_lambda.reference_epochs=null",
                    ]
                ).schedule
            )
        )
        _check_boundaries(instantiate(tiny_cfg(["schedule=cosine"]).schedule))  # no boundaries: nothing to say
    assert [r.message for r in caplog.records] == ["schedule: LR changes at epochs [20, 30] of 40"]
    assert schedules.boundaries(120, pieces=[[0, 1.0], [40, 0.1], [60, 0.02]], reference_epochs=120) == [40, 60]
