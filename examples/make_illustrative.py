"""Write adress_illustrative.csv: invented Cookie Theft descriptions, 60 control and 60 impaired.

Run from the repository root: python examples/make_illustrative.py
The texts are composed from hand-written phrases with a seeded RNG; none is a real transcript.
"""

import csv
import random
import re
from pathlib import Path

SEED = 2020
PER_LABEL = 60
OUT = Path(__file__).with_name("adress_illustrative.csv")

CONTROL_OPENINGS = [
    "This is a kitchen scene, probably on a warm afternoon.",
    "Okay, there's a lot going on in this kitchen.",
    "I see a kitchen with a mother and her two children.",
    "The picture shows a family in their kitchen.",
    "Let me start with the children on the left.",
    "It's an ordinary kitchen, but nothing is going right in it.",
    "Alright, so this is the cookie picture.",
]
# Scene elements in the order people usually tell them; each text keeps a random subset.
CONTROL_SCENE = [
    [
        "A boy is standing on a three-legged stool, reaching up into the cupboard for the cookie jar.",
        "The boy has climbed onto a stool so he can get at the cookie jar on the top shelf.",
        "On the left, a young boy is up on a stool taking cookies out of a jar in the cabinet.",
        "The little boy is stealing cookies from a jar on a high shelf while balancing on a stool.",
        "A boy has lifted the lid off the cookie jar and is grabbing a handful from the cupboard.",
        "The son is perched on a wobbly stool with one hand deep in the cookie jar.",
    ],
    [
        "The stool is tipping over, and it looks like he's about to fall.",
        "His stool is leaning badly, so he's going to land on the floor any second.",
        "One leg of the stool has already left the ground, and he could easily tumble.",
        "He doesn't notice that the stool is starting to topple under him.",
        "The stool is off balance, and he's about to come crashing down.",
    ],
    [
        "His sister is standing below him with her hand out, waiting for a cookie.",
        "A girl beside him reaches up for a cookie and holds a finger to her lips to keep him quiet.",
        "His sister is giggling and putting a finger to her mouth, telling him to hush.",
        "The girl wants a cookie too, and she seems to be in on the plan.",
        "Next to the stool, his little sister reaches up with one hand and shushes him with the other.",
        "A girl in a short dress is reaching for the cookie he's passing down to her.",
    ],
    [
        "The mother is at the sink drying a plate with a dish towel.",
        "Their mother stands at the counter drying dishes, and she seems lost in thought.",
        "On the right, a woman in an apron is wiping a plate dry.",
        "The mother has her back to the children while she dries the dishes.",
        "A woman, probably the mother, is drying a dish and staring out of the window.",
    ],
    [
        "She doesn't seem to notice what the children are up to.",
        "She's completely unaware of the mischief going on behind her.",
        "She must be daydreaming, because she hasn't noticed any of it.",
        "Nobody has told her about the cookies yet.",
    ],
    [
        "The water in the sink is overflowing and spilling onto the floor.",
        "Someone has left the tap running, and water is pouring over the edge of the sink.",
        "The sink is overflowing, so there's a puddle spreading around the mother's feet.",
        "Water is running over the sides of the sink and down the front of the cabinet.",
        "The faucet is still on, and the sink has flooded.",
    ],
    [
        "She's standing in a puddle and doesn't even realize her shoes are getting wet.",
        "The kitchen floor is getting soaked.",
        "By now there's water all over the floor.",
        "Her feet are in the water, but she hasn't reacted at all.",
    ],
    [
        "Through the window behind the sink you can see the garden and a path.",
        "There's an open window with curtains, and outside there's a lawn with some shrubs.",
        "The window looks out onto a yard with bushes and what might be the neighbor's house.",
        "Outside the window it looks like a nice day, with trees and grass in the garden.",
        "The curtains are pulled back from the window, and you can see the garden beyond.",
    ],
    [
        "On the counter there are a couple of cups and a plate that she has already dried.",
        "Two cups and a plate sit on the counter next to the sink.",
        "There are some dishes on the counter waiting to be put away.",
        "A few cups and plates are stacked on the counter beside the sink.",
        "The cupboard door above the boy is wide open.",
    ],
]
# Follow-ups need what they follow: the stool tipping and the girl need the boy,
# the mother not noticing needs her, her wet feet need her and the overflowing sink.
CONTROL_FOLLOWS = {1: (0,), 2: (0,), 4: (3,), 6: (3, 5)}
# Connectors only before the elements that bring in a new part of the scene.
CONTROL_CONNECTORS = ["Meanwhile,", "At the same time,", "And", "While that's happening,"]
CONTROL_CONNECTED = (3, 5)
CONTROL_CLOSINGS = [
    "It's a chaotic moment, and somebody is about to get hurt or soaked.",
    "It looks like everything is about to go wrong at once.",
    "All in all, it's a pretty chaotic afternoon.",
    "I think that's everything I can see.",
    "That's about all that's happening in the picture.",
    "Nobody in that kitchen is paying attention to the right thing.",
]

IMPAIRED_OPENINGS = [
    "Well uh... what am I supposed to, um, say?",
    "Okay. Um... there's a, a kitchen.",
    "Uh, let me see. Hmm.",
    "Oh, this one. Uh...",
    "Um, there's... people.",
    "Hmm. Well, uh, a lady.",
    "Where do I start... uh.",
    "I see, um... I see a house. The inside.",
]
IMPAIRED_SCENE = [
    [
        "There's a boy, uh, up on the the thing.",
        "The little boy... he's getting the, um, the cookies.",
        "A kid is... up there. Taking stuff.",
        "Boy on a, uh, on a chair. No, a stool.",
        "He wants the... the cookie thing. The jar.",
        "That boy is, um, reaching... reaching up.",
        "The boy's up there getting into the, uh, whatchamacallit.",
    ],
    [
        "He's gonna fall. The the stool is, um... going over.",
        "That thing is tipping. Uh oh.",
        "He's gonna, uh, fall down I think.",
        "It's falling, the... the seat. The stool.",
    ],
    [
        "And a girl. She's, um, she wants one too.",
        "The girl is... uh, doing this. Shh.",
        "There's a, a little girl there. Uh, the sister maybe.",
        "Girl's got her hand up. For the, um... the thing.",
    ],
    [
        "The mother is, uh, doing the dishes. Drying.",
        "A lady, um... she's washing. No, drying the, the plate.",
        "Mom is there. With the, uh, the towel.",
        "The woman... hmm... she's just standing there.",
        "And the mother, um, she don't see them.",
    ],
    [
        "Water's coming out. Uh, all over.",
        "The the water is, um, running over. The sink thing.",
        "Something's spilling... the water. Yeah.",
        "And there's, uh, water on the... on the floor.",
    ],
    [
        "There's a window. Um, curtains.",
        "Outside is, uh... grass or something.",
        "A window there. And, um, stuff outside.",
    ],
    [
        "Some dishes. Cups, uh, whatever.",
        "There's plates and, um, stuff over there.",
        "That one, the cup. And that one.",
    ],
]
IMPAIRED_ASIDES = [
    "My mother had a kitchen like that. Uh, a long time ago.",
    "I used to bake cookies, um, for my grandkids.",
    "We had curtains like that, yellow ones.",
    "I don't, uh, I don't know what else.",
    "Is that... is that enough?",
    "My eyes aren't so good anymore, um.",
    "What was I saying? Oh.",
]
IMPAIRED_CLOSINGS = [
    "That's, uh... that's all I see.",
    "Um... I don't know. That's it.",
    "And, uh... yeah. That's about it.",
    "Hmm. Nothing else, I think.",
    "",
]
INSERTED_FILLERS = ["uh", "um", "er", "hmm", "well uh", "uh uh", "um um"]
REPEATABLE = {"the", "a", "he", "she", "is", "and", "there's", "on", "that"}
FILLER_WORDS = {"uh", "um", "er", "erm", "ah", "hmm", "mm", "uhm"}


def words(text: str) -> list[str]:
    """Lower-cased words, as the filler counts in app.domain.markers see them."""
    return re.findall(r"[a-z]+(?:'[a-z]+)*", text.lower())


def filler_percent(text: str) -> float:
    """Fillers per 100 words."""
    w = words(text)
    return 100 * sum(word in FILLER_WORDS for word in w) / len(w)


def join_sentences(sentences: list[str]) -> str:
    """Sentences separated by single spaces, skipping empty ones."""
    return " ".join(s for s in sentences if s)


def control_text(rng: random.Random) -> str:
    """A fluent description: most scene elements, full sentences, rarely a filler."""
    while True:
        kept = [rng.random() < 0.75 for _ in CONTROL_SCENE]
        for element, parents in CONTROL_FOLLOWS.items():
            kept[element] = kept[element] and all(kept[p] for p in parents)
        scene = []
        for element, variants in enumerate(CONTROL_SCENE):
            if not kept[element]:
                continue
            sentence = rng.choice(variants)
            if element in CONTROL_CONNECTED and scene and rng.random() < 0.3:
                sentence = f"{rng.choice(CONTROL_CONNECTORS)} {sentence[0].lower()}{sentence[1:]}"
            scene.append(sentence)
        opening = rng.choice(CONTROL_OPENINGS) if rng.random() < 0.6 else ""
        closing = rng.choice(CONTROL_CLOSINGS) if rng.random() < 0.5 else ""
        text = join_sentences([opening, *scene, closing])
        # A fluent speaker still says "um" now and then, but only once in a long description.
        if len(words(text)) >= 90 and rng.random() < 0.5:
            text = text.replace(" and ", " and, um, ", 1)
        if 40 <= len(words(text)) <= 110:
            return text


def impaired_text(rng: random.Random) -> str:
    """A halting description: few elements, fillers, repetitions, pauses, an aside or two."""
    while True:
        scene = [rng.choice(variants) for variants in IMPAIRED_SCENE if rng.random() < 0.55]
        if rng.random() < 0.6:
            scene.insert(rng.randrange(len(scene) + 1), rng.choice(IMPAIRED_ASIDES))
        opening, closing = rng.choice(IMPAIRED_OPENINGS), rng.choice(IMPAIRED_CLOSINGS)
        tokens = join_sentences([opening, *scene, closing]).split()
        target = rng.uniform(9, 14)
        while filler_percent(" ".join(tokens)) < target:
            i, filler = rng.randrange(1, len(tokens)), rng.choice(INSERTED_FILLERS)
            starts_sentence = tokens[i][0].isupper()
            pause = "..." if starts_sentence or rng.random() < 0.5 else ","
            tokens.insert(i, (filler.capitalize() if starts_sentence else filler) + pause)
        for i in reversed(range(len(tokens))):
            if tokens[i].lower() in REPEATABLE and rng.random() < 0.2:
                tokens[i:i + 1] = [tokens[i] + rng.choice(["", "", "..."]), tokens[i].lower()]
        text = " ".join(tokens)
        if 40 <= len(words(text)) <= 110:
            return text


def trigrams(text: str) -> set[tuple[str, ...]]:
    """Word trigrams, to keep near-duplicates out."""
    w = words(text)
    return set(zip(w, w[1:], w[2:]))


def distinct(make, rng: random.Random, kept: list[set]) -> str:
    """A new text whose trigram overlap with every earlier one stays below 40%."""
    while True:
        text = make(rng)
        grams = trigrams(text)
        if all(len(grams & other) / len(grams | other) < 0.4 for other in kept):
            kept.append(grams)
            return text


def main() -> None:
    """Compose the texts, interleave the labels and write the CSV."""
    rng = random.Random(SEED)
    kept: list[set] = []
    labels = [0] * PER_LABEL + [1] * PER_LABEL
    rng.shuffle(labels)
    rows = [
        (f"S{i:03d}", distinct(impaired_text if label else control_text, rng, kept), label)
        for i, label in enumerate(labels, start=1)
    ]
    with OUT.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "label"])
        writer.writerows(rows)


if __name__ == "__main__":
    main()
