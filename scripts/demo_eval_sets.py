"""Hand-written evaluation sets for the demo model: a source apart from the training generator.

The training corpus (:mod:`demo_data`, :mod:`demo_values`) makes its names, places, tools and passages up
from syllable tables; these lists were written by hand for the evaluation - ordinary names and cities from
many countries, tools and requests as people write them, short documents with questions. Importing this
module reserves every name, value, tool name, result and answer span here (:func:`demo_values.reserve`): the
generator never draws one of them *as a whole value* in a process that has imported it (the training script
must import it for that; parts of generated multi-word values can still coincide, which
``eval_demo_model.py --check-contamination`` counts).
"""

from __future__ import annotations

from dataclasses import dataclass

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

PERSON_PHRASINGS = (
    "{name} is {age} and lives in {city}. Put that in a JSON record, please.",
    "I need JSON for this person - name: {name}; age: {age}; home town: {city}.",
    "Turn this into a JSON object: {name}, {age} years old, based in {city}.",
)
"""Phrasings of a person-record request written for the evaluation (not the training generator's)."""

demo_values.reserve(name for name, _ in PEOPLE)
demo_values.reserve(city for _, city in PEOPLE)


# -- tools ------------------------------------------------------------------------------------------


def _tool(tool_name: str, description: str, /, **params: tuple[str, str]) -> dict:
    """An OpenAI-format function tool; ``params`` maps each argument to (JSON type, description)."""
    properties = {param: {"type": kind, "description": text} for param, (kind, text) in params.items()}
    return {"type": "function", "function": {"name": tool_name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": list(params)}}}  # fmt: skip


TOOLS = {tool["function"]["name"]: tool for tool in (
    _tool("get_weather", "Get the current weather for a city.", city=("string", "Name of the city")),
    _tool("convert_currency", "Convert an amount of euros into another currency.",
          amount=("number", "How many euros to convert"), currency=("string", "ISO code of the target currency")),
    _tool("book_table", "Reserve a table at a restaurant for tonight.",
          restaurant=("string", "Name of the restaurant"), people=("integer", "Size of the party")),
    _tool("send_email", "Send a short email.", to=("string", "Recipient address"), subject=("string", "Subject line")),
    _tool("translate_text", "Translate a piece of text.", text=("string", "What to translate"),
          language=("string", "Language to translate into")),
    _tool("set_timer", "Start a countdown timer.", minutes=("integer", "Length of the timer in minutes")),
    _tool("search_flights", "Look for flights between two cities.", origin=("string", "Departure city"),
          destination=("string", "Arrival city")),
    _tool("lookup_order", "Find the status of a customer order.", order_id=("string", "The order number")),
    _tool("add_todo", "Add an item to the user's to-do list.", item=("string", "The task to remember")),
    _tool("get_stock_price", "Latest trading price of a share.", symbol=("string", "Ticker symbol")),
    _tool("play_song", "Play a song on the living-room speaker.", title=("string", "Song title"),
          artist=("string", "Performer")),
    _tool("find_recipe", "Find a recipe for a dish.", dish=("string", "The dish to cook")),
    _tool("check_train", "Show delays for a train.", train_number=("string", "Train number as printed on the ticket")),
    _tool("call_contact", "Phone someone from the address book.", name=("string", "Contact name")),
)}  # fmt: skip
"""Realistic tools, written by hand (names, descriptions and parameters a developer would give)."""


@dataclass(frozen=True)
class ToolCase:
    """A request as a person writes it, the tools offered, the call it needs and the tool's result.

    The request names the action and every argument value as the call must write it (the model copies
    values; it does not convert units or spellings). The final answer, after ``result`` comes back, must
    contain ``result``."""

    request: str
    offered: tuple[str, ...]
    tool: str
    args: dict
    result: str


TOOL_CASES = (
    ToolCase("What's the weather like in Tbilisi today?", ("get_weather", "set_timer"), "get_weather",
             {"city": "Tbilisi"}, "11 degrees and drizzle"),
    ToolCase("Can you check the weather in Valparaíso for me?", ("search_flights", "get_weather", "add_todo"),
             "get_weather", {"city": "Valparaíso"}, "24 degrees, clear skies"),
    ToolCase("Weather in Gdańsk please.", ("get_weather", "find_recipe"), "get_weather", {"city": "Gdańsk"},
             "Light snow, minus 2"),
    ToolCase("Is it raining in Bloemfontein? Check the weather.", ("get_weather", "call_contact"), "get_weather",
             {"city": "Bloemfontein"}, "Dry and windy"),
    ToolCase("Convert 250 euros to JPY.", ("convert_currency", "get_stock_price"), "convert_currency",
             {"amount": 250, "currency": "JPY"}, "40,125 JPY"),
    ToolCase("How much is 19.99 euros in CHF? Use the converter.", ("convert_currency", "lookup_order", "set_timer"),
             "convert_currency", {"amount": 19.99, "currency": "CHF"}, "18.70 CHF"),
    ToolCase("Please convert 1200 euros into NOK.", ("get_weather", "convert_currency"), "convert_currency",
             {"amount": 1200, "currency": "NOK"}, "14,040 NOK"),
    ToolCase("Book a table at Casa Ondina for 4 people.", ("book_table", "find_recipe"), "book_table",
             {"restaurant": "Casa Ondina", "people": 4}, "Confirmed for 19:30"),
    ToolCase("Could you reserve a table at The Copper Kettle for 2 people?", ("book_table", "call_contact", "add_todo"),
             "book_table", {"restaurant": "The Copper Kettle", "people": 2}, "Booked, table 12"),
    ToolCase("Book a table for 7 people at Trattoria Lucciola.", ("send_email", "book_table"), "book_table",
             {"restaurant": "Trattoria Lucciola", "people": 7}, "Waiting list, position 3"),
    ToolCase("Send an email to hamid.rostami@quillmail.net with the subject Quarterly figures.",
             ("send_email", "add_todo"), "send_email", {"to": "hamid.rostami@quillmail.net", "subject": "Quarterly figures"},
             "Message queued"),
    ToolCase("Email brigitte@lanterne.fr, subject: Dinner on Friday.", ("call_contact", "send_email", "book_table"),
             "send_email", {"to": "brigitte@lanterne.fr", "subject": "Dinner on Friday"}, "Sent at 09:14"),
    ToolCase("Send an email to ops@harbourline.io about Server maintenance - that's the subject.",
             ("send_email", "check_train"), "send_email", {"to": "ops@harbourline.io", "subject": "Server maintenance"},
             "Delivered"),
    ToolCase("Translate good morning into Swahili.", ("translate_text", "find_recipe"), "translate_text",
             {"text": "good morning", "language": "Swahili"}, "habari za asubuhi"),
    ToolCase("Please translate where is the station into Portuguese.", ("translate_text", "search_flights"),
             "translate_text", {"text": "where is the station", "language": "Portuguese"}, "onde fica a estação"),
    ToolCase("Translate thank you very much into Finnish.", ("get_weather", "translate_text", "add_todo"),
             "translate_text", {"text": "thank you very much", "language": "Finnish"}, "kiitos paljon"),
    ToolCase("Set a timer for 12 minutes.", ("set_timer", "play_song"), "set_timer", {"minutes": 12},
             "Timer running, ends at 18:42"),
    ToolCase("Start a 45 minutes timer for the bread.", ("add_todo", "set_timer"), "set_timer", {"minutes": 45},
             "Timer started"),
    ToolCase("Timer please, 3 minutes.", ("set_timer", "find_recipe", "get_weather"), "set_timer", {"minutes": 3},
             "Counting down from 3 minutes"),
    ToolCase("Search flights from Wrocław to Ljubljana.", ("search_flights", "book_table"), "search_flights",
             {"origin": "Wrocław", "destination": "Ljubljana"}, "Cheapest: 89 euros, departs 06:10"),
    ToolCase("Find me flights from Mombasa to Kigali.", ("get_weather", "search_flights"), "search_flights",
             {"origin": "Mombasa", "destination": "Kigali"}, "Three flights tomorrow, first at 07:45"),
    ToolCase("Are there flights from Winnipeg to Halifax? Search flights.", ("search_flights", "check_train", "set_timer"),
             "search_flights", {"origin": "Winnipeg", "destination": "Halifax"}, "One direct flight at 13:20"),
    ToolCase("Look up order QX-48213.", ("lookup_order", "send_email"), "lookup_order", {"order_id": "QX-48213"},
             "Shipped on Tuesday"),
    ToolCase("Where is my order 7730-BKL? Please look it up.", ("add_todo", "lookup_order"), "lookup_order",
             {"order_id": "7730-BKL"}, "Out for delivery"),
    ToolCase("Check the status of order A19Z04.", ("lookup_order", "check_train", "get_stock_price"), "lookup_order",
             {"order_id": "A19Z04"}, "Awaiting payment"),
    ToolCase("Add buy birthday candles to my to-do list.", ("add_todo", "set_timer"), "add_todo",
             {"item": "buy birthday candles"}, "Added as item 6"),
    ToolCase("Put renew the passport on my to-do list.", ("send_email", "add_todo"), "add_todo",
             {"item": "renew the passport"}, "Saved"),
    ToolCase("Add a todo: water the ferns.", ("add_todo", "play_song", "find_recipe"), "add_todo",
             {"item": "water the ferns"}, "Done, 4 open items"),
    ToolCase("What is the stock price of NVDQ?", ("get_stock_price", "convert_currency"), "get_stock_price",
             {"symbol": "NVDQ"}, "132.40 dollars"),
    ToolCase("Get the share price for symbol KRMB.", ("lookup_order", "get_stock_price"), "get_stock_price",
             {"symbol": "KRMB"}, "Down 3 percent at 18.05"),
    ToolCase("Check the stock price of TLSX please.", ("get_stock_price", "get_weather", "set_timer"), "get_stock_price",
             {"symbol": "TLSX"}, "Market closed, last 61.12"),
    ToolCase("Play Moonlit Harbour by Elsa Varga.", ("play_song", "set_timer"), "play_song",
             {"title": "Moonlit Harbour", "artist": "Elsa Varga"}, "Now playing"),
    ToolCase("Play the song Paper Lanterns by The Quiet Orchard.", ("find_recipe", "play_song"), "play_song",
             {"title": "Paper Lanterns", "artist": "The Quiet Orchard"}, "Playing on the living-room speaker"),
    ToolCase("Find a recipe for mushroom risotto.", ("find_recipe", "book_table"), "find_recipe",
             {"dish": "mushroom risotto"}, "Serves 4, takes 40 minutes"),
    ToolCase("Can you find a recipe for lamb tagine?", ("get_weather", "find_recipe", "add_todo"), "find_recipe",
             {"dish": "lamb tagine"}, "Needs apricots and cumin"),
    ToolCase("Check train ICE 1027 for delays.", ("check_train", "search_flights"), "check_train",
             {"train_number": "ICE 1027"}, "12 minutes late"),
    ToolCase("Is train EC 178 on time? Check the train.", ("lookup_order", "check_train"), "check_train",
             {"train_number": "EC 178"}, "On time, platform 5"),
    ToolCase("Call Grandma Rosalind.", ("call_contact", "send_email"), "call_contact", {"name": "Grandma Rosalind"},
             "Ringing"),
    ToolCase("Phone Dr. Okonkwo for me.", ("set_timer", "call_contact", "play_song"), "call_contact",
             {"name": "Dr. Okonkwo"}, "No answer, voicemail is full"),
    ToolCase("Please call Ximena Castellanos.", ("call_contact", "get_stock_price"), "call_contact",
             {"name": "Ximena Castellanos"}, "Connected, call lasted 4 minutes"),
)  # fmt: skip
"""Tool requests written by hand: the tool to call, its arguments and the result the tool returns."""


# -- answers from a retrieved context ---------------------------------------------------------------


@dataclass(frozen=True)
class RagQuestion:
    question: str
    span: str  # the answer, verbatim in one passage


@dataclass(frozen=True)
class RagCase:
    passages: tuple[str, ...]
    questions: tuple[RagQuestion, ...]


RAG_CASES = (
    RagCase((
        "The Kestrel Point lighthouse was built in 1871 on a rock south of the harbour.",
        "Its first keeper was Agnes Thornbury, who kept the light burning for forty years.",
        "The beam of the lighthouse can be seen from 32 kilometres away.",
        "Visitors reach the rock by a small ferry from Dunmore Quay.",
    ), (
        RagQuestion("When was the Kestrel Point lighthouse built?", "1871"),
        RagQuestion("Who was the first keeper of the Kestrel Point lighthouse?", "Agnes Thornbury"),
        RagQuestion("From how far away can the beam of the lighthouse be seen?", "32 kilometres"),
        RagQuestion("Visitors reach the rock by a small ferry from where?", "Dunmore Quay"),
    )),
    RagCase((
        "Harrow & Finch is a bookshop on Calder Street that opened in 1994.",
        "The shop is owned by Imogen Rask, a former librarian.",
        "Every Thursday the shop holds a reading club for children.",
        "Its largest section is devoted to maritime history.",
        "The shop's cat is called Pilchard.",
    ), (
        RagQuestion("Who owns Harrow & Finch?", "Imogen Rask"),
        RagQuestion("On which street is the bookshop Harrow & Finch?", "Calder Street"),
        RagQuestion("What is the shop's cat called?", "Pilchard"),
        RagQuestion("Which section is the largest section of the shop?", "maritime history"),
    )),
    RagCase((
        "The Velmora Bridge crosses the river Ossel and is 640 metres long.",
        "It was designed by the engineer Tobias Wennerholm.",
        "The bridge opened to traffic on 3 May 1932.",
    ), (
        RagQuestion("How long is the Velmora Bridge?", "640 metres"),
        RagQuestion("Which river does the Velmora Bridge cross?", "Ossel"),
        RagQuestion("Who designed the Velmora Bridge?", "Tobias Wennerholm"),
        RagQuestion("When did the bridge open to traffic?", "3 May 1932"),
    )),
    RagCase((
        "Our support desk answers calls from 8 am to 6 pm on weekdays.",
        "Refunds are paid back to the original card within 14 days.",
        "Parcels to Iceland are sent with the carrier Nordpakk.",
        "The returns address is Unit 9, Brackenfield Estate.",
    ), (
        RagQuestion("Within how many days are refunds paid back to the original card?", "14 days"),
        RagQuestion("Which carrier sends parcels to Iceland?", "Nordpakk"),
        RagQuestion("What is the returns address?", "Unit 9, Brackenfield Estate"),
        RagQuestion("When does the support desk answer calls?", "from 8 am to 6 pm on weekdays"),
    )),
    RagCase((
        "Dr. Saoirse Malloy leads the coral research group at the Tavistock Marine Institute.",
        "The group's research vessel is named Wandering Tern.",
        "Last year the group counted 212 species of reef fish.",
        "Its field station is on the island of Inishcarra.",
    ), (
        RagQuestion("Who leads the coral research group at the Tavistock Marine Institute?", "Dr. Saoirse Malloy"),
        RagQuestion("What is the group's research vessel named?", "Wandering Tern"),
        RagQuestion("How many species of reef fish did the group count last year?", "212"),
        RagQuestion("On which island is the field station?", "Inishcarra"),
    )),
    RagCase((
        "The Brannock 7 is a folding bicycle that weighs 9.4 kilograms.",
        "Its frame is made of titanium.",
        "The Brannock 7 costs 1,890 dollars.",
        "It is assembled in a workshop in Eindhoven.",
    ), (
        RagQuestion("How much does the Brannock 7 weigh?", "9.4 kilograms"),
        RagQuestion("What is the frame of the Brannock 7 made of?", "titanium"),
        RagQuestion("How much does the Brannock 7 cost?", "1,890 dollars"),
        RagQuestion("Where is the Brannock 7 assembled?", "Eindhoven"),
    )),
    RagCase((
        "The village of Lower Pellingham holds its cheese fair every October.",
        "The fair's prize for the best cheese is the Silver Churn.",
        "Last year the prize went to a goat cheese made by Hettie Blackwood.",
    ), (
        RagQuestion("When does Lower Pellingham hold its cheese fair?", "every October"),
        RagQuestion("What is the fair's prize for the best cheese?", "the Silver Churn"),
        RagQuestion("Who made the goat cheese that won last year?", "Hettie Blackwood"),
        RagQuestion("Which village holds its cheese fair every October?", "Lower Pellingham"),
    )),
    RagCase((
        "Project Tamarind moves the billing service to a new database.",
        "The project lead is Rohan Deshpande.",
        "The migration is planned for the weekend of 14 March.",
        "During the migration invoices are stored in a queue called ledger-hold.",
        "Questions go to the channel #billing-move.",
    ), (
        RagQuestion("Who is the project lead of Project Tamarind?", "Rohan Deshpande"),
        RagQuestion("When is the migration planned?", "the weekend of 14 March"),
        RagQuestion("What is the queue called that stores invoices during the migration?", "ledger-hold"),
        RagQuestion("Where do questions go?", "#billing-move"),
    )),
    RagCase((
        "Mount Aldric rises 2,311 metres above the valley of Sennet.",
        "The first recorded ascent was made by Clémence Vautrin in 1859.",
        "A hut called the Gentian Refuge stands below the summit.",
        "The usual route starts at the hamlet of Brisach.",
    ), (
        RagQuestion("How high does Mount Aldric rise above the valley of Sennet?", "2,311 metres"),
        RagQuestion("Who made the first recorded ascent of Mount Aldric?", "Clémence Vautrin"),
        RagQuestion("What is the hut below the summit called?", "the Gentian Refuge"),
        RagQuestion("Where does the usual route start?", "the hamlet of Brisach"),
    )),
    RagCase((
        "The Orla Quartet was formed in Tallinn in 2009.",
        "Its cellist is Mihkel Saar.",
        "The quartet's best-known recording is Winter Ferries.",
        "The quartet tours with a harpsichord named Greta.",
    ), (
        RagQuestion("Where was the Orla Quartet formed?", "Tallinn"),
        RagQuestion("Who is the cellist of the Orla Quartet?", "Mihkel Saar"),
        RagQuestion("What is the quartet's best-known recording?", "Winter Ferries"),
        RagQuestion("In which year was the Orla Quartet formed?", "2009"),
    )),
)  # fmt: skip
"""Short documents written by hand, with questions whose answers are verbatim spans of one passage."""

RAG_FRAME = "Use the documents below to answer the question.\n\n{context}\n\nQuestion: {question}"
"""A plain retrieval prompt written for this set (the other half of the set uses LlamaIndex's own)."""


# -- records the model fills in itself --------------------------------------------------------------


def _record(title: str, doc: str, fields: tuple[tuple[str, str, str], ...], pydantic_form: bool) -> dict:
    """A record schema as pydantic's ``model_json_schema()`` writes a model (titled fields, ``title`` last)
    or as LangChain converts a TypedDict (``title`` and ``description`` first, no field titles)."""
    if pydantic_form:
        properties = {key: {"description": text, "title": key.replace("_", " ").title(), "type": kind}
                      for key, kind, text in fields}  # fmt: skip
        return {"description": doc, "properties": properties, "required": [key for key, _, _ in fields],
                "title": title, "type": "object"}  # fmt: skip
    properties = {key: {"description": text, "type": kind} for key, kind, text in fields}
    return {"title": title, "description": doc, "type": "object", "properties": properties,
            "required": [key for key, _, _ in fields]}  # fmt: skip


@dataclass(frozen=True)
class OpenCase:
    """A structured-output request whose values are not in the prompt, and the schema it comes with."""

    request: str
    schema: dict


_JOKE = ("Joke", "Joke to tell user.", (("setup", "string", "question to set up a joke"),
                                        ("punchline", "string", "answer to resolve the joke")))  # fmt: skip

OPEN_CASES = (
    OpenCase("Tell me a joke about cats.", _record(*_JOKE, pydantic_form=True)),  # LangChain's standard test
    OpenCase("Tell me a joke about cats.", _record(*_JOKE, pydantic_form=False)),
    OpenCase("Recommend a film for a rainy evening.", _record("Movie", "A film recommendation.", (
        ("title", "string", "the film's title"), ("year", "integer", "year of release"),
        ("genre", "string", "its genre")), True)),
    OpenCase("Invent a cocktail with lime.", _record("Cocktail", "A cocktail recipe.", (
        ("name", "string", "name of the drink"), ("ingredients", "string", "what goes in it"),
        ("alcoholic", "boolean", "whether it contains alcohol")), False)),
    OpenCase("Describe a fictional planet.", _record("Planet", "An imaginary planet.", (
        ("name", "string", "the planet's name"), ("moons", "integer", "number of moons"),
        ("habitable", "boolean", "can people live there")), True)),
    OpenCase("Suggest a name for a bakery in Lisbon.", _record("ShopName", "A name for a shop.", (
        ("name", "string", "the suggested name"), ("tagline", "string", "a short tagline")), False)),
    OpenCase("Plan a weekend trip to the mountains.", _record("Trip", "A short trip.", (
        ("destination", "string", "where to go"), ("days", "integer", "length in days"),
        ("budget", "number", "budget in euros")), True)),
    OpenCase("Give me a fun fact about octopuses.", _record("FunFact", "One fun fact.", (
        ("topic", "string", "what it is about"), ("fact", "string", "the fact itself")), False)),
    OpenCase("Write a haiku about autumn.", _record("Haiku", "A haiku in three lines.", (
        ("line_one", "string", "first line"), ("line_two", "string", "second line"),
        ("line_three", "string", "third line")), True)),
    OpenCase("Create a character for a fantasy novel.", _record("Character", "A story character.", (
        ("name", "string", "the character's name"), ("age", "integer", "age in years"),
        ("skill", "string", "what they are good at")), False)),
    OpenCase("Make up a riddle about the wind.", _record("Puzzle", "A riddle with its solution.", (
        ("riddle", "string", "the riddle"), ("solution", "string", "its answer")), True)),
    OpenCase("Describe a new board game.", _record("BoardGame", "A board game idea.", (
        ("title", "string", "name of the game"), ("players", "integer", "how many can play"),
        ("minutes", "integer", "length of a game")), False)),
    OpenCase("Suggest a workout for beginners.", _record("Workout", "A workout plan.", (
        ("name", "string", "name of the workout"), ("minutes", "integer", "duration"),
        ("intensity", "string", "low, medium or high")), True)),
    OpenCase("Invent a holiday and tell me about it.", _record("Holiday", "A made-up holiday.", (
        ("name", "string", "the holiday's name"), ("month", "string", "when it is celebrated"),
        ("day_off", "boolean", "whether people get the day off")), False)),
    OpenCase("Write a short review of a coffee shop.", _record("ShopReview", "A review of a place.", (
        ("verdict", "string", "the review in one sentence"), ("rating", "integer", "score out of 10")), True)),
    OpenCase("Give me a motivational quote.", _record("Quote", "A quotation.", (
        ("text", "string", "the quote"), ("author", "string", "who said it")), False)),
    OpenCase("Describe my dream house.", _record("House", "A house description.", (
        ("rooms", "integer", "number of rooms"), ("garden", "boolean", "has a garden"),
        ("style", "string", "architectural style")), True)),
    OpenCase("Pitch a startup idea about recycling.", _record("Startup", "A startup pitch.", (
        ("company", "string", "company name"), ("pitch", "string", "one-sentence pitch"),
        ("funding", "number", "money needed in euros")), False)),
    OpenCase("Tell me a joke about computers.", _record(*_JOKE, pydantic_form=True)),
    OpenCase("Name a new colour of paint.", _record("Paint", "A paint colour.", (
        ("name", "string", "the colour's name"), ("warm", "boolean", "a warm tone or not")), False)),
)  # fmt: skip
"""Structured-output requests written for the evaluation, each with its own schema: the model supplies the
values (nothing to copy but the keys). The first two are LangChain's standard test, ``Joke`` in its wording;
the training generator (:mod:`demo_invented`) draws neither that topic nor that wording, and the 17 cases
that are not jokes ask for kinds of record it does not have at all."""


def _string_values(value: object) -> list[str]:
    if isinstance(value, dict):
        return [text for item in value.values() for text in _string_values(item)]
    return [value] if isinstance(value, str) else []


def handwritten_values() -> list[str]:
    """Every hand-written name, value, tool name and answer span of these sets (for contamination checks)."""
    values = [name for name, _ in PEOPLE] + [city for _, city in PEOPLE] + list(TOOLS)
    for case in TOOL_CASES:
        values += _string_values(case.args) + [case.result]
    values += [question.span for case in RAG_CASES for question in case.questions]
    return list(dict.fromkeys(values))


demo_values.reserve(handwritten_values())
