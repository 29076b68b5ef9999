#!/usr/bin/python3
"""make_text -- write the bundled training text of the charlm example.

The text is generated (no network, no copyright): sentences from a small
grammar of English words, drawn with a fixed seed, so a character-level
model has spelling, word order and punctuation to learn. Run it to
reproduce text.txt (the committed copy is what the example trains on):

    /usr/bin/python3 examples/charlm/make_text.py > examples/charlm/text.txt
"""
import random
import sys

SEED = 2026
TARGET_BYTES = 160 * 1024

NOUNS = ["river", "garden", "lantern", "sailor", "window", "mountain", "letter", "engine",
         "meadow", "harbor", "clock", "forest", "teacher", "village", "bridge", "candle",
         "market", "painter", "storm", "orchard", "kettle", "island", "road", "bell"]
VERBS = ["watches", "carries", "follows", "remembers", "crosses", "finds", "keeps",
         "opens", "paints", "answers", "builds", "hears", "leaves", "mends", "gathers"]
ADJS = ["old", "quiet", "bright", "narrow", "green", "heavy", "small", "golden", "cold",
        "patient", "distant", "wooden", "gentle", "early", "silver"]
ADVS = ["slowly", "again", "at night", "before dawn", "in the rain", "every morning",
        "without a word", "near the sea", "after the storm"]
CONJ = ["and", "but", "while", "because", "so"]
NAMES = ["Anna", "Tomas", "Lena", "Marek", "Ida", "Oskar", "Vera", "Jonas"]


def noun_phrase(r):
    if r.random() < 0.2:
        return r.choice(NAMES)
    det = r.choice(["the", "a", "the", "every", "that"])
    adj = r.choice(ADJS) + " " if r.random() < 0.5 else ""
    if det == "a" and adj[:1] in "aeiou" and adj:
        det = "an"
    return "%s %s%s" % (det, adj, r.choice(NOUNS))


def clause(r):
    s = "%s %s %s" % (noun_phrase(r), r.choice(VERBS), noun_phrase(r))
    if r.random() < 0.4:
        s += " " + r.choice(ADVS)
    return s


def sentence(r):
    s = clause(r)
    if r.random() < 0.35:
        s += ", " + r.choice(CONJ) + " " + clause(r)
    s = s[0].upper() + s[1:]
    return s + r.choice([".", ".", ".", "!", "?"]) if s else s


def main():
    r = random.Random(SEED)
    out, n = [], 0
    while n < TARGET_BYTES:
        para = " ".join(sentence(r) for _ in range(r.randint(3, 7))) + "\n\n"
        out.append(para)
        n += len(para)
    sys.stdout.write("".join(out))


if __name__ == "__main__":
    main()
