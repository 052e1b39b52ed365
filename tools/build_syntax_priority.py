"""Builds the per-vocab-id part-of-speech priority table for syntax masking.

CLIPA-v2's ``noun_tokenize`` keeps the words of a long caption by the priority
of their first word piece: nouns 1, adjectives 2, verbs 3, everything else 4.
The original tagged every BERT vocabulary entry *in isolation* with NLTK's
averaged-perceptron tagger, whose data cannot be downloaded here. This script
rebuilds such a table from the English lexicon shipped inside the PyPI package
``lemminflect`` (``pip install lemminflect==0.2.3``; needed only to run this
script), which lists the possible parts of speech (UPOS) of ~80k word forms.

A tagger looking at one word alone answers with the word's most frequent tag.
The lexicon has no frequencies, so a word with several possible tags is
resolved with rules that aim at the same answer and at keeping content words:

1. special tokens ``[...]``, continuation pieces ``##...``, and anything that is
   not a plain ASCII-letter word (punctuation, digits, other scripts): 4;
2. a hand-written ``OVERRIDES`` list (colour words are adjectives, a few
   ``-ing`` words are mostly nouns, ...) and a closed-class list (articles,
   pronouns, prepositions, conjunctions, auxiliaries and modals, number words,
   function adverbs, contraction fragments): as listed;
3. an ``-ing`` form of a verb (sitting, holding, flying): 3, like NLTK's VBG;
4. a comparative or superlative (larger, best), an adjective that is
   gradable (has a comparative: red, young, dark) or one that is not also a
   noun (wooden, empty, open): 2;
5. any other word that can be a noun (cat, ledge, run, front, male): 1;
6. a verb (parked, sits, made): 3; adverbs only: 4;
7. a word the lexicon lacks (names, brands, rare words): 1, as the tagger
   guesses a noun for unknown words.

Run from the repository root::

  .venv/bin/python tools/build_syntax_priority.py

It rewrites ``clipa_t5x/data/assets/syntax_priority.txt`` (one integer per
vocabulary id, in id order). The output depends only on the vocabulary, this
file and lemminflect 0.2.3, so it is reproducible.
"""

import argparse
import collections
import importlib.util
import os
import sys
from typing import Dict, List

NOUN, ADJ, VERB, OTHER = 1, 2, 3, 4

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB_PATH = os.path.join(_ROOT, "clipa_t5x", "data", "assets",
                          "bert_base_uncased_vocab.txt")
TABLE_PATH = os.path.join(_ROOT, "clipa_t5x", "data", "assets",
                          "syntax_priority.txt")

_CLOSED_CLASS_TEXT = """
  a an the this that these those each every either neither some any no all
  both another other such what which whatever whichever whose
  many much few several more most less least enough lot lots
  i me my mine myself you your yours yourself yourselves he him his himself
  she her hers herself it its itself we us our ours ourselves they them their
  theirs themselves one ones oneself someone somebody something anyone anybody
  anything everyone everybody everything nobody nothing none who whom whoever
  about above across after against along alongside amid amidst among amongst
  around as at atop before behind below beneath beside besides between beyond
  by despite down during except for from in inside into like near of off on
  onto opposite out outside over past per since than through throughout till
  to toward towards under underneath unlike until up upon via with within
  without versus vs
  and or but nor so yet if because although though while whereas unless
  whether when where why how whenever wherever then
  be am is are was were been being have has had having do does did will would
  shall should can could may might must ought dare
  not never also just only even still already again ever very too quite
  rather really almost always often sometimes here there now well away
  together perhaps maybe else instead
  zero two three four five six seven eight nine ten eleven twelve thirteen
  fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty
  fifty sixty seventy eighty ninety hundred thousand million billion
  trillion
  oh ok okay yes yeah hey hi hello wow please
  s t d ll m re ve don isn aren wasn weren doesn didn hasn haven hadn wouldn
  couldn shouldn mustn ain
"""
CLOSED_CLASS = frozenset(_CLOSED_CLASS_TEXT.split())

# Colour words are listed as nouns too; in captions they describe ("an orange
# cat"), as NLTK's JJ for "red" or "white" does.
_COLOURS = ("red orange yellow green blue purple pink brown black white gray "
            "grey beige violet turquoise golden").split()
# -ing forms that mostly name a thing or a place in captions.
_ING_NOUNS = ("building painting drawing clothing ceiling wedding evening "
              "meeting railing icing frosting filling bedding").split()
# -ing forms used like adjectives ("living room", "dining table").
_ING_ADJECTIVES = "living dining".split()

OVERRIDES: Dict[str, int] = {
    **{w: ADJ for w in _COLOURS},
    **{w: NOUN for w in _ING_NOUNS},
    **{w: ADJ for w in _ING_ADJECTIVES},
}


def word_priority(word: str) -> int:
  """Priority (1 noun, 2 adjective, 3 verb, 4 other) of one vocabulary entry.

  Args:
    word: a BERT vocabulary entry (already lower case).

  Returns:
    The priority, following the rules of the module docstring.
  """
  import lemminflect  # pylint: disable=import-outside-toplevel

  if word.startswith("##") or (word.startswith("[") and word.endswith("]")):
    return OTHER
  if not (word.isascii() and word.isalpha()):
    return OTHER
  if word in OVERRIDES:
    return OVERRIDES[word]
  if word in CLOSED_CLASS:
    return OTHER
  tags = dict(lemminflect.getAllLemmas(word))
  tags.pop("AUX", None)
  if not tags:
    # Auxiliary-only words are covered by CLOSED_CLASS; this is an unknown word.
    return NOUN
  is_verb_form = "VERB" in tags and word not in tags["VERB"]
  if is_verb_form and word.endswith("ing"):
    return VERB
  if "ADJ" in tags and word not in tags["ADJ"]:
    return ADJ  # comparative or superlative (larger, best)
  if "ADJ" in tags:
    gradable = "JJR" in lemminflect.getAllInflections(word, upos="ADJ")
    if gradable or "NOUN" not in tags:
      return ADJ
  if "NOUN" in tags:
    return NOUN
  if "VERB" in tags:
    return VERB
  return OTHER


def build_table(vocab: List[str]) -> List[int]:
  """Priorities of a whole vocabulary, in id order."""
  return [word_priority(w) for w in vocab]


def read_vocab(path: str) -> List[str]:
  """Vocabulary entries, one per line, in id order."""
  with open(path, encoding="utf-8") as f:
    vocab = f.read().split("\n")
  return vocab[:-1] if vocab and vocab[-1] == "" else vocab


def main(argv: List[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--vocab", default=VOCAB_PATH)
  parser.add_argument("--out", default=TABLE_PATH)
  args = parser.parse_args(argv)
  if importlib.util.find_spec("lemminflect") is None:
    print("lemminflect is missing: .venv/bin/pip install lemminflect==0.2.3",
          file=sys.stderr)
    return 1
  vocab = read_vocab(args.vocab)
  table = build_table(vocab)
  with open(args.out, "w", encoding="ascii") as f:
    f.write("".join(f"{p}\n" for p in table))
  counts = collections.Counter(table)
  print(f"wrote {len(table)} priorities to {args.out}: "
        + ", ".join(f"{k}: {counts[k]}" for k in sorted(counts)))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
