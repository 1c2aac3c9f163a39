"""The demo model's corpus, generated deterministically: the jobs the adapters serve, as they render them.

Everything here is our own generated text (licence: Apache-2.0, like the project). Families (a training
batch holds one; :data:`FAMILY_WEIGHTS`, :data:`FAMILY_BATCH`), every example a conversation rendered by
:func:`chat_messages` through the adapters' own message normalisation and tool declarations:

* **short** — one-line answers to simple instructions: arithmetic in words ("What is three plus four?"
  → "Seven."), opposites, plurals, spelling, colours of things, "what comes after", "name a …"
  (any member of the category is a right answer), and repeating a made-up name of any shape;
* **json** — a person record (``{"name": …, "age": …, "city": …}``), a record with made-up keys and
  types, often with its JSON schema stated in a system turn as the adapters state it, or a record the
  model fills in itself ("Tell me a joke about ferries." with a Joke schema; :mod:`demo_json`,
  :mod:`demo_invented`);
* **tool_call** / **tool_answer** — declared tools and a request naming the tool and its argument values:
  the call with the values copied; then, after the call and the tool's result, an answer copying it
  (:mod:`demo_tools`);
* **rag** / **long** — 3–5 short passages (or 24–48) and a question that reuses one sentence's wording
  or turns it around: the missing span, in our own frames or LlamaIndex's QA prompt (read from ``llama_index`` if installed;
  :mod:`demo_rag`).

Values (names, places, words, numbers) come from :mod:`demo_values`, made up on the spot; the hand-written
evaluation values of :mod:`demo_eval_sets` are reserved, so the generator never writes them. Held-out
sets (:func:`heldout_examples`): new phrasings of trained facts, :data:`HELDOUT_NAMES`, tools whose noun is
in the held-out :func:`demo_tools.tool_split`, fresh contexts; :func:`validation_examples` (another seed) picks the
exported checkpoint.

``python scripts/demo_data.py --out DIR`` writes ``train.jsonl``, ``heldout.jsonl`` and
``schema.json``; the training and eval scripts import this module instead. :mod:`demo_example` holds the
:class:`Example` all families produce.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from diffgemma_adapters.formats import SCHEMA_INSTRUCTION, declare_tools

import demo_eval_sets  # noqa: F401  (importing it reserves the hand-written evaluation values)
import demo_values
from demo_example import DAYS, Example, example_text, stable_unit
from demo_json import (
    CITIES,
    HELDOUT_NAMES,
    JSON,
    JSON_PHRASINGS_CITY,
    JSON_TEMPLATES_NO_CITY,
    PERSON_SCHEMA,
    TRAIN_NAMES,
    person_fields_example,
    person_record,
    training_json_example,
)
from demo_rag import FRAMEWORK_PROMPTS_ENV, export_framework_prompts, rag_example
from demo_tools import tool_answer_example, tool_call_example

SHORT = "short"
TASK_FORMATS = (SHORT, JSON, "tool", "tool_answer", "rag")

NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
).split()

OPPOSITES = (
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("happy", "sad"),
    ("light", "dark"), ("open", "closed"), ("early", "late"), ("full", "empty"), ("high", "low"),
    ("hard", "soft"), ("wet", "dry"), ("old", "new"), ("rich", "poor"), ("strong", "weak"),
    ("long", "short"), ("thick", "thin"), ("clean", "dirty"), ("loud", "quiet"), ("first", "last"),
    ("day", "night"), ("left", "right"), ("in", "out"), ("yes", "no"), ("true", "false"),
    ("win", "lose"), ("buy", "sell"), ("push", "pull"), ("give", "take"), ("near", "far"),
    ("heavy", "light"), ("young", "old"), ("good", "bad"), ("before", "after"), ("inside", "outside"),
    ("above", "below"), ("start", "finish"), ("friend", "enemy"), ("sweet", "sour"), ("wide", "narrow"),
)  # fmt: skip

PLURALS = (
    ("cat", "cats"), ("dog", "dogs"), ("house", "houses"), ("tree", "trees"), ("car", "cars"),
    ("book", "books"), ("apple", "apples"), ("bird", "birds"), ("chair", "chairs"), ("table", "tables"),
    ("box", "boxes"), ("bus", "buses"), ("glass", "glasses"), ("dish", "dishes"), ("fox", "foxes"),
    ("city", "cities"), ("baby", "babies"), ("story", "stories"), ("party", "parties"), ("lady", "ladies"),
    ("leaf", "leaves"), ("knife", "knives"), ("wolf", "wolves"), ("life", "lives"), ("half", "halves"),
    ("man", "men"), ("woman", "women"), ("child", "children"), ("mouse", "mice"), ("goose", "geese"),
    ("foot", "feet"), ("tooth", "teeth"), ("person", "people"), ("ox", "oxen"), ("sheep", "sheep"),
    ("fish", "fish"), ("deer", "deer"), ("potato", "potatoes"), ("tomato", "tomatoes"), ("hero", "heroes"),
    ("key", "keys"), ("toy", "toys"), ("day", "days"), ("boy", "boys"), ("girl", "girls"),
    ("cactus", "cacti"), ("church", "churches"), ("watch", "watches"), ("brush", "brushes"), ("wish", "wishes"),
)  # fmt: skip

COLOURS = (
    ("banana", "yellow"), ("lemon", "yellow"), ("sun", "yellow"), ("grass", "green"), ("leaf", "green"),
    ("frog", "green"), ("lime", "green"), ("sky", "blue"), ("sea", "blue"), ("blueberry", "blue"),
    ("tomato", "red"), ("strawberry", "red"), ("cherry", "red"), ("fire truck", "red"), ("orange", "orange"),
    ("carrot", "orange"), ("pumpkin", "orange"), ("snow", "white"), ("cloud", "white"), ("milk", "white"),
    ("swan", "white"), ("coal", "black"), ("crow", "black"), ("night sky", "black"), ("chocolate", "brown"),
    ("bear", "brown"), ("tree trunk", "brown"), ("plum", "purple"), ("grape", "purple"), ("violet", "purple"),
    ("flamingo", "pink"), ("pig", "pink"), ("elephant", "grey"), ("mouse", "grey"), ("coin", "silver"),
)  # fmt: skip

CATEGORIES = {
    "fruit": ("apple", "banana", "cherry", "grape", "lemon", "mango", "orange", "peach", "pear", "plum",
              "strawberry", "kiwi", "melon", "lime", "apricot"),
    "animal": ("cat", "dog", "horse", "cow", "lion", "tiger", "bear", "rabbit", "mouse", "sheep", "goat",
               "fox", "wolf", "deer", "elephant"),
    "colour": ("red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "black", "white", "grey"),
    "vegetable": ("carrot", "potato", "onion", "pea", "bean", "cabbage", "lettuce", "pepper", "leek", "radish"),
    "day of the week": DAYS,
    "month": ("January", "February", "March", "April", "May", "June", "July", "August", "September",
              "October", "November", "December"),
}  # fmt: skip

SPELL_WORDS = tuple(
    sorted({w for pair in OPPOSITES for w in pair if len(w) >= 3} | {w for w, _ in PLURALS} | set(CATEGORIES["fruit"]))
)

# Short-task phrasings. Every fact is trained under all but at most one of them.
ARITHMETIC_TEMPLATES = ("What is {a} {op} {b}?", "How much is {a} {op} {b}?", "Compute {a} {op} {b}.",
                        "Tell me what {a} {op} {b} makes.")
OPPOSITE_TEMPLATES = ("What is the opposite of {w}?", "Give the opposite of {w}.", "Opposite of {w}?",
                      "Which word means the opposite of {w}?")
PLURAL_TEMPLATES = ("What is the plural of {w}?", "Give the plural of {w}.", "Plural of {w}?",
                    "How do you say more than one {w}?")
SPELL_TEMPLATES = ("Spell the word {w}.", "How do you spell {w}?", "Spell {w} letter by letter.")
COLOUR_TEMPLATES = ("What colour is {a} {w}?", "What color is {a} {w}?", "Tell me the colour of {a} {w}.",
                    "Which colour is {a} {w}?")
NEXT_TEMPLATES = ("What comes after {w}?", "Which number follows {w}?", "Count on from {w} by one.")
CATEGORY_TEMPLATES = ("Name {a} {c}.", "Give me {a} {c}.", "Tell me one {c}.", "Can you name {a} {c}?",
                      "Say {a} {c}.")

HELDOUT_FRACTION = 0.25  # of short-task facts that lose one phrasing to the held-out split
# How often each short sub-task is drawn in training (arithmetic has the most facts but should not crowd out the rest).
KIND_WEIGHTS = {"arithmetic": 0.25, "spell": 0.15, "opposite": 0.15, "plural": 0.12, "colour": 0.12, "next": 0.08,
                "category": 0.13, "repeat": 0.2}
# "Repeat after me" with a generated name: the plainest copy from the prompt (the answer's first token
# is the copied one), which the JSON records need for their names, ages and cities.
REPEAT_TEMPLATES = ("Repeat after me: {w}.", "Repeat the name {w}.", "Write the name {w}.", "Echo {w}.")
REPEAT = "repeat"
WORD_PATTERN = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class Corpus:
    """A fixed training sample and held-out set (:func:`build_corpus`), for writing the corpus to files."""

    train: tuple[Example, ...]
    heldout: tuple[Example, ...]


# -- the fact space ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fact:
    """A fact and its phrasings; ``answers`` is non-empty only for open tasks ("name a fruit")."""

    kind: str
    key: str
    prompts: tuple[str, ...]
    answer: str
    answers: tuple[str, ...] = ()


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _facts() -> list[_Fact]:
    facts: list[_Fact] = []
    for a in range(11):
        for b in range(11):
            for op, value in (("plus", a + b), ("minus", a - b), ("times", a * b)):
                if not 0 <= value <= 20:
                    continue
                prompts = tuple(t.format(a=NUMBER_WORDS[a], op=op, b=NUMBER_WORDS[b]) for t in ARITHMETIC_TEMPLATES)
                facts.append(_Fact("arithmetic", f"{a} {op} {b}", prompts, _sentence(NUMBER_WORDS[value])))
    for left, right in OPPOSITES:
        for word, other in ((left, right), (right, left)):
            if word == "light" and other == "heavy":
                continue  # "light" already has "dark"; keep one answer per question
            if word == "old" and other == "young":
                continue
            prompts = tuple(t.format(w=word) for t in OPPOSITE_TEMPLATES)
            facts.append(_Fact("opposite", word, prompts, _sentence(other)))
    for word, plural in PLURALS:
        facts.append(_Fact("plural", word, tuple(t.format(w=word) for t in PLURAL_TEMPLATES), _sentence(plural)))
    for word in SPELL_WORDS:
        prompts = tuple(t.format(w=word) for t in SPELL_TEMPLATES)
        facts.append(_Fact("spell", word, prompts, "-".join(word) + "."))
    for thing, colour in COLOURS:
        prompts = tuple(t.format(a=_article(thing), w=thing) for t in COLOUR_TEMPLATES)
        facts.append(_Fact("colour", thing, prompts, _sentence(colour)))
    for n in range(20):
        prompts = tuple(t.format(w=NUMBER_WORDS[n]) for t in NEXT_TEMPLATES)
        facts.append(_Fact("next", str(n), prompts, _sentence(NUMBER_WORDS[n + 1])))
    for category, members in CATEGORIES.items():
        prompts = tuple(t.format(a=_article(category), c=category) for t in CATEGORY_TEMPLATES)
        answers = tuple(_sentence(m) for m in members)
        facts.append(_Fact("category", category, prompts, answers[0], answers))
    return facts


def _heldout_phrasing(fact: _Fact) -> int | None:
    """The index of the phrasing this fact loses to the held-out split, if any."""
    if len(fact.prompts) < 2 or stable_unit(f"heldout:{fact.kind}:{fact.key}") >= HELDOUT_FRACTION:
        return None
    return int(stable_unit(f"phrasing:{fact.kind}:{fact.key}") * len(fact.prompts))


def short_prompts(split: str) -> list[tuple[_Fact, str]]:
    """Every (fact, prompt) pair of a split (``"train"`` or ``"heldout"``), in a fixed order."""
    pairs = []
    for fact in _facts():
        held = _heldout_phrasing(fact)
        for index, prompt in enumerate(fact.prompts):
            if (index == held) == (split == "heldout"):
                pairs.append((fact, prompt))
    return pairs


# -- rendering --------------------------------------------------------------------------------------

def chat_messages(example: Example) -> list[dict[str, str]]:
    """The example's conversation as the chat template receives it from the adapters and the server: the
    same :func:`diffgemma_adapters.chat.normalize_messages` and tool declarations, so training sees exactly
    the text users' requests turn into."""
    from diffgemma_adapters.chat import TemplateRoles, Turn, normalize_messages

    turns: list[Turn] = []
    if example.tools:
        turns.append(Turn("system", declare_tools(example.tools)))
    if example.system:
        turns.append(Turn("system", example.system))
    turns.append(Turn("user", example.prompt))
    for index, turn in enumerate(example.history):
        if turn["role"] == "assistant":
            calls = tuple((name, args, f"call_{index}") for name, args in turn.get("tool_calls", ()))
            turns.append(Turn("assistant", turn.get("content", ""), tool_calls=calls))
        else:
            turns.append(Turn(turn["role"], turn["content"], name=turn.get("name"), tool_call_id=f"call_{index - 1}"))
    return normalize_messages(turns, TemplateRoles(system=True, tool=True, tools=False))


# -- system prompts ---------------------------------------------------------------------------------

SYSTEM_PROMPTS = (
    "You are a helpful assistant.", "You are a helpful assistant. Answer briefly.", "Be concise.",
    "You are a friendly assistant that answers in one short sentence.", "Answer the user's question.",
    "You are an assistant for a small company. Keep answers short and exact.",
    "Reply with the answer only.", "You are a careful assistant. Do not add anything the user did not ask for.",
    "You are a helpful AI assistant. Use the tools you are given when they help.",
    "You help people with short questions.", "Always answer in English.",
    "You are a precise assistant: copy names, numbers and places exactly as the user writes them.",
)  # fmt: skip


def system_prompt(rng: random.Random, extra: Sequence[str] = ()) -> str:
    """A system prompt: one of ours, one the caller's framework sends (``extra``), or a generated persona."""
    roll = rng.random()
    if extra and roll < 0.35:
        return rng.choice(extra)
    if roll < 0.8:
        return rng.choice(SYSTEM_PROMPTS)
    return f"You are {demo_values.name(rng)}, an assistant at {demo_values.place(rng)}. {rng.choice(SYSTEM_PROMPTS)}"


def with_system(rng: random.Random, example: Example, probability: float = 0.5, extra: Sequence[str] = ()) -> Example:
    """Add a system prompt at ``probability``; after a schema instruction it follows it, as the adapters
    fold a schema and the caller's system message into one system turn."""
    if rng.random() >= probability:
        return example
    if not example.system:
        return replace(example, system=system_prompt(rng, extra))
    if example.system.startswith(SCHEMA_INSTRUCTION):
        return replace(example, system=f"{example.system}\n\n{system_prompt(rng, extra)}")
    return example


def _repeat_example(rng: random.Random, name: str) -> Example:
    answer = f"{name}."
    return Example(SHORT, REPEAT, rng.choice(REPEAT_TEMPLATES).format(w=name), answer, (answer,))


def _short_example(rng: random.Random, pairs: Sequence[tuple[_Fact, str]]) -> Example:
    fact, prompt = rng.choice(pairs)
    return _short_from(rng, fact, prompt)


def _short_from(rng: random.Random, fact: _Fact, prompt: str) -> Example:
    if fact.answers:
        return Example(SHORT, fact.kind, prompt, rng.choice(fact.answers), fact.answers)
    return Example(SHORT, fact.kind, prompt, fact.answer, (fact.answer,))


FAMILIES = ("short", "json", "tool_call", "tool_answer", "rag", "long")
FAMILY_WEIGHTS = {"short": 0.2, "json": 0.18, "tool_call": 0.2, "tool_answer": 0.1, "rag": 0.28, "long": 0.04}
"""How often a training batch is drawn from each family (a batch holds one family, so lengths are alike)."""
FAMILY_BATCH = {"short": 64, "json": 48, "tool_call": 16, "tool_answer": 16, "rag": 16, "long": 2}
"""Examples per batch: about 3-7 k tokens each, whatever the family's prompt length."""


def family_weights(overrides: str = "") -> dict[str, float]:
    """:data:`FAMILY_WEIGHTS` with some families' batch weights replaced: ``"tool_answer=0.2,long=0"``
    (``train_demo_model.py --family-weights``); ``""`` keeps them all. A bad family or weight is a
    ``ValueError`` naming it."""
    weights = dict(FAMILY_WEIGHTS)
    for item in filter(None, (part.strip() for part in overrides.split(","))):
        name, _, value = item.partition("=")
        family = name.strip()
        if family not in weights:
            raise ValueError(f"family weights: unknown family {family!r}; the families are {', '.join(FAMILIES)}")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"family weights: {item!r} needs a number after '='") from None
        if not weight >= 0:  # NaN fails too
            raise ValueError(f"family weights: {family} must be 0 or more, got {value.strip()}")
        weights[family] = weight
    if not any(weights.values()):
        raise ValueError(f"family weights: every family is weighted 0 in {overrides!r}")
    return weights


LONG_PASSAGES = (24, 48)  # passages of a "long" context: about 1,200-2,600 tokens, to use the prompt room
SYSTEM_PROBABILITY = 0.4


def family_example(rng: random.Random, family: str, by_kind: dict, kinds: Sequence[str],
                   weights: Sequence[float]) -> Example:  # fmt: skip
    """One training example of ``family`` (with a system turn at :data:`SYSTEM_PROBABILITY`); a draw that
    holds a hand-written evaluation value as a whole word anywhere (a material, a month phrase, a word of a
    made-up place) is drawn again, so no training example holds one."""
    while True:
        example = _draw_family_example(rng, family, by_kind, kinds, weights)
        if not demo_values.holds_reserved(example_text(example)):
            return example


def _draw_family_example(rng: random.Random, family: str, by_kind: dict, kinds: Sequence[str],
                         weights: Sequence[float]) -> Example:  # fmt: skip
    if family == "short":
        kind = rng.choices(kinds, weights)[0]
        if kind == REPEAT:
            example = _repeat_example(rng, demo_values.name(rng))
        else:
            example = _short_example(rng, by_kind[kind])
    elif family == "json":
        example = training_json_example(rng)
    elif family == "tool_call":
        example = tool_call_example(rng, "train")
    elif family == "tool_answer":
        example = tool_answer_example(rng, "train")
    elif family == "rag":
        example = rag_example(rng)
    elif family == "long":
        example = rag_example(rng, passages=rng.randint(*LONG_PASSAGES))
    else:
        raise ValueError(f"unknown family {family!r}")
    return with_system(rng, example, SYSTEM_PROBABILITY)


class TrainingStream:
    """An endless, seeded source of training examples: numbered batches (:meth:`batch`), each
    ``FAMILY_BATCH[family]`` examples of one family drawn by ``FAMILY_WEIGHTS``, and a sequential draw
    (:meth:`take`) whose position can be saved and restored (:meth:`getstate` / :meth:`setstate`)."""

    def __init__(self, seed: int = 0, weights: dict[str, float] | None = None) -> None:
        self._seed = seed
        self._rng = random.Random(seed)
        self._weights = dict(weights or FAMILY_WEIGHTS)
        by_kind: dict[str, list[tuple[_Fact, str]]] = {}
        for fact, prompt in short_prompts("train"):
            by_kind.setdefault(fact.kind, []).append((fact, prompt))
        self._by_kind = by_kind
        self._kinds = [*sorted(by_kind), REPEAT]
        self._kind_weights = [KIND_WEIGHTS[kind] for kind in self._kinds]

    def example(self, family: str) -> Example:
        return family_example(self._rng, family, self._by_kind, self._kinds, self._kind_weights)

    def batch(self, index: int, scale: float = 1.0) -> list[Example]:
        """Training batch number ``index``: ``FAMILY_BATCH[family] * scale`` examples of one family.

        Seeded by the stream's seed and ``index`` alone (not by the batches before it), so any process
        can make any batch: data workers share the work, and a resumed run needs only its step."""
        rng = random.Random(f"{self._seed}:batch:{index}")
        families = list(self._weights)
        family = rng.choices(families, [self._weights[f] for f in families])[0]
        size = max(1, round(FAMILY_BATCH[family] * scale))
        return [family_example(rng, family, self._by_kind, self._kinds, self._kind_weights) for _ in range(size)]

    def take(self, count: int, family: str | None = None) -> list[Example]:
        """``count`` examples, of one family or of families drawn by weight one by one."""
        families = list(self._weights)
        out = []
        for _ in range(count):
            chosen = family or self._rng.choices(families, [self._weights[f] for f in families])[0]
            out.append(self.example(chosen))
        return out

    def getstate(self) -> object:
        return self._rng.getstate()

    def setstate(self, state: object) -> None:
        self._rng.setstate(state)  # type: ignore[arg-type]


def heldout_examples(task: str, count: int, seed: int = 1234) -> list[Example]:
    """``count`` distinct held-out prompts of one task format, the same for a given seed.

    ``short``: held-out phrasings of trained facts; ``json``: records for :data:`HELDOUT_NAMES` (never in
    training) in made-up places; ``tool`` / ``tool_answer``: calls of tools whose nouns are in the held-out
    tool split (never trained), and answers from their results; ``rag``: freshly generated contexts."""
    rng = random.Random(f"{seed}:{task}")
    if task == SHORT:
        pairs = short_prompts("heldout")
        rng.shuffle(pairs)
        if count > len(pairs):
            raise ValueError(f"only {len(pairs)} held-out short prompts exist, {count} asked for")
        return [_short_example(random.Random(i), [pair]) for i, pair in enumerate(pairs[:count])]
    makers = {
        JSON: lambda: person_fields_example(rng, rng.choice(HELDOUT_NAMES), demo_values.place(rng), rng.randint(0, 120)),
        "tool": lambda: tool_call_example(rng, "heldout"),
        "tool_answer": lambda: tool_answer_example(rng, "heldout"),
        "rag": lambda: rag_example(rng),
    }
    if task not in makers:
        raise ValueError(f"unknown task {task!r}; expected one of {TASK_FORMATS}")
    seen: set[str] = set()
    examples = []
    while len(examples) < count:
        example = with_system(rng, makers[task](), SYSTEM_PROBABILITY)
        if example.prompt not in seen:
            seen.add(example.prompt)
            examples.append(example)
    return examples


def validation_examples(count: int, seed: int = 4321) -> list[Example]:
    """``count`` prompts of the copying families (JSON, tool calls and answers, RAG) with freshly generated
    values: apart from the eval's held-out sets, so choosing a checkpoint on them leaves the eval untouched."""
    rng = random.Random(f"{seed}:validation")
    stream = TrainingStream(seed)
    stream.setstate(rng.getstate())
    families = ("json", "tool_call", "tool_answer", "rag")
    return [stream.example(families[i % len(families)]) for i in range(count)]


def build_corpus(train_size: int = 20_000, heldout_size: int = 100, seed: int = 0) -> Corpus:
    """A fixed training sample and held-out set (``heldout_size`` per task format)."""
    train = tuple(TrainingStream(seed).take(train_size))
    heldout = tuple(example for task in TASK_FORMATS for example in heldout_examples(task, heldout_size, seed + 1234))
    return Corpus(train, heldout)


# -- the corpus vocabulary --------------------------------------------------------------------------


def lexicon() -> frozenset[str]:
    """Every word (lower-cased ``[A-Za-z]+`` run) the generator can write, in prompts or answers.

    This defines "a real word" for the eval: the training and held-out splits together use exactly
    these words, and a word outside it can only be made up by the model."""
    texts: list[str] = []
    for fact in _facts():
        texts.extend(fact.prompts)
        texts.append(fact.answer)
        texts.extend(fact.answers)
    texts.extend(JSON_PHRASINGS_CITY + JSON_TEMPLATES_NO_CITY + REPEAT_TEMPLATES)
    texts.extend(TRAIN_NAMES + HELDOUT_NAMES + CITIES)
    texts.append(person_record("Alice", 30, "Paris"))
    return frozenset(word.lower() for text in texts for word in WORD_PATTERN.findall(text))


def words(text: str) -> list[str]:
    """The lower-cased words of ``text`` (as :func:`lexicon` counts them)."""
    return [word.lower() for word in WORD_PATTERN.findall(text)]


def write_jsonl(path: Path, examples: Iterable[Example]) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(example.to_json() + "\n")
            count += 1
    return count


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="directory for train.jsonl, heldout.jsonl, schema.json")
    parser.add_argument("--export-framework-prompts", type=Path, metavar="FILE",
                        help=f"write the installed frameworks' QA prompts to FILE (for ${FRAMEWORK_PROMPTS_ENV})")
    parser.add_argument("--train-size", type=int, default=20_000)
    parser.add_argument("--heldout-size", type=int, default=100, help="held-out prompts per task format")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not (args.out or args.export_framework_prompts):
        parser.error("give --out DIR, --export-framework-prompts FILE, or both")
    if args.export_framework_prompts:
        print(f"wrote {export_framework_prompts(args.export_framework_prompts)} prompts to {args.export_framework_prompts}")
    if not args.out:
        return
    corpus = build_corpus(args.train_size, args.heldout_size, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    n_train = write_jsonl(args.out / "train.jsonl", corpus.train)
    n_held = write_jsonl(args.out / "heldout.jsonl", corpus.heldout)
    (args.out / "schema.json").write_text(json.dumps(PERSON_SCHEMA, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {n_train} training and {n_held} held-out examples to {args.out}")


if __name__ == "__main__":
    main()
