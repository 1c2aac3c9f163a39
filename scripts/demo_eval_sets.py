"""Hand-written evaluation sets for the demo model: a source apart from the training generator.

The training corpus (:mod:`demo_data`, :mod:`demo_values`) makes its names, places, tools and passages up
from syllable tables; these lists were written by hand for the evaluation - ordinary names and cities from
many countries, tools and requests as people write them, short documents with questions. Every string here
is reserved (:func:`demo_values.reserve`), so the generator never produces it in training.
"""

from __future__ import annotations

import demo_values

PEOPLE = (
    ("Tomasz", "Riga"), ("Pedro", "Porto"), ("Yuki", "Kyoto"), ("Maren", "Bergen"), ("Tariq", "Amman"),
    ("Ilse", "Graz"), ("Chidi", "Lagos"), ("Ana", "Quito"), ("Linh", "Hanoi"), ("Sione", "Apia"),
    ("Olga", "Minsk"), ("Kwame", "Accra"), ("Aroha", "Napier"), ("Lars", "Aarhus"), ("Fatima", "Rabat"),
    ("Mateo", "Cusco"), ("Priya", "Pune"), ("Emre", "Izmir"), ("Noa", "Haifa"), ("Bjorn", "Umea"),
    ("Siobhán", "Galway"), ("Jürgen", "Münster"), ("Zoë", "Lyon"), ("Søren", "Odense"), ("Łucja", "Kraków"),
    ("Ngozi", "Enugu"), ("Kenji", "Sapporo"), ("Aleksandr", "Novosibirsk"), ("Ayşe", "Bursa"),
    ("Giorgos", "Thessaloniki"), ("Oluwaseun", "Ibadan"), ("Thandiwe", "Durban"), ("Mei Ling", "Kuala Lumpur"),
    ("João", "São Paulo"), ("Nguyen Van An", "Ho Chi Minh City"), ("Marie-Claire", "Rio de Janeiro"),
    ("Rashid", "Addis Ababa"), ("Carmen", "Buenos Aires"), ("Dmitri", "Saint Petersburg"), ("Ingrid", "Reykjavík"),
)  # fmt: skip
"""(name, city) pairs chosen by hand: short and long, accented, hyphenated, several words."""

demo_values.reserve(name for name, _ in PEOPLE)
demo_values.reserve(city for _, city in PEOPLE)
