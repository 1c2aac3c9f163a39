"""The demo model's corpus: templated short answers and JSON records, generated deterministically.

Everything here is our own generated text (licence: Apache-2.0, like the project). Two task formats,
both rendered later through the Gemma-style chat template:

* **short** — one-line answers to simple instructions: arithmetic in words ("What is three plus four?"
  → "Seven."), opposites, plurals, spelling, colours of things, "what comes after", "name a …"
  (any member of the category is a right answer), and repeating a made-up name ("Repeat after me:
  Pruteth." → "Pruteth.");
* **json** — a JSON record for a person, following :data:`PERSON_SCHEMA`
  (``{"name": "Alice", "age": 31, "city": "Paris"}``; the city is the one the prompt names, or any
  city of :data:`CITIES` when it names none).

The held-out split holds prompts that never occur in training:

* short tasks: a fixed quarter of the facts (a sum, a word pair, …) each lose one phrasing to the
  held-out split; the fact itself is still trained under its other phrasings, so the held-out prompt is
  answerable but its exact text is new;
* json: :data:`HELDOUT_NAMES` never occur anywhere in the training split, where three quarters of the
  records name a person made up by :func:`generate_name`; a hash share of the generated names is kept
  for validation (:func:`validation_examples`) and never trained on either.

``python scripts/demo_data.py --out DIR`` writes ``train.jsonl``, ``heldout.jsonl`` and
``schema.json``; the training and eval scripts import this module instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

SHORT = "short"
JSON = "json"
TASK_FORMATS = (SHORT, JSON)

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
    "day of the week": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "month": ("January", "February", "March", "April", "May", "June", "July", "August", "September",
              "October", "November", "December"),
}  # fmt: skip

SPELL_WORDS = tuple(
    sorted({w for pair in OPPOSITES for w in pair if len(w) >= 3} | {w for w, _ in PLURALS} | set(CATEGORIES["fruit"]))
)

CITIES = (
    "Paris", "London", "Berlin", "Madrid", "Rome", "Lisbon", "Vienna", "Prague", "Dublin", "Oslo",
    "Stockholm", "Helsinki", "Warsaw", "Athens", "Amsterdam", "Brussels", "Zurich", "Tokyo", "Seoul",
    "Sydney", "Toronto", "Chicago", "Boston", "Denver", "Cairo", "Nairobi", "Lima", "Bogota",
)  # fmt: skip

TRAIN_NAMES = (
    "Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "Jack", "Karen", "Liam",
    "Maria", "Noah", "Olivia", "Peter", "Quinn", "Rachel", "Sam", "Tina", "Uma", "Victor", "Wendy", "Xavier",
    "Yara", "Zoe", "Adam", "Bella", "Chris", "Diana", "Ethan", "Fiona", "George", "Hannah", "Ivan", "Julia",
    "Kevin", "Laura", "Mark", "Nina", "Oscar", "Paula", "Ryan", "Sara", "Tom", "Ursula", "Vera", "Will",
    "Amir", "Bianca", "Carlos", "Daria", "Elena", "Felix", "Gina", "Hugo", "Ines", "Jonas", "Kira", "Leo",
    "Mila", "Nils", "Omar", "Pia", "Rosa", "Sven", "Tara", "Umar", "Vince", "Wanda", "Yusuf", "Zara",
    "Anna", "Ben", "Clara", "Dan", "Eva", "Finn", "Greta", "Hans", "Ida", "Jan", "Kurt", "Lena",
)  # fmt: skip
HELDOUT_NAMES = (
    "Beatrice", "Cedric", "Delia", "Edgar", "Flora", "Gustav", "Helga", "Igor", "Joanna", "Konrad",
    "Lucia", "Magnus", "Nadia", "Otto", "Priya", "Rupert", "Sofia", "Theo", "Valerie", "Walter",
)  # fmt: skip
AGES = tuple(range(18, 91))

# Generated names: most JSON examples name a person the generator makes up on the spot, so a name is
# almost never seen twice and copying it from the prompt is the only way to fit the target. A fixed share
# of the generated names (by hash) belongs to the validation split and never occurs in training; the
# training script picks its checkpoint on them, and the eval's HELDOUT_NAMES stay untouched by both.
NAME_ONSETS = ("b", "br", "c", "ch", "d", "dr", "f", "g", "gr", "h", "j", "k", "kl", "l", "m", "n", "p", "pr",
               "r", "s", "sh", "st", "t", "th", "tr", "v", "w", "z", "")  # fmt: skip
NAME_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ea", "ie", "ou", "y")
NAME_CODAS = ("", "", "", "n", "r", "l", "s", "m", "th", "nd", "rt", "x", "k", "ll", "ck")
GENERATED_NAME_FRACTION = 0.75  # of training JSON examples; the rest use TRAIN_NAMES
VALIDATION_NAME_FRACTION = 0.05  # of all generated names
RANDOM_LETTER_NAME_FRACTION = 0.15  # of generated names: plain random letters, so every letter is copied somewhere


def generate_name(rng: random.Random) -> str:
    """A made-up name matching the schema's ``^[A-Z][a-z]+$``, 3–10 letters: mostly two or three
    pronounceable syllables, sometimes random letters."""
    if rng.random() < RANDOM_LETTER_NAME_FRACTION:
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9))).capitalize()
    while True:
        syllables = rng.choice((2, 2, 2, 3))
        letters = "".join(rng.choice(NAME_ONSETS) + rng.choice(NAME_VOWELS) for _ in range(syllables))
        name = (letters + rng.choice(NAME_CODAS)).capitalize()
        if 3 <= len(name) <= 10:
            return name


def name_split(name: str) -> str:
    """``"heldout"`` for the eval's names, ``"train"`` for :data:`TRAIN_NAMES`, ``"validation"`` for a fixed
    hash share of the rest, else ``"train"``."""
    if name in HELDOUT_NAMES:
        return "heldout"
    if name in TRAIN_NAMES:
        return "train"
    return "validation" if _stable_unit(f"name-split:{name}") < VALIDATION_NAME_FRACTION else "train"


def _generated_name(rng: random.Random, split: str) -> str:
    while True:
        name = generate_name(rng)
        if name_split(name) == split:
            return name

PERSON_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Person",
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "pattern": "^[A-Z][a-z]+$"},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string", "enum": list(CITIES)},
    },
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}

JSON_TEMPLATES_NO_CITY = (
    "Make a JSON record for a person named {name} aged {age}.",
    "Create a JSON object for a person called {name}, age {age}.",
    "Write a JSON record for {name}, who is {age} years old.",
    "Give me a person record in JSON: name {name}, age {age}.",
)
JSON_TEMPLATES_CITY = (
    "Make a JSON record for a person named {name} aged {age} who lives in {city}.",
    "Create a JSON object for {name}, age {age}, from {city}.",
    "Write a JSON record for {name}, who is {age} years old and lives in {city}.",
    "Give me a person record in JSON: name {name}, age {age}, city {city}.",
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
                "category": 0.13, "repeat": 0.65}
# "Repeat after me" with a generated name: the plainest copy from the prompt (the answer's first token
# is the copied one), which the JSON records need for their names, ages and cities.
REPEAT_TEMPLATES = ("Repeat after me: {w}.", "Repeat the name {w}.", "Write the name {w}.", "Echo {w}.")
REPEAT = "repeat"
WORD_PATTERN = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class Example:
    """One chat exchange. ``answers`` lists every right answer (several for "name a fruit")."""

    task: str  # "short" or "json"
    kind: str  # the sub-task: "arithmetic", "opposite", ..., "person"
    prompt: str
    answer: str  # the target text the model is trained on
    answers: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


@dataclass(frozen=True)
class Corpus:
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


def _stable_unit(text: str) -> float:
    """A number in [0, 1) from ``text``, the same on every machine and Python (no ``hash()`` salt)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def _heldout_phrasing(fact: _Fact) -> int | None:
    """The index of the phrasing this fact loses to the held-out split, if any."""
    if len(fact.prompts) < 2 or _stable_unit(f"heldout:{fact.kind}:{fact.key}") >= HELDOUT_FRACTION:
        return None
    return int(_stable_unit(f"phrasing:{fact.kind}:{fact.key}") * len(fact.prompts))


def short_prompts(split: str) -> list[tuple[_Fact, str]]:
    """Every (fact, prompt) pair of a split (``"train"`` or ``"heldout"``), in a fixed order."""
    pairs = []
    for fact in _facts():
        held = _heldout_phrasing(fact)
        for index, prompt in enumerate(fact.prompts):
            if (index == held) == (split == "heldout"):
                pairs.append((fact, prompt))
    return pairs


# -- sampling examples ------------------------------------------------------------------------------


def person_record(name: str, age: int, city: str) -> str:
    """The target JSON text: keys in schema order, one space after ``:`` and ``,`` (``json.dumps``)."""
    return json.dumps({"name": name, "age": age, "city": city})


def _person_example(rng: random.Random, names: Sequence[str]) -> Example:
    return _person_record_example(rng, rng.choice(names))


def _training_person_example(rng: random.Random) -> Example:
    if rng.random() < GENERATED_NAME_FRACTION:
        return _person_record_example(rng, _generated_name(rng, "train"))
    return _person_example(rng, TRAIN_NAMES)


def _person_record_example(rng: random.Random, name: str) -> Example:
    age, city = rng.choice(AGES), rng.choice(CITIES)
    if rng.random() < 0.5:
        prompt = rng.choice(JSON_TEMPLATES_CITY).format(name=name, age=age, city=city)
        return Example(JSON, "person", prompt, person_record(name, age, city), (person_record(name, age, city),))
    # The prompt leaves the city open: the target names a random one, and any city of the schema is right.
    prompt = rng.choice(JSON_TEMPLATES_NO_CITY).format(name=name, age=age)
    answers = tuple(person_record(name, age, other) for other in CITIES)
    return Example(JSON, "person", prompt, person_record(name, age, city), answers)


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


class TrainingStream:
    """An endless, seeded stream of training examples (``json_fraction`` of them JSON records).

    Its position can be saved and restored (:meth:`getstate` / :meth:`setstate`), so an interrupted
    training run resumes on exactly the examples it would have seen."""

    def __init__(self, seed: int = 0, json_fraction: float = 0.5) -> None:
        self._rng = random.Random(seed)
        self._json_fraction = json_fraction
        by_kind: dict[str, list[tuple[_Fact, str]]] = {}
        for fact, prompt in short_prompts("train"):
            by_kind.setdefault(fact.kind, []).append((fact, prompt))
        self._by_kind = by_kind
        self._kinds = [*sorted(by_kind), REPEAT]
        self._weights = [KIND_WEIGHTS[kind] for kind in self._kinds]

    def __iter__(self) -> TrainingStream:
        return self

    def __next__(self) -> Example:
        rng = self._rng
        if rng.random() < self._json_fraction:
            return _training_person_example(rng)
        kind = rng.choices(self._kinds, self._weights)[0]
        if kind == REPEAT:
            return _repeat_example(rng, _generated_name(rng, "train"))
        return _short_example(rng, self._by_kind[kind])

    def take(self, count: int) -> list[Example]:
        return [next(self) for _ in range(count)]

    def getstate(self) -> object:
        return self._rng.getstate()

    def setstate(self, state: object) -> None:
        self._rng.setstate(state)  # type: ignore[arg-type]


def heldout_examples(task: str, count: int, seed: int = 1234) -> list[Example]:
    """``count`` distinct held-out prompts of one task format, the same for a given seed."""
    rng = random.Random(f"{seed}:{task}")
    if task == SHORT:
        pairs = short_prompts("heldout")
        rng.shuffle(pairs)
        if count > len(pairs):
            raise ValueError(f"only {len(pairs)} held-out short prompts exist, {count} asked for")
        return [_short_example(random.Random(i), [pair]) for i, pair in enumerate(pairs[:count])]
    if task == JSON:
        seen: set[str] = set()
        examples = []
        while len(examples) < count:
            example = _person_example(rng, HELDOUT_NAMES)
            if example.prompt not in seen:
                seen.add(example.prompt)
                examples.append(example)
        return examples
    raise ValueError(f"unknown task {task!r}; expected one of {TASK_FORMATS}")


def validation_examples(count: int, seed: int = 4321) -> list[Example]:
    """``count`` JSON prompts naming generated validation-split people: never trained on, and apart
    from the eval's held-out set, so choosing a checkpoint on them leaves the eval untouched."""
    rng = random.Random(f"{seed}:validation")
    return [_person_record_example(rng, _generated_name(rng, "validation")) for _ in range(count)]


def build_corpus(train_size: int = 20_000, heldout_size: int = 100, seed: int = 0) -> Corpus:
    """A fixed training sample and held-out set (``heldout_size`` per task format)."""
    train = tuple(TrainingStream(seed).take(train_size))
    heldout = tuple(heldout_examples(SHORT, heldout_size, seed + 1234) + heldout_examples(JSON, heldout_size, seed + 1234))
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
    texts.extend(JSON_TEMPLATES_CITY + JSON_TEMPLATES_NO_CITY + REPEAT_TEMPLATES)
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
    parser.add_argument("--out", type=Path, required=True, help="directory for train.jsonl, heldout.jsonl, schema.json")
    parser.add_argument("--train-size", type=int, default=20_000)
    parser.add_argument("--heldout-size", type=int, default=100, help="held-out prompts per task format")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    corpus = build_corpus(args.train_size, args.heldout_size, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    n_train = write_jsonl(args.out / "train.jsonl", corpus.train)
    n_held = write_jsonl(args.out / "heldout.jsonl", corpus.heldout)
    (args.out / "schema.json").write_text(json.dumps(PERSON_SCHEMA, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {n_train} training and {n_held} held-out examples to {args.out}")


if __name__ == "__main__":
    main()
