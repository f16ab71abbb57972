"""Model building from every option of every config group, weights loading and trainable layers."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from hydra.utils import instantiate

from conftest import ROOT, TINY_MODEL, compose_cfg, make_tiny_prepared, needs_shared
from masklab import MasklabError
from masklab.data.auto import resolved
from masklab.data.datamodule import build_datamodule
from masklab.model.build import build_model, parameter_summary, set_trainable
from masklab.model.module import build_module

GROUPS = ["data", "backbone", "model", "anchors", "nms", "augmentation", "schedule", "optimizer", "trainer", "logger"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((ROOT / "conf" / g).glob("*.yaml"))]
PREDICTORS = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")


def test_every_group_has_options():
    found = {g for g, _ in OPTIONS}
    assert found == set(GROUPS)
    assert {o for g, o in OPTIONS if g == "backbone"} == {"r18", "r50", "r101", "x101", "mobilenet_v2", "mobilenet_v3"}
    assert {o for g, o in OPTIONS if g == "schedule"} == {"constant", "step", "piecewise", "cosine"}


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_builds_and_trains_one_step(group, option, tmp_path):
    if group == "data" and option != "shapes":  # a prepared-data option, on a tiny dataset prepare.py wrote
        cfg = compose_cfg([*TINY_MODEL, f"data={option}", f"data.root={make_tiny_prepared(tmp_path)}"], tiny=False)
    else:
        cfg = compose_cfg([f"{group}={option}"])
    if group == "trainer" and cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        assert cfg.trainer.precision == "32-true"  # AMP was slower on an H100 (conf/trainer/gpu.yaml)
        pytest.skip(f"trainer={option} needs a CUDA GPU (config composed and checked)")
    cfg = resolved(cfg)  # as train.py does: the auto values of prepared data from its statistics
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, class_names=datamodule.class_names)
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    logger = instantiate(cfg.logger, run_name="t") if cfg.logger.get("_target_") else False
    trainer = instantiate(
        cfg.trainer,
        max_steps=1,
        limit_val_batches=0,
        logger=logger,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 1
    loss = trainer.callback_metrics["train/loss"]
    assert torch.isfinite(loss) and loss > 0
    changed = [n for n, p in module.model.named_parameters() if not torch.equal(before[n], p)]
    assert any(n.startswith("roi_heads.") for n in changed), "one optimizer step must move the heads"


def test_anchor_sizes_must_match_feature_maps():
    cfg = compose_cfg(["anchors.sizes=[16,32,64]"])
    with pytest.raises(MasklabError, match=r"3 sizes .* gives 5 feature maps"):
        build_model(cfg, num_classes=5)


def test_full_model_with_other_num_classes_reinitialises_only_predictors(tmp_path, caplog):
    src = build_model(compose_cfg(), num_classes=7)
    path = tmp_path / "model.pth"
    torch.save(src.state_dict(), path)
    cfg = compose_cfg([f"model.weights={path}"])  # shapes: 4 classes + background = 5
    with caplog.at_level("INFO"):
        dst = build_model(cfg, num_classes=5)
    s, d = src.state_dict(), dst.state_dict()
    differ = sorted(n for n in d if d[n].shape != s[n].shape or not torch.equal(d[n], s[n]))
    assert differ and all(n.startswith(PREDICTORS) for n in differ)
    assert {n for n in differ} == {n for n in d if n.startswith(PREDICTORS)}
    assert "re-initialised 6" in caplog.text and "roi_heads.box_predictor.cls_score.weight" in caplog.text


def test_lightning_checkpoint_loads_as_full_model_weights(tmp_path):
    cfg = compose_cfg()
    module = build_module(cfg)
    trainer = L.Trainer(
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, datamodule=build_datamodule(cfg))
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    loaded = build_model(compose_cfg([f"model.weights={tmp_path / 'run.ckpt'}"]), num_classes=5).state_dict()
    # fine-tuning from weights freezes BN statistics (FrozenBatchNorm2d keeps no num_batches_tracked)
    compared = [n for n in module.model.state_dict() if not n.endswith("num_batches_tracked")]
    assert len(compared) == len(loaded) > 200
    for name in compared:
        assert torch.equal(module.model.state_dict()[name], loaded[name]), name


def _fake_hub_file(torch_home: Path, weights, state_dict) -> None:
    """Put a state_dict where torch.hub caches ``weights.url``: the real weights-API path, offline."""
    target = torch_home / "hub" / "checkpoints" / Path(weights.url).name
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, target)


def test_coco_weights_through_torchvision_weights_api(tmp_path, monkeypatch):
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights, maskrcnn_resnet50_fpn

    coco = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    _fake_hub_file(tmp_path, MaskRCNN_ResNet50_FPN_Weights.COCO_V1, coco.state_dict())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = compose_cfg(["backbone=r50", "model=standard", "model.weights=coco", "data.image_size=64"], tiny=False)
    model = build_model(cfg, num_classes=5)
    ours, theirs = model.state_dict(), coco.state_dict()
    for name, tensor in ours.items():
        if not name.startswith(PREDICTORS):
            assert torch.equal(tensor, theirs[name]), name
    assert ours["roi_heads.box_predictor.cls_score.weight"].shape[0] == 5


def test_coco_weights_refused_for_backbone_without_them():
    with pytest.raises(MasklabError, match="no COCO Mask R-CNN for backbone 'mobilenet_v3_large'"):
        build_model(compose_cfg(["model.weights=coco"]), num_classes=5)


def test_imagenet_backbone_through_torchvision_weights_api(tmp_path, monkeypatch):
    from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large

    net = mobilenet_v3_large()
    _fake_hub_file(tmp_path, MobileNet_V3_Large_Weights.IMAGENET1K_V1, net.state_dict())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = build_model(compose_cfg(["backbone.weights=imagenet"]), num_classes=5)
    body = model.backbone.body.state_dict()
    for name, tensor in net.features.state_dict().items():
        if "num_batches_tracked" not in name:
            assert torch.equal(body[name], tensor), name
    # pretrained backbones keep BN statistics frozen, as torchvision does
    norms = {type(m).__name__ for m in model.backbone.body.modules() if type(m).__name__.endswith("Norm2d")}
    assert norms == {"FrozenBatchNorm2d"}


@pytest.mark.parametrize(
    "overrides, key, weights",
    [
        (["backbone.weights=imagenet"], "backbone.weights", "MobileNet_V3_Large_Weights.IMAGENET1K_V1"),
        (["backbone=r18", "backbone.weights=imagenet"], "backbone.weights", "ResNet18_Weights.IMAGENET1K_V1"),
        (
            ["backbone=r50", "model=standard", "model.weights=coco"],
            "model.weights",
            "MaskRCNN_ResNet50_FPN_Weights.COCO_V1",
        ),
    ],
)
def test_a_failed_weights_download_is_one_line_saying_where_the_file_goes(
    tmp_path, monkeypatch, overrides, key, weights
):
    # offline, behind a proxy or timed out: urllib's URLError traceback; the download is replaced by that failure
    # (the real one would fetch 10-170 MB wherever the network is open)
    import urllib.error

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MasklabError) as err:
        build_model(compose_cfg(overrides + ["data.image_size=64"], tiny=False), num_classes=5)
    value = overrides[-1].split("=", 1)[1]
    assert str(err.value).startswith(f"{key}={value}: downloading {weights} from https://download.pytorch.org/models/")
    message = str(err.value)
    assert (
        "failed ([Errno -2] Name or service not known); without internet, copy that file into "
        f"{tmp_path / 'hub' / 'checkpoints'}/ (set TORCH_HOME to move it) or give {key}=<a local file>" in message
    )
    assert "\n" not in message


def test_local_backbone_state_dict_from_shared_weights():
    path = needs_shared("weights", "mobilenet_v2_imagenet_features.pth")
    model = build_model(compose_cfg(["backbone=mobilenet_v2", f"backbone.weights={path}"]), num_classes=5)
    reference = torch.load(path, map_location="cpu", weights_only=True)
    body = model.backbone.body.state_dict()
    assert all(torch.equal(body[k], v) for k, v in reference.items() if "num_batches_tracked" not in k)


def test_backbone_file_that_matches_nothing_is_a_clear_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(MasklabError, match="no tensor matches backbone"):
        build_model(compose_cfg([f"backbone.weights={path}"]), num_classes=5)


def test_anchor_sizes_take_torchvisions_nested_form_and_name_a_bad_value():
    flat = build_model(compose_cfg(["anchors.sizes=[8,16,32,64,128]"]), num_classes=5).rpn.anchor_generator
    nested = build_model(compose_cfg(["anchors.sizes=[[8],[16],[32],[64],[128]]"]), num_classes=5).rpn.anchor_generator
    assert nested.sizes == flat.sizes == ((8,), (16,), (32,), (64,), (128,))
    with pytest.raises(
        MasklabError, match=r"anchors.sizes=\[8, 'abc', 32, 64, 128\]: one positive number per feature map"
    ):
        build_model(compose_cfg(["anchors.sizes=[8,abc,32,64,128]"]), num_classes=5)


def test_weights_files_that_are_missing_or_unreadable_are_one_line_naming_key_and_file(tmp_path):
    junk, listed = tmp_path / "junk.pth", tmp_path / "list.pth"
    junk.write_text("not a torch file")
    torch.save([1, 2], listed)
    cases = [
        (
            f"backbone.weights={tmp_path / 'gone.pth'}",
            f"backbone.weights={tmp_path / 'gone.pth'}: file not found "
            "(backbone.weights takes a local state_dict file, imagenet or null)",
        ),
        (f"model.weights={tmp_path / 'gone.ckpt'}", f"model.weights={tmp_path / 'gone.ckpt'}: file not found"),
        (f"backbone.weights={junk}", f"backbone.weights={junk}: not a readable PyTorch weights file"),
        (f"model.weights={listed}", f"model.weights={listed}: holds a list, not a state_dict of tensors"),
    ]
    for override, message in cases:
        with pytest.raises(MasklabError) as err:
            build_model(compose_cfg([override]), num_classes=5)
        assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("backbone", ["r50", "mobilenet_v3"])
@pytest.mark.parametrize("layers,lowest", [("heads", 6), ("3+", 3), ("4+", 4), ("5+", 5), ("all", 1)])
def test_trainable_layers(backbone, layers, lowest):
    model = build_model(compose_cfg([f"backbone={backbone}"]), num_classes=5)
    set_trainable(model, layers)
    stage_of = model.backbone.stage_of
    for child, module in model.backbone.body.named_children():
        for p in module.parameters():
            assert p.requires_grad == (stage_of[child] >= lowest), (child, layers)
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("backbone.body."))
    assert sorted(set(stage_of.values())) == [1, 2, 3, 4, 5]


def test_parameter_summary_counts_every_parameter_by_part():
    import re

    model = build_model(compose_cfg(["backbone=r18"]), num_classes=5)
    line = parameter_summary(model)
    total = sum(p.numel() for p in model.parameters())
    assert line.startswith(f"{total / 1e6:.1f}M parameters ({total * 4 / 2**20:.1f} MiB): backbone ")
    found = re.findall(r"(\w[\w ]*) ([\d.]+)([Mk])(?:, |$)", line.split(": ", 1)[1])
    parts = {name: float(n) * (1e6 if unit == "M" else 1e3) for name, n, unit in found}
    assert list(parts) == ["backbone", "FPN", "RPN", "box head", "box predictor", "mask head", "mask predictor"]
    assert parts["backbone"] == round(sum(p.numel() for p in model.backbone.body.parameters()), -4)
    # a predictor of 5 classes (background included): 5 scores and 5 x 4 box deltas from the box head's features
    assert parts["box predictor"] == round(25 * (model.roi_heads.box_predictor.cls_score.in_features + 1), -2)
    assert abs(sum(parts.values()) - total) <= 1e4  # the parts are every parameter, each rounded


def test_staged_training_switches_layers_and_logs_each_stage(tmp_path, caplog):
    cfg = compose_cfg(
        [
            "schedule.epochs=3",
            "model.stages=[{epochs: 1, trainable: heads}, {trainable: all}]",
            "data.train.num_images=2",
        ]
    )
    module = build_module(cfg)
    seen = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(all(p.requires_grad for p in pl_module.model.backbone.body.parameters()))

    trainer = L.Trainer(
        max_epochs=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[Spy()],
        default_root_dir=str(tmp_path),
    )
    with caplog.at_level("INFO"):
        trainer.fit(module, datamodule=build_datamodule(cfg))
    assert seen == [False, True, True]
    assert "stage 1/2 from epoch 0: training 'heads'" in caplog.text
    assert "stage 2/2 from epoch 1: training 'all'" in caplog.text


def test_rpn_l2_box_loss_and_box_head_dropout_change_the_model():
    from masklab.data.shapes import ShapesDataset
    from masklab.data.transforms import to_tensor

    image, target = to_tensor(*ShapesDataset(1, 64)[0])
    losses = {}
    for variant in ("smooth_l1", "l2"):
        torch.manual_seed(0)
        model = build_model(compose_cfg([f"rpn_box_loss={variant}"]), num_classes=5).train()
        torch.manual_seed(1)
        losses[variant] = {k: v.item() for k, v in model([image], [target]).items()}
    assert type(model.rpn).__name__ == "L2BoxLossRPN"
    assert losses["l2"]["loss_objectness"] == pytest.approx(losses["smooth_l1"]["loss_objectness"])
    assert losses["l2"]["loss_rpn_box_reg"] != pytest.approx(losses["smooth_l1"]["loss_rpn_box_reg"])
    model = build_model(compose_cfg(["box_head_dropout=0.5"]), num_classes=5)
    assert model.roi_heads.box_head.dropout.p == 0.5
    with pytest.raises(MasklabError, match="rpn_box_loss"):
        build_model(compose_cfg(["rpn_box_loss=l1"]), num_classes=5)


def test_readme_command_r50_small_anchors_trains_a_step(tmp_path):
    """`python src/train.py backbone=r50 anchors=small` as the README writes it (shrunk data, one step)."""
    cfg = compose_cfg(["backbone=r50", "anchors=small"])
    assert list(cfg.anchors.sizes) == [16, 32, 64, 128, 256] and cfg.backbone.arch == "resnet50"
    module = build_module(cfg)
    trainer = L.Trainer(
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, datamodule=build_datamodule(cfg))
    assert trainer.global_step == 1 and torch.isfinite(trainer.callback_metrics["train/loss"])


def test_shapes_picks_tiny_anchors_unless_the_command_line_says_otherwise():
    assert list(compose_cfg([], tiny=False).anchors.sizes) == [8, 16, 32, 64, 128]
    assert list(compose_cfg(["anchors=default"], tiny=False).anchors.sizes) == [32, 64, 128, 256, 512]


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_lays_out_conv_weights_nhwc_and_computes_the_same_features(channels_last):
    cfg = compose_cfg([f"channels_last={channels_last}"])
    torch.manual_seed(0)
    module = build_module(cfg)
    weights = [
        m.weight
        for m in module.model.modules()
        if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1 and m.weight.shape[-1] > 1
    ]  # (a 1-channel or 1x1 kernel is both layouts)
    assert all(w.is_contiguous(memory_format=torch.channels_last) == channels_last for w in weights)
    torch.manual_seed(0)
    reference = build_module(compose_cfg(["channels_last=false"]))  # the same weights, NCHW
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = module.model.backbone(x), reference.model.backbone(x)
    assert all(torch.allclose(ours[k], theirs[k], rtol=1e-4, atol=1e-4) for k in theirs)  # float rounding only


def test_the_network_is_a_config_tree_and_a_checkpoint_from_before_it_still_builds():
    from omegaconf import OmegaConf

    from masklab.model.heads import DropoutTwoMLPHead

    cfg = compose_cfg(["box_head_dropout=0.3"])
    assert cfg.model.net.box_head.dropout == 0.3 and cfg.model.net.anchor_generator.sizes == cfg.anchors.sizes
    head = ["model.net.box_head._target_=masklab.model.heads.DropoutTwoMLPHead", "~model.net.box_head.fpn_channels"]
    swapped = build_model(compose_cfg([*head, "+model.net.box_head.in_channels=1568"]), num_classes=5)
    assert isinstance(swapped.roi_heads.box_head, DropoutTwoMLPHead)
    assert swapped.roi_heads.box_head.fc6.in_features == 1568  # a node swapped by assignment, with its own arguments
    legacy = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    del legacy.model["net"]  # a checkpoint's config saved before model.net existed
    a, b = build_model(cfg, num_classes=5).state_dict(), build_model(legacy, num_classes=5).state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


def test_the_module_is_instantiated_from_its_parts_and_a_checkpoint_from_before_them_still_loads(tmp_path):
    from omegaconf import OmegaConf

    from masklab.eval.checkpoint import load_checkpoint

    stages = "model.stages=[{epochs:1,trainable:heads},{trainable:all}]"  # a short key, wired in by interpolation
    cfg = compose_cfg(["optimizer=adamw", "optimizer.lr=0.003", stages, "module.min_score=0.25"])
    module = build_module(cfg, class_names=["a", "b"])
    optimizer = module.optimizer(module.model.parameters())
    assert type(optimizer).__name__ == "AdamW" and optimizer.defaults["lr"] == 0.003  # the partial from config
    assert module.stages == [{"epochs": 1, "trainable": "heads"}, {"trainable": "all"}]
    assert module.stage_for_epoch(0) == (0, "heads") and module.stage_for_epoch(3) == (1, "all")
    assert module.model.roi_heads.box_predictor.cls_score.out_features == 3  # the net built for the data's classes
    assert module.min_score == 0.25  # a part set on the module node itself
    saved = module.hparams["cfg"]
    assert saved["module"]["optimizer"]["lr"] == 0.003  # the checkpoint keeps the resolved wiring
    legacy = OmegaConf.create(saved)
    del legacy["module"]  # a checkpoint's config saved before conf/module existed
    path = tmp_path / "old.ckpt"
    torch.save({"hyper_parameters": {"cfg": OmegaConf.to_container(legacy), "class_names": ["a", "b"]},
                "state_dict": module.state_dict()}, path)  # fmt: skip
    loaded, _, _ = load_checkpoint(path)
    assert loaded.stages == module.stages and loaded.min_score == 0.5  # today's wiring of its own keys
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in module.state_dict().items())
