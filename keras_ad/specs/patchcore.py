"""`patchcore`: PatchCore's keys, defaults and stride rule (docs/methods/patchcore.md)."""

from keras_ad.backbones import STAGE_STRIDES
from keras_ad.errors import ConfigError
from keras_ad.fields import Field, shape_text
from keras_ad.specs import DetectorSpec

PARAMS = {
    "backbone": Field("efficientnet_lite0", choices=tuple(STAGE_STRIDES),
                      doc="ImageNet network the patch features come from (docs/methods/patchcore.md#backbone)"),
    "stages": Field(["stage3", "stage4"], list, items=Field(None, choices=tuple(STAGE_STRIDES["efficientnet_lite0"])),
                    doc="the backbone stages whose features are concatenated: two mid-level ones, as the paper's "
                        "WideResNet-50 layer2 + layer3 (strides 8 and 16)"),
    "neighbourhood": Field(3, int, low=1, high=9, doc="p: each feature averaged over its p x p neighbours (paper 3)"),
    "coreset_ratio": Field(0.1, float, low=1e-4, high=1.0,
                           doc="share of the training patch features kept (paper: 0.1, and 0.01 with little loss)"),
    "memory_bank_size": Field(10000, int, low=1, high=1000000,
                              doc="rows of the memory bank: the coreset is capped at it (smaller = faster on a "
                                  "device), a smaller coreset repeats rows to fill it"),
    "projection_dim": Field(128, int, low=1, high=4096,
                            doc="random projection of the features for the coreset selection (the paper's 128); "
                                "features with fewer dimensions are used as they are"),
    "reweight_neighbours": Field(9, int, low=1, high=100, doc="b of the image score's re-weighting (eq. 7)"),
    "map_sigma": Field(4.0, float, low=0.0, high=32.0, doc="Gaussian smoothing of the up-sampled map (paper 4)"),
}


def defaults(values) -> dict:
    """No optimiser (one feature pass); the score is the re-weighted nearest distance."""
    return {"train.learning_rate": 0.0, "train.lr_decay": 0.0, "postprocess.reduction": "detector"}


def check(values, shape, key, source):
    det = values["detector"]
    if not det["stages"] or len(set(det["stages"])) != len(det["stages"]):
        raise ConfigError(source, "detector.stages", f"needs one or more distinct stages; got {det['stages']!r}")
    deepest = max(det["stages"], key=lambda s: STAGE_STRIDES[det["backbone"]][s])
    stride = STAGE_STRIDES[det["backbone"]][deepest]
    if shape[0] % stride or shape[1] % stride:
        raise ConfigError(source, key, f"patchcore's deepest stage ({deepest}) has stride {stride}: needs multiples "
                                       f"of {stride}; got {shape_text(shape)}")
    if values["train"]["precision"] != "float32":
        raise ConfigError(source, "train.precision", "patchcore trains no weights (one feature pass): leave float32")


SPEC = DetectorSpec("patchcore", "keras_ad.detectors.patchcore:from_config", PARAMS, defaults, check,
                    tiny={"patchcore": {"name": "patchcore", "memory_bank_size": 64}},
                    own_score=True, trains_weights=False)
