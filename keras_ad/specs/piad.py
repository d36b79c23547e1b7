"""`piad`: PIAD's keys, defaults and width rules (docs/methods/piad.md)."""

from keras_ad.errors import ConfigError
from keras_ad.fields import OPTIONAL, Field, is_power_of_two, positive_ints, shape_text
from keras_ad.specs import DetectorSpec

PARAMS = {
    "latent_dim": Field(32, int, low=1, high=4096, doc="latent channels d; MNIST/COIL 32, CIFAR-10 256, CelebA 64, "
                                                      "LSUN 32 (docs/methods/piad.md#1b)"),
    "latent_res": Field(1, int, low=1, high=512,
                        doc="latent grid r x r x d: 1, or 4 for LSUN (docs/methods/piad.md#1b)"),
    "generator_dims": positive_ints("G widths, log2(2·size/4) entries (docs/methods/piad.md#1b table)", [32] * 4),
    "encoder_dims": positive_ints("E widths (docs/methods/piad.md#1b table)", [32] * 4),
    "image_critic_dims": positive_ints("D_x widths (docs/methods/piad.md#1b table)", [32] * 4),
    "latent_critic_dims": positive_ints("D_z hidden widths (docs/methods/piad.md#1b table)", [128, 128]),
    "n_dis": Field(2, int, low=1, high=10,
                   doc="critic steps per E/G step: 2, 3 for CelebA and LSUN (docs/methods/piad.md#1d)"),
    "critic_learning_rate": Field(5e-4, float, low=0.0, high=1.0, doc="Adam for D_x and D_z (docs/methods/piad.md#1d)"),
    "weight_decay": Field(1e-8, float, low=0.0, high=1.0, doc="coupled L2 of every Adam (docs/methods/piad.md#1d)"),
    "weight_policy": Field(True, bool, doc="gradient-normalising weights w_E, w_G (docs/methods/piad.md#1c); false: 1"),
    "weight_update_every": Field(100, int, low=1, doc="iterations between weight updates (docs/methods/piad.md#1c)"),
    "perceptual_weights": Field("torchvision", doc="VGG19 for the perceptual loss: torchvision (the paper's; give "
                                "its weights as a file), keras-imagenet, none (random, offline) or a Keras VGG19 (no "
                                "top) weight file (docs/methods/piad.md#1c, docs/methods/piad.md#1g-2)"),
    "perceptual_network": Field("vgg19", choices=("vgg19", "efficientnet_lite0"),
                                doc="the perceptual loss's network: vgg19 (the paper's; weights by perceptual_weights) "
                                    "or efficientnet_lite0 (ImageNet weights offline, stage3 features at stride 8; a "
                                    "departure, docs/methods/piad.md#1c)"),
    "perceptual_stats": Field(None, allow=OPTIONAL, doc="relu4_2 mean/std JSON for weights other than torchvision's"),
    "reconstruction_loss": Field("relative_perceptual_l1", choices=("relative_perceptual_l1", "perceptual_l1",
                                                                   "perceptual_l2", "pixel_l2"),
                                 doc="E/G reconstruction loss and score: the paper's, or an ablation of "
                                     "docs/methods/piad.md#1c (pixel_l2 needs no VGG19)"),
    "reconstruction_weights": Field([1.0, 1.0], list, items=Field(None, float, low=0.0), length=2,
                                    doc="w_E, w_G: fixed when weight_policy is false (the manual ablation: 10, 100), "
                                        "else the policy's start (docs/methods/piad.md#1c)"),
}
WIDTH_KEYS = ("generator_dims", "encoder_dims", "image_critic_dims")


def widths_needed(size: int, latent_res: int) -> int:
    """Entries of each width list: log2(2 · size / max(latent_res, 4)) (docs/methods/piad.md#1b)."""
    return (2 * size // max(latent_res, 4)).bit_length() - 1


def defaults(values) -> dict:
    """docs/methods/piad.md#1d; the score is the reconstruction loss (#1e)."""
    return {"train.learning_rate": 1e-4, "train.lr_decay": 0.0, "postprocess.reduction": "detector"}


def check(values, shape, key, source):
    det, size = values["detector"], shape[0]
    if shape[0] != shape[1] or not is_power_of_two(size):
        raise ConfigError(source, key, f"piad needs a square power of two (32, 64, ...); got {shape_text(shape)}")
    r = det["latent_res"]
    if r != 1 and (not is_power_of_two(r) or not 4 <= r <= size // 2):
        raise ConfigError(source, "detector.latent_res", f"needs 1 or a power of two from 4 to image_size / 2; got {r}")
    needed = widths_needed(size, r)
    for name in WIDTH_KEYS:
        if len(det[name]) != needed:
            raise ConfigError(source, f"detector.{name}", f"needs {needed} positive integers for {size}x{size} images "
                                                          f"(docs/methods/piad.md#1b); got {det[name]!r}")
    if not det["latent_critic_dims"]:
        raise ConfigError(source, "detector.latent_critic_dims", "needs at least one width")


# the tiny test model takes one critic step per E/G step (n_dis 1): a training graph a third smaller
SPEC = DetectorSpec("piad", "keras_ad.detectors.piad:from_config", PARAMS, defaults, check,
                    tiny={"piad": {"name": "piad", "perceptual_weights": "none", "latent_dim": 8, "n_dis": 1,
                                   "generator_dims": [8] * 4, "encoder_dims": [8] * 4, "image_critic_dims": [8] * 4,
                                   "latent_critic_dims": [16, 16]}},
                    own_score=True)
