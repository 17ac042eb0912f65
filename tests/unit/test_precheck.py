"""The names read from the source (no import) are the registries' own, and the early checks say what to do."""

from __future__ import annotations

from tunewise.backbones import SOURCES, load_backbone
from tunewise.config import DataConfig
from tunewise.data import DATASETS, load_data
from tunewise.precheck import data_problems, model_problems, registered


def test_names_read_from_the_source_are_the_registered_ones():
    load_data(DataConfig(data="textile", max_train_per_class=1))  # imports every data module
    load_backbone("timm:test_resnet", pretrained=False)  # imports every backbone source
    assert registered("tunewise.data", "DATASETS") == tuple(DATASETS.names())
    assert registered("tunewise.backbones", "SOURCES") == tuple(SOURCES.names())


def test_a_misspelt_data_set_or_source_is_named_with_the_closest_one(tmp_path):
    assert "Did you mean 'textile'?" in data_problems(DataConfig(data="textil"))[0]
    assert data_problems(DataConfig(data="textile")) == []
    assert data_problems(DataConfig(data=str(tmp_path))) == []
    assert "Did you mean 'timm'?" in model_problems("tim:resnet50")[0]
    assert model_problems("timm:resnet50") == [] and model_problems("./weights.safetensors") == []


def test_the_cli_refuses_a_misspelt_data_set_and_source_before_importing_torch():
    import subprocess
    import sys

    code = ("import sys; from tunewise.cli import main; "
            "rc = main(['search', '--model', 'tim:resnet50', '--data', 'textil']); "
            "print('torch imported' if 'torch' in sys.modules else 'no torch'); sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no torch" in result.stdout, result.stdout + result.stderr
    assert "Did you mean 'textile'?" in result.stderr and "Did you mean 'timm'?" in result.stderr
