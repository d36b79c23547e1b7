"""One worker of the multi-worker test (tests/test_distribute.py): trains each given config under the
process's MultiWorkerMirroredStrategy through keras_ad.training, the path `keras-ad train --workers` takes.

    python tests/multiworker_worker.py WORKERS INDEX CONFIGS.json
"""

import json
import os
import sys

workers, index, configs_path = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3]
os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})

from keras_ad import config, training  # noqa: E402
from keras_ad.runs import Run  # noqa: E402

with open(configs_path) as f:
    configs = json.load(f)
for name, cfg_dict in configs.items():
    cfg_dict["run"]["dir"] = os.path.join(cfg_dict["run"]["dir"], f"worker{index}")
    cfg_dict["train"]["strategy"] = "multiworker"
    cfg = config.validate(cfg_dict)
    training.train(cfg, Run.create(cfg, overwrite=True))
    print(f"worker {index}: {name} trained", flush=True)
