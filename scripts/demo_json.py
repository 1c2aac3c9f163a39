"""JSON records for the demo corpus: person records (``{"name": …, "age": …, "city": …}``) asked for in
many phrasings, records with made-up keys and types, and (:mod:`demo_invented`) records the model fills in
itself; the schema is often stated in a system turn as the adapters state it, in the forms pydantic and
LangChain write. :func:`training_json_example` draws one; :data:`HELDOUT_NAMES` are reserved for the eval.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Sequence

from diffgemma_adapters.formats import schema_instruction

import demo_values
from demo_example import Example, pydantic_schema, spoken, stable_unit
from demo_invented import invented_record_example

JSON = "json"

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
demo_values.reserve(HELDOUT_NAMES)
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
    return "validation" if stable_unit(f"name-split:{name}") < VALIDATION_NAME_FRACTION else "train"


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
    "{name} is {age}. Write that as a JSON object.",
    "Name: {name}. Age: {age}. Return JSON.",
)
JSON_TEMPLATES_CITY = (
    "Make a JSON record for a person named {name} aged {age} who lives in {city}.",
    "Create a JSON object for {name}, age {age}, from {city}.",
    "Write a JSON record for {name}, who is {age} years old and lives in {city}.",
    "Give me a person record in JSON: name {name}, age {age}, city {city}.",
)
"""The first phrasings (the eval's "training phrasings" set asks in these)."""
JSON_FREE_PHRASINGS_CITY = (
    "{name}, {age}, lives in {city}. I need that as JSON.",
    "Name: {name}. Age: {age}. City: {city}. Return it as a JSON object.",
    "Could you write a JSON record? {name} is {age} years old and comes from {city}.",
    "Please give me JSON for {name} ({age}) of {city}.",
    "Record as JSON: {name} is {age}, from {city}.",
    "JSON object please - {name}, aged {age}, living in {city}.",
    "Here is a person: {name}, age {age}, city {city}. Format it as JSON.",
    "Person details: name {name}, age {age}, town {city}. Output JSON.",
    "Store {name} ({age}, {city}) as a JSON record.",
    "My friend {name} is {age} and resides in {city}. Make a JSON object of that.",
    "{name} - {age} years - {city}. JSON, please.",
    "Give me {name}'s details as JSON: {age} years old, home is {city}.",
)
"""Freer phrasings of the same request (trained beside :data:`JSON_TEMPLATES_CITY`)."""
JSON_PHRASINGS_CITY = JSON_TEMPLATES_CITY + JSON_FREE_PHRASINGS_CITY



OPEN_CITIES = CITIES  # a prompt that names no city gets one of these in the target (any is right)


def _pydantic_style(title: str, fields: Sequence[tuple[str, str]], rng: random.Random | None = None) -> dict:
    """A schema as pydantic writes one (``Model.model_json_schema()``): titles on the object and fields, and
    sometimes descriptions (a docstring, ``Field(description=...)``)."""
    described = rng is not None and rng.random() < 0.4
    described_fields = [(key, kind, f"the {key.replace('_', ' ')} of the {title.lower()}" if described else "")
                        for key, kind in fields]  # fmt: skip
    return pydantic_schema(title, described_fields, f"A {title.lower()} record." if described else "")


def _plain_style(fields: Sequence[tuple[str, str]], title: str = "") -> dict:
    """A hand-written schema (``type`` first), or - for a fixed half of the titles, chosen by hash so the
    random stream is unchanged - the form LangChain's ``convert_to_json_schema`` gives a TypedDict or a
    JSON-schema dict (``title`` and ``description`` first, no field titles)."""
    properties = {key: {"type": kind} for key, kind in fields}
    required = [key for key, _ in fields]
    if title and stable_unit(f"schema-style:{title}") < 0.5:
        return {"title": title, "description": "", "properties": properties, "required": required, "type": "object"}
    return {"type": "object", "properties": properties, "required": required}


def _record_schema(rng: random.Random, title: str, fields: Sequence[tuple[str, str]]) -> dict:
    return _pydantic_style(title, fields, rng) if rng.random() < 0.6 else _plain_style(fields, title)


def person_fields_example(rng: random.Random, name: str, city: str | None, age: int) -> Example:
    """A person record; the prompt names the city or leaves it open (then any city of OPEN_CITIES is right);
    half the time the schema is given as the adapters give it (a system turn)."""
    if city is not None:
        prompt = rng.choice(JSON_PHRASINGS_CITY).format(name=name, age=age, city=city)
        record = person_record(name, age, city)
        answers: tuple[str, ...] = (record,)
    else:
        prompt = rng.choice(JSON_TEMPLATES_NO_CITY).format(name=name, age=age)
        record = person_record(name, age, rng.choice(OPEN_CITIES))
        answers = tuple(person_record(name, age, other) for other in OPEN_CITIES)
    system = ""
    if rng.random() < 0.5:
        system = schema_instruction(_record_schema(rng, "Person", (("name", "string"), ("age", "integer"), ("city", "string"))))
    return Example(JSON, "person", prompt, record, answers, system=system)


RECORD_TEMPLATES = (
    "Make a JSON record with {pairs}.", "Create a JSON object: {pairs}.", "Return JSON with {pairs}.",
    "Give me a JSON object where {pairs}.", "Write {pairs} as a JSON record.",
    "Return a JSON object with the keys {keys}: {pairs}.",
)  # fmt: skip
FIELD_KINDS = ("string", "string", "string", "integer", "number", "boolean")


def field_value(rng: random.Random, kind: str) -> object:
    if kind == "integer":
        return demo_values.number(rng)
    if kind == "number":
        return demo_values.decimal(rng)
    if kind == "boolean":
        return rng.random() < 0.5
    return demo_values.any_value(rng)


def _record_example(rng: random.Random) -> Example:
    """A JSON record with generated keys, types and values; the schema (when given) supplies the keys."""
    count = rng.randint(1, 4)
    keys: list[str] = []
    while len(keys) < count:
        key = "_".join(demo_values.word(rng) for _ in range(rng.choice((1, 1, 2))))
        if key not in keys:
            keys.append(key)
    fields = [(key, rng.choice(FIELD_KINDS)) for key in keys]
    values = {key: field_value(rng, kind) for key, kind in fields}
    pairs_text = ", ".join(f"{key.replace('_', ' ')} {spoken(values[key])}" for key in keys)
    prompt = rng.choice(RECORD_TEMPLATES).format(pairs=pairs_text, keys=", ".join(repr(key) for key in keys))
    system = schema_instruction(_record_schema(rng, demo_values.word(rng).title(), fields)) if rng.random() < 0.7 else ""
    record = json.dumps(values, ensure_ascii=False)
    return Example(JSON, "record", prompt, record, (record,), system=system)



def person_record(name: str, age: int, city: str) -> str:
    """The target JSON text: keys in schema order, one space after ``:`` and ``,`` (``json.dumps``)."""
    return json.dumps({"name": name, "age": age, "city": city}, ensure_ascii=False)


def _person_example(rng: random.Random, names: Sequence[str]) -> Example:
    return _person_record_example(rng, rng.choice(names))


def _person_record_example(rng: random.Random, name: str) -> Example:
    age, city = rng.choice(AGES), rng.choice(CITIES)
    if rng.random() < 0.5:
        prompt = rng.choice(JSON_PHRASINGS_CITY).format(name=name, age=age, city=city)
        return Example(JSON, "person", prompt, person_record(name, age, city), (person_record(name, age, city),))
    # The prompt leaves the city open: the target names a random one, and any city of the schema is right.
    prompt = rng.choice(JSON_TEMPLATES_NO_CITY).format(name=name, age=age)
    answers = tuple(person_record(name, age, other) for other in CITIES)
    return Example(JSON, "person", prompt, person_record(name, age, city), answers)


INVENTED_FRACTION = 0.12  # of JSON examples: a record the model fills in itself (demo_invented); not trained yet


def training_json_example(rng: random.Random) -> Example:
    roll = rng.random()
    if roll < INVENTED_FRACTION:
        return invented_record_example(rng, schema_instruction)
    if roll < 0.4:
        return _record_example(rng)
    city = demo_values.place(rng) if rng.random() < 0.8 else None
    return person_fields_example(rng, demo_values.name(rng), city, rng.randint(0, 120))
