"""tunewise: fine-tune pretrained models by measurement.

    import tunewise
    record = tunewise.fit("pkg:efficientnet_lite0", "textile", "linear_probe", epochs=5)
    print(record.test["accuracy"], record.run_dir)
"""

from tunewise.backbones import Backbone, load_backbone
from tunewise.config import DataConfig, TrainConfig
from tunewise.errors import TunewiseError
from tunewise.predict import evaluate, predict
from tunewise.records import RunRecord
from tunewise.train import fit, resume

__all__ = [
    "Backbone",
    "DataConfig",
    "RunRecord",
    "TrainConfig",
    "TunewiseError",
    "evaluate",
    "fit",
    "load_backbone",
    "predict",
    "resume",
]
__version__ = "0.1.0"
