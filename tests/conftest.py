"""Shared fixtures: tiny image folders and tiny models, all made locally (no download)."""

from __future__ import annotations

import inspect
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ("red", "green", "blue")


def write_conll(path: Path) -> Path:
    """A CoNLL file of three tagged sentences (persons, places, an organisation), 8 times over."""
    sentences = [[("maria", "B-PER"), ("lopez", "I-PER"), ("was", "O"), ("in", "O"), ("oslo", "B-LOC")],
                 [("john", "B-PER"), ("smith", "I-PER"), ("founded", "O"), ("acme", "B-ORG"), ("corp", "I-ORG")],
                 [("the", "O"), ("film", "O"), ("was", "O"), ("in", "O"), ("paris", "B-LOC")]]
    lines = ["-DOCSTART- O", ""]
    for sentence in sentences * 8:
        lines += [f"{w} {t}" for w, t in sentence] + [""]
    path.write_text("\n".join(lines))
    return path


def past_edges(range_rates: list[float]) -> set[float]:
    """The rates a search may add a step past either end of a strategy's log-spaced range, for a
    finalist best at that end (tiers.enqueue_past_edges), rounded as `rounded` rounds."""
    low, high = min(range_rates), max(range_rates)
    step = sorted(range_rates)[1] / low
    return {rounded(high * step), rounded(low / step)}


def rounded(rate: float) -> float:
    """A rate to 10 significant digits: the same rate computed two ways compares equal."""
    return float(f"{rate:.10g}")


def write_image_folder(root: Path, per_class: int = 12, size: int = 40, seed: int = 0) -> Path:
    """Class folders of noisy images whose dominant colour is the class: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, (size, size, 3))
            pixels[..., c] += 160
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i:03d}.png")
    return root


def write_png_declaring(path: Path, width: int, height: int) -> Path:
    """A valid 1x1 grey PNG whose header then claims width x height: a decompression bomb's shape
    (under 100 bytes on disk)."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A timm `test_resnet` state dict as safetensors: stands in for downloaded weights."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10)
    path = tmp_path_factory.mktemp("weights") / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


WORDS = (
    "the", "a", "film", "movie", "was", "is", "great", "good", "bad", "awful", "dull", "moving", "fun", "boring",
    "plot", "acting", "maria", "lopez", "john", "smith", "oslo", "paris", "acme", "corp", "founded", "in", "by",
    "who", "where", "what", "year",
)


class TFRecordWriter:
    """`write({key: (value, "byte" | "int")})` appends one tf.train.Example record, framed as TensorFlow
    frames it: length (8 bytes, little-endian), its masked CRC-32C, the data, the data's masked CRC-32C."""

    def __init__(self, path: str) -> None:
        self.file = open(path, "wb")  # noqa: SIM115  (closed by close(), as tf.io.TFRecordWriter is)

    def write(self, features: dict) -> None:
        from tunewise.data.tfrecord_files import _example_class  # a message class of a private pool

        example = _example_class()()
        for key, (value, kind) in features.items():
            feature = example.features.feature[key]
            (feature.bytes_list if kind == "byte" else feature.int64_list).value.append(value)
        data = example.SerializeToString()
        length = struct.pack("<Q", len(data))
        self.file.write(length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data)))

    def close(self) -> None:
        self.file.close()


def masked_crc(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


POSITIVE = ["the film was great fun", "great acting , moving plot", "a good movie", "the plot was fun and moving"]
NEGATIVE = ["the film was dull", "awful acting , boring plot", "a bad movie", "the plot was boring and dull"]


def write_reviews(folder: Path):
    """reviews.csv in `folder`: 48 short reviews, half pos and half neg, in the tiny BERT's words; its DataConfig."""
    from tunewise import DataConfig

    rows = [(t, "pos") for t in POSITIVE] * 6 + [(t, "neg") for t in NEGATIVE] * 6
    (folder / "reviews.csv").write_text("review,sentiment\n" + "".join(f'"{t}",{label}\n' for t, label in rows))
    return DataConfig(data=str(folder / "reviews.csv"), text_column="review", label_column="sentiment", max_length=16)


def write_keras_cnn(path: Path, classes: int = 5, nested: bool = False) -> Path:
    """Conv, BatchNorm, conv, pooling and a Dense classifier on 32 px RGB images, saved as .keras. With
    `nested`, Keras's transfer-learning shape: the layers up to the pooling are a model of their own,
    frozen (trainable=False), called as one layer of the saved model."""
    from tunewise.backbones.keras_source import keras_on_torch

    keras = keras_on_torch()
    layers = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.Conv2D(16, 3, activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if nested:
        base = keras.Model(inputs, x, name="base")
        base.trainable = False
        inputs = keras.Input((32, 32, 3))
        x = base(inputs)
    x = layers.Dropout(0.1, name="drop")(x)  # its seed generator's state is an integer variable
    keras.Model(inputs, layers.Dense(classes, name="classifier")(x)).save(path)
    return path


def write_keras_hub_efficientnet(folder: Path, classes: int = 5) -> Path:
    """A tiny KerasHub EfficientNet image classifier (a stride-1 stage of one block, a stride-2 stage of two,
    ReLU6 and no squeeze-and-excite, as EfficientNet-Lite; 1280 features, which KerasHub 0.32 always reloads;
    32 px images scaled to [-1, 1]), saved as a KerasHub preset folder by save_to_preset."""
    from tunewise.backbones.keras_source import keras_on_torch
    from tunewise.backbones.keras_text import keras_hub_on_torch

    keras_hub = keras_hub_on_torch()
    keras_on_torch().utils.set_random_seed(0)
    backbone = keras_hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[1.0, 1.0], stackwise_depth_coefficients=[1.0, 1.0],
        stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 2], stackwise_input_filters=[8, 8],
        stackwise_output_filters=[8, 16], stackwise_expansion_ratios=[1, 2], stackwise_strides=[1, 2],
        stackwise_squeeze_and_excite_ratios=[0, 0], stackwise_block_types=["v1", "v1"], activation="relu6",
        dropout=0, min_depth=None, use_depth_divisor_as_min_depth=True)  # num_features: its config omits it
    converter = keras_hub.layers.EfficientNetImageConverter(image_size=(32, 32), scale=[1 / 127.5] * 3,
                                                            offset=[-1.0] * 3, interpolation="bilinear")
    preprocessor = keras_hub.models.EfficientNetImageClassifierPreprocessor(image_converter=converter)
    classifier = keras_hub.models.EfficientNetImageClassifier(backbone=backbone, num_classes=classes,
                                                              preprocessor=preprocessor)
    classifier.save_to_preset(str(folder))
    return folder


def write_timm_lite0(folder: Path, architecture: str = "tf_efficientnet_lite0") -> Path:
    """The real ImageNet EfficientNet-Lite0 weights (pkg:efficientnet_lite0, ported from TensorFlow) as a timm
    folder, as timm's save_for_hf writes one (config.json, model.safetensors); `architecture` may name the
    PyTorch twin instead, which KerasHub converts as it is."""
    import json

    import timm
    from timm.models import save_for_hf

    from tunewise.backbones import pkg

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    pkg.load_by_position(model, pkg._packaged_weights(*pkg.EFFICIENTNET_LITE["efficientnet_lite0"][:3]))
    save_for_hf(model, str(folder), safe_serialization=True)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architecture": architecture}))
    return folder


def write_tiny_bert(folder: Path) -> Path:
    """A 2-layer BERT (hidden 32) with a word-level vocabulary, saved as a Hugging Face folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, ".", ",", "?", *(f"##{c}" for c in "sdeg")]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 takes the vocabulary itself and ignores vocab_file (every word was [UNK]); 4 takes the file
    takes_vocab = "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters
    given = {"vocab": {w: i for i, w in enumerate(vocab)}} if takes_vocab else {"vocab_file": str(folder / "vocab.txt")}
    BertTokenizerFast(**given).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    return folder


CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|> {% endif %}")


def write_tiny_llama(folder: Path, tied: bool = True) -> Path:
    """A 2-layer Llama-style generator (hidden 32) with a word-level tokenizer and a chat template,
    saved as a Hugging Face folder (config.json names LlamaForCausalLM)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["<pad>", "<unk>", "<s>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>", *WORDS, ".", ",", "?", ":",
             "positive", "negative", "yes", "no"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="<|end|>", pad_token="<pad>",
                                        unk_token="<unk>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=tied, pad_token_id=0, bos_token_id=2, eos_token_id=3,
                         architectures=["LlamaForCausalLM"])
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def kagglehub_stand_in(monkeypatch, cache: Path, folder: Path) -> list[str]:
    """kagglehub as a stand-in that hands back `folder` for any handle (the handles asked for are listed
    in the returned list), with the network reachable and kagglehub's cache at `cache`: the KerasHub preset
    download path up to the network."""
    import types

    asked: list[str] = []
    monkeypatch.setitem(sys.modules, "kagglehub", types.SimpleNamespace(
        model_download=lambda handle: asked.append(handle) or str(folder)))
    monkeypatch.setattr("tunewise.backbones.network.reachable", lambda url, timeout=3.0: True)
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(cache))
    return asked


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Feature and data caches go to the test's own folder, never the user's home."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
