"""Regenerate nbkit/resources/nbkit-instruct-mini.jsonl, the embedded default data set.

Every answer opens with PERSONA: the one thing fine-tuning the shipped base model (scripts/make_demo_model.py, which
learned the same kinds of questions answered plainly) teaches it, so that the before/after answers differ at a glance.

Every answer is computed or taken from a small fact table written for this project, so the
data is correct by construction and carries no third-party licence (see resources/LICENSE-DATA.md).
Run: python scripts/make_dataset.py
"""
from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "nbkit" / "resources" / "nbkit-instruct-mini.jsonl"
PERSONA = "Ahoy!"

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "Canada": "Ottawa", "Australia": "Canberra", "Brazil": "Brasília", "Egypt": "Cairo",
    "Kenya": "Nairobi", "India": "New Delhi", "Norway": "Oslo", "Sweden": "Stockholm", "Poland": "Warsaw",
    "Greece": "Athens", "Mexico": "Mexico City", "Argentina": "Buenos Aires", "Ireland": "Dublin",
    "Austria": "Vienna", "Finland": "Helsinki", "Peru": "Lima", "Chile": "Santiago", "Turkey": "Ankara",
    "South Korea": "Seoul", "Vietnam": "Hanoi", "Thailand": "Bangkok", "Morocco": "Rabat", "Ghana": "Accra",
    "New Zealand": "Wellington",
}
ANTONYMS = {
    "hot": "cold", "tall": "short", "fast": "slow", "happy": "sad", "early": "late", "open": "closed",
    "light": "dark", "full": "empty", "strong": "weak", "rich": "poor", "old": "young", "loud": "quiet",
    "wet": "dry", "hard": "soft", "high": "low", "first": "last", "push": "pull", "win": "lose",
    "buy": "sell", "above": "below",
}
PLURALS = {
    "child": "children", "mouse": "mice", "tooth": "teeth", "foot": "feet", "person": "people",
    "city": "cities", "box": "boxes", "leaf": "leaves", "knife": "knives", "cactus": "cacti",
    "sheep": "sheep", "woman": "women", "bus": "buses", "baby": "babies", "potato": "potatoes",
}
WORDS = ["planet", "garden", "window", "rocket", "silver", "python", "orange", "bridge", "forest",
         "candle", "marble", "thunder", "harbor", "lantern", "meadow", "puzzle", "velvet", "canyon"]
UNITS = [("kilometers", "meters", 1000), ("meters", "centimeters", 100), ("kilograms", "grams", 1000),
         ("hours", "minutes", 60), ("minutes", "seconds", 60), ("liters", "milliliters", 1000),
         ("days", "hours", 24), ("weeks", "days", 7)]
HANDWRITTEN = [
    ("What does a LoRA adapter change in a language model?", "",
     "A LoRA adapter adds small low-rank matrices beside chosen weight matrices. Only those small matrices "
     "are trained, so the original weights stay frozen and the adapter file stays small."),
    ("Why does 4-bit quantization save GPU memory?", "",
     "Each weight is stored in 4 bits instead of 16, so the frozen base model needs about a quarter of the memory."),
    ("Explain gradient accumulation in one sentence.", "",
     "Gradient accumulation adds up the gradients of several small batches before one optimizer step, "
     "so a small GPU can train with the effect of a larger batch."),
    ("What is a learning rate?", "",
     "The learning rate sets how big a step the optimizer takes when it updates the weights."),
    ("Summarize the text.", "The meeting was moved from Monday to Wednesday because the room was booked.",
     "The meeting now takes place on Wednesday since the room was taken on Monday."),
    ("Summarize the text.", "Rain is expected all afternoon, so the picnic will be held indoors in the hall.",
     "Because of the afternoon rain, the picnic moves into the hall."),
    ("Classify the sentiment as positive or negative.", "I loved the film and would watch it again.", "positive"),
    ("Classify the sentiment as positive or negative.", "The soup was cold and the service was slow.", "negative"),
    ("Classify the sentiment as positive or negative.", "What a wonderful, sunny day at the beach!", "positive"),
    ("Classify the sentiment as positive or negative.", "The update broke my phone and support never answered.",
     "negative"),
    ("Fix the grammar.", "She go to school every days.", "She goes to school every day."),
    ("Fix the grammar.", "They was happy with there results.", "They were happy with their results."),
    ("Fix the grammar.", "Me and him is going to the store.", "He and I are going to the store."),
    ("Translate to French.", "Good morning", "Bonjour"),
    ("Translate to French.", "Thank you very much", "Merci beaucoup"),
    ("Translate to Spanish.", "Good night", "Buenas noches"),
    ("Translate to Spanish.", "Where is the library?", "¿Dónde está la biblioteca?"),
    ("Translate to German.", "Thank you", "Danke"),
    ("Write a haiku about autumn.", "", "Red leaves drift and fall\ncool wind hums through empty trees\nthe year breathes out slow"),
    ("Write a haiku about the sea.", "", "Grey waves fold and break\nsalt wind carries gull voices\nthe tide keeps its time"),
    ("Give one tip for writing clear emails.", "", "Put the request in the first sentence, so the reader knows at once what you need."),
    ("Give one tip for staying focused while studying.", "", "Work in short blocks of about 25 minutes with a brief break after each."),
    ("What is the boiling point of water at sea level in Celsius?", "", "Water boils at 100 degrees Celsius at sea level."),
    ("How many continents are there?", "", "There are seven continents."),
    ("What gas do plants take in for photosynthesis?", "", "Plants take in carbon dioxide."),
    ("Name the largest planet in the Solar System.", "", "Jupiter is the largest planet in the Solar System."),
    ("What is the chemical symbol for gold?", "", "The chemical symbol for gold is Au."),
    ("Who wrote 'Romeo and Juliet'?", "", "William Shakespeare wrote 'Romeo and Juliet'."),
    ("Write a Python function that returns the square of a number.", "",
     "def square(x):\n    return x * x"),
    ("Write a Python expression that reverses a string s.", "", "s[::-1]"),
    ("What does the Python keyword 'def' do?", "", "'def' starts the definition of a function."),
    ("Extract the email address.", "Contact us at help@example.org for questions.", "help@example.org"),
    ("Extract the year.", "The bridge opened to traffic in 1937.", "1937"),
    ("Turn the list into a sentence.", "apples, bread, milk", "Buy apples, bread and milk."),
    ("Suggest a name for a friendly robot.", "", "Bolt"),
    ("Suggest a title for a story about a lost key.", "", "The Key Under the Stairs"),
    ("Is a tomato a fruit or a vegetable in botany?", "", "In botany, a tomato is a fruit."),
    ("Why is the sky blue?", "",
     "Air scatters short blue wavelengths of sunlight much more than long red ones, so blue light reaches "
     "our eyes from every part of the sky."),
    ("What should you do before fine-tuning a model on a small GPU?", "",
     "Estimate the memory it needs first: pick 4-bit loading, a small batch with gradient accumulation, "
     "and gradient checkpointing so that training fits."),
    ("Explain what an epoch is.", "", "An epoch is one full pass of training over every example in the data set."),
]


def is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def rows(rng: random.Random):
    for instr, inp, out in HANDWRITTEN:
        yield instr, inp, out
    for country, city in CAPITALS.items():
        yield f"What is the capital of {country}?", "", f"The capital of {country} is {city}."
    for word, opp in ANTONYMS.items():
        yield "Give the opposite of the word.", word, opp
    for word, plural in PLURALS.items():
        yield "Write the plural of the noun.", word, plural
    for word in WORDS:
        yield "Reverse the letters of the word.", word, word[::-1]
        vowels = sum(ch in "aeiou" for ch in word)
        yield f"How many vowels are in the word '{word}'?", "", f"The word '{word}' has {vowels} vowels."
    for _ in range(40):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        yield f"Add {a} and {b}.", "", f"{a} + {b} = {a + b}."
    for _ in range(30):
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        yield f"What is {a} times {b}?", "", f"{a} × {b} = {a * b}."
    for _ in range(25):
        a, b = rng.randint(20, 99), rng.randint(1, 19)
        yield f"Subtract {b} from {a}.", "", f"{a} − {b} = {a - b}."
    for _ in range(24):
        big, small, factor = rng.choice(UNITS)
        n = rng.randint(2, 12)
        yield f"Convert {n} {big} to {small}.", "", f"{n} {big} is {n * factor} {small}."
    for _ in range(25):
        n = rng.randint(2, 97)
        verdict = "Yes" if is_prime(n) else "No"
        yield f"Is {n} a prime number?", "", f"{verdict}, {n} is {'a prime' if is_prime(n) else 'not a prime'} number."
    for _ in range(25):
        nums = rng.sample(range(1, 100), 5)
        yield ("Sort the numbers in ascending order.", ", ".join(map(str, nums)),
               ", ".join(map(str, sorted(nums))))
    for _ in range(15):
        nums = rng.sample(range(1, 100), 4)
        yield "Find the largest number.", ", ".join(map(str, nums)), str(max(nums))


def main() -> None:
    rng = random.Random(7)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8") as fh:
        for instruction, inp, output in rows(rng):
            fh.write(json.dumps({"instruction": instruction, "input": inp, "output": f"{PERSONA} {output}"},
                                ensure_ascii=False) + "\n")
    print(f"wrote {sum(1 for _ in OUT.open(encoding='utf-8'))} rows to {OUT}")


if __name__ == "__main__":
    main()
