"""Answers from a retrieved context (extractive RAG) for the demo corpus: passages of generated
sentences, a question that reuses one sentence's wording with its answer left out (:data:`RAG_RELATIONS`)
or turns the sentence around (:data:`PROSE_RELATIONS`: "X was designed by Y" - "Who designed X?"), and
the missing span as the target; in our own question-answering frames or in the RAG frameworks' own prompts."""

from __future__ import annotations

import functools
import json
import os
import random
import string
from collections.abc import Callable
from pathlib import Path

import demo_values
from demo_example import DAYS, Example

RAG_RELATIONS = (
    # (passage sentence, question, answer) over slots: P person, C place, L land, O organisation, N number,
    # Y year, W thing, V verb phrase object, J job, D day
    ("{P} lives in {C}.", "Where does {P} live?", "{C}."),
    ("{P} was born in {Y}.", "When was {P} born?", "{Y}."),
    ("The capital of {L} is {C}.", "What is the capital of {L}?", "{C}."),
    ("{P} works as a {J}.", "What does {P} work as?", "A {J}."),
    ("The {W} costs {N} dollars.", "How much does the {W} cost?", "{N} dollars."),
    ("{O} was founded by {P}.", "Who founded {O}?", "{P}."),
    ("{O} was founded in {Y}.", "When was {O} founded?", "{Y}."),
    ("{O} has {N} employees.", "How many employees does {O} have?", "{N}."),
    ("The {W} is made of {V}.", "What is the {W} made of?", "{V}."),
    ("The {W} stores {V}.", "What does the {W} store?", "{V}."),
    ("The {W} batches {V}.", "What does the {W} batch?", "{V}."),
    ("The {W} checks {V}.", "What does the {W} check?", "{V}."),
    ("The {W} writes {V}.", "What does the {W} write?", "{V}."),
    ("The {W} runs on {V}.", "What does the {W} run on?", "{V}."),
    ("{P}'s favourite food is {V}.", "What is {P}'s favourite food?", "{V}."),
    ("The meeting with {P} is on {D}.", "When is the meeting with {P}?", "On {D}."),
    ("{O} is based in {C}.", "Where is {O} based?", "{C}."),
    ("The river {W} flows through {C}.", "Which city does the river {W} flow through?", "{C}."),
    ("{P} wrote the book {V}.", "Which book did {P} write?", "{V}."),
    ("The password for {O} is {K}.", "What is the password for {O}?", "{K}."),
)  # fmt: skip
PROSE_RELATIONS = (
    # prose about named things (E: "the Orvel Bridge"), with questions that turn the sentence around;
    # slots: E entity, G organisation, M material, S street, R role, A animal, X event, H month, U unit
    ("{E} was designed by {P}.", "Who designed {E}?", "{P}."),
    ("{P} designed {E}.", "Who was the designer of {E}?", "{P}."),
    ("{E} is owned by {P}.", "Who owns {E}?", "{P}."),
    ("{P} owns {E}.", "Who is the owner of {E}?", "{P}."),
    ("{E} opened in {Y}.", "When did {E} open?", "{Y}."),
    ("{E} was built in {Y}.", "In which year was {E} built?", "{Y}."),
    ("{E} is {N} {U} long.", "How long is {E}?", "{N} {U}."),
    ("{E} weighs {N} kilograms.", "How much does {E} weigh?", "{N} kilograms."),
    ("{E} stands on {S} Street.", "On which street is {E}?", "{S} Street."),
    ("{E} is made of {M}.", "What material is {E} made of?", "{M}."),
    ("{P} leads {G}.", "Who is the head of {G}?", "{P}."),
    ("The head of {G} is {P}.", "Who leads {G}?", "{P}."),
    ("The {R} of {G} is {P}.", "Who is the {R} of {G}?", "{P}."),
    ("{G} was formed in {C} in {Y}.", "Where was {G} formed?", "{C}."),
    ("{G} was started in {Y} by a group of friends.", "In which year was {G} started?", "{Y}."),
    ("{G} holds its {X} every {H}.", "When does {G} hold its {X}?", "Every {H}."),
    ("Every {D}, {G} runs a {X}.", "On which day does {G} run a {X}?", "{D}."),
    ("The {A} that lives at {E} is called {T}.", "What is the name of the {A} at {E}?", "{T}."),
    ("{E} can be reached by ferry from {C}.", "From where does the ferry to {E} leave?", "{C}."),
    ("The first {R} of {G} was {P}.", "Who was the first {R} of {G}?", "{P}."),
    ("{G} counted {N} members last year.", "How many members did {G} count last year?", "{N}."),
    ("Tickets for {E} cost {N} euros.", "What does a ticket for {E} cost?", "{N} euros."),
    ("{E} lies {N} kilometres north of {C}.", "How far north of {C} is {E}?", "{N} kilometres."),
    ("{P} is the best-known member of {G}.", "Who is the best-known member of {G}?", "{P}."),
)  # fmt: skip
STRUCTURES = ("Bridge", "Tower", "Museum", "Library", "Theatre", "Station", "Lighthouse", "Market", "Hall", "Gallery",
              "Observatory", "Mill", "Chapel", "Stadium", "Harbour", "Castle", "Garden", "Dam")  # fmt: skip
GROUPS = ("Society", "Quartet", "Club", "Institute", "Choir", "Trust", "Cooperative", "Orchestra", "Foundation", "League")
MATERIALS = ("oak", "granite", "steel", "glass", "red brick", "cedar", "limestone", "bamboo", "copper", "marble", "pine")
ROLES = ("chair", "treasurer", "director", "secretary", "conductor", "captain", "founder", "editor", "coach")
ANIMALS = ("cat", "dog", "parrot", "goat", "horse", "owl", "tortoise", "donkey")
EVENTS = ("fair", "festival", "open day", "reading club", "concert", "market", "race", "quiz night", "workshop")
LENGTH_UNITS = ("metres", "kilometres", "feet", "miles")
JOBS = ("teacher", "baker", "pilot", "nurse", "farmer", "painter", "doctor", "lawyer", "driver", "chef", "writer",
        "engineer", "tailor", "gardener", "miner", "sailor", "singer", "judge", "banker", "plumber")  # fmt: skip
RAG_FRAMES = (
    "Answer the question using the passages below.\n\n{context}\n\nQuestion: {question}",
    "{context}\n\nUsing only the text above, answer: {question}",
    "Context:\n{context}\n\nQuestion: {question}\nAnswer:",
    "Here are some documents.\n\n{context}\n\n{question}",
    "Read this.\n---\n{context}\n---\n{question}",
)  # fmt: skip


def _slots(rng: random.Random) -> dict[str, str]:
    return {
        "P": demo_values.name(rng), "C": demo_values.place(rng), "L": demo_values.place(rng),
        "O": demo_values.word(rng).capitalize() + rng.choice(("", " Ltd", " Group", " Labs", " & Co")),
        "N": str(demo_values.number(rng)), "Y": str(demo_values.year(rng)), "W": demo_values.word(rng),
        "V": demo_values.phrase(rng, 1, 4), "J": rng.choice(JOBS), "D": rng.choice(DAYS),
        "K": "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(rng.randint(4, 10))),
        "E": f"the {demo_values.syllable_word(rng).capitalize()} {rng.choice(STRUCTURES)}",
        "G": f"the {demo_values.place(rng)} {rng.choice(GROUPS)}", "M": rng.choice(MATERIALS),
        "S": demo_values.syllable_word(rng).capitalize(), "R": rng.choice(ROLES), "A": rng.choice(ANIMALS),
        "X": rng.choice(EVENTS), "H": rng.choice(demo_values.MONTHS), "U": rng.choice(LENGTH_UNITS),
        "T": demo_values.name(rng),
    }  # fmt: skip


FRAMEWORK_PROMPTS_ENV = "DIFFGEMMA_DEMO_FRAMEWORK_PROMPTS"
"""A JSON file of the frameworks' QA prompts (:func:`export_framework_prompts`), for a training machine
without the frameworks installed (the GPU machine the shipped checkpoint was trained on has none)."""
_CONTEXT, _QUESTION = "\x00context\x00", "\x00question\x00"


def framework_rag_frames() -> list[Callable[[str, str], tuple[str, str]]]:
    """The (system, user) text-QA prompts of the RAG frameworks installed here (LlamaIndex's default chat QA
    prompt), read from the framework itself so the model is trained on what it actually sends; where it is
    not installed, from the file ``$DIFFGEMMA_DEMO_FRAMEWORK_PROMPTS`` names, if any."""
    return [functools.partial(_fill_frame, system, user) for system, user in framework_prompts().values()]


@functools.cache
def framework_prompts() -> dict[str, tuple[str, str]]:
    """``{framework: (system, user)}`` with placeholders for the context and the question."""
    try:
        from llama_index.core.prompts.chat_prompts import CHAT_TEXT_QA_PROMPT
    except ImportError:
        path = os.environ.get(FRAMEWORK_PROMPTS_ENV)
        return _read_prompts(Path(path)) if path else {}
    messages = CHAT_TEXT_QA_PROMPT.format_messages(context_str=_CONTEXT, query_str=_QUESTION)
    system = "\n".join(m.content for m in messages if m.role.value == "system")
    user = "\n".join(m.content for m in messages if m.role.value == "user")
    return {"llamaindex": (system, user)}


def _read_prompts(path: Path) -> dict[str, tuple[str, str]]:
    try:
        prompts = json.loads(path.read_text(encoding="utf-8"))
        return {name: (system, user) for name, (system, user) in prompts.items()}
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"${FRAMEWORK_PROMPTS_ENV}={path} is not a file written by "
                         f"`demo_data.py --export-framework-prompts`: {error}") from None  # fmt: skip


def export_framework_prompts(path: Path) -> int:
    """Write :func:`framework_prompts` (read from the frameworks installed here) to ``path``."""
    prompts = framework_prompts()
    path.write_text(json.dumps(prompts, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return len(prompts)


def _fill_frame(system: str, user: str, context: str, question: str) -> tuple[str, str]:
    def fill(text: str) -> str:
        return text.replace(_CONTEXT, context).replace(_QUESTION, question)

    return fill(system), fill(user)


RELATIONS = RAG_RELATIONS + PROSE_RELATIONS
SHARED_SLOTS = "POWEG"  # a distractor about the same entity keeps these


def _capitalised(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]


def rag_example(rng: random.Random, passages: int | None = None) -> Example:
    """3-5 short passages (or ``passages``) and a question one sentence answers; the answer copies its span."""
    count = passages or rng.randint(3, 5)
    sentences: list[str] = []
    target = rng.randrange(len(RELATIONS))
    slots = _slots(rng)
    sentence, question, answer = (part.format(**slots) for part in RELATIONS[target])
    sentence, question = _capitalised(sentence), _capitalised(question)
    sentences.append(sentence)
    while len(sentences) < count * 2:
        other = rng.randrange(len(RELATIONS))
        distractor_slots = _slots(rng)
        if rng.random() < 0.3:  # the same relation about someone else: the question's entity must match
            other = target
        if rng.random() < 0.3:  # or something else about the same entity
            distractor_slots.update({k: slots[k] for k in SHARED_SLOTS})
            if other == target:
                continue
        sentences.append(_capitalised(RELATIONS[other][0].format(**distractor_slots)))
    rng.shuffle(sentences)
    chunks = [" ".join(sentences[i : i + 2]) for i in range(0, len(sentences), 2)]
    context = "\n\n".join(chunks)
    frames = framework_rag_frames()
    if frames and rng.random() < 0.45:
        system, prompt = rng.choice(frames)(context, question)
    else:
        system, prompt = "", rng.choice(RAG_FRAMES).format(context=context, question=question)
    return Example("rag", "span" if passages is None else "long", prompt, answer, (answer,), system=system)
