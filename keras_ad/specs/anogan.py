"""`anogan`: AnoGAN's keys, defaults and size rule (docs/methods/anogan.md)."""

from keras_ad.errors import ConfigError
from keras_ad.fields import AUTO, Field, shape_text
from keras_ad.specs import DetectorSpec

PARAMS = {
    "latent_dim": Field(100, int, low=1, high=4096,
                        doc="z_dim of the seed (docs/methods/anogan.md#2b); the MVTec AD benchmark used 64"),
    "filters": Field(64, int, low=4, high=512, doc="gf_dim = df_dim (docs/methods/anogan.md#2b)"),
    "generator_updates": Field(2, int, low=1, high=10,
                               doc="G updates per D update, same z (docs/methods/anogan.md#2d)"),
    "discrimination_weight": Field(0.1, float, low=0.0, high=1.0,
                                   doc="λ of L = (1-λ)·ΣL1 + λ·ΣL1(features) (docs/methods/anogan.md#2c)"),
    "search_steps": Field(AUTO, int, low=0, high=100000, allow=(AUTO,),
                          doc="Adam steps of the latent search; auto = Γ = 500 of the paper "
                              "(docs/methods/anogan.md#2d; "
                              "the MVTec AD benchmark used 300)"),
    "search_lr": Field(AUTO, float, low=0.0, high=10.0, allow=(AUTO,),
                       doc="latent-search Adam learning rate (β1 0.5); auto = 0.02, the MVTec AD benchmark's (the "
                           "seed code: 0.001 for 10000 steps, docs/methods/anogan.md#2d)"),
    "search_restarts": Field(1, int, low=1, high=64, doc="random starting points per image, best kept"),
    "search_init": Field("random", choices=("random", "encoder"),
                         doc="random = the paper's U(-1, 1) start; encoder = start from E(x) (ours)"),
    "search_seed": Field(0, int, low=0, doc="seed of the starting latents (the same for every image)"),
    "encoder_epochs": Field(AUTO, int, low=1, high=100000, allow=(AUTO,),
                            doc="epochs of the izi_f encoder after the GAN (edge variant, ours); auto = train.epochs"),
    "encoder_feature_weight": Field(1.0, float, low=0.0, doc="κ of izi_f (f-AnoGAN, Schlegl et al. 2019)"),
}


def defaults(values) -> dict:
    """docs/methods/anogan.md#2d; the score is the search loss (#2e)."""
    return {"train.learning_rate": 2e-4, "train.lr_decay": 0.0, "postprocess.reduction": "detector",
            "detector.search_steps": 500, "detector.search_lr": 0.02}


def check(values, shape, key, source):
    if shape[0] % 16 or shape[1] % 16:
        raise ConfigError(source, key, f"anogan's generator starts at image_size / 16 (docs/methods/anogan.md#2b): "
                                       f"needs multiples of 16; got {shape_text(shape)}")


SPEC = DetectorSpec("anogan", "keras_ad.detectors.anogan:from_config", PARAMS, defaults, check,
                    tiny={"anogan": {"name": "anogan", "filters": 8, "latent_dim": 16, "search_steps": 10}},
                    own_score=True)
