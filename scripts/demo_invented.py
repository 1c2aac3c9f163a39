"""JSON records the model fills in itself, for the demo corpus: a request that copies nothing ("Tell me a
joke about ferries.") and a schema with described fields, stated in a system turn as the adapters state it;
the target fills every field with short text about the request's topic, numbers and booleans of the
field's type.

These teach a model that otherwise only copies to answer a structured-output request whose values are not
in the prompt (LangChain's ``with_structured_output`` examples and its standard tests ask for a joke) with a
record of the requested shape rather than with nothing. The texts are templates: valid, on topic, not
witty.

LangChain's standard structured-output tests ask "Tell me a joke about cats." with a ``Joke`` schema of their
own wording; neither the topic nor that wording is drawn here (a test checks it), so those tests measure a
request the model has not seen.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import demo_values
from demo_example import Example, pydantic_schema

TOPICS = ("dogs", "ferries", "coffee", "trains", "the sea", "bicycles", "winter", "pizza", "robots",
          "libraries", "gardens", "clocks", "umbrellas", "mountains", "penguins", "bakeries", "rain", "tea",
          "the moon", "football", "owls", "pirates", "spreadsheets", "dentists", "cheese", "kites", "buses")  # fmt: skip


@dataclass(frozen=True)
class Field:
    key: str
    kind: str  # JSON type
    description: str
    texts: tuple[str, ...] = ()  # templates over {t} (the topic), for a string field


@dataclass(frozen=True)
class OpenRecord:
    """A record kind: its title and docstring, its fields, and requests (over ``{t}``) for one."""

    title: str
    doc: str
    fields: tuple[Field, ...]
    requests: tuple[str, ...]


RECORDS = (
    OpenRecord("Joke", "A joke for the user.", (
        Field("setup", "string", "the line that sets the joke up", ("Why did the {t} cross the road?",
              "What do you call {t} that sing?", "Why are {t} never late?", "What did the {t} say to the baker?")),
        Field("punchline", "string", "the line that answers it", ("To get to the other side.",
              "A choir of {t}!", "They always plan ahead.", "Nothing, it just smiled.", "Because of {t}, of course."))),
        ("Tell me a joke about {t}.", "Make me laugh with a joke about {t}.", "A joke about {t}, please.",
         "Do you know a joke about {t}?")),
    OpenRecord("Riddle", "A riddle and its answer.", (
        Field("question", "string", "the riddle", ("What has {t} but never tires?", "What is full of {t} yet empty?")),
        Field("answer", "string", "the solution", ("A story about {t}.", "A picture of {t}."))),
        ("Give me a riddle about {t}.", "I want a riddle on {t}.")),
    OpenRecord("Story", "The start of a short story.", (
        Field("title", "string", "title of the story", ("The Last of the {T}", "A Year of {T}", "{T} at Midnight")),
        Field("opening", "string", "first sentence", ("Nobody in the village had ever seen {t} like these.",
              "It began, as most things did, with {t}."))),
        ("Start a short story about {t}.", "Write the opening of a story about {t}.")),
    OpenRecord("Product", "An invented product.", (
        Field("name", "string", "product name", ("{T} Pro", "Smart {T}", "{T} Deluxe")),
        Field("slogan", "string", "one-line slogan", ("{T}, only better.", "Life is short. Buy {t}.")),
        Field("price", "number", "price in euros")),
        ("Invent a product for people who love {t}.", "Come up with a product about {t}.")),
    OpenRecord("Poem", "A short poem.", (
        Field("title", "string", "title of the poem", ("Ode to {T}", "{T}", "Song of {T}")),
        Field("lines", "integer", "number of lines"),
        Field("first_line", "string", "the first line", ("Oh {t}, how quietly you stay,", "I dreamt of {t} last night,"))),
        ("Write a poem about {t}.", "A little poem on {t}, please.")),
    OpenRecord("Fact", "A fact about a subject.", (
        Field("subject", "string", "what the fact is about", ("{T}",)),
        Field("fact", "string", "the fact", ("People have written about {t} for centuries.", "There are many kinds of {t}.")),
        Field("surprising", "boolean", "whether it surprises most people")),
        ("Tell me a fact about {t}.", "Share something interesting about {t}.")),
    OpenRecord("Review", "A short review.", (
        Field("summary", "string", "the review in a sentence", ("A fine day out among {t}.", "Too many {t}, too little time.")),
        Field("stars", "integer", "rating from 1 to 5")),
        ("Review a museum about {t}.", "Write a short review of a film about {t}.")),
)  # fmt: skip
"""The record kinds: everyday structured-output requests whose values the model must supply itself."""


def _value(rng: random.Random, field: Field, topic: str) -> object:
    if field.kind == "integer":
        return rng.randint(1, 5) if field.key == "stars" else rng.randint(2, 24)
    if field.kind == "number":
        return round(rng.uniform(5, 500), 2)
    if field.kind == "boolean":
        return rng.random() < 0.5
    return rng.choice(field.texts).format(t=topic, T=topic[:1].upper() + topic[1:])


def _schema(rng: random.Random, record: OpenRecord) -> dict:
    """The record's schema as pydantic writes a model's (titles on the fields) or as LangChain converts a
    TypedDict or a plain model (``title`` and ``description`` first, no field titles)."""
    if rng.random() < 0.5:
        return pydantic_schema(record.title, [(f.key, f.kind, f.description) for f in record.fields], record.doc)
    properties = {f.key: {"description": f.description, "type": f.kind} for f in record.fields}
    return {"title": record.title, "description": record.doc, "type": "object", "properties": properties,
            "required": [f.key for f in record.fields]}  # fmt: skip


def invented_record_example(rng: random.Random, instruction: Callable[[dict], str], task: str = "json") -> Example:
    """A request for a record the model fills in itself; ``instruction(schema)`` is the system line that
    states the schema (the adapters' :func:`~diffgemma_adapters.formats.schema_instruction`)."""
    record = rng.choice(RECORDS)
    topic = rng.choice(TOPICS) if rng.random() < 0.7 else demo_values.word(rng)
    values = {field.key: _value(rng, field, topic) for field in record.fields}
    answer = json.dumps(values, ensure_ascii=False)
    prompt = rng.choice(record.requests).format(t=topic)
    return Example(task, "invented", prompt, answer, (answer,), system=instruction(_schema(rng, record)))


def field_keys(records: Sequence[OpenRecord] = RECORDS) -> set[str]:
    return {field.key for record in records for field in record.fields}
