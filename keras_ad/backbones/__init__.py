"""Pretrained feature networks that run offline (docs/methods/patchcore.md#backbone).

This module imports no TensorFlow: the config check reads the stage strides from here.
"""

# stage name -> its output stride, per backbone (EfficientNet-B0's / Lite0's seven stages)
STAGE_STRIDES = {
    "efficientnet_lite0": {"stage1": 2, "stage2": 4, "stage3": 8, "stage4": 16, "stage5": 16, "stage6": 32,
                           "stage7": 32},
}
