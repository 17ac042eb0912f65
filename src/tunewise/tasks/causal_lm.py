"""Causal language modelling: supervised fine-tuning of a decoder-only generator (GPT-2, Llama, SmolLM2).

The model learns each example's completion after its prompt: the loss is the next-token cross-entropy
on the completion's tokens and the end-of-text token after them; the prompt's tokens are read, not
learned (chats: the tokenizer's chat template renders the messages before the reply). Plain texts
have no prompt: every token is learned. Validation: loss and perplexity per learned token
(perplexity picks the best epoch) and next-token accuracy on them (what a search compares arms
on: its intervals and pick are built for fractions where higher wins). The export is a transformers
causal-LM folder that `pipeline("text-generation")` and `AutoModelForCausalLM` load.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from tunewise.backbones import Backbone
from tunewise.backbones.hf import TextEncoder, Tokenize
from tunewise.config import DataConfig, TrainConfig
from tunewise.data.base import DataSplits
from tunewise.data.text import PromptSet
from tunewise.errors import BackboneError, ConfigError, DataError
from tunewise.features import IGNORE
from tunewise.io import write_json
from tunewise.records import BASE_GENERATIONS
from tunewise.tasks import TASKS, TaskModel
from tunewise.tasks._text_batches import Encoded, TextTask, encoded_once, text_loader

log = logging.getLogger("tunewise")

GENERATE_TOKENS = 64
"""New tokens `predict` generates at most per prompt."""
"""A generator search's file of the base model's scored generations (before fine-tuning)."""
SCORED_GENERATIONS = 16
"""Validation examples whose greedy generations a finished fit scores (exact match, token F1)."""


def prompt_text(tokenizer, prompt: str | list[dict]) -> str:
    """A prompt as the text the model reads: chat messages through the tokenizer's chat template, with
    the assistant's turn opened (what a reply follows).

    Raises:
        DataError: chat messages for a tokenizer without a chat template.
    """
    if isinstance(prompt, str):
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("the data are chats (a messages column), and this model's tokenizer has no chat template "
                        "to render them. Give prompt and completion columns instead.")
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def encode_completions(data: PromptSet, preprocess: Tokenize) -> Encoded:
    """Prompt and completion tokenized apart and joined (the boundary is exact), the end-of-text token
    after the completion; labels IGNORE on the prompt. Longer examples are cut at max_length, with one
    warning counting them (refused when the data is strict)."""
    tokenizer = preprocess.tokenizer

    def encode() -> dict[str, list]:
        ids, labels, cut = [], [], 0
        for prompt, completion in zip(data.prompts, data.completions, strict=True):
            text = prompt_text(tokenizer, prompt)
            # a chat template writes the special tokens itself; a plain prompt gets the tokenizer's own
            head = tokenizer(text, add_special_tokens=not isinstance(prompt, list))["input_ids"] if text else []
            tail = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            row, learned = head + tail, [IGNORE] * len(head) + tail
            if len(row) > preprocess.max_length:
                cut += 1
                row, learned = row[:preprocess.max_length], learned[:preprocess.max_length]
            ids.append(row)
            labels.append(learned)
        if cut and data.strict:
            raise DataError(f"{cut} of {len(ids)} examples of {data.source!r} are longer than "
                            f"{preprocess.max_length} tokens (--strict refuses to cut them). Pass --max-length up to "
                            f"{preprocess.limit}, shorten them, or leave out --strict to cut them with a warning.")
        if cut:
            log.warning("%d of %d examples are longer than %d tokens and were cut to it (their completions end "
                        "early); pass --max-length up to %d to keep more.", cut, len(ids), preprocess.max_length,
                        preprocess.limit)
        return {"input_ids": ids, "attention_mask": [[1] * len(r) for r in ids], "labels": labels}

    key = (preprocess.name, preprocess.max_length, "completions", data.fingerprint(), data.strict)
    columns = encoded_once(key, encode)
    return Encoded(columns, columns["labels"])


class CausalModel(TaskModel):
    """A generator's transformer and its LM head. Given `labels` among its inputs it scores them and
    returns, per position, (loss, right, learned) for the next token: (B, T-1, 3), small enough to
    keep for a whole split; without them, the logits (B, T, V). The LM head (a vocabulary wide) runs
    on the learned positions only: a prompt's positions need no logits."""

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = x.get("labels")
        hidden = self.backbone({k: v for k, v in x.items() if k != "labels"})
        if labels is None:
            return self.head(hidden)
        target = labels[:, 1:]
        learned = target != IGNORE
        logits = self.head(hidden[:, :-1][learned]).float()  # (learned tokens, V)
        scores = hidden.new_zeros((*target.shape, 3), dtype=torch.float32)
        scores[learned] = torch.stack([F.cross_entropy(logits, target[learned], reduction="none"),
                                       (logits.argmax(-1) == target[learned]).float(),
                                       torch.ones_like(logits[:, 0])], -1)
        return scores


def as_generator(model: TaskModel):
    """transformers' causal LM around `model`'s own transformer and head (no copy), for `generate`."""
    from transformers import AutoModelForCausalLM

    base = cast(TextEncoder, model.backbone).model
    with torch.device("meta"):  # its own weights are replaced at once: none are allocated
        lm = AutoModelForCausalLM.from_config(base.config)
    lm.register_module(lm.base_model_prefix, base)
    lm.set_output_embeddings(model.head)
    return lm.eval()


@torch.no_grad()
def generate(lm, tokenizer, prompts: list, max_new_tokens: int, batch_size: int = 8, **sampling: Any) -> list[str]:
    """Each prompt's continuation (greedy unless `sampling` says otherwise), prompts rendered as in
    training, batches padded on the left."""
    device = next(lm.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    texts = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            rendered = [prompt_text(tokenizer, p) for p in batch]
            chat = any(isinstance(p, list) for p in batch)
            ids = tokenizer(rendered, return_tensors="pt", padding=True, add_special_tokens=not chat).to(device)
            out = lm.generate(**ids, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                              do_sample=bool(sampling), **sampling)
            texts += tokenizer.batch_decode(out[:, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return texts


def token_f1(generated: str, reference: str) -> float:
    """F1 of the two texts' whitespace words as multisets (SQuAD's definition, without its normalising)."""
    from collections import Counter

    a, b = generated.split(), reference.split()
    common = sum((Counter(a) & Counter(b)).values())
    return 0.0 if common == 0 else 2 * common / (len(a) + len(b))


def scored_generations(lm, tokenizer, data: PromptSet, limit: int = SCORED_GENERATIONS) -> dict:
    """Greedy generations for the first `limit` examples of `data`, scored against their completions:
    exact match (after stripping outer whitespace) and token F1, and the examples themselves."""
    count = min(limit, len(data))
    references = data.completions[:count]
    longest = max(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references)
    texts = generate(lm, tokenizer, data.prompts[:count], max_new_tokens=min(GENERATE_TOKENS, longest + 8))
    examples = [{"prompt": p if isinstance(p, str) else p[-1]["content"], "reference": r, "generated": g.strip()}
                for p, r, g in zip(data.prompts[:count], references, texts, strict=True)]
    return {"exact_match": float(np.mean([e["generated"] == r.strip() for e, r in zip(examples, references,
                                                                                    strict=True)])),
            "token_f1": float(np.mean([token_f1(e["generated"], e["reference"]) for e in examples])),
            "examples": examples}


@TASKS.add
class CausalLM(TextTask):
    name = "causal_lm"
    outputs = "next_token_scores"
    metric = "perplexity"
    metrics_names = ("perplexity", "loss", "token_accuracy")
    lower_is_better = ("perplexity", "loss")
    rankable = False
    labelled = False
    per_token = True
    data_kind = PromptSet
    reads = "prompts with completions, chats, or plain texts"
    path_help = ("a text file (.jsonl, .json, .csv, .tsv, .parquet) of prompt and completion columns, a messages "
                 "column of chats, or a text column; or a folder of train/validation[/test] files")
    transformers_head = ("AutoModelForCausalLM", "lm_head")
    pipeline = "text-generation"

    def build_model(self, backbone: Backbone, classes: list[str]) -> TaskModel:
        """The generator's transformer and a copy of its LM head, untied from the input embeddings (a
        strategy that freezes the transformer then trains the head alone, as a probe does)."""
        head = backbone.source_head
        if backbone.head_key != "lm_head" or not isinstance(head, nn.Linear):
            raise BackboneError(f"--task causal_lm fine-tunes a decoder-only generator (GPT-2, Llama, SmolLM2: "
                                f"pkg:smollm2), and {backbone.name} is an encoder without a language-model head. "
                                "Use it with text_classification, token_classification or question_answering.")
        encoder = cast(TextEncoder, backbone.model)
        encoder.use_tokens()
        untied = nn.Linear(head.in_features, head.out_features, bias=head.bias is not None)
        untied.load_state_dict({k: v.detach().clone() for k, v in head.state_dict().items()})
        encoder.model.config.tie_word_embeddings = False  # what the export's config says: two matrices
        return CausalModel(encoder, untied, backbone.layer_groups)

    def model_of(self, backbone: nn.Module, head: nn.Module) -> TaskModel:
        return CausalModel(backbone, head, [])

    def export_facts(self, splits: DataSplits) -> dict:
        return {"chat": cast(PromptSet, splits.train).chat}

    def finished(self, model: TaskModel, data: PromptSet, preprocess: Tokenize) -> dict:
        """After fit: greedy generations on validation examples, scored (exact match, token F1),
        with the examples, which fit writes to generations.json. Plain text (no prompts) has
        nothing to complete: no generations."""
        if not any(data.prompts):
            return {}
        return scored_generations(as_generator(model), preprocess.tokenizer, data)

    def illustrate(self, run_dir: Path, model: str, data: DataConfig) -> None:
        """The base model's generations, before any fine-tuning, on the validation examples the winner's
        were scored on (base_generations.json): the report shows them side by side. Greedy decoding is
        deterministic, so a resumed search keeps the file it has."""
        from tunewise.backbones import load_backbone
        from tunewise.data import load_data

        if (run_dir / BASE_GENERATIONS).is_file():
            return
        backbone = load_backbone(model)
        val = cast(PromptSet, load_data(data, self).val)
        scored = self.finished(self.build_model(backbone, []), val, cast(Tokenize, backbone.preprocess))
        if scored:  # plain text has no prompts to complete
            write_json(run_dir / BASE_GENERATIONS, scored)

    def loader(self, data: PromptSet, preprocess: Tokenize, train: TrainConfig, training: bool) -> DataLoader:
        return text_loader(encode_completions(data, preprocess), preprocess.tokenizer, train, training)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Shape: outputs (B, T-1, 3) as CausalModel scores them -> the mean loss per learned token."""
        return outputs[..., 0].sum() / outputs[..., 2].sum().clamp(min=1)

    def metrics(self, outputs: list[torch.Tensor], targets: list[torch.Tensor], data) -> dict:
        """Loss and perplexity per learned token, and how often the next token is the right one."""
        stats = self.example_stats(outputs, targets)
        return {name: self.metric_from_stats(stats, name) for name in ("perplexity", "loss", "token_accuracy")}

    def example_stats(self, outputs: list[torch.Tensor], targets: list[torch.Tensor], data=None) -> np.ndarray:
        """Per example: summed loss, right next tokens, learned tokens. Shape: -> (N, 3)."""
        return np.concatenate([o.float().sum(1).numpy() for o in outputs]).reshape(-1, 3)

    def metric_from_stats(self, stats: np.ndarray, metric: str) -> float:
        loss, right, tokens = stats.sum(0)
        mean = float(loss / max(1.0, tokens))
        return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "token_accuracy": float(right / max(1, tokens))}[
            metric]

    def predict(self, run: Path | str, inputs: list, batch_size: int, **options: Any) -> list[dict] | None:
        """Each prompt's completion from the export, loaded by transformers: greedy, or sampled when
        `temperature` (and `top_p`) are given; at most `max_new_tokens` (GENERATE_TOKENS) new tokens.

        Raises:
            ConfigError: max_new_tokens past the model's context, or sampling settings out of range.
        """
        prompts = [str(x) for x in inputs]
        if not prompts:
            raise DataError("no prompts given. Pass the prompts to complete as texts.")
        return Completer(run, self)(prompts, batch_size, **options)


class Completer:
    """A generator export loaded once (transformers' AutoModelForCausalLM and tokenizer): `predict`
    and `tunewise serve` complete prompts through it, as its training rendered them (chat or plain)."""

    def __init__(self, run: Path | str, task: CausalLM) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from tunewise.export import model_info
        from tunewise.export_check import check_transformers, transformers_files

        folder, info = model_info(run)
        check_transformers(folder, task)
        with transformers_files(folder):
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.lm = AutoModelForCausalLM.from_pretrained(folder).eval()
        self.chat = bool(info.get("chat"))
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        nn.Module.to(self.lm, device)  # transformers types .to oddly

    def __call__(self, prompts: list[str], batch_size: int = 8, **options: Any) -> list[dict]:
        """{"prompt", "completion"} per prompt, in order."""
        tokens, sampling = generation_settings(self.lm.config, **options)
        asked: list = [[{"role": "user", "content": p}] for p in prompts] if self.chat else prompts
        texts = generate(self.lm, self.tokenizer, asked, tokens, batch_size=batch_size, **sampling)
        return [{"prompt": p, "completion": t.strip()} for p, t in zip(prompts, texts, strict=True)]


def generation_settings(config, max_new_tokens: int | None = None, temperature: float | None = None,
                        top_p: float | None = None) -> tuple[int, dict]:
    """New tokens at most, and the sampling keywords of `generate` (none: greedy), checked."""
    tokens = GENERATE_TOKENS if max_new_tokens is None else max_new_tokens
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if tokens < 1 or (context and tokens >= context):
        raise ConfigError(f"--max-new-tokens {tokens} must be at least 1 and below the model's context of "
                          f"{context} tokens (prompt included).")
    if temperature is not None and not temperature > 0:
        raise ConfigError(f"--temperature {temperature} must be above 0 (leave it out for greedy decoding).")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"--top-p {top_p} must be in (0, 1].")
    sampling: dict[str, float] = {}
    if temperature is not None or top_p is not None:
        sampling = {"temperature": temperature or 1.0, "top_p": top_p or 1.0}
    return tokens, sampling
