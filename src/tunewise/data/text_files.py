"""Text data from files: CSV/TSV, JSON lines, parquet, CoNLL columns, SQuAD JSON, saved Hugging Face datasets.

Every reader turns its input into a `_Table` of plain records; one builder per task turns tables into
TextSet, TokenSet, QASet or PromptSet and checks them, so each format gets the same validation and messages.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.config import DataConfig
from tunewise.data.base import DataSplits, split_stratified
from tunewise.data.text import PromptSet, QAExample, QASet, TextSet, TokenSet
from tunewise.errors import DataError

TEXT, TOKENS, QA, PROMPTS = TextSet, TokenSet, QASet, PromptSet  # what each reader builds: the reading task's data_kind
CONLL_SUFFIXES = (".conll", ".txt", ".iob", ".bio")
SUFFIXES = {
    TEXT: (".csv", ".tsv", ".jsonl", ".json", ".parquet"),
    TOKENS: (*CONLL_SUFFIXES, ".jsonl", ".json", ".parquet"),
    QA: (".json", ".jsonl", ".parquet"),
    PROMPTS: (".csv", ".tsv", ".jsonl", ".json", ".parquet"),
}
FORMATS = {
    TEXT: "a .csv, .tsv, .jsonl, .json (JSON lines or a list of records) or .parquet file with a text and a "
          "label column",
    TOKENS: "a CoNLL column file (.conll, .txt, .iob, .bio: word first, tag last, a blank line between "
            "sentences), or a .jsonl, .json or .parquet file with a tokens and a tags column",
    QA: "a SQuAD .json file, or a .jsonl, .json or .parquet file with id, question, context and answers "
        "columns (the Hugging Face squad layout)",
    PROMPTS: "a .jsonl, .json, .csv, .tsv or .parquet file with prompt and completion columns, a messages column "
             "of chats, or a text column",
}
SPLIT_STEMS = {"train": ("train",), "val": ("validation", "val", "dev"), "test": ("test",)}
HF_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")
QA_COLUMNS = ("question", "context", "answers")


@dataclass
class _Table:
    """Records read from one file (or one split of a saved dataset), with where each came from."""

    rows: list[dict]
    source: str
    numbers: list[int]
    unit: str = "row"
    columns: list[str] = field(default_factory=list)
    names: dict[str, list[str]] = field(default_factory=dict)
    """Class names of the columns that are Hugging Face ClassLabels (or sequences of them)."""

    def where(self, i: int) -> str:
        return f"{self.unit} {self.numbers[i]} of {self.source!r}"


def read_text_data(path: Path, config: DataConfig, task) -> DataSplits:
    """Read text data for `task` from a file, a folder of split files, or a saved Hugging Face dataset.

    A single file (or a single saved Dataset) is split with `config.seed` into train, val and test;
    a folder's train.* / validation.* (val.*, dev.*) / test.* files are used as given (val is split
    off train when missing).

    Args:
        task: the reading task; its `data_kind` (TextSet, TokenSet, QASet or PromptSet) says what to build.

    Raises:
        DataError: the path, format, columns or contents are not usable for the task.
    """
    if task.data_kind not in SUFFIXES:
        raise DataError(f"task {task.name!r} has no text reader.")
    path = Path(path)
    builder = {TEXT: _text_set, TOKENS: _token_set, QA: _qa_set, PROMPTS: _prompt_set}[task.data_kind]
    return _splits(_read_tables(path, config, task), config, lambda table, classes: builder(table, config, classes))


def _splits(tables: dict[str, _Table], config: DataConfig, build: Callable) -> DataSplits:
    if "all" in tables:
        full = build(tables["all"], None)
        fractions = (1 - config.val_fraction - config.test_fraction, config.val_fraction, config.test_fraction)
        train_idx, val_idx, test_idx = split_stratified(_strata(full), fractions, config.seed)
        test = full.subset(test_idx) if test_idx else None
        return DataSplits(full.subset(train_idx), full.subset(val_idx), test, full.classes)
    train = build(tables["train"], None)
    test = build(tables["test"], train.classes) if "test" in tables else None
    if "val" in tables:
        return DataSplits(train, build(tables["val"], train.classes), test, train.classes)
    train_idx, val_idx = split_stratified(_strata(train), (1 - config.val_fraction, config.val_fraction), config.seed)
    return DataSplits(train.subset(train_idx), train.subset(val_idx), test, train.classes)


def _strata(data) -> list[int]:
    # Only text classification has one label per example; the others get a seeded random split.
    return data.labels if isinstance(data, TextSet) else [0] * len(data)


# ---- finding and reading inputs -------------------------------------------------------------------------


def _read_tables(path: Path, config: DataConfig, task) -> dict[str, _Table]:
    if not path.exists():
        raise DataError(f"data {str(path)!r} does not exist. {_supported(task)}")
    if path.is_file():
        return {"all": _read_file(path, config, task)}
    if any((path / name).exists() for name in HF_MARKERS):
        return _read_saved_dataset(path)
    return {key: _read_file(file, config, task) for key, file in _split_files(path, task).items()}


def _supported(task) -> str:
    return (f"For {task.name} pass {FORMATS[task.data_kind]}; a folder of train.* and validation.* (or val.*, dev.*) "
            "[and test.*] files in such a format; or a Hugging Face dataset saved with save_to_disk.")


def _split_files(folder: Path, task) -> dict[str, Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    found = {}
    for key, stems in SPLIT_STEMS.items():
        named = [p for p in files if p.stem.lower() in stems]
        usable = [p for p in named if p.suffix.lower() in SUFFIXES[task.data_kind]]
        if len(usable) > 1:
            raise DataError(f"{str(folder)!r} has more than one {key} file: {', '.join(p.name for p in usable)}. "
                            "Keep one of them.")
        if named and not usable:
            raise DataError(f"{str(named[0])!r} is not a supported format. {_supported(task)}")
        if usable:
            found[key] = usable[0]
    if "train" not in found:
        raise DataError(f"folder {str(folder)!r} has no train.* file. {_supported(task)}")
    return found


def _read_file(path: Path, config: DataConfig, task) -> _Table:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES[task.data_kind]:
        raise DataError(f"cannot read {str(path)!r}: {suffix or 'no suffix'} is not a supported format. "
                        f"{_supported(task)}")
    if suffix in (".csv", ".tsv"):
        table = _read_csv(path, "\t" if suffix == ".tsv" else ",", task)
    elif suffix == ".parquet":
        table = _read_parquet(path)
    elif suffix in (".jsonl", ".json"):
        table = _read_json(path, task)
    else:
        table = _read_conll(path, config)
    if not table.rows:
        raise _empty(path, task)
    return table


def _empty(path: Path, task) -> DataError:
    return DataError(f"{str(path)!r} holds no examples. {_supported(task)}")


def _pandas():
    try:
        import pandas
    except ImportError:
        raise DataError("reading CSV, TSV and parquet files needs pandas. Run: pip install pandas") from None
    return pandas


def _read_csv(path: Path, sep: str, task) -> _Table:
    pd = _pandas()
    try:
        # Strings throughout, and no NA guessing: "NA" or "null" are real words in text data.
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise _empty(path, task) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"cannot parse {str(path)!r}: {err}. Check the file is UTF-8 with a header row.") from None
    rows = frame.to_dict("records")
    # The header is line 1, so data row i is line i + 2 (quoted fields spanning lines aside).
    return _Table(rows, str(path.resolve()), list(range(2, len(rows) + 2)), "line", list(frame.columns))


def _read_parquet(path: Path) -> _Table:
    pd = _pandas()
    try:
        frame = pd.read_parquet(path)
    except ImportError as err:
        raise DataError(f"reading parquet needs pyarrow ({err}). Run: pip install pyarrow") from None
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {str(path)!r} as parquet: {err}.") from None
    frame = frame.astype(object).where(pd.notna(frame), None)
    rows = [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]
    return _Table(rows, str(path.resolve()), list(range(1, len(rows) + 1)), "row", list(frame.columns))


def _plain(value):
    """Numpy arrays and scalars (from parquet) as Python lists and scalars."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _read_json(path: Path, task) -> _Table:
    # The json module, not pandas: exact line numbers in errors, and values keep their types.
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"cannot read {str(path)!r}: {err}. Save it as UTF-8.") from None
    if not text.strip():
        raise _empty(path, task)
    if path.suffix.lower() == ".json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            document = None  # JSON lines in a .json file
        if isinstance(document, dict) and "data" in document:
            return _squad_table(document, path, task)
        if isinstance(document, list):
            return _records_table(document, path, list(range(1, len(document) + 1)), "record")
        if isinstance(document, dict):
            return _records_table([document], path, [1], "record")
    return _json_lines(text, path)


def _json_lines(text: str, path: Path) -> _Table:
    records, numbers = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise DataError(f"line {number} of {str(path)!r} is not valid JSON ({err.msg}). Each line must "
                            "hold one JSON object.") from None
        numbers.append(number)
    return _records_table(records, path, numbers, "line")


def _records_table(records: list, path: Path, numbers: list[int], unit: str) -> _Table:
    for record, number in zip(records, numbers, strict=True):
        if not isinstance(record, dict):
            raise DataError(f"{unit} {number} of {str(path)!r} is {type(record).__name__}, not a JSON object. "
                            "Give one object per example, like {\"text\": ..., \"label\": ...}.")
    columns = list(dict.fromkeys(key for record in records for key in record))
    return _Table(records, str(path.resolve()), numbers, unit, columns)


def _squad_table(document: dict, path: Path, task) -> _Table:
    if task.data_kind is not QA:
        raise DataError(f"{str(path)!r} is SQuAD JSON (question answering), not data for {task.name}. "
                        f"{_supported(task)}")
    try:
        rows = [
            {"id": qa.get("id"), "question": qa.get("question"), "context": paragraph["context"],
             "answers": [] if qa.get("is_impossible") else qa.get("answers", [])}
            for article in document["data"]
            for paragraph in article["paragraphs"]
            for qa in paragraph["qas"]
        ]
    except (KeyError, TypeError) as err:
        raise DataError(f"{str(path)!r} is not SQuAD JSON (missing or malformed {err}). Expected "
                        '{"data": [{"paragraphs": [{"context": ..., "qas": [{"id", "question", "answers"}]}]}]}.'
                        ) from None
    return _Table(rows, str(path.resolve()), list(range(1, len(rows) + 1)), "question", ["id", *QA_COLUMNS])


def _read_conll(path: Path, config: DataConfig) -> _Table:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"cannot read {str(path)!r}: {err}. Save it as UTF-8.") from None
    rows: list[dict] = []
    numbers: list[int] = []
    words: list[str] = []
    tags: list[str] = []
    for number, line in enumerate(lines, start=1):
        columns = line.split()
        if columns and columns[0] == "-DOCSTART-":
            continue
        if not columns:
            if words:
                rows.append({config.tokens_column: words, config.tags_column: tags})
                words, tags = [], []
            continue
        if len(columns) < 2:
            raise DataError(f"line {number} of {str(path)!r} has one column ({line.strip()!r}); CoNLL lines need "
                            "the word first and its tag last, separated by whitespace.")
        if not words:
            numbers.append(number)
        words.append(columns[0])
        tags.append(columns[-1])
    if words:
        rows.append({config.tokens_column: words, config.tags_column: tags})
    return _Table(rows, str(path.resolve()), numbers, "sentence at line",
                  [config.tokens_column, config.tags_column])


def _read_saved_dataset(folder: Path) -> dict[str, _Table]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"{str(folder)!r} is a saved Hugging Face dataset; reading it needs the datasets "
                        "package. Run: pip install datasets") from None
    try:
        loaded = datasets.load_from_disk(str(folder))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot load the saved dataset {str(folder)!r}: {err}. Save it again with "
                        "save_to_disk.") from None
    source = str(folder.resolve())
    if not isinstance(loaded, datasets.DatasetDict):
        return {"all": _dataset_table(loaded, source)}
    found = {}
    for key, names in SPLIT_STEMS.items():
        name = next((n for n in names if n in loaded), None)
        if name is not None:
            found[key] = _dataset_table(loaded[name], f"{source}#{name}")
    if "train" not in found:
        raise DataError(f"the saved dataset {source!r} has splits {', '.join(loaded)} but no 'train'. "
                        "Save a DatasetDict with a train split (and validation, test).")
    return found


def _dataset_table(dataset, source: str) -> _Table:
    rows = dataset.to_list()
    names = {column: _class_names(feature) for column, feature in dataset.features.items()}
    return _Table(rows, source, list(range(1, len(rows) + 1)), "row", list(dataset.column_names),
                  {column: found for column, found in names.items() if found})


def _class_names(feature: Any) -> list[str] | None:
    """The names of a ClassLabel, or of the ClassLabel inside a Sequence/List feature."""
    inner: Any = getattr(feature, "feature", None)  # datasets' features are untyped here
    for candidate in (feature, inner):
        if type(candidate).__name__ == "ClassLabel":
            return list(candidate.names)
    return None


# ---- checking values ------------------------------------------------------------------------------------


def _require(table: _Table, setting: str, column: str) -> None:
    if column not in table.columns:
        flag = "--" + setting.replace("_", "-")
        raise DataError(f"column {column!r} not in {table.source!r}; it has: {', '.join(map(str, table.columns))}. "
                        f"Pass {flag} NAME.")


def _missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and not value.strip()


def _text(table: _Table, i: int, column: str) -> str:
    value = table.rows[i].get(column)
    if _missing(value):
        raise DataError(f"{table.where(i)} has no text in column {column!r}. Fill it in or remove that row.")
    if isinstance(value, list | dict):
        raise DataError(f"{table.where(i)}: column {column!r} holds a {type(value).__name__}, not a text.")
    return str(value)


def _class_name(value, names: list[str] | None, where: str, column: str) -> str:
    """A label or tag as a class name: ints index `names` (a ClassLabel) when given, else become str(int)."""
    if _missing(value):
        raise DataError(f"{where} has no value in column {column!r}. Every example needs one; fill it in or "
                        "remove that row.")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        return value.strip()
    if not isinstance(value, int) or isinstance(value, bool):
        raise DataError(f"{where}: column {column!r} holds {value!r}; it must be a class name or an integer index.")
    if names is None:
        return str(value)
    if not 0 <= value < len(names):
        raise DataError(f"{where}: class index {value} in column {column!r} is outside 0..{len(names) - 1} "
                        f"({', '.join(names)}). Unlabelled splits (-1) cannot be used for training or scoring.")
    return names[value]


def _name_key(name: str) -> tuple:
    # Integer-like names ("2", "10") sort numerically, so index order matches the numbers.
    try:
        return (0, int(name), "")
    except ValueError:
        return (1, 0, name)


def _indices(names: list[str], classes: list[str], where: Callable[[int], str], kind: str) -> list[int]:
    """Class indices of `names`; a name outside the training classes is an error naming where it is."""
    index = {name: k for k, name in enumerate(classes)}
    for i, name in enumerate(names):
        if name not in index:
            raise DataError(f"{kind} {name!r} in {where(i)} is not among the training {kind}s "
                            f"({', '.join(classes)}). Add training examples of it or remove it.")
    return [index[name] for name in names]


def _at_least_two(classes: list[str], table: _Table, column: str, kind: str) -> None:
    if len(classes) < 2:
        raise DataError(f"{table.source!r} has {len(classes)} {kind} ({', '.join(classes) or 'none'}) in column "
                        f"{column!r}; classification needs at least 2. Check the column or add other {kind}.")


# ---- building sets --------------------------------------------------------------------------------------


def _text_set(table: _Table, config: DataConfig, classes: list[str] | None) -> TextSet:
    _require(table, "text_column", config.text_column)
    if config.text_pair_column:
        _require(table, "text_pair_column", config.text_pair_column)
    _require(table, "label_column", config.label_column)
    count = range(len(table.rows))
    texts = [_text(table, i, config.text_column) for i in count]
    pairs = [_text(table, i, config.text_pair_column) for i in count] if config.text_pair_column else None
    known = table.names.get(config.label_column)
    names = [_class_name(table.rows[i].get(config.label_column), known, table.where(i), config.label_column)
             for i in count]
    if classes is None:
        classes = known or sorted(set(names), key=_name_key)
        _at_least_two(classes, table, config.label_column, "classes")
    labels = _indices(names, classes, table.where, "label")
    return TextSet(texts=texts, labels=labels, classes=list(classes), source=table.source, pairs=pairs)


def _token_set(table: _Table, config: DataConfig, classes: list[str] | None) -> TokenSet:
    _require(table, "tokens_column", config.tokens_column)
    _require(table, "tags_column", config.tags_column)
    known = table.names.get(config.tags_column)
    sentences, places = [], []
    for i in range(len(table.rows)):
        words, tags = _sentence(table, i, config, known)
        if words:  # an empty sentence has nothing to tag
            sentences.append((words, tags))
            places.append(table.where(i))
    if not sentences:
        raise DataError(f"{table.source!r} has no sentences with tokens. For token classification pass "
                        f"{FORMATS[TOKENS]}.")
    if classes is None:
        found = {tag for _, tags in sentences for tag in tags}
        classes = known or sorted(found, key=lambda name: (name != "O", _name_key(name)))
        _at_least_two(classes, table, config.tags_column, "tags")
    tag_ids = [_indices(tags, classes, lambda _: place, "tag")  # noqa: B023 (called at once)
               for (_, tags), place in zip(sentences, places, strict=True)]
    return TokenSet(tokens=[words for words, _ in sentences], tags=tag_ids, classes=list(classes),
                    source=table.source)


def _sentence(table: _Table, i: int, config: DataConfig, known: list[str] | None) -> tuple[list[str], list[str]]:
    words = _sequence(table, i, config.tokens_column)
    tags = _sequence(table, i, config.tags_column)
    if len(words) != len(tags):
        raise DataError(f"{table.where(i)} has {len(words)} tokens but {len(tags)} tags; each token needs exactly "
                        "one tag. Fix or remove that sentence.")
    names = [_class_name(tag, known, table.where(i), config.tags_column) for tag in tags]
    return [str(word) for word in words], names


def _sequence(table: _Table, i: int, column: str) -> list:
    value = table.rows[i].get(column)
    if not isinstance(value, list):
        raise DataError(f"{table.where(i)}: column {column!r} holds {type(value).__name__}, not a list. Give "
                        "one list per sentence, e.g. [\"EU\", \"rejects\"] and [\"B-ORG\", \"O\"].")
    return value


def _qa_set(table: _Table, config: DataConfig, classes: list[str] | None) -> QASet:
    for column in QA_COLUMNS:
        if column not in table.columns:
            raise DataError(f"column {column!r} not in {table.source!r}; it has: {', '.join(map(str, table.columns))}. "
                            "Question answering needs id, question, context and answers columns (the Hugging Face "
                            "squad layout); rename yours to match.")
    return QASet(examples=[_qa_example(table, i) for i in range(len(table.rows))], source=table.source)


def _qa_example(table: _Table, i: int) -> QAExample:
    row = table.rows[i]
    qid = str(table.numbers[i]) if _missing(row.get("id")) else str(row["id"])
    question = _text(table, i, "question")
    context = _text(table, i, "context")
    answers = tuple(_answer(answer, context, qid, table) for answer in _answer_list(row["answers"], qid, table))
    return QAExample(id=qid, question=question, context=context, answers=answers)


def _answer_list(value, qid: str, table: _Table) -> list:
    """Answers as a list of {"text", "answer_start"} dicts, from either that or the squad dict of lists."""
    if value is None:
        return []
    if isinstance(value, dict):
        texts, starts = value.get("text") or [], value.get("answer_start") or []
        if len(texts) != len(starts):
            raise DataError(f"question {qid!r} in {table.source!r} has {len(texts)} answer texts but {len(starts)} "
                            "answer_start values. Give one start per answer text.")
        return [{"text": text, "answer_start": start} for text, start in zip(texts, starts, strict=True)]
    if isinstance(value, list):
        return value
    raise DataError(f"question {qid!r} in {table.source!r}: answers must be a list of "
                    '{"text", "answer_start"} dicts or {"text": [...], "answer_start": [...]}, '
                    f"got {type(value).__name__}.")


def _answer(answer, context: str, qid: str, table: _Table) -> dict:
    text = answer.get("text") if isinstance(answer, dict) else None
    start = answer.get("answer_start") if isinstance(answer, dict) else None
    if isinstance(start, float) and start.is_integer():
        start = int(start)
    if not isinstance(text, str) or not text or not isinstance(start, int) or isinstance(start, bool):
        raise DataError(f"question {qid!r} in {table.source!r} has a malformed answer {answer!r}; each answer needs "
                        "a non-empty 'text' and an integer 'answer_start'.")
    found = context[start : start + len(text)] if start >= 0 else ""
    if found != text:
        raise DataError(f"question {qid!r} in {table.source!r}: answer {text!r} is not at answer_start {start} of its "
                        f"context (found {found!r}). Fix answer_start, the character offset of the answer.")
    return {"text": text, "answer_start": start}


def _prompt_set(table: _Table, config: DataConfig, classes: list[str] | None) -> PromptSet:
    """Prompt and completion columns; else chat messages (the last one the reply to learn); else plain
    texts, every token learned."""
    count = range(len(table.rows))
    if config.prompt_column in table.columns or config.completion_column in table.columns:
        _require(table, "prompt_column", config.prompt_column)
        _require(table, "completion_column", config.completion_column)
        prompts: list[str | list[dict]] = [_text(table, i, config.prompt_column) for i in count]
        return PromptSet(prompts, [_text(table, i, config.completion_column) for i in count], table.source,
                         strict=config.strict)
    if config.messages_column in table.columns:
        chats = [_chat(table, i, config.messages_column) for i in count]
        return PromptSet([chat[:-1] for chat in chats], [chat[-1]["content"] for chat in chats], table.source,
                         strict=config.strict)
    if config.text_column in table.columns:
        return PromptSet(["" for _ in count], [_text(table, i, config.text_column) for i in count], table.source,
                         strict=config.strict)
    raise DataError(f"{table.source!r} has none of the columns a generator learns from: {config.prompt_column!r} "
                    f"and {config.completion_column!r}, {config.messages_column!r} (chats) or {config.text_column!r} "
                    f"(plain text); it has: {', '.join(map(str, table.columns))}. Name yours with --prompt-column "
                    "and --completion-column, --messages-column or --text-column.")


def _chat(table: _Table, i: int, column: str) -> list[dict]:
    """One chat: {"role", "content"} messages, the last one the assistant's reply."""
    messages = table.rows[i].get(column)
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError:
            messages = None
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise DataError(f"{table.where(i)}: column {column!r} is not a chat: give a list of "
                        '{"role": ..., "content": ...} messages, the last one the assistant\'s reply.')
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise DataError(f"{table.where(i)}: the last message of its chat is not a non-empty assistant reply, which "
                        "is what the model learns. End each chat with the reply to learn.")
    return [{"role": m["role"], "content": m["content"]} for m in messages]
