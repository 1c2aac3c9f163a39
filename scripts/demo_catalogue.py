"""Everyday tools for the demo corpus, asked for as people ask: real-word tool names, descriptions and
parameters over many domains, and requests in natural sentences that carry the argument values with the
cues people use ("from X to Y", "for 3 nights", "called ...") instead of naming each parameter.

The made-up tools of :mod:`demo_tools` teach copying any value; these teach reading a request written
freely. The domains leave out those of the hand-written evaluation set (:mod:`demo_eval_sets`: weather,
currency, restaurant tables, email, translation, timers, flights, orders, to-do lists, share prices,
songs, recipes, trains, phone calls), so that set measures phrasing and domains the corpus never showed.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass

import demo_values
from demo_example import DAYS, spoken

# -- values -----------------------------------------------------------------------------------------

ERRANDS = ("buy", "return", "pick up", "pay", "clean", "fix", "print", "pack", "sort", "wash", "post", "collect")
THINGS = ("the car", "the library books", "the rent", "the bike", "the garden hose", "new batteries", "the keys",
          "the old jackets", "the gas bill", "the kitchen shelf", "the parcel", "the photos", "a birthday card",
          "the winter tyres", "the school forms", "fresh bread", "the spare room", "the tickets")  # fmt: skip
TITLE_WORDS = ("Silver", "Quiet", "Northern", "Broken", "Golden", "Last", "Paper", "Hidden", "Salt", "Glass",
               "River", "Winter", "Summer", "Iron", "Velvet", "Distant", "Hollow", "Crimson", "Little", "Wild")  # fmt: skip
TITLE_NOUNS = ("Garden", "Road", "Harbour", "Window", "Letters", "Island", "Shore", "Orchard", "Clock", "Lantern",
               "Valley", "Station", "Summer", "Crown", "Lake", "Compass", "Bridge", "Forest", "Mirror", "Kingdom")  # fmt: skip
TOPICS = ("football", "elections", "space travel", "climate", "the housing market", "tennis", "electric cars",
          "local schools", "the film festival", "farming", "chess", "cycling", "music awards", "public transport")  # fmt: skip
ROOMS = ("kitchen", "living room", "bedroom", "hallway", "bathroom", "office", "garage", "nursery", "attic")
UNITS = ("kilometres", "miles", "kilograms", "pounds", "litres", "gallons", "metres", "feet", "celsius")
VENUES = ("Hotel", "Inn", "Lodge", "House", "Suites", "Guesthouse")


def _title(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return demo_values.phrase(rng, 1, 3).title()
    return f"{rng.choice(('The ', '', ''))}{rng.choice(TITLE_WORDS)} {rng.choice(TITLE_NOUNS)}"


def _code(rng: random.Random) -> str:
    letters, digits = string.ascii_uppercase, string.digits
    shape = rng.choice(("LL-DDDDD", "DDDD-LLL", "LDDLDD", "LLDDDDDD", "DDDDDDDD", "LLL-DDD"))
    return "".join(rng.choice(letters if c == "L" else digits if c == "D" else c) for c in shape)


def _person(rng: random.Random) -> str:
    first = demo_values.name(rng)
    roll = rng.random()
    if roll < 0.35:
        return f"{first} {demo_values.name(rng)}"
    if roll < 0.45:
        return f"{rng.choice(('Dr.', 'Ms.', 'Mr.', 'Aunt', 'Uncle'))} {first}"
    return first


def _venue(rng: random.Random) -> str:
    place = demo_values.syllable_word(rng).capitalize()
    return rng.choice((f"{place} {rng.choice(VENUES)}", f"The {place} {rng.choice(VENUES)}", f"{rng.choice(VENUES)} {place}"))


def _clock(rng: random.Random) -> str:
    return f"{rng.randint(5, 23):02d}:{rng.choice((0, 15, 30, 45, rng.randint(0, 59))):02d}"


def _errand(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return f"{rng.choice(ERRANDS)} {demo_values.phrase(rng, 1, 2)}"
    return f"{rng.choice(ERRANDS)} {rng.choice(THINGS)}"


VALUES: dict[str, Callable[[random.Random], object]] = {
    "place": demo_values.place, "origin": demo_values.place, "destination": demo_values.place,
    "person": _person, "venue": _venue, "title": _title, "code": _code, "errand": _errand,
    "topic": lambda rng: rng.choice(TOPICS) if rng.random() < 0.6 else demo_values.phrase(rng, 1, 2),
    "word": demo_values.word, "room": lambda rng: rng.choice(ROOMS), "unit": lambda rng: rng.choice(UNITS),
    "day": lambda rng: rng.choice(DAYS), "time": _clock,
    "date": lambda rng: f"{rng.randint(1, 28)} {rng.choice(demo_values.MONTHS)}",
    "count": lambda rng: rng.randint(1, 12), "minutes": lambda rng: rng.choice((5, 10, 15, 20, 30, 45, rng.randint(1, 120))),
    "level": lambda rng: rng.randint(0, 100), "temperature": lambda rng: rng.randint(12, 30),
    "amount": lambda rng: demo_values.decimal(rng) if rng.random() < 0.5 else demo_values.number(rng),
    "email": lambda rng: f"{demo_values.word(rng)}@{demo_values.word(rng)}.{rng.choice(('com', 'org', 'net', 'io'))}",
    "symbol": lambda rng: "".join(rng.choice(string.ascii_uppercase) for _ in range(rng.randint(2, 5))),
    "message": lambda rng: rng.choice(("I am running late", "see you at the station", "the meeting moved",
                                        "call me back", "dinner is ready", "I found your keys")) if rng.random() < 0.5
    else demo_values.phrase(rng, 2, 4),
}  # fmt: skip
"""A value maker per parameter role; names and places are made up, the rest are everyday values."""


# -- the catalogue ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """A parameter as developers declare it: a role (what the value is), the names and descriptions they
    give it, and its JSON type."""

    role: str
    names: tuple[str, ...]
    kind: str
    descriptions: tuple[str, ...]


@dataclass(frozen=True)
class Domain:
    """An everyday job: the tool names and descriptions developers give it, its parameters, and requests
    as people write them (``{role}`` placeholders, every parameter's value in each)."""

    names: tuple[str, ...]
    descriptions: tuple[str, ...]
    params: tuple[Param, ...]
    requests: tuple[str, ...]


def _p(role: str, names: str, kind: str, *descriptions: str) -> Param:
    return Param(role, tuple(names.split()), kind, descriptions)


PLACE = _p("place", "city location town place", "string", "Name of the city", "The town or city", "Where to look")
DOMAINS = (
    Domain(("book_room", "reserve_hotel", "book_hotel"), ("Book a hotel room.", "Reserve a room at a hotel."),
           (_p("venue", "hotel hotel_name", "string", "Name of the hotel"),
            _p("count", "nights stay_nights", "integer", "Number of nights")),
           ("Book a room at {venue} for {count} nights.", "Can you reserve {count} nights at {venue}?",
            "I need a room at {venue}, {count} nights please.", "Get me a hotel room at {venue} for {count} nights.")),
    Domain(("get_directions", "find_route", "plan_route"), ("Directions between two places.", "Plan a route from one place to another."),
           (_p("origin", "origin start from_place", "string", "Where the trip starts", "Starting point"),
            _p("destination", "destination end to_place", "string", "Where the trip ends", "End point")),
           ("How do I get from {origin} to {destination}?", "Directions from {origin} to {destination}, please.",
            "Plan a route from {origin} to {destination}.", "What's the best way from {origin} to {destination}?")),
    Domain(("get_distance", "compute_distance"), ("Distance between two places in kilometres.",),
           (_p("origin", "origin start", "string", "First place"), _p("destination", "destination end", "string", "Second place")),
           ("How far is it from {origin} to {destination}?", "What's the distance between {origin} and {destination}?",
            "Distance from {origin} to {destination}?")),
    Domain(("order_taxi", "book_taxi", "request_ride"), ("Order a taxi to an address.", "Call a cab for the user."),
           (_p("destination", "destination address drop_off", "string", "Where the taxi should go"),),
           ("Get me a taxi to {destination}.", "I need a cab to {destination}.", "Order a taxi to {destination}, please.",
            "Can you book me a ride to {destination}?")),
    Domain(("set_reminder", "create_reminder", "add_reminder"), ("Remind the user of something on a day.", "Create a reminder."),
           (_p("errand", "text task what", "string", "What to be reminded of"), _p("day", "day when", "string", "Day of the reminder")),
           ("Remind me to {errand} on {day}.", "On {day}, remind me to {errand}.", "Set a reminder for {day}: {errand}.",
            "Don't let me forget to {errand} on {day}.")),
    Domain(("set_alarm", "create_alarm"), ("Set an alarm clock.", "Wake the user at a time."),
           (_p("time", "time at", "string", "Time of day, HH:MM"),),
           ("Wake me up at {time}.", "Set an alarm for {time}.", "I need an alarm at {time} tomorrow.", "Alarm at {time} please.")),
    Domain(("create_event", "add_event", "schedule_meeting"), ("Add an event to the calendar.", "Put a meeting in the calendar."),
           (_p("title", "title name summary", "string", "What the event is called"), _p("date", "date day", "string", "Date of the event")),
           ("Put {title} in my calendar on {date}.", "Add an event called {title} on {date}.",
            "Schedule {title} for {date}.", "Create a calendar entry {title} for {date}.")),
    Domain(("send_message", "send_sms", "message_friend"), ("Send a text message.", "Message a contact."),
           (_p("person", "recipient to contact", "string", "Who gets the message"), _p("message", "text body message", "string", "The message")),
           ("Text {person}: {message}.", "Send {person} a message saying {message}.", "Tell {person} {message} - send it as a text.",
            "Message {person} that {message}.")),
    Domain(("get_news", "fetch_headlines", "search_news"), ("Latest news about a topic.", "Headlines on a subject."),
           (_p("topic", "topic query subject", "string", "What the news should be about"),),
           ("What's the latest news on {topic}?", "Any headlines about {topic}?", "Show me news about {topic}.",
            "Catch me up on {topic}.")),
    Domain(("define_word", "lookup_word", "get_definition"), ("Look a word up in the dictionary.", "Dictionary definition of a word."),
           (_p("word", "word term", "string", "The word to define"),),
           ("What does {word} mean?", "Define {word}.", "Look up the word {word} in the dictionary.", "What's the meaning of {word}?")),
    Domain(("find_showtimes", "get_showtimes"), ("Cinema showtimes for a film in a city.",),
           (_p("title", "movie film title", "string", "Film title"), PLACE),
           ("When is {title} showing in {place}?", "Showtimes for {title} in {place}?", "Where can I see {title} in {place}?")),
    Domain(("find_parking", "search_parking"), ("Find a free parking space near a place.",),
           (PLACE,), ("Where can I park in {place}?", "Find parking in {place}.", "Is there parking near {place}?")),
    Domain(("track_parcel", "track_package", "track_shipment"), ("Where a parcel is now.", "Track a delivery."),
           (_p("code", "tracking_number tracking_code parcel_id", "string", "The tracking number"),),
           ("Where is my parcel {code}?", "Track package {code}.", "Can you track {code} for me?", "Has parcel {code} arrived yet?")),
    Domain(("check_balance", "get_balance"), ("Balance of a bank account.",),
           (_p("code", "account account_number", "string", "Account number"),),
           ("What's the balance on account {code}?", "How much money is in {code}?", "Check my balance for account {code}.")),
    Domain(("transfer_money", "send_payment", "pay_person"), ("Send money to a person.", "Pay someone from the user's account."),
           (_p("amount", "amount sum", "number", "How much to send"), _p("person", "recipient payee to", "string", "Who receives it")),
           ("Send {amount} to {person}.", "Pay {person} {amount}.", "Transfer {amount} to {person}, please.",
            "I owe {person} {amount}, send it.")),
    Domain(("find_pharmacy", "search_pharmacies"), ("Nearest open pharmacy.", "Find pharmacies in a town."),
           (PLACE,), ("Is there a pharmacy open in {place}?", "I need a chemist in {place}.", "Find me a pharmacy in {place}.")),
    Domain(("find_dentist", "search_dentists"), ("Find a dentist nearby.",),
           (PLACE,), ("I need a dentist in {place}.", "My tooth hurts - any dentist in {place}?", "Find a dentist in {place}.")),
    Domain(("book_appointment", "schedule_appointment"), ("Book an appointment with a doctor.",),
           (_p("person", "doctor with name", "string", "Who the appointment is with"), _p("day", "day date", "string", "Which day")),
           ("Book me in with {person} on {day}.", "I'd like an appointment with {person} on {day}.",
            "Make an appointment with {person} for {day}.")),
    Domain(("turn_on_lights", "switch_lights", "set_lights"), ("Turn the lights on in a room.", "Switch on a room's lights."),
           (_p("room", "room area", "string", "Which room"),),
           ("Turn on the lights in the {room}.", "Lights on in the {room}, please.", "Switch the {room} lights on.",
            "It's dark in the {room}.")),
    Domain(("set_thermostat", "set_heating", "set_temperature"), ("Set the thermostat.", "Change the heating temperature."),
           (_p("temperature", "temperature degrees target", "integer", "Degrees Celsius"),),
           ("Set the heating to {temperature} degrees.", "Make it {temperature} degrees in here.",
            "Turn the thermostat to {temperature}.", "I want {temperature} degrees.")),
    Domain(("set_volume", "change_volume"), ("Set the speaker volume, 0 to 100.",),
           (_p("level", "level volume percent", "integer", "Volume from 0 to 100"),),
           ("Volume to {level}.", "Set the volume at {level} percent.", "Turn the sound to {level}.", "Change the volume to {level}.")),
    Domain(("play_podcast", "start_podcast"), ("Play a podcast.", "Start a podcast episode."),
           (_p("title", "show title podcast", "string", "Podcast name"),),
           ("Put on the podcast {title}.", "Play the podcast {title}.", "Start {title}, the podcast.", "I want to listen to my podcast {title}.")),
    Domain(("play_radio", "tune_radio"), ("Play a radio station.",),
           (_p("title", "station channel", "string", "The station"),),
           ("Tune in to {title}.", "Put the radio on, {title}.", "Play the station {title}.")),
    Domain(("add_to_cart", "order_groceries", "buy_item"), ("Add a product to the shopping cart.", "Order groceries."),
           (_p("word", "product item", "string", "The product"), _p("count", "quantity count", "integer", "How many")),
           ("Add {count} {word} to my cart.", "Order {count} packs of {word}.", "Put {count} {word} in the basket.",
            "I need {count} {word}, add them to the order.")),
    Domain(("renew_loan", "renew_book"), ("Renew a library loan.",),
           (_p("title", "title book", "string", "Book title"),),
           ("Renew {title} at the library.", "Can you extend my loan of {title}?", "I need {title} for another month - renew it.")),
    Domain(("reserve_book", "hold_book"), ("Reserve a book at the library.",),
           (_p("title", "title book", "string", "Book title"),),
           ("Reserve the book {title} for me.", "Put {title} on hold at the library.", "Can the library keep {title} for me?")),
    Domain(("get_time", "get_local_time"), ("Current local time in a city.",),
           (PLACE,), ("What time is it in {place}?", "Local time in {place}?", "Tell me the time in {place} now.")),
    Domain(("get_population", "lookup_population"), ("How many people live in a place.",),
           (PLACE,), ("How many people live in {place}?", "What is the population of {place}?", "Population of {place}?")),
    Domain(("convert_units", "compute_conversion"), ("Convert a quantity into another unit.",),
           (_p("amount", "value amount quantity", "number", "The quantity"), _p("unit", "unit target_unit to_unit", "string", "Unit to convert into")),
           ("How much is {amount} in {unit}?", "Convert {amount} to {unit}.", "What's {amount} expressed in {unit}?")),
    Domain(("buy_tickets", "book_tickets", "order_tickets"), ("Buy tickets for an event.",),
           (_p("title", "event show concert", "string", "The event"), _p("count", "tickets quantity count", "integer", "How many tickets")),
           ("Get {count} tickets for {title}.", "Book {count} seats for {title}.", "I want {count} tickets to {title}.")),
    Domain(("book_haircut", "book_salon"), ("Book a haircut.",),
           (_p("day", "day date", "string", "Which day"), _p("time", "time slot", "string", "Time of day")),
           ("Book me a haircut on {day} at {time}.", "I need a haircut {day}, around {time}.",
            "Can you get me a {time} haircut slot on {day}?")),
    Domain(("check_bus", "next_bus", "get_departures"), ("Next departures from a bus stop.",),
           (_p("place", "stop stop_name station", "string", "Name of the stop"),),
           ("When is the next bus from {place}?", "Departures from {place} stop?", "Which buses leave {place} soon?")),
    Domain(("create_note", "save_note", "write_note"), ("Save a note.", "Write something down for later."),
           (_p("message", "text content note", "string", "What the note says"),),
           ("Make a note: {message}.", "Write down that {message}.", "Save a note saying {message}.", "Note this: {message}.")),
    Domain(("reset_password", "send_reset_link"), ("Send a password reset link.",),
           (_p("email", "email address user_email", "string", "The account's email address"),),
           ("I forgot the password for {email}.", "Reset the password of {email}.", "Send a reset link to {email}, I can't log in.")),
    Domain(("unlock_account", "unblock_user"), ("Unlock a user account.",),
           (_p("email", "email address user_email", "string", "The account's email address"),),
           ("Please unlock the account {email}.", "{email} is locked out, unblock it.", "Unlock {email}.")),
    Domain(("create_invoice", "send_invoice"), ("Create an invoice for a customer.",),
           (_p("person", "customer client name", "string", "Who is billed"), _p("amount", "amount total", "number", "Invoice total")),
           ("Invoice {person} for {amount}.", "Bill {person} {amount}.", "Create an invoice of {amount} for {person}.")),
    Domain(("find_user", "lookup_user", "search_users"), ("Find a user by email address.",),
           (_p("email", "email address", "string", "Email to search for"),), ("Who is {email}?", "Find the user with {email}.",
            "Look up the account for {email}.")),
    Domain(("get_lyrics", "find_lyrics"), ("Lyrics of a song.",),
           (_p("title", "title song", "string", "Song title"),), ("What are the words to {title}?", "Lyrics of {title}, please.",
            "Show me the lyrics for {title}.")),
    Domain(("get_coin_quote", "quote_crypto"), ("Price of a cryptocurrency.",),
           (_p("symbol", "symbol coin ticker", "string", "Coin symbol"),),
           ("How is {symbol} doing?", "What's {symbol} trading at?", "Price of {symbol} right now?")),
)  # fmt: skip
"""The everyday domains (none of the hand-written set's; see the module docstring)."""
NAMES = frozenset(name for domain in DOMAINS for name in domain.names)

POLITE = (("", ""), ("", ""), ("Please, ", ""), ("Could you help? ", ""), ("Hi! ", ""), ("", " Thanks!"), ("", " Thank you."))


@dataclass(frozen=True)
class EverydayTool:
    """One catalogue tool as drawn: its name, its declared description and its parameters."""

    name: str
    description: str
    params: tuple[tuple[str, str, str, str], ...]  # (name, JSON type, description, role)
    domain: Domain

    @property
    def spec_params(self) -> tuple[tuple[str, str, str], ...]:
        return tuple((name, kind, text) for name, kind, text, _ in self.params)


def draw_tool(rng: random.Random, allowed: Callable[[str], bool] = lambda name: True) -> EverydayTool:
    """A catalogue tool: a domain, one of its names (``allowed`` filters them), a description (or none),
    and each parameter under one of its names, described or not."""
    while True:
        domain = rng.choice(DOMAINS)
        names = [name for name in domain.names if allowed(name) and not demo_values.is_reserved(name)]
        if names:
            break
    description = rng.choice((*domain.descriptions, *domain.descriptions, ""))
    params = tuple((rng.choice(p.names), p.kind, rng.choice((*p.descriptions, "")), p.role) for p in domain.params)
    return EverydayTool(rng.choice(names), description, params, domain)


def draw_args(rng: random.Random, tool: EverydayTool) -> dict:
    """Values for the tool's parameters, made by their roles (a number parameter may get an integer)."""
    while True:
        args = {name: VALUES[role](rng) for name, _, _, role in tool.params}
        if not any(isinstance(v, str) and demo_values.is_reserved(v) for v in args.values()):
            return args


def everyday_request(rng: random.Random, tool: EverydayTool, args: dict) -> str:
    """A request as a person writes it: one of the domain's sentences with the values in place."""
    by_role = {role: spoken(args[name]) for name, _, _, role in tool.params}
    text = rng.choice(tool.domain.requests).format(**by_role)
    head, tail = rng.choice(POLITE)
    if head.endswith(", ") and not text.startswith((*by_role.values(), "I ", "I'")):
        text = text[0].lower() + text[1:]
    return f"{head}{text}{tail}"


RESULTS = ("Done", "Confirmed for {time}", "Booked for {day}", "Sent at {time}", "{n} minutes away",
           "Closed until {day}", "Open until {time}", "{n} results found", "Nothing found", "Available on {day}",
           "Costs {n} euros", "{n} percent", "Arrives on {day} at {time}", "Stored as item {n}", "Queued, number {n}",
           "Scheduled for {day}", "Failed: try again at {time}", "{n} people", "Reference {code}")  # fmt: skip


def everyday_result(rng: random.Random) -> str:
    """What an everyday tool returns: a short status with a time, a day, a number or a code in it."""
    while True:
        text = rng.choice(RESULTS).format(time=_clock(rng), day=rng.choice(DAYS), n=demo_values.number(rng), code=_code(rng))
        if not demo_values.is_reserved(text):
            return text
