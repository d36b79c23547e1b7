"""`ganomaly2d`: GANomaly2D's and GANomaly's keys, defaults and size rules (docs/methods/ganomaly.md)."""

from keras_ad.errors import ConfigError
from keras_ad.fields import AUTO, Field, is_power_of_two, shape_text
from keras_ad.specs import DetectorSpec

PARAMS = {
    "latent": Field("2d", choices=("2d", "1d"), doc="2d = GANomaly2D (spatial latent, map), 1d = GANomaly (vector "
                                                    "latent, image score), docs/methods/ganomaly.md"),
    "filters": Field(AUTO, int, low=4, high=256, allow=(AUTO,),
                     doc="first-layer width: auto = 64 (GANomaly2D --r 1; GANomaly ngf), docs/methods/ganomaly.md"),
    "latent_dim": Field(100, int, low=1, high=4096, doc="1d only: nz of GANomaly, docs/methods/ganomaly.md#41"),
    "w_adv": Field(AUTO, float, low=0.0, allow=(AUTO,), doc="auto = 1 (both variants), docs/methods/ganomaly.md"),
    "w_con": Field(AUTO, float, low=0.0, allow=(AUTO,),
                   doc="auto = 10 (2d, summed L2) or 50 (1d, mean L1), docs/methods/ganomaly.md"),
    "w_enc": Field(AUTO, float, low=0.0, allow=(AUTO,),
                   doc="auto = 10 (2d, summed L1) or 1 (1d, mean L2), docs/methods/ganomaly.md"),
}


def defaults(values) -> dict:
    """GANomaly2D's repo (docs/methods/ganomaly.md#42), or GANomaly's for the 1d variant (#41)."""
    if values["detector"]["latent"] == "1d":
        return {"train.learning_rate": 2e-4, "train.lr_decay": 0.0, "postprocess.reduction": "mean",
                "detector.filters": 64, "detector.w_adv": 1.0, "detector.w_con": 50.0, "detector.w_enc": 1.0}
    return {"train.learning_rate": 1e-4, "train.lr_decay": 0.0, "postprocess.reduction": "mean",
            "detector.filters": 64, "detector.w_adv": 1.0, "detector.w_con": 10.0, "detector.w_enc": 10.0}


def check(values, shape, key, source):
    height, width = shape
    if values["detector"]["latent"] == "2d" and (height % 16 or width % 16):
        raise ConfigError(source, key, f"ganomaly2d downsamples 4 times: needs multiples of 16; got "
                                       f"{shape_text(shape)}")
    if values["detector"]["latent"] == "1d" and (height != width or not is_power_of_two(height)):
        raise ConfigError(source, key, f"the 1d (GANomaly, DCGAN) variant needs a square power of two; got "
                                       f"{shape_text(shape)}")


SPEC = DetectorSpec("ganomaly2d", "keras_ad.detectors.ganomaly2d:from_config", PARAMS, defaults, check,
                    tiny={"ganomaly2d": {"name": "ganomaly2d", "latent": "2d", "filters": 8},
                          "ganomaly": {"name": "ganomaly2d", "latent": "1d", "filters": 8}})
