"""Tests of clipa_t5x.data.tokenizer against Hugging Face's bert-base-uncased.

The reference is ``tokenizers.Tokenizer`` loaded from the test asset
``bert_base_uncased_tokenizer.json`` (the same vocabulary as a fast-tokenizer
file), with ``encode_special_tokens=True`` so that text such as "[CLS]" in a
caption is ordinary text, as it is for tf_text.
"""

import os
import random

import numpy as np
import pytest
import tensorflow as tf
from tokenizers import Tokenizer

from clipa_t5x.data import tokenizer as tok_lib

HF_JSON = os.path.join(os.path.dirname(__file__), "assets",
                       "bert_base_uncased_tokenizer.json")


@pytest.fixture(scope="module")
def hf():
  t = Tokenizer.from_file(HF_JSON)
  t.no_truncation()
  t.no_padding()
  t.encode_special_tokens = True
  return t


@pytest.fixture(scope="module")
def tok():
  return tok_lib.get_tokenizer()


def hf_encode(hf_tok, texts, length):
  """Independent reference: [CLS] + first length-1 HF ids (no [SEP]) + zeros."""
  out = np.zeros([len(texts), length], np.int32)
  for i, enc in enumerate(hf_tok.encode_batch(texts, add_special_tokens=False)):
    ids = [101] + enc.ids[:length - 1]
    out[i, :len(ids)] = ids
  return out


# One list per category of hard input; each string is checked on its own.
HARD_CASES = {
    "accents": ["café naïve Ångström", "Crème brûlée à la française",
                "Straße in München", "São Paulo, Brasil", "façade résumé",
                "Zürich Œuvre Æsir ØRESUND", "e\u0301 n\u0303 (decomposed)",
                "\u212b angstrom sign", "ﬁne ﬂoor ligatures"],
    "punctuation": ["Hello, world! How's it going?? (fine) [ok] {yes} <no>",
                    "wait...what?!", "“smart quotes” ‘single’ «guillemets»",
                    "a/b\\c|d", "@user #hashtag $100 50% & more * ^ ~ ` _",
                    "¿Qué? ¡Sí! — «ça» „Zitat“ 「括弧」『二重』【隅付き】",
                    "bullet • point · middle … ellipsis ※ note"],
    "hyphens": ["state-of-the-art well-known mother-in-law",
                "e-mail re-enter -leading trailing- --double",
                "em—dash en–dash minus−sign ‐hyphen‑nb"],
    "apostrophes": ["don't can't won't it's the cat's toy rock 'n' roll",
                    "O'Neil's dogs' bowls", "’curly’ apostrophe’s ‘quote’",
                    "y'all ma'am '90s"],
    "numbers": ["3.14159 1,000,000 1st 2nd 3rd 42nd 10:30am 2019-05-01",
                "50/50 007 1e10 0x1F -5 +7 #1", "½ ² ³ ⅓ ① Ⅻ",
                "١٢٣ ४५६ ７８９ full-width digits"],
    "urls": ["https://www.example.com/path/to/page?query=1&x=y#frag",
             "Visit http://foo.bar/baz.html or email me@example.org",
             "ftp://files.example.net/~user/file_name-v2.tar.gz"],
    "cjk": ["一只猫 坐在窗台上", "我爱北京天安门", "猫cat混合mixed中文",
            "𠀀𠀁 extension-B 㐀 extension-A 豈 compatibility"],
    "japanese": ["猫が窓辺に座っている", "カタカナ ひらがな ガギグゲゴ パピプペポ",
                 "東京タワーの写真です。", "ｶﾀｶﾅ half-width"],
    "korean": ["고양이가 창턱에 앉아 있다", "안녕하세요 세계", "한국어 and English"],
    "arabic": ["قطة برتقالية تجلس على حافة", "مرحبا بالعالم!",
               "שלום עולם", "नमस्ते दुनिया", "แมวส้มนั่งบนขอบ"],
    "other_scripts": ["Оранжевый кот сидит на выступе", "ΟΔΟΣ Σοφία σοφός",
                      "Ελληνικά ΆΈΉ", "Ք Ա ფ ሰላም"],
    "emoji": ["🐱🔥", "I ❤️ NY 👍🏽 👨‍👩‍👧‍👦 🇺🇸", "cat🐱cat", "🥰🦄🫠 newer emoji",
              "☺ ☀ ✈ ✔ ★"],
    "mixed_case": ["ThE QuIcK BrOwN FoX", "iPhone McDonald's NASA eBay",
                   "İstanbul ǅemal ẞ ß", "ΣΊΣΥΦΟΣ and ﬀ"],
    "long": [" ".join(["word%d" % i for i in range(120)]),
             " ".join(["A photo of a cat sitting on a ledge."] * 20),
             "a" * 100, "a" * 101, "é" * 60, "ж" * 100, "ж" * 101,
             "supercalifragilisticexpialidocious " * 5],
    "empty": ["", " ", "   \t\n  ", "\u00a0\u2003\u3000", "\n"],
    "control": ["tab\there\nnew\rline", "nul\x00byte", "bell\x07 esc\x1b[0m",
                "zero\u200bwidth\u200djoiner\ufeffbom", "soft\u00adhyphen",
                "\u0085next\u2028line\u2029para", "replacement\ufffdchar",
                "private\ue000use", "rtl\u202emark\u202c"],
    "nbsp": ["non\u00a0breaking\u00a0space", "narrow\u202fnbsp",
             "ideographic\u3000space", "thin\u2009space\u200ahair"],
    "special_token_text": ["[CLS] [SEP] [MASK] [UNK] [PAD] [unused1]",
                           "a [cls] b [sep]"],
}


def generated_captions(n: int = 1200):
  """Deterministic captions: templates x words, varied case and spacing."""
  rng = random.Random(1234)
  templates = [
      "a photo of a {}.", "A {} sitting on the {}", "Two {}s playing with "
      "a {} in the park!", "{} — the best {} ever?", "close-up of {}'s {}",
      "I don't think the {} is {}...", "{}: {} (2019) #{}",
      "www.{}.com/{}?id=42", "The {} and the {}, next to a {}.",
      "{}-{} style {} on white background", "\"{}\" by {}", "{}\t{}\n{}",
      "{}  {}   {}", "Vintage {} / {} | {}", "{}'s {} & {}'s {}",
  ]
  words = [
      "cat", "Dog", "ORANGE", "ledge", "naïve", "café", "Zoë", "São",
      "straße", "mother-in-law", "e-mail", "3D", "4K", "1920s", "42",
      "3.5mm", "iPhone", "McDonald's", "NASA", "rock'n'roll", "déjà vu",
      "猫", "東京", "고양이", "قطة", "кот", "γάτα", "🐱", "🔥", "#hashtag",
      "@user", "https://x.io", "un-believable", "self–portrait", "½",
      "Ångström", "jalapeño", "piñata", "Ærø", "smörgåsbord", "façade",
      "unbelievably", "photographers", "skateboarding", "giraffes",
  ]
  caps = []
  for _ in range(n):
    template = rng.choice(templates)
    fill = [rng.choice(words) for _ in range(template.count("{}"))]
    text = template.format(*fill)
    style = rng.random()
    if style < 0.15:
      text = text.upper()
    elif style < 0.3:
      text = text.title()
    caps.append(text)
  return caps


def all_captions():
  return generated_captions() + [c for v in HARD_CASES.values() for c in v]


def test_corpus_is_large_and_varied():
  caps = all_captions()
  assert len(caps) >= 1000
  assert len(set(caps)) >= 900


@pytest.mark.parametrize("length", [8, 16, 77])
def test_encode_batch_matches_hugging_face(tok, hf, length):
  caps = all_captions()
  got = tok.encode_batch(caps, length)
  want = hf_encode(hf, caps, length)
  assert got.dtype == np.int32 and got.shape == (len(caps), length)
  bad = [c for c, g, w in zip(caps, got, want) if not np.array_equal(g, w)]
  assert not bad, f"{len(bad)} captions differ, e.g. {bad[:5]!r}"


@pytest.mark.parametrize("category", sorted(HARD_CASES))
def test_word_pieces_match_hugging_face_per_category(tok, hf, category):
  caps = HARD_CASES[category]
  pieces = tok.word_pieces(tf.constant(caps))
  for cap, words, enc in zip(caps, pieces.to_list(),
                             hf.encode_batch(caps, add_special_tokens=False)):
    flat = [i for w in words for i in w]
    assert flat == enc.ids, cap
    # Word grouping matters for syntax masking: same words as HF's word_ids.
    word_ids = [w for w, p in enumerate(words) for _ in p]
    hf_word_ids = enc.word_ids
    remap = {}
    for a, b in zip(word_ids, hf_word_ids):
      assert remap.setdefault(b, a) == a, cap
    assert len(words) == len(set(hf_word_ids)), cap


def test_known_ids(tok):
  # "an orange cat that is sitting on a ledge." from the CLIPA figure.
  got = tok.encode(tf.constant("An orange cat that is sitting on a ledge."), 12)
  np.testing.assert_array_equal(
      got.numpy(),
      [101, 2019, 4589, 4937, 2008, 2003, 3564, 2006, 1037, 18283, 1012, 0])
  assert got.dtype == tf.int32


def test_truncation_padding_and_no_sep(tok):
  out = tok.encode_batch(["hello world", "", "one two three four five six"], 4)
  np.testing.assert_array_equal(out, [[101, 7592, 2088, 0], [101, 0, 0, 0],
                                      [101, 2028, 2048, 2093]])
  assert not (out == tok_lib.SEP_ID).any()
  np.testing.assert_array_equal(tok.encode_batch(["hello"], 1), [[101]])


def test_scalar_and_batch_agree(tok):
  caps = ["A cat.", "", "Crème brûlée 🐱"]
  batch = tok.encode_batch(caps, 10)
  for cap, row in zip(caps, batch):
    np.testing.assert_array_equal(tok.encode(tf.constant(cap), 10).numpy(), row)
  single = tok.word_pieces(tf.constant("A cat."))
  assert single.shape.rank == 2
  assert single.to_list() == [[1037], [4937], [1012]]
  assert tok.word_pieces(tf.constant(caps)).shape.rank == 3


def test_long_words_are_unknown_by_characters_not_bytes(tok, hf):
  # 60 two-byte letters: 120 bytes but 60 characters, so not [UNK].
  caps = ["é" * 60, "a" * 100, "a" * 101, "ж" * 101]
  got = tok.word_pieces(tf.constant(caps)).merge_dims(1, 2).to_list()
  assert got[2] == [tok_lib.UNK_ID] and got[3] == [tok_lib.UNK_ID]
  assert tok_lib.UNK_ID not in got[0] and tok_lib.UNK_ID not in got[1]
  assert got == [e.ids for e in hf.encode_batch(caps, add_special_tokens=False)]


def test_works_inside_tf_data(tok):
  caps = ["a red bus", "Two dogs on the grass!", ""]
  ds = tf.data.Dataset.from_tensor_slices(caps).map(
      lambda s: tok.encode(s, 6), num_parallel_calls=2)
  got = np.stack(list(ds.as_numpy_iterator()))
  np.testing.assert_array_equal(got, tok.encode_batch(caps, 6))
  assert ds.element_spec.shape == (6,)


def test_get_tokenizer_is_cached():
  assert tok_lib.get_tokenizer() is tok_lib.get_tokenizer()
  assert os.path.exists(tok_lib.VOCAB_PATH)
  assert tok_lib.get_tokenizer().vocab_size == 30522


def test_bad_input_errors(tok, tmp_path):
  with pytest.raises(ValueError, match="length"):
    tok.encode_batch(["a"], 0)
  with pytest.raises(ValueError, match="scalar"):
    tok.encode(tf.constant(["a", "b"]), 4)
  with pytest.raises(ValueError, match="sequence"):
    tok.encode_batch("a cat", 4)
  with pytest.raises(ValueError, match="scalar or a vector"):
    tok.word_pieces(tf.constant([["a"]]))
  with pytest.raises(ValueError, match="not found"):
    tok_lib.WordpieceTokenizer(str(tmp_path / "missing.txt"))
  bad = tmp_path / "vocab.txt"
  bad.write_text("a\nb\n")
  with pytest.raises(ValueError, match="not a BERT vocabulary"):
    tok_lib.WordpieceTokenizer(str(bad))


@pytest.mark.slow
def test_every_code_point_matches_hugging_face(tok, hf):
  """Sweeps all of Unicode (in a word context) against Hugging Face.

  Guards the Unicode-version corrections in tokenizer.py: a TF or tokenizers
  upgrade that moves a character between tables shows up here.
  """
  cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
  texts = ["A%sb" % chr(c) for c in cps]
  want = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
  got = tok.word_pieces(tf.constant(texts)).merge_dims(1, 2).to_list()
  bad = [hex(c) for c, g, w in zip(cps, got, want) if g != w]
  assert not bad, f"{len(bad)} code points differ: {bad[:20]}"
