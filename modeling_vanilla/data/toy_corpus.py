"""A small English-German parallel corpus that the project generates itself, for offline quickstarts and tests.

Sentences come from a tiny caption grammar (subject, verb, object, place) with a word-for-word German
rendering that still needs agreement, a different verb position after time words, and capitalization, so a
model has something to learn beyond copying. Deterministic for a given seed.
"""

from __future__ import annotations

import random
from pathlib import Path

# (English, German) building blocks. Nouns carry their German article by case.
SUBJECTS = [
    ("a man", "ein Mann"), ("a woman", "eine Frau"), ("the dog", "der Hund"), ("a child", "ein Kind"),
    ("the girl", "das Mädchen"), ("a boy", "ein Junge"), ("the old man", "der alte Mann"),
    ("a young woman", "eine junge Frau"), ("two men", "zwei Männer"), ("three children", "drei Kinder"),
    ("the workers", "die Arbeiter"), ("a group of people", "eine Gruppe von Menschen"),
]
PLURAL = {"two men", "three children", "the workers"}
VERBS = [
    # (English singular, English plural, German singular, German plural, object case)
    ("is riding", "are riding", "fährt", "fahren", "acc"), ("is holding", "are holding", "hält", "halten", "acc"),
    ("is watching", "are watching", "beobachtet", "beobachten", "acc"), ("is carrying", "are carrying", "trägt", "tragen", "acc"),
    ("is painting", "are painting", "malt", "malen", "acc"), ("is pulling", "are pulling", "zieht", "ziehen", "acc"),
]
OBJECTS = [
    ("a bicycle", "ein Fahrrad"), ("a ball", "einen Ball"), ("the boat", "das Boot"), ("a large box", "eine große Kiste"),
    ("a red car", "ein rotes Auto"), ("the fence", "den Zaun"), ("a small cart", "einen kleinen Wagen"),
    ("a white horse", "ein weißes Pferd"),
]
PLACES = [
    ("in the park", "im Park"), ("on the street", "auf der Straße"), ("near the river", "in der Nähe des Flusses"),
    ("in front of a building", "vor einem Gebäude"), ("at the beach", "am Strand"), ("in the snow", "im Schnee"),
    ("", ""),
]
TIMES = [("today", "heute"), ("in the morning", "am Morgen"), ("at night", "in der Nacht"), ("", "")]


def toy_pair(rng: random.Random) -> tuple[str, str]:
    """One (English, German) caption. A fronted time word moves the German verb before the subject (V2)."""
    (subj_en, subj_de), (obj_en, obj_de), (place_en, place_de), (time_en, time_de) = (
        rng.choice(SUBJECTS), rng.choice(OBJECTS), rng.choice(PLACES), rng.choice(TIMES))
    sing_en, plur_en, sing_de, plur_de, _ = rng.choice(VERBS)
    plural = subj_en in PLURAL
    verb_en, verb_de = (plur_en, plur_de) if plural else (sing_en, sing_de)
    english = " ".join(w for w in (subj_en, verb_en, obj_en, place_en, time_en) if w)
    if time_de and rng.random() < 0.5:
        german = " ".join(w for w in (time_de, verb_de, subj_de, obj_de, place_de) if w)
        english = " ".join(w for w in (time_en + ",", subj_en, verb_en, obj_en, place_en) if w)
    else:
        german = " ".join(w for w in (subj_de, verb_de, obj_de, place_de, time_de) if w)
    return english[0].upper() + english[1:] + ".", german[0].upper() + german[1:] + "."


def write_toy_corpus(directory: str | Path, train: int = 5000, valid: int = 200, test: int = 200, seed: int = 0) -> Path:
    """Write `{train,valid,test}.{en,de}` (one sentence per line, aligned) into `directory`; returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for split, count in (("train", train), ("valid", valid), ("test", test)):
        pairs = [toy_pair(rng) for _ in range(count)]
        for index, language in enumerate(("en", "de")):
            (directory / f"{split}.{language}").write_text("".join(pair[index] + "\n" for pair in pairs), encoding="utf-8")
    return directory
