"""Benchmark: a small Keras CNN fine-tuned by Keras's own ``model.fit`` and by tunewise's ``fit``.

Issue 16. What it measures, in one process, on Keras's torch backend, on the same saved Keras model,
the same training and validation images at the same size and preprocessing, for the same epochs,
batch size and rate:

(a) Keras full: the saved model loaded with ``keras.saving.load_model``, its last Dense layer
    replaced by a new ``Dense(classes)`` on the same features, ``model.compile(Adam, sparse
    categorical cross-entropy from logits, accuracy)`` and ``model.fit(x, y, validation_data=...)``
    on numpy arrays (NHWC, float32 in [0, 1]), every weight trained.
(b) tunewise full: ``fit("keras:model.keras", DataConfig(data=...), "full")``.
(c) Keras frozen backbone: as (a), with the feature layers' ``trainable = False`` (Keras then also
    runs their BatchNormalization in inference mode): the new Dense head alone trains, and every
    epoch runs the frozen backbone over every image again.
(d) tunewise linear_probe: ``fit(..., "linear_probe")`` with a cold feature cache (a fresh folder):
    the backbone runs once per split, the head trains on the cached features.

The recipe is set alike on both sides: Adam (tunewise ``optimizer="adam"``; Keras's ``epsilon`` set
to torch's 1e-8), no weight decay (``weight_decay=0``), no warmup (``warmup_epochs=0``), the same
peak rate decayed by a cosine to 0 over all steps (tunewise's schedule; Keras gets
``CosineDecay(lr, epochs x steps)``, step for step the same factor), no augmentation
(``augment=False``: tunewise's default random crops and flips are off, so both train on the very
same pixels), no early stopping (``patience=None``), shuffled batches of --batch-size with the last
partial batch kept, validation after every epoch, the selection metric accuracy (on imbalanced
validation classes, textile's, tunewise would pick macro-F1 otherwise). The new head is initialised from
the same distribution (torch's Linear: weights and bias uniform in +-1/sqrt(features); Keras's Dense
is given that initialiser instead of its Glorot default); the draws differ. Keras's model.fit has no
best-epoch choice, so the accuracy compared is the last epoch's on both sides (tunewise keeps its
best epoch, printed beside it).

Same images: the splits are tunewise's own (``load_data(DataConfig(...))``, what fit() reads), and the
Keras arrays are decoded from them by tunewise's eval preprocessing for this model
(``load_backbone("keras:...").preprocess.eval_transform()``: resize to the model's input size, centre
crop, [0, 1]), then put channels last: exactly the pixels tunewise's loader feeds the model, since
augmentation is off.

The "pretrained" model and the data: there are no downloadable Keras weights offline, so the script
builds a small CNN (five 3x3 convolutions, the first with stride 2, each followed by BatchNorm and
ReLU, two max-poolings, 32-32-64-64-128 channels, global average pooling, a Dense classifier; about
141k weights; BatchNorm momentum 0.9, torch's 0.1, since Keras's 0.99 leaves the moving statistics
far from the data after the few hundred steps run here, and inference-mode validation collapsed to
one class in the smoke runs) and pre-trains it, untimed, with Keras's model.fit (Adam 1e-3, batch
64) on Fashion-MNIST's first five classes (T-shirt/top, trouser, pullover, dress, coat: 28x28 grey,
upsampled to --size and fed as RGB; Debian's dataset-fashion-mnist files, offline):
--pretrain-per-class images of each from its training split, --pretrain-epochs epochs; its accuracy
on 1,000 of its validation images is printed. The default data fine-tuned on is Fashion-MNIST's other
five classes (sandal, shirt, sneaker, bag, ankle boot), --per-class images of each from its test
split, written as PNG files in a folder of class folders, which tunewise splits 70/15/15 (400 per
class: 1,400 train, 300 val): classes and images the pre-training never saw, as in transfer from
ImageNet, and a task this CNN learns in a few epochs. --data textile (or any image folder) fine-tunes
on that instead: in short smoke runs (48-96 px, up to 200 images per class, 6 epochs) this CNN stayed
at textile's majority class on both sides (its defects are a few pixels wide), so the accuracy half
of the comparison said nothing there. Pass --keras-model PATH.keras to fine-tune another saved model
(its features: the input of its last Dense layer, tunewise's rule).

Timed:
- "s", the compared time: Keras, the ``model.fit`` call alone (training passes plus its per-epoch
  validation, on arrays already decoded in memory; loading the model and decoding the images are
  outside, the decoding timed once and printed on its own line); tunewise, the whole ``fit()`` call
  (reading the split, loading the .keras model, decoding every image from its file (in the first two
  epochs when it keeps them, KeptPixels, else in every epoch), or once into the feature cache for
  linear_probe, training, per-epoch validation, checkpoints, the final validation of the kept epoch and the export of
  model.keras; no test evaluation). tunewise's time thus holds work Keras's does not: the ratio is
  conservative for tunewise. A second ratio adds the Keras arrays' decoding time to Keras's time.
- "train s": the training passes alone. Keras: from each epoch's start to its validation's start (a
  callback); tunewise: its ``_train_one_epoch`` timed from outside (bench/training_passes.py). For
  linear_probe these are passes over cached features, without the backbone.
- "CPU s": this process's CPU seconds over the compared span, plus its finished child processes'
  (tunewise's data-loader workers, reaped when fit() returns).
- samples/s: training images x epochs / "s".

Known differences that remain: tunewise decodes each image from its file, in the training process
(tunewise's default on 2 cores) in the first two epochs and then keeps it decoded (KeptPixels: no
augmentation here), or with --workers N in N processes in every epoch; Keras has no such work. The
two sides draw their shuffles and head weights from different generators.
Validation is in inference mode on both sides (BatchNorm on its moving statistics).

Each method runs --repeats times, the order reversed on every other repeat (ABBA: the first run in
the process pays one-off costs, other processes' load drifts), and its fastest run is compared.
Targets (issue 16): tunewise full at least as fast as Keras full (ratio >= 1) and linear_probe at
least 5x Keras's frozen backbone, each at a last-epoch validation accuracy no more than
ACCURACY_SLACK points below Keras's (300 validation images: one image is 0.33 points).

Run (offline; numbers only mean something on an idle machine):

    python bench/keras_vs_keras_fit.py                   # Fashion-MNIST 5 -> 5 classes, 64 px, 10 epochs, batch 32
    python bench/keras_vs_keras_fit.py --threads 1       # a busy machine: CPU seconds stay honest
    python bench/keras_vs_keras_fit.py --quick           # smoke run: 32 px, 20 images per class, 1 epoch
    python bench/keras_vs_keras_fit.py --save-pretrained /tmp/cnn.keras --json results.json
    python bench/keras_vs_keras_fit.py --keras-model /tmp/cnn.keras --workers 2   # reuse it, 2 loader processes
    python bench/keras_vs_keras_fit.py --data textile --size 128   # textile's images instead (see above)
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Keras's saving imports TensorFlow where it is installed

import numpy as np
import torch
from PIL import Image
from training_passes import timed_training_passes

from tunewise import DataConfig, TrainConfig, fit
from tunewise.backbones import load_backbone
from tunewise.backbones.base import Preprocess
from tunewise.backbones.keras_source import keras_on_torch
from tunewise.data import load_data
from tunewise.strategies import get_strategy

keras = keras_on_torch()

FULL_TARGET = 1.0  # Keras full model.fit seconds / tunewise full fit() seconds
PROBE_TARGET = 5.0  # Keras frozen-backbone model.fit seconds / tunewise linear_probe fit() seconds
ACCURACY_SLACK = 1.0  # points of last-epoch validation accuracy tunewise may lose against Keras
METHODS = ("keras_full", "tunewise_full", "keras_frozen", "tunewise_linear_probe")
LABELS = {"keras_full": "Keras model.fit, full", "tunewise_full": "tunewise fit, full",
          "keras_frozen": "Keras model.fit, frozen", "tunewise_linear_probe": "tunewise fit, linear_probe"}
BASELINE = {"tunewise_full": "keras_full", "tunewise_linear_probe": "keras_frozen"}
PRETRAIN_CLASSES = range(0, 5)  # Fashion-MNIST: T-shirt/top, Trouser, Pullover, Dress, Coat
FINE_TUNE_CLASSES = range(5, 10)  # Sandal, Shirt, Sneaker, Bag, Ankle boot


def build_cnn(size: int, classes: int) -> keras.Model:
    """A small CNN on (size, size, 3) images in [0, 1]: its features are the input of its Dense."""
    layers = keras.layers
    inputs = keras.Input((size, size, 3))
    x = inputs
    for i, (channels, stride, pool) in enumerate([(32, 2, False), (32, 1, True), (64, 1, False), (64, 1, True),
                                                   (128, 1, False)], start=1):
        x = layers.Conv2D(channels, 3, strides=stride, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)  # torch's 0.1: few steps here
        x = layers.ReLU(name=f"relu{i}")(x)
        if pool:
            x = layers.MaxPooling2D(name=f"pool{i}")(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(inputs, layers.Dense(classes, name="classifier")(x), name="small_cnn")


def as_arrays(images, transform) -> tuple[np.ndarray, np.ndarray]:
    """An ImageSet through `transform` (PIL -> (3, H, W) float tensor) as (N, H, W, 3) float32 and
    (N,) int64 labels: what Keras's model.fit takes."""
    tensors = [images.with_transform(transform)[i][0] for i in range(len(images))]
    x = torch.stack(tensors).permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32, copy=False)
    return x, np.asarray(images.labels, dtype=np.int64)


def of_classes(images, classes: range, limit: int | None = None):
    """The images of `classes`, at most `limit` of each, in order, labels kept."""
    kept: dict[int, list[int]] = {c: [] for c in classes}
    for i, label in enumerate(images.labels):
        if label in kept and (limit is None or len(kept[label]) < limit):
            kept[label].append(i)
    return images.subset(sorted(i for indices in kept.values() for i in indices))


def pretrain(fashion, path: Path, size: int, per_class: int, epochs: int) -> dict:
    """The small CNN trained briefly by Keras's model.fit on Fashion-MNIST's first five classes (its
    training split), saved at `path`."""
    start = time.perf_counter()
    resize = Preprocess(input_size=size, resize_size=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    x, y = as_arrays(of_classes(fashion.train, PRETRAIN_CLASSES, per_class), resize.eval_transform())  # grey -> RGB
    xv, yv = as_arrays(of_classes(fashion.val, PRETRAIN_CLASSES, 200), resize.eval_transform())
    keras.utils.set_random_seed(0)
    model = build_cnn(size, len(PRETRAIN_CLASSES))
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    accuracy = float(model.evaluate(xv, yv, batch_size=256, verbose=0, return_dict=True)["accuracy"])
    model.save(path)
    return {"images": len(y), "epochs": epochs, "val_images": len(yv), "val_accuracy": accuracy,
            "seconds": time.perf_counter() - start}


def write_fine_tune_folder(fashion, root: Path, per_class: int) -> Path:
    """Fashion-MNIST's last five classes, `per_class` images of each from its test split (images the
    pre-training never saw, of classes it never saw), as PNG files in one folder per class."""
    images = of_classes(fashion.test, FINE_TUNE_CLASSES, per_class)
    for n, (item, label) in enumerate(zip(images.items, images.labels, strict=True)):
        folder = root / fashion.classes[label].lower().replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(item).save(folder / f"{n:05d}.png")
    return root


def torch_like_dense(classes: int, features: int) -> keras.layers.Dense:
    """A Dense head drawn as torch's nn.Linear draws tunewise's: uniform in +-1/sqrt(features)."""
    bound = 1 / math.sqrt(features)
    return keras.layers.Dense(
        classes, name="new_head",
        kernel_initializer=keras.initializers.VarianceScaling(1 / 3, mode="fan_in", distribution="uniform"),
        bias_initializer=keras.initializers.RandomUniform(-bound, bound))


class TrainingPasses(keras.callbacks.Callback):
    """Wall and CPU seconds of each epoch's training batches: from the epoch's start to its validation's."""

    def __init__(self) -> None:
        super().__init__()
        self.passes: list[float] = []
        self.cpu: list[float] = []
        self._start: tuple[float, float] | None = None

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._start = (time.perf_counter(), time.process_time())

    def _stop(self) -> None:
        if self._start is not None:
            self.passes.append(time.perf_counter() - self._start[0])
            self.cpu.append(time.process_time() - self._start[1])
            self._start = None

    def on_test_begin(self, logs=None) -> None:
        self._stop()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self._stop()  # no validation this epoch


def cpu_seconds() -> float:
    """This process's CPU seconds plus those of its children that have finished."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_keras(model_path: Path, arrays: dict, classes: int, frozen: bool, lr: float, args) -> dict:
    """Keras's own transfer learning: a new Dense head on the saved model's features, model.fit."""
    keras.utils.set_random_seed(0)
    source = keras.saving.load_model(model_path, compile=False)
    head = [layer for layer in source.layers if isinstance(layer, keras.layers.Dense)][-1]
    base = keras.Model(source.inputs, head.input)  # the features: the input of the last Dense
    if frozen:
        base.trainable = False
    model = keras.Model(base.inputs, torch_like_dense(classes, int(head.input.shape[-1]))(base.output))
    (x, y), (xv, yv) = arrays["train"], arrays["val"]
    steps = math.ceil(len(y) / args.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps * args.epochs, alpha=0.0)
    model.compile(optimizer=keras.optimizers.Adam(schedule, epsilon=1e-8),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    timer = TrainingPasses()
    gc.collect()
    cpu_start, start = cpu_seconds(), time.perf_counter()
    history = model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, validation_data=(xv, yv),
                        shuffle=True, callbacks=[timer], verbose=0)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    curve = [float(a) for a in history.history["val_accuracy"]]
    return {"seconds": seconds, "train_seconds": sum(timer.passes), "cpu_seconds": cpu,
            "train_cpu_seconds": sum(timer.cpu), "val_accuracy_last": curve[-1], "val_accuracy_best": max(curve),
            "curve": curve, "train_loss": [float(v) for v in history.history["loss"]],
            "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights))}


def run_tunewise(model_path: Path, data: DataConfig, strategy: str, lr: float, args, out: Path) -> dict:
    """tunewise's fit() of the same .keras file, the recipe set to Keras's; the whole call timed, and
    its training passes by wrapping tunewise.train._train_one_epoch."""
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="adam", lr=lr, weight_decay=0.0,
                        warmup_epochs=0.0, patience=None, augment=False, num_workers=args.workers, seed=0,
                        cache_dir=str(out / "cache"), metric="accuracy")  # a cold feature cache per run
    gc.collect()
    cpu_start, start = cpu_seconds(), time.perf_counter()
    with timed_training_passes() as (passes, pass_cpu):
        record = fit(f"keras:{model_path}", data, strategy, train=train, out=out / "run", test=False)
    seconds = time.perf_counter() - start
    gc.collect()  # the loaders' worker processes are reaped once fit()'s run is gone
    cpu = cpu_seconds() - cpu_start
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": seconds, "train_seconds": sum(passes), "cpu_seconds": cpu, "train_cpu_seconds": sum(pass_cpu),
            "fit_seconds_recorded": record.seconds, "val_accuracy_last": record.curve[-1],
            "val_accuracy_best": record.val["accuracy"], "best_epoch": record.best_epoch, "curve": record.curve,
            "trainable_params": record.trainable_params}


def fastest(runs: list[dict]) -> dict:
    """The run with the least compared time, with every run's times and accuracies beside it."""
    best = dict(min(runs, key=lambda r: r["seconds"]))
    best["all_seconds"] = [r["seconds"] for r in runs]
    best["all_val_accuracy_last"] = [r["val_accuracy_last"] for r in runs]
    return best


def print_table(best: dict[str, dict], samples: int, decode_seconds: float) -> dict[str, dict]:
    """The side-by-side table; returns each tunewise method's ratios and accuracy difference."""
    print()
    print(f"{'method':30}{'s':>8}{'train s':>9}{'CPU s':>8}{'samples/s':>11}{'val acc last':>14}"
          f"{'val acc best':>14}{'vs Keras':>10}")
    compared: dict[str, dict] = {}
    for method in METHODS:
        r = best[method]
        ratio = best[BASELINE[method]]["seconds"] / r["seconds"] if method in BASELINE else 1.0
        print(f"{LABELS[method]:30}{r['seconds']:>8.1f}{r['train_seconds']:>9.1f}{r['cpu_seconds']:>8.1f}"
              f"{samples / r['seconds']:>11.1f}{100 * r['val_accuracy_last']:>13.2f}%"
              f"{100 * r['val_accuracy_best']:>13.2f}%{ratio:>9.2f}x")
        if method in BASELINE:
            keras_run = best[BASELINE[method]]
            compared[method] = {
                "ratio": ratio, "ratio_with_decode": (keras_run["seconds"] + decode_seconds) / r["seconds"],
                "train_ratio": keras_run["train_seconds"] / r["train_seconds"],
                "cpu_ratio": keras_run["cpu_seconds"] / r["cpu_seconds"],
                "accuracy_diff_points": 100 * (r["val_accuracy_last"] - keras_run["val_accuracy_last"])}
    print(f"'vs Keras': Keras's model.fit seconds / this row's (tunewise full vs Keras full, linear_probe vs Keras "
          f"frozen); the Keras arrays took {decode_seconds:.1f} s to decode, outside Keras's time")
    for method, target in (("tunewise_full", FULL_TARGET), ("tunewise_linear_probe", PROBE_TARGET)):
        c = compared[method]
        speed_ok, accuracy_ok = c["ratio"] >= target, c["accuracy_diff_points"] >= -ACCURACY_SLACK
        c.update(speed_target=target, speed_target_met=speed_ok, accuracy_target_met=accuracy_ok)
        print(f"{LABELS[method]}: {c['ratio']:.2f}x Keras (target >= {target:g}x: "
              f"{'met' if speed_ok else 'NOT met'}); {c['ratio_with_decode']:.2f}x with Keras's decoding, "
              f"{c['train_ratio']:.2f}x by training passes, {c['cpu_ratio']:.2f}x by CPU seconds; val accuracy "
              f"(last epoch) {c['accuracy_diff_points']:+.2f} points (target >= -{ACCURACY_SLACK:g}: "
              f"{'met' if accuracy_ok else 'NOT met'})")
    return compared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None,
                        help="an image folder or a named image set (textile) to fine-tune on; default: Fashion-MNIST's "
                             "last five classes, written as a folder")
    parser.add_argument("--per-class", type=int, default=400,
                        help="default data: images per class written (split 70/15/15 into train/val/test)")
    parser.add_argument("--max-train-per-class", type=int, default=None, help="training images per class (all)")
    parser.add_argument("--size", type=int, default=64,
                        help="the built CNN's input size in pixels (a --keras-model has its own)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak rate of both full fine-tunes")
    parser.add_argument("--probe-lr", type=float, default=None,
                        help="peak rate of both head-only runs (default: linear_probe's default rate)")
    parser.add_argument("--workers", type=int, default=None,
                        help="tunewise's data-loading processes (default: tunewise's, none on a 2-core CPU)")
    parser.add_argument("--keras-model", type=Path, default=None,
                        help="fine-tune this saved .keras model instead of pre-training the small CNN")
    parser.add_argument("--save-pretrained", type=Path, default=None, help="keep the pre-trained CNN here")
    parser.add_argument("--pretrain-per-class", type=int, default=1000,
                        help="Fashion-MNIST training images of each of its first five classes")
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs of each method, the order reversed every other repeat; the fastest is reported")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own); 1 keeps CPU seconds honest on a busy machine")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 32 px, 20 images per class (pre-training too), 1 epoch, 1 repeat")
    parser.add_argument("--json", type=Path, default=None, help="also save the results here")
    args = parser.parse_args()
    if args.quick:
        args.size, args.per_class, args.max_train_per_class, args.epochs, args.repeats = 32, 20, 10, 1, 1
        args.pretrain_per_class, args.pretrain_epochs = 20, 1
    args.probe_lr = args.probe_lr or get_strategy("linear_probe").default_lr
    logging.getLogger("tunewise").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"start: load average {os.getloadavg()}, {os.cpu_count()} CPUs, {device}, {torch.get_num_threads()} "
          f"torch threads, Keras {keras.__version__} on {keras.backend.backend()}", flush=True)

    with tempfile.TemporaryDirectory(prefix="tunewise-bench-") as tmp:
        tmp = Path(tmp)
        fashion = None
        if args.keras_model is None or args.data is None:
            fashion = load_data(DataConfig(data="fashion_mnist"))
        pretraining = None
        if args.keras_model is None:
            model_path = args.save_pretrained or tmp / "small_cnn.keras"
            print(f"pre-training the small CNN on Fashion-MNIST's classes {PRETRAIN_CLASSES.start}-"
                  f"{PRETRAIN_CLASSES.stop - 1} ({args.pretrain_per_class} per class, {args.pretrain_epochs} epochs, "
                  f"{args.size} px) ...", flush=True)
            pretraining = pretrain(fashion, model_path, args.size, args.pretrain_per_class, args.pretrain_epochs)
            print(f"  {pretraining['images']} images, val accuracy {100 * pretraining['val_accuracy']:.2f}% on "
                  f"{pretraining['val_images']} of its validation images, {pretraining['seconds']:.1f} s", flush=True)
        else:
            model_path = args.keras_model
        if args.data is None:
            data_name = write_fine_tune_folder(fashion, tmp / "fine-tune", args.per_class)
            described = (f"Fashion-MNIST's classes {FINE_TUNE_CLASSES.start}-{FINE_TUNE_CLASSES.stop - 1} "
                         f"({args.per_class} test-split images per class as PNG files)")
        else:
            data_name, described = args.data, args.data

        data = DataConfig(data=str(data_name), max_train_per_class=args.max_train_per_class)
        splits = load_data(data)  # the very splits fit() reads from the same DataConfig
        preprocess = load_backbone(f"keras:{model_path}").preprocess  # what tunewise feeds this model
        start = time.perf_counter()
        arrays = {name: as_arrays(splits.named()[name], preprocess.eval_transform()) for name in ("train", "val")}
        decode_seconds = time.perf_counter() - start
        # One-off costs before any timing: Keras's saving imports TensorFlow where it is installed, and
        # tunewise's export saves a .keras file; the first to save would pay the import in its time.
        keras.saving.load_model(model_path, compile=False).save(tmp / "warm-up.keras")
        examples, steps = len(splits.train), math.ceil(len(splits.train) / args.batch_size)
        majority = np.bincount(arrays["val"][1]).max() / len(splits.val)
        print(f"keras:{model_path.name} on {described}: {examples} train, {len(splits.val)} val images, "
              f"{len(splits.classes)} classes (the largest is {100 * majority:.1f}% of val), "
              f"{preprocess.input_size} px; {args.epochs} epochs x {steps} steps of "
              f"{args.batch_size}; Adam, cosine from lr {args.lr:g} (full) / {args.probe_lr:g} (head only); "
              f"Keras arrays decoded in {decode_seconds:.1f} s", flush=True)

        runs: dict[str, list[dict]] = {method: [] for method in METHODS}
        for i in range(args.repeats):
            for method in METHODS if i % 2 == 0 else reversed(METHODS):
                print(f"{LABELS[method]}: run {len(runs[method]) + 1}/{args.repeats} ...", flush=True)
                lr = args.lr if method.endswith("full") else args.probe_lr
                if method.startswith("keras"):
                    run = run_keras(model_path, arrays, len(splits.classes), method == "keras_frozen", lr, args)
                else:
                    strategy = method.removeprefix("tunewise_")
                    run = run_tunewise(model_path, data, strategy, lr, args, tmp / f"{method}-{i}")
                run["load_after"] = os.getloadavg()[0]
                runs[method].append(run)
                print(f"  {run['seconds']:.1f} s (training passes {run['train_seconds']:.1f} s, "
                      f"{run['cpu_seconds']:.1f} CPU s), val accuracy last {100 * run['val_accuracy_last']:.2f}%, "
                      f"1-min load after {run['load_after']:.2f}", flush=True)

    best = {method: fastest(method_runs) for method, method_runs in runs.items()}
    compared = print_table(best, examples * args.epochs, decode_seconds)
    if max(best[m]["val_accuracy_last"] for m in ("keras_full", "tunewise_full")) < majority + 0.05:
        print(f"neither full fine-tune is 5 points above always answering the largest class ({100 * majority:.1f}%): "
              "the accuracy comparison says little at this budget")
    loads = "; ".join(LABELS[m] + " " + ", ".join(f"{r['load_after']:.2f}" for r in runs[m]) for m in METHODS)
    print(f"fastest of {args.repeats} run(s) each; 1-min load average after each run: {loads}")
    print(f"end: load average {os.getloadavg()} ({os.cpu_count()} CPUs)")

    if args.json:
        results = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                   "data": described, "majority_val_accuracy": majority,
                   "sizes": {"train": examples, "val": len(splits.val), "size": preprocess.input_size},
                   "pretraining": pretraining, "decode_seconds": decode_seconds, "best": best, "runs": runs,
                   "compared": compared}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
