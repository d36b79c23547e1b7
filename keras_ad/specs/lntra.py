"""`lntra`: LNTRA's keys, defaults and clip rules (docs/methods/lntra.md)."""

from keras_ad.errors import ConfigError
from keras_ad.fields import Field, positive_ints
from keras_ad.specs import DetectorSpec

PARAMS = {
    "clip_length": Field(16, int, low=8, high=64,
                         doc="frames per clip, a multiple of 8; the centre one is scored (docs/methods/lntra.md#5a)"),
    "clip_stride": Field(1, int, low=1, high=64, doc="training clips start every this many frames: 1, every clip "
                                                     "(docs/methods/lntra.md#5a); larger thins long videos"),
    "widths": positive_ints("channels of the four 3D convolutions (docs/methods/lntra.md#5b)", [96, 128, 256, 256],
                            length=4),
    "skip_frame": Field(0.0, float, low=0.0, high=1.0, doc="probability of a skip-frame pseudo anomaly per clip; the "
                                                           "paper's skip model 0.2 (docs/methods/lntra.md#5c)"),
    "jumps": positive_ints("frame steps a skip-frame clip draws from (docs/methods/lntra.md#5c)", [2, 3, 4, 5]),
    "patch": Field(0.0, float, low=0.0, high=1.0, doc="probability of a patch pseudo anomaly per clip; the paper's "
                                                      "patch model 0.2 (docs/methods/lntra.md#5c)"),
    "patch_kind": Field("smoothmix_s", choices=("smoothmix_s", "smoothmix_c", "cutmix", "mixup_patch"),
                        doc="patch mask: the paper's patch model SmoothMixS (docs/methods/lntra.md#5c)"),
    "max_size": Field(0.2, float, low=0.0, high=1.0,
                      doc="largest patch side / frame side, α; the patch model 0.5 (docs/methods/lntra.md#5c)"),
    "max_move": Field(0, int, low=0, high=256,
                      doc="patch motion per frame in pixels at 256x256, β; the patch model 10"),
    "intruders": Field("cifar100", doc="patch contents: cifar100 (keras.datasets), cifar-100-python.tar.gz, a folder "
                                       "of images, or digits (scikit-learn's, offline)"),
}


def defaults(values) -> dict:
    """docs/methods/lntra.md#5d; the score is the centre frame's PSNR (#5e)."""
    return {"train.learning_rate": 1e-4, "train.lr_decay": 0.0, "postprocess.reduction": "detector"}


def check(values, shape, key, source):
    det, data = values["detector"], values["data"]
    if data["patch_size"] is not None:
        raise ConfigError(source, "data.patch_size", "lntra scores whole video frames; leave data.patch_size null")
    if values["train"]["min_epoch_images"]:
        raise ConfigError(source, "train.min_epoch_images", "lntra trains on every clip once per epoch; leave it 0")
    if det["clip_length"] % 8 or shape[0] % 16 or shape[1] % 16 or data["channels"] != 1:
        raise ConfigError(source, "detector.clip_length", "lntra needs clip_length a multiple of 8, data.image_size "
                                                          "multiples of 16 and data.channels 1 "
                                                          "(docs/methods/lntra.md#5a)")


SPEC = DetectorSpec("lntra", "keras_ad.detectors.lntra:from_config", PARAMS, defaults, check,
                    tiny={"lntra": {"name": "lntra", "clip_length": 8, "widths": [4, 4, 8, 8], "skip_frame": 0.2,
                                    "patch": 0.2, "intruders": "digits", "max_size": 0.5}},
                    own_score=True, video=True)
