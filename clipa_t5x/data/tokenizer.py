"""BERT uncased WordPiece tokenizer of the CLIPA-v2 text tower, in pure TF ops.

CLIPA-v2 tokenizes captions with tf_text's ``BertTokenizer(lower_case=True)``
and the BERT *uncased* vocabulary; a sequence is ``[CLS]`` followed by the
first ``length - 1`` word pieces, zero-padded, with no ``[SEP]``. open_clip
serves the released weights with Hugging Face's ``bert-base-uncased`` fast
tokenizer instead, and this module reproduces that one id for id.

The two agree on ordinary text but not on exotic input: tf_text's stock
``lower_case=True`` case-folds with NFKC (full-width letters, ligatures,
``ß`` → ``ss``, ``½`` → ``1⁄2``, ``…`` → ``...``), turns format characters such
as a zero-width space into spaces instead of dropping them, splits words only
at ASCII whitespace, and limits words by bytes rather than characters. So this
module does Hugging Face's ``BertNormalizer`` and ``BertPreTokenizer`` steps
itself with TF string ops (regex replace, NFD, Unicode lower-casing, and
``tensorflow_text.regex_split``) and then runs tf_text's WordPiece, which is the
same greedy longest-match algorithm. It also corrects the ~680 code points on
which TF's newer Unicode tables disagree with Hugging Face's (see below).
Everything is a TF op, so it runs inside ``tf.data`` pipelines.
"""

import functools
import os
from typing import List, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

VOCAB_PATH: str = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "assets",
    "bert_base_uncased_vocab.txt")

PAD_ID = 0
UNK_ID = 100
CLS_ID = 101
SEP_ID = 102

# Hugging Face's WordPiece gives up (one [UNK]) on words longer than this many
# characters; tf_text counts bytes, so we check characters ourselves.
MAX_CHARS_PER_WORD = 100

# Hugging Face ``clean_text`` drops NUL, U+FFFD and "control" characters
# (categories Cc except \t \n \r, Cf, Co, Cs), then maps every Unicode
# White_Space character to a plain space. RE2 has no class subtraction, so the
# Cc set is spelled out as ranges.
_DROP_RE = (r"[\x{0}-\x{8}\x{B}\x{C}\x{E}-\x{1F}\x{7F}-\x{9F}\x{FFFD}]"
            r"|\p{Cf}|\p{Co}|\p{Cs}")
_WHITESPACE_RE = (r"[\t\n\r\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}"
                  r"\x{202F}\x{205F}\x{3000}]")
# Unicode version skew. Hugging Face's character tables (marks, punctuation,
# controls) are older than the ICU/RE2 tables of TF 2.21, so ~680 code points
# added to Unicode in recent years are treated differently: e.g. new combining
# marks (U+0898..U+089F) are stripped by TF but kept by Hugging Face, new
# punctuation (U+2E43..U+2E5D) splits words in TF only. None of them is in the
# BERT vocabulary, so a Hugging Face word containing one becomes [UNK]. Found by
# sweeping every code point through both tokenizers (tokenizers 0.23.3; the
# slow test in tests/data/test_tokenizer.py repeats the sweep):
# - kept as an ordinary letter by Hugging Face: mapped to U+FDD0, a
#   noncharacter that every table treats as a letter and the vocab lacks;
_HF_LETTER_RE = (
    "["
    r"\x{61D}\x{7FD}\x{890}-\x{891}\x{898}-\x{89F}\x{8CA}-\x{8E2}"
    r"\x{9FD}-\x{9FE}\x{A76}\x{AFA}-\x{AFF}\x{B55}\x{C04}\x{C3C}\x{C77}"
    r"\x{C84}\x{D00}\x{D3B}-\x{D3C}\x{D81}\x{EBA}\x{ECE}\x{180F}"
    r"\x{1885}-\x{1886}\x{1ABF}-\x{1ACE}\x{1B7D}-\x{1B7E}\x{1C89}"
    r"\x{1DF6}-\x{1DFB}\x{2C2F}\x{2E43}-\x{2E4F}\x{2E52}-\x{2E5D}"
    r"\x{A7C0}\x{A7CB}-\x{A7CC}\x{A7CE}\x{A7D0}\x{A7D2}\x{A7D4}\x{A7D6}"
    r"\x{A7D8}\x{A7DA}\x{A7DC}\x{A82C}\x{A8C5}\x{A8FF}\x{A9BD}"
    r"\x{10570}-\x{1057A}\x{1057C}-\x{1058A}\x{1058C}-\x{10592}"
    r"\x{10594}-\x{10595}\x{105C9}\x{105E4}\x{10D24}-\x{10D27}"
    r"\x{10D50}-\x{10D65}\x{10EAB}-\x{10EAD}\x{10EFD}-\x{10EFF}"
    r"\x{10F46}-\x{10F50}\x{10F55}-\x{10F59}\x{10F82}-\x{10F89}\x{11070}"
    r"\x{11073}-\x{11074}\x{110C2}\x{110CD}\x{111CF}\x{1123E}\x{11241}"
    r"\x{1133B}\x{11383}\x{11385}\x{1138E}\x{11391}\x{113C5}"
    r"\x{113C7}-\x{113C8}\x{11438}-\x{1143F}\x{11442}-\x{11444}\x{11446}"
    r"\x{1144B}-\x{1144F}\x{1145A}-\x{1145B}\x{1145D}-\x{1145E}"
    r"\x{11660}-\x{1166C}\x{116B9}\x{1182F}-\x{11837}\x{11839}-\x{1183B}"
    r"\x{11938}\x{1193B}-\x{1193C}\x{1193E}\x{11943}-\x{11946}"
    r"\x{119D4}-\x{119D7}\x{119DA}-\x{119DB}\x{119E0}\x{119E2}"
    r"\x{11A01}-\x{11A0A}\x{11A33}-\x{11A38}\x{11A3B}-\x{11A47}"
    r"\x{11A51}-\x{11A56}\x{11A59}-\x{11A5B}\x{11A8A}-\x{11A96}"
    r"\x{11A98}-\x{11A9C}\x{11A9E}-\x{11AA2}\x{11B00}-\x{11B09}"
    r"\x{11C30}-\x{11C36}\x{11C38}-\x{11C3D}\x{11C3F}\x{11C41}-\x{11C45}"
    r"\x{11C70}-\x{11C71}\x{11C92}-\x{11CA7}\x{11CAA}-\x{11CB0}"
    r"\x{11CB2}-\x{11CB3}\x{11CB5}-\x{11CB6}\x{11D31}-\x{11D36}\x{11D3A}"
    r"\x{11D3C}-\x{11D3D}\x{11D3F}-\x{11D45}\x{11D47}\x{11D90}-\x{11D91}"
    r"\x{11D95}\x{11D97}\x{11EF3}-\x{11EF4}\x{11EF7}-\x{11EF8}"
    r"\x{11F00}-\x{11F01}\x{11F36}-\x{11F3A}\x{11F40}\x{11F42}-\x{11F4F}"
    r"\x{11FFF}\x{12FF1}-\x{12FF2}\x{13430}-\x{13440}\x{13447}-\x{13455}"
    r"\x{16121}-\x{16128}\x{16D68}-\x{16D6A}\x{16E97}-\x{16E9A}"
    r"\x{16EA0}-\x{16EB8}\x{16F4F}\x{16FE2}\x{16FE4}\x{1CF00}-\x{1CF2D}"
    r"\x{1CF30}-\x{1CF46}\x{1E000}-\x{1E006}\x{1E008}-\x{1E018}"
    r"\x{1E01B}-\x{1E021}\x{1E023}-\x{1E024}\x{1E026}-\x{1E02A}\x{1E08F}"
    r"\x{1E130}-\x{1E136}\x{1E2AE}\x{1E2EC}-\x{1E2EF}\x{1E4EC}-\x{1E4EF}"
    r"\x{1E944}-\x{1E94A}\x{1E95E}-\x{1E95F}"
    "]")
# - a punctuation mark for Hugging Face only: mapped to U+2E3A (TWO-EM DASH),
#   punctuation in both tables and absent from the vocab;
_HF_PUNCT_RE = r"[\x{166D}\x{111C9}]"
# - a non-spacing mark (stripped) for Hugging Face only.
_HF_MARK_RE = r"[\x{1734}]"


# Hugging Face ``BertPreTokenizer``: split at spaces (dropped) and around every
# punctuation character (ASCII punctuation or Unicode category P), kept as a
# word of its own. ``handle_chinese_chars`` likewise isolates each CJK
# ideograph (the CJK Unified Ideograph blocks; Hugging Face starts one block at
# U+2B920 where Google's BERT has U+2B820, and we follow Hugging Face).
_PUNCT_RE = r"[!-/]|[:-@]|[\[-`]|[{-~]|\p{P}"
_CJK_RE = (r"[\x{4E00}-\x{9FFF}]|[\x{3400}-\x{4DBF}]|[\x{20000}-\x{2A6DF}]"
           r"|[\x{2A700}-\x{2B73F}]|[\x{2B740}-\x{2B81F}]"
           r"|[\x{2B920}-\x{2CEAF}]|[\x{F900}-\x{FAFF}]"
           r"|[\x{2F800}-\x{2FA1F}]")
_KEEP_RE = _PUNCT_RE + "|" + _CJK_RE
_SPLIT_RE = r" +|" + _KEEP_RE


def _normalize(texts: tf.Tensor) -> tf.Tensor:
  """Hugging Face ``BertNormalizer`` (uncased) on a string tensor of any shape.

  Order as in Hugging Face: clean, (CJK spacing is done by the splitter),
  NFD + drop non-spacing marks (accents), then Unicode lower-casing.
  """
  # Invalid UTF-8 bytes become U+FFFD, which the next step drops.
  texts = tf.strings.unicode_transcode(
      texts, input_encoding="UTF-8", output_encoding="UTF-8",
      errors="replace", replacement_char=0xFFFD)
  texts = tf.strings.regex_replace(texts, _HF_LETTER_RE, "\ufdd0")
  texts = tf.strings.regex_replace(texts, _HF_PUNCT_RE, "\u2e3a")
  texts = tf.strings.regex_replace(texts, _DROP_RE + "|" + _HF_MARK_RE, "")
  texts = tf.strings.regex_replace(texts, _WHITESPACE_RE, " ")
  texts = tf_text.normalize_utf8(texts, "NFD")
  texts = tf.strings.regex_replace(texts, r"\p{Mn}", "")
  # ICU lower-cases a word-final capital sigma to final sigma; Hugging Face
  # maps characters one by one (always U+03C3), so do that first.
  texts = tf.strings.regex_replace(texts, "\u03a3", "\u03c3")
  return tf.strings.lower(texts, encoding="utf-8")


def _read_vocab(vocab_path: str) -> List[str]:
  if not os.path.exists(vocab_path):
    raise ValueError(f"vocabulary file {vocab_path!r} not found; pass the "
                     "path of a BERT vocab.txt (one word piece per line)")
  with open(vocab_path, encoding="utf-8") as f:
    vocab = f.read().split("\n")
  if vocab and vocab[-1] == "":
    vocab = vocab[:-1]
  expected = {PAD_ID: "[PAD]", UNK_ID: "[UNK]", CLS_ID: "[CLS]"}
  for idx, token in expected.items():
    if len(vocab) <= idx or vocab[idx] != token:
      raise ValueError(f"{vocab_path!r} is not a BERT vocabulary: id {idx} "
                       f"must be {token}; use the bert-base-uncased vocab.txt")
  return vocab


class WordpieceTokenizer:
  """BERT uncased WordPiece tokenizer (Hugging Face compatible), TF ops only.

  Build it once (``get_tokenizer()`` caches one): it owns a vocabulary lookup
  table. Its methods run eagerly or inside ``tf.data`` / ``tf.function``.
  """

  def __init__(self, vocab_path: str = VOCAB_PATH):
    """Loads the vocabulary.

    Args:
      vocab_path: BERT ``vocab.txt``; line i is the word piece of id i.
    """
    self.vocab_path = vocab_path
    self.vocab: List[str] = _read_vocab(vocab_path)
    self.vocab_size = len(self.vocab)
    # Lift the table out of any graph being traced so that it outlives it.
    with tf.init_scope():
      table = tf.lookup.StaticHashTable(
          tf.lookup.KeyValueTensorInitializer(
              tf.constant(self.vocab),
              tf.range(self.vocab_size, dtype=tf.int64)),
          default_value=UNK_ID)
    self._table = table
    # Any word of <= 100 characters fits in 400 UTF-8 bytes; longer words are
    # replaced by "[UNK]" before this point.
    self._wordpiece = tf_text.WordpieceTokenizer(
        table, suffix_indicator="##",
        max_bytes_per_word=4 * MAX_CHARS_PER_WORD,
        token_out_type=tf.int64, unknown_token="[UNK]")

  def words(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """Normalised words (strings) before WordPiece.

    Args:
      texts: string tensor, scalar or rank 1.

    Returns:
      ``[words]`` for a scalar, ``[batch, (words)]`` for a vector.
    """
    texts = tf.convert_to_tensor(texts, dtype=tf.string)
    if texts.shape.rank not in (0, 1):
      raise ValueError(f"texts must be a scalar or a vector of strings, got "
                       f"shape {texts.shape}; reshape to [-1] first")
    words = tf_text.regex_split(_normalize(texts), _SPLIT_RE, _KEEP_RE)
    if texts.shape.rank == 0:
      words = words[0]  # regex_split gives a scalar a batch dimension

    def cap(flat: tf.Tensor) -> tf.Tensor:
      too_long = tf.strings.length(flat, unit="UTF8_CHAR") > MAX_CHARS_PER_WORD
      # "[UNK]" is in the vocabulary: WordPiece maps it to one UNK_ID piece.
      return tf.where(too_long, tf.constant("[UNK]"), flat)

    if isinstance(words, tf.RaggedTensor):
      return words.with_flat_values(cap(words.flat_values))
    return cap(words)

  def word_pieces(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """Word-piece ids grouped by word.

    Args:
      texts: string tensor, scalar (one caption) or rank 1 (a batch).

    Returns:
      int64 ``RaggedTensor``: ``[words, (pieces)]`` for a scalar,
      ``[batch, (words), (pieces)]`` for a vector. Every word has >= 1 piece.
    """
    words = self.words(texts)
    if isinstance(words, tf.RaggedTensor):
      return words.with_flat_values(
          self._wordpiece.tokenize(words.flat_values))
    return self._wordpiece.tokenize(words)

  def encode(self, text: tf.Tensor, length: int) -> tf.Tensor:
    """One caption to ``[CLS]`` + first ``length - 1`` pieces, zero-padded.

    Args:
      text: scalar string tensor.
      length: output length (>= 1), including the ``[CLS]`` slot.

    Returns:
      int32 tensor of shape ``[length]``.
    """
    text = tf.convert_to_tensor(text, dtype=tf.string)
    if text.shape.rank != 0:
      raise ValueError(f"encode takes one caption (a scalar string), got shape "
                       f"{text.shape}; use encode_batch for several")
    return pad_with_cls(self.word_pieces(text[None]).merge_dims(1, 2),
                        length)[0]

  def encode_batch(self, texts: Sequence[str], length: int) -> np.ndarray:
    """Python convenience: captions to an int32 ``[N, length]`` array.

    Args:
      texts: sequence of N strings.
      length: output length (>= 1), including the ``[CLS]`` slot.

    Returns:
      numpy int32 array ``[N, length]``: ``[CLS]``, pieces, zeros.
    """
    if isinstance(texts, (str, bytes)):
      raise ValueError("encode_batch takes a sequence of captions, not one "
                       "string; wrap it in a list")
    texts = tf.constant(list(texts), dtype=tf.string, shape=[len(texts)])
    pieces = self.word_pieces(texts).merge_dims(1, 2)
    return pad_with_cls(pieces, length).numpy()


def check_length(length: int) -> int:
  """Returns ``length`` as an int, or raises if it cannot hold ``[CLS]``."""
  if isinstance(length, bool) or int(length) != length or length < 1:
    raise ValueError(f"text length must be an integer >= 1 (room for [CLS]), "
                     f"got {length!r}")
  return int(length)


def pad_with_cls(pieces: tf.RaggedTensor, length: int) -> tf.Tensor:
  """``[batch, (pieces)]`` ids → int32 ``[batch, length]`` = CLS + pieces + 0s.

  Pieces beyond ``length - 1`` are dropped (truncation).

  Args:
    pieces: int ``RaggedTensor`` ``[batch, (pieces)]``.
    length: output length (>= 1).

  Returns:
    int32 tensor ``[batch, length]``.
  """
  length = check_length(length)
  batch = tf.cast(pieces.nrows(), tf.int64)
  body = pieces.to_tensor(default_value=PAD_ID,
                          shape=tf.stack([batch, tf.constant(length - 1,
                                                             tf.int64)]))
  cls = tf.fill(tf.stack([batch, tf.constant(1, tf.int64)]),
                tf.constant(CLS_ID, body.dtype))
  out = tf.cast(tf.concat([cls, body], axis=1), tf.int32)
  out.set_shape([None, length])
  return out


@functools.lru_cache(maxsize=None)
def get_tokenizer() -> WordpieceTokenizer:
  """The shared tokenizer of the packaged vocabulary (one per process)."""
  return WordpieceTokenizer(VOCAB_PATH)
