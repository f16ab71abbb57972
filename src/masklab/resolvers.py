"""The OmegaConf resolvers masklab's configs use, registered once (Hydra composes with them)."""

from __future__ import annotations

from omegaconf import OmegaConf

from masklab.cli_help import help_groups, help_keys, help_sweeper
from masklab.paths import PROJECT_ROOT
from masklab.secrets import mask

if not OmegaConf.has_resolver("help_groups"):
    OmegaConf.register_new_resolver("help_groups", help_groups)
    OmegaConf.register_new_resolver("help_keys", help_keys)
    OmegaConf.register_new_resolver("help_sweeper", help_sweeper)
if not OmegaConf.has_resolver("masklab_root"):
    OmegaConf.register_new_resolver("masklab_root", lambda: str(PROJECT_ROOT))
if not OmegaConf.has_resolver("masked"):  # a URL in --help, its password hidden: ${masked:${paths.tracking_uri}}
    OmegaConf.register_new_resolver("masked", mask)
if not OmegaConf.has_resolver("mul"):  # search spaces relative to a config value: ${mul:${optimizer.lr},0.25}
    OmegaConf.register_new_resolver("mul", lambda a, b: float(a) * float(b))
if not OmegaConf.has_resolver(
    "px"
):  # image sizes relative to the data's: ${px:${data.image_size},1.25} (multiple of 32)
    OmegaConf.register_new_resolver("px", lambda size, factor: _px(size, factor))


def _px(size, factor) -> int:
    """``size`` x ``factor`` in multiples of 32 (at least 32); ``auto`` sizes have their own multiplier."""
    if size == "auto":
        raise ValueError(
            "data.image_size=auto: the default space scales a plain size; prepared data's own space "
            "(hparams_search=prepared) scales the derived one (data.auto.scale), or give data.image_size=<px>"
        )
    return max(32, int(float(size) * float(factor) / 32 + 0.5) * 32)
