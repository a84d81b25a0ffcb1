"""A probabilistic grammar of short children's stories: the training corpus of genplug's default model.

Every story has the same arc -- a hero is introduced, says where they live and what they like, goes
somewhere, and one of a few plots (sharing a find, a lost toy, an animal in the rain, a brave climb)
plays out before a closing line. Names and pronouns are fixed per story, so the text stays coherent;
the lexicon is small, so a model of a few million parameters learns it well. ``vocabulary()`` lists
every word the grammar can produce (tests check generated text against it).

    python scripts/story_grammar.py --seed 0 --count 3
"""

from __future__ import annotations

import argparse
import random
import re
from typing import Dict, Iterator, List, Set

# ---------------------------------------------------------------------------------------------- lexicon

GIRL_NAMES = ["Lily", "Mia", "Anna", "Lucy", "Emma", "Zoe", "Sara", "Rosa", "Ella", "Molly", "Daisy", "Nina"]
BOY_NAMES = ["Tom", "Ben", "Sam", "Max", "Tim", "Jack", "Leo", "Finn", "Noah", "Oscar", "Ted", "Jake"]
ANIMALS = ["cat", "dog", "bunny", "bear", "fox", "frog", "duck", "mouse", "owl", "pig"]
HERO_ADJECTIVES = ["little", "small", "happy", "kind", "brave", "curious", "shy", "funny", "gentle", "clever"]
HOMES = ["a small house near the forest", "a white house on a big farm", "a quiet town", "a cozy house by the lake",
         "a busy village", "a little house on a hill", "a yellow house by the sea", "a tall tree in the woods"]
FAMILY = ["mom", "dad", "grandma", "grandpa", "big sister", "little brother"]
ACTIVITIES = ["play in the garden", "read books", "sing songs", "draw pictures", "run in the park",
              "look at the stars", "jump in puddles", "pick flowers", "build sand castles", "climb trees",
              "watch the birds", "dance in the rain", "play hide and seek"]
PLACES = ["park", "garden", "forest", "beach", "river", "lake", "hill", "farm", "market", "meadow", "playground"]
COLORS = ["red", "blue", "green", "yellow", "shiny", "big", "soft", "pretty"]
THINGS = ["ball", "kite", "hat", "book", "toy car", "box", "stone", "cup", "teddy bear", "drum", "boat", "scarf"]
SPOTS = ["under a tree", "near a big rock", "in the tall grass", "behind a bush", "next to a flower",
         "by the water", "under a bench"]
HIDING_PLACES = ["bush", "tree", "bench", "rock", "log", "big leaf"]
SMALL_ANIMALS = {"bird": "flew", "kitten": "ran", "puppy": "ran", "duckling": "waddled", "squirrel": "ran"}
TRAPS = ["a thorny bush", "a deep hole", "a wet log", "a pile of leaves"]
LESSONS = {  # plot -> what the hero can learn from it
    "share": ["sharing makes everyone happy", "sharing is fun"],
    "lost": ["friends make everything better", "a good friend is a great treasure"],
    "rain": ["it is good to help others", "kindness is the best gift"],
    "climb": ["being brave is not so hard", "friends make everything better"],
}
VIEWS = ["town", "forest", "lake", "village", "farm"]

# ---------------------------------------------------------------------------------------------- sentences
# {name}/{name2}: hero/friend; {pron}/{Pron}: she/he; {poss}/{Poss}: her/his; {obj}: her/him.

INTROS = [
    "Once upon a time, there was a {adj} {kind} named {name}.",
    "Once upon a time, there was a {adj} {kind} called {name}.",
    "There once was a {adj} {kind} named {name}.",
    "Once upon a time, in {home}, there lived a {adj} {kind} named {name}.",
]
HOME_LINES = ["{Pron} lived in {home}.", "{Pron} lived with {poss} {family} in {home}."]
LIKES = ["{name} loved to {activity}.", "Every day, {pron} liked to {activity}.",
         "{Pron} liked to {activity} more than anything."]
OUTINGS = ["One day, {name} went to the {place}.", "One sunny morning, {name} walked to the {place}.",
           "One day, {name} and {poss} {family} went to the {place}."]
OWNED = ["{name} had a {color} {thing} that {pron} loved very much."]
FRIEND_INTROS = ["Soon, {pron} met a {adj2} {kind2} named {name2}.", "Just then, {pron} saw a {adj2} {kind2} named {name2}."]

PLOTS: Dict[str, List[str]] = {
    "share": [
        "There, {pron} found a {color} {thing} {spot}.",
        "{name} was very happy.",
        "{friend_intro}",
        "{name2} looked sad.",
        "\"Why are you sad?\" asked {name}.",
        "\"I have no {thing} to play with,\" said {name2}.",
        "{name} thought for a moment. Then {pron} said, \"We can play with my {thing} together!\"",
        "{name2} smiled. \"Thank you, {name}!\"",
        "They played with the {thing} all day long.",
    ],
    "lost": [
        "But when {pron} got to the {place}, the {thing} was gone!",
        "{name} looked under the {hide1} and behind the {hide2}, but {pron} could not find it.",
        "{Pron} started to cry.",
        "Then a {adj2} {kind2} named {name2} came by.",
        "\"Do not cry,\" said {name2}. \"I will help you look.\"",
        "They looked and looked. At last, {name2} found the {thing} {spot}.",
        "{name} hugged {name2}. \"Thank you so much!\" {pron} said.",
    ],
    "rain": [
        "Suddenly, dark clouds filled the sky and it began to rain.",
        "{name} saw a little {animal} stuck in {trap}.",
        "The {animal} was cold and scared.",
        "{name} gently helped the {animal} get out.",
        "Then {pron} held it close until the rain stopped.",
        "The {animal} looked at {name} and {move} away happily.",
        "{friend_intro}",
        "{name2} said, \"You are very kind, {name}.\"",
    ],
    "climb": [
        "{name} wanted to climb the big tree, but {pron} was scared.",
        "{friend_intro}",
        "{name2} said, \"You can do it! I will help you.\"",
        "Step by step, {name} climbed higher and higher.",
        "At the top, {pron} could see the whole {view}.",
        "{name} was not scared anymore.",
    ],
}
CLOSINGS = ["From that day on, {name} and {name2} were best friends.", "{name} learned that {lesson}."]
GOING_HOME = ["When the sun went down, {name} went home, tired and happy.",
              "{name} and {name2} walked home together, smiling."]
THE_END = "The end."


# ---------------------------------------------------------------------------------------------- stories


def _character(rng: random.Random, exclude: str = "") -> Dict[str, str]:
    girl = rng.random() < 0.5
    name = rng.choice([n for n in (GIRL_NAMES if girl else BOY_NAMES) if n != exclude])
    kind = ("girl" if girl else "boy") if rng.random() < 0.5 else rng.choice(ANIMALS)
    pron, poss, obj = ("she", "her", "her") if girl else ("he", "his", "him")
    return {"name": name, "kind": kind, "pron": pron, "poss": poss, "obj": obj}


def story(rng: random.Random) -> str:
    """One story as a single paragraph of sentences."""
    hero = _character(rng)
    friend = _character(rng, exclude=hero["name"])
    animal = rng.choice(sorted(SMALL_ANIMALS))
    hide1, hide2 = rng.sample(HIDING_PLACES, 2)
    slots = {
        **hero, "Pron": hero["pron"].capitalize(), "Poss": hero["poss"].capitalize(),
        "name2": friend["name"], "kind2": friend["kind"],
        "adj": rng.choice(HERO_ADJECTIVES), "adj2": rng.choice(HERO_ADJECTIVES),
        "home": rng.choice(HOMES), "family": rng.choice(FAMILY), "activity": rng.choice(ACTIVITIES),
        "place": rng.choice(PLACES), "color": rng.choice(COLORS), "thing": rng.choice(THINGS),
        "spot": rng.choice(SPOTS), "hide1": hide1, "hide2": hide2, "animal": animal,
        "move": SMALL_ANIMALS[animal], "trap": rng.choice(TRAPS),
        "view": rng.choice(VIEWS),
    }
    plot = rng.choice(sorted(PLOTS))
    slots["lesson"] = rng.choice(LESSONS[plot])
    slots["friend_intro"] = rng.choice(FRIEND_INTROS).format(**slots)
    intro = rng.choice(INTROS)
    lines = [intro]
    if "{home}" not in intro:
        lines.append(rng.choice(HOME_LINES))
    lines.append(rng.choice(LIKES))
    if plot == "lost":
        lines.append(rng.choice(OWNED))
    lines.append(rng.choice(OUTINGS))
    lines.extend(PLOTS[plot])
    lines.append(rng.choice(CLOSINGS))
    if rng.random() < 0.5:
        lines.append(rng.choice(GOING_HOME))
    if rng.random() < 0.5:
        lines.append(THE_END)
    return " ".join(line.format(**slots) for line in lines)


def stories(seed: int, count: int) -> Iterator[str]:
    """``count`` stories drawn from a generator seeded with ``seed`` (same seed, same stories)."""
    rng = random.Random(seed)
    for _ in range(count):
        yield story(rng)


def vocabulary() -> Set[str]:
    """Every word (lower-cased) any story can contain."""
    texts: List[str] = [THE_END]
    for table in (GIRL_NAMES, BOY_NAMES, ANIMALS, HERO_ADJECTIVES, HOMES, FAMILY, ACTIVITIES, PLACES, COLORS,
                  THINGS, SPOTS, HIDING_PLACES, list(SMALL_ANIMALS), list(SMALL_ANIMALS.values()), TRAPS,
                  *LESSONS.values(), VIEWS, INTROS, HOME_LINES, LIKES, OUTINGS, OWNED, FRIEND_INTROS, CLOSINGS,
                  GOING_HOME, *PLOTS.values()):
        texts.extend(table)
    texts.extend(["girl", "boy", "she", "he", "her", "his", "him"])
    words = set()
    for text in texts:
        words.update(w.lower() for w in re.findall(r"[A-Za-z]+", re.sub(r"\{\w+\}", " ", text)))
    return words


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Print stories from the grammar.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=3)
    args = parser.parse_args(argv)
    for text in stories(args.seed, args.count):
        print(text, end="\n\n")


if __name__ == "__main__":
    main()
