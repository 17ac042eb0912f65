"""tunewise: fine-tune pretrained models by measurement.

    import tunewise
    record = tunewise.fit("pkg:efficientnet_lite0", "textile", "linear_probe", epochs=5)
    print(record.test["accuracy"], record.run_dir)

The public names load on first use, so `tunewise.report` and the CLI's `--help` do not pay
for importing torch.
"""

from importlib import import_module
from typing import Any

_PUBLIC = {
    "Backbone": "tunewise.backbones",
    "load_backbone": "tunewise.backbones",
    "DataConfig": "tunewise.config",
    "TrainConfig": "tunewise.config",
    "TunewiseError": "tunewise.errors",
    "evaluate": "tunewise.inference",
    "predict": "tunewise.inference",
    "RunRecord": "tunewise.records",
    "Leaderboard": "tunewise.records",
    "Ranking": "tunewise.records",
    "rank": "tunewise.choose",
    "fit": "tunewise.train",
    "resume": "tunewise.train",
    "search": "tunewise.study",
    "resume_search": "tunewise.study",
    "SearchConfig": "tunewise.study",
}
__all__ = sorted(_PUBLIC)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'tunewise' has no attribute {name!r}")
