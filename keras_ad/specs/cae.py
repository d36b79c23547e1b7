"""`cae`: the SSIM autoencoder's keys, defaults and size rules (docs/methods/cae.md)."""

from keras_ad.errors import ConfigError
from keras_ad.fields import AUTO, Field, is_power_of_two, shape_text
from keras_ad.specs import DetectorSpec

PARAMS = {
    "architecture": Field("mvtec", choices=("mvtec", "resnet"), doc="docs/methods/cae.md#3b"),
    "latent_dim": Field(100, int, low=1, high=4096, doc="MVTec paper, docs/methods/cae.md#3b"),
    "loss": Field("ssim", choices=("ssim", "mssim", "mse", "l2"), doc="docs/methods/cae.md#3c"),
    "residual": Field("ssim", choices=(AUTO, "ssim", "l2", "l1"),
                      doc="1-SSIM map or squared/absolute error; never clipped (docs/methods/cae.md#3i-1); auto = "
                          "ssim for grey images, l2 for colour (a colour shift keeps the structure SSIM compares; "
                          "the repo pairs SSIM with grey, docs/methods/cae.md#3c)"),
    "mssim_scales": Field(5, int, low=1, high=5, doc="tf.image.ssim_multiscale default, docs/methods/cae.md#3c"),
    "encoder_weights": Field("imagenet", doc="resnet only: imagenet | none | path to a .h5 file"),
}


def defaults(values) -> dict:
    """docs/methods/cae.md#3d; the residual by the image's channels."""
    return {"train.learning_rate": 2e-4, "train.lr_decay": 1e-5, "postprocess.reduction": "max",
            "detector.residual": "ssim" if values["data"]["channels"] == 1 else "l2"}


def check(values, shape, key, source):
    det, data = values["detector"], values["data"]
    if det["architecture"] == "resnet":
        if shape != (299, 299) or data["channels"] != 3:
            raise ConfigError(source, key, "the resnet architecture needs image_size 299 and channels 3 "
                                           "(docs/methods/cae.md#3b)")
    elif not (is_power_of_two(shape[0]) and is_power_of_two(shape[1])) or min(shape) < 32:
        raise ConfigError(source, key, f"the mvtec architecture needs powers of two >= 32 (32, 64, ... 512, or "
                                       f"[256, 128]); got {shape_text(shape)}")
    if det["loss"] == "mssim":
        needed = 11 * 2 ** (det["mssim_scales"] - 1)
        if min(shape) < needed:
            raise ConfigError(source, "detector.mssim_scales", f"{det['mssim_scales']} scales need image_size >= "
                                                              f"{needed}; lower detector.mssim_scales or use loss ssim")


SPEC = DetectorSpec("cae", "keras_ad.detectors.cae:from_config", PARAMS, defaults, check,
                    tiny={"cae": {"name": "cae", "loss": "ssim", "residual": "l2"}})
