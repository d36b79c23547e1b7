"""One declarative spec per detector: its config keys, the papers' defaults, its cross-key rules, the
factory that builds it and the tiny model the tests train (TensorFlow-free).

The config check (`keras_ad.config`), the detector registry (`keras_ad.detectors.build`), the README's
config reference (`python -m keras_ad.config --reference`) and the tests' tiny models
(`tests/conftest.py`) all read SPECS: a rule is written once, in its detector's module here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from keras_ad.fields import Field


@dataclass(frozen=True)
class DetectorSpec:
    """What keras_ad knows about a detector before TensorFlow loads."""

    name: str
    factory: str  # "module:function" taking the validated Config
    params: dict[str, Field]
    defaults: Callable[[dict], dict]  # validated sections -> {"section.key": value} for the keys left `auto`
    check: Callable[[dict, tuple, str, str], None]  # (sections, model (h, w), its config key, source)
    tiny: dict[str, dict] = field(default_factory=dict)  # test-model name -> the detector section
    own_score: bool = False  # postprocess.reduction: detector (the paper defines the image score)
    video: bool = False  # scores clips of the video layout
    trains_weights: bool = True  # False: fitted by a feature pass without gradients


def _load() -> dict[str, DetectorSpec]:
    from keras_ad.specs import anogan, cae, ganomaly2d, lntra, patchcore, piad

    return {module.SPEC.name: module.SPEC for module in (cae, ganomaly2d, anogan, piad, lntra, patchcore)}


SPECS: dict[str, DetectorSpec] = _load()
