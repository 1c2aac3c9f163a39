"""Made-up values of many shapes for the demo corpus: names, places, words, numbers.

The demo model must copy whatever a prompt names - a Polish first name, a three-word city, an invented
brand, a Chinese company name, a price - so the training values are generated here, on the spot, from
small syllable and script tables: almost no value is seen twice, and copying it from the prompt is the only
way to fit the target. Nothing here is a list of real names or places; the evaluation's hand-written lists
(:mod:`demo_eval_sets`) are a separate source, and :func:`is_reserved` keeps every string of them out of
training.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterable

ONSETS = ("b", "br", "c", "ch", "d", "dr", "f", "g", "gr", "h", "j", "k", "kl", "l", "m", "n", "p", "pr",
          "r", "s", "sh", "st", "t", "th", "tr", "v", "w", "z", "", "", "y", "qu", "sk", "pl", "x", "ts")  # fmt: skip
VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ea", "ie", "ou", "y", "ee", "oa", "au")
CODAS = ("", "", "", "n", "r", "l", "s", "m", "th", "nd", "rt", "x", "k", "ll", "ck", "sz", "ng", "v", "j")
ACCENTED = {"a": "áàâäãå", "e": "éèêë", "i": "íìîï", "o": "óòôöõø", "u": "úùûü", "c": "çč", "n": "ñń",
            "s": "šś", "z": "žź", "l": "ł", "g": "ğ", "y": "ý"}  # fmt: skip
SCRIPTS = (
    "абвгдежзиклмнопрстуфхцчшыэюя",  # Cyrillic
    "αβγδεζηθικλμνξοπρστυφχψω",  # Greek
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进",  # CJK
    "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわん",  # kana
)  # fmt: skip
PLACE_WORDS = ("Port", "San", "Saint", "New", "Old", "Upper", "Lower", "North", "South", "East", "West", "Bad",
               "Santa", "Fort", "Mount", "Lake", "Great", "Little", "El", "La", "Le", "Al", "Nova", "Ban")  # fmt: skip
PLACE_LINKS = ("de", "del", "da", "on", "upon", "am", "an der", "sur", "la")
RESERVED: set[str] = set()
"""Strings the generator never returns (filled by :mod:`demo_eval_sets` with its hand-written values)."""


def reserve(values: object) -> None:
    """Keep these strings (and their lower-case forms) out of every generated value."""
    for value in values:  # type: ignore[attr-defined]
        RESERVED.add(str(value).lower())


def is_reserved(text: str) -> bool:
    return text.lower() in RESERVED


def value_pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive pattern matching any of ``values`` as whole words (values without a letter,
    such as bare numbers, are left out: they occur everywhere)."""
    wanted = sorted({v for v in values if any(c.isalpha() for c in v)}, key=len, reverse=True)
    if not wanted:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(v) for v in wanted) + r")(?!\w)", re.IGNORECASE)


_reserved_pattern: tuple[int, re.Pattern[str] | None] = (0, None)  # (len(RESERVED) it was built for, pattern)


def holds_reserved(text: str) -> bool:
    """Whether ``text`` holds a reserved string as a whole word (inside a made-up place such as "Little
    Pune", or a sentence such as "… every October."): the test the contamination check applies to a whole
    training example."""
    global _reserved_pattern
    if _reserved_pattern[0] != len(RESERVED):
        _reserved_pattern = (len(RESERVED), value_pattern(RESERVED))
    pattern = _reserved_pattern[1]
    return pattern is not None and pattern.search(text) is not None


def _accent(word: str, rng: random.Random) -> str:
    letters = list(word)
    for _ in range(rng.choice((1, 1, 2))):
        index = rng.randrange(len(letters))
        options = ACCENTED.get(letters[index].lower())
        if options:
            letters[index] = rng.choice(options)
    return "".join(letters)


def syllable_word(rng: random.Random, syllables: int | None = None) -> str:
    count = syllables or rng.choice((1, 2, 2, 2, 3, 3, 4))
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(count)) + rng.choice(CODAS)


def name(rng: random.Random) -> str:
    """A made-up personal name of any shape: pronounceable, accented, random letters, hyphenated, two
    words, or in another script."""
    while True:
        roll = rng.random()
        if roll < 0.45:
            text = syllable_word(rng).capitalize()
        elif roll < 0.60:
            text = _accent(syllable_word(rng), rng).capitalize()
        elif roll < 0.72:
            text = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 10))).capitalize()
        elif roll < 0.80:
            text = f"{syllable_word(rng, 2).capitalize()}-{syllable_word(rng, 2).capitalize()}"
        elif roll < 0.90:
            text = f"{syllable_word(rng).capitalize()} {syllable_word(rng).capitalize()}"
        elif roll < 0.93:
            text = f"{rng.choice(('O', 'D', 'L'))}'{syllable_word(rng, 2).capitalize()}"
        else:
            script = rng.choice(SCRIPTS)
            text = "".join(rng.choice(script) for _ in range(rng.randint(2, 5)))
            text = text[0].upper() + text[1:]
        if 2 <= len(text) <= 24 and not is_reserved(text):
            return text


def place(rng: random.Random) -> str:
    """A made-up place name: one word, or several (``Port Quelmar``, ``Vathe de la Sorn``)."""
    while True:
        roll = rng.random()
        if roll < 0.5:
            text = syllable_word(rng).capitalize()
            if rng.random() < 0.2:
                text = _accent(text, rng)
        elif roll < 0.7:
            text = f"{rng.choice(PLACE_WORDS)} {syllable_word(rng).capitalize()}"
        elif roll < 0.8:
            text = f"{syllable_word(rng).capitalize()} {rng.choice(PLACE_LINKS)} {syllable_word(rng).capitalize()}"
        elif roll < 0.9:
            text = f"{syllable_word(rng).capitalize()} {syllable_word(rng).capitalize()}"
        elif roll < 0.95:
            text = f"{syllable_word(rng, 2).capitalize()}-{syllable_word(rng).lower()}"
        else:
            script = rng.choice(SCRIPTS)
            text = "".join(rng.choice(script) for _ in range(rng.randint(2, 4)))
        if 2 <= len(text) <= 30 and not is_reserved(text):
            return text


def word(rng: random.Random) -> str:
    """A made-up lower-case word (a product, a thing, an invented term)."""
    while True:
        text = syllable_word(rng, rng.choice((1, 2, 2, 3)))
        if len(text) >= 3 and not is_reserved(text):
            return text


def phrase(rng: random.Random, low: int = 1, high: int = 4) -> str:
    """A few made-up words: a value of a free-text argument or the object of a passage's sentence."""
    return " ".join(word(rng) for _ in range(rng.randint(low, high)))


def number(rng: random.Random) -> int:
    return rng.choice((rng.randint(0, 9), rng.randint(10, 99), rng.randint(100, 999), rng.randint(1000, 99999)))


def decimal(rng: random.Random) -> float:
    return round(rng.uniform(0, 1000), rng.choice((1, 2)))


def year(rng: random.Random) -> int:
    return rng.randint(1800, 2030)


def any_value(rng: random.Random) -> str:
    """A string value of any shape (what a free-text tool argument or JSON field might hold)."""
    kind = rng.random()
    if kind < 0.3:
        return name(rng)
    if kind < 0.5:
        return place(rng)
    if kind < 0.75:
        return phrase(rng)
    if kind < 0.85:
        return str(number(rng))
    if kind < 0.92:
        return f"{word(rng)}@{word(rng)}.{rng.choice(('com', 'org', 'net', 'io'))}"
    return f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {year(rng)}"


MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")  # fmt: skip
