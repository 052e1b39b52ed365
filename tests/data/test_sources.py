"""Tests for clipa_t5x.data.sources: webdataset reading, file sharding, bad records."""

import io
import os
import tarfile

import numpy as np
import pytest
import seqio
import tensorflow as tf
from PIL import Image

from clipa_t5x.demo import generate as demo_generate
from clipa_t5x.data import sources
from clipa_t5x.data.sources import WebDatasetSource, select_features


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("demo") / "d")
  demo_generate.generate(out, num_train=37, num_eval=30, image_size=32,
                       num_train_shards=4)
  return out


def _source(demo_dir, **kw):
  return WebDatasetSource({"train": os.path.join(demo_dir, "train-*.tar"),
                           "eval": os.path.join(demo_dir, "eval-*.tar")}, **kw)


def _keys(ds):
  return [ex["key"].numpy().decode() for ex in ds]


def test_reads_every_sample_with_labels(demo_dir):
  source = _source(demo_dir)
  ds = source.get_dataset("eval", shuffle=False)
  assert set(ds.element_spec) == {"key", "image", "text", "label"}
  assert ds.element_spec["label"].dtype == tf.int64
  examples = list(ds.as_numpy_iterator())
  assert len(examples) == 30
  with tarfile.open(os.path.join(demo_dir, "eval-00000.tar")) as tar:
    members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
  for ex in examples:
    key = ex["key"].decode()
    assert ex["image"] == members[f"{key}.jpg"]
    assert ex["text"] == members[f"{key}.txt"]
    assert ex["label"] == int(members[f"{key}.cls"])
  assert source.bad_record_counts() == {}
  assert source.list_shards("train") == [
      os.path.join(demo_dir, f"train-{i:05d}.tar") for i in range(4)]


def test_without_labels_has_no_label_feature(demo_dir):
  ds = _source(demo_dir, with_labels=False).get_dataset("train", shuffle=False)
  assert set(ds.element_spec) == {"key", "image", "text"}


@pytest.mark.parametrize("num_shards", [1, 2, 3, 4])
def test_file_level_sharding_is_disjoint_and_complete(demo_dir, num_shards):
  source = _source(demo_dir)
  all_keys = _keys(source.get_dataset("train", shuffle=False))
  assert len(all_keys) == 37
  seen = []
  for index in range(num_shards):
    info = seqio.ShardInfo(index=index, num_shards=num_shards)
    keys = _keys(source.get_dataset("train", shuffle=True, seed=5,
                                    shard_info=info))
    # Host i reads files i, i+n, ...: the first 5 key digits name the file.
    assert {int(k[:5]) % num_shards for k in keys} == {index}
    seen += keys
  assert sorted(seen) == sorted(all_keys)


def test_shuffle_is_seeded_and_interleaves_files(demo_dir):
  source = _source(demo_dir)
  ordered = _keys(source.get_dataset("train", shuffle=False))
  # Round-robin over files (block 1): file 0 sample 0, file 1 sample 0, ...
  assert ordered[:4] == ["000000000", "000010000", "000020000", "000030000"]
  a = _keys(source.get_dataset("train", shuffle=True, seed=1))
  b = _keys(source.get_dataset("train", shuffle=True, seed=1))
  orders = {tuple(_keys(source.get_dataset("train", shuffle=True, seed=s)))
            for s in range(3)}
  assert a == b and sorted(a) == sorted(ordered)
  assert len(orders) > 1


def test_clear_errors_for_missing_files_and_too_many_shards(demo_dir, tmp_path):
  pattern = str(tmp_path / "nothing-*.tar")
  with pytest.raises(ValueError, match="nothing-"):
    WebDatasetSource({"train": pattern}).get_dataset("train")
  with pytest.raises(ValueError, match="4 tar files but 5 shards"):
    _source(demo_dir).get_dataset(
        "train", shard_info=seqio.ShardInfo(index=0, num_shards=5))
  with pytest.raises(ValueError, match="Unknown split"):
    _source(demo_dir).get_dataset("validation")


def test_lazy_patterns_are_resolved_when_listing(demo_dir):
  calls = []

  def pattern():
    calls.append(1)
    return [os.path.join(demo_dir, "eval-*.tar")]

  source = WebDatasetSource({"eval": pattern})
  assert not calls
  assert len(list(source.get_dataset("eval", shuffle=False))) == 30
  assert calls


def _png():
  buf = io.BytesIO()
  Image.fromarray(np.full((6, 5, 3), 90, np.uint8)).save(buf, format="PNG")
  return buf.getvalue()


def _write_tar(path, members, truncate_to=None):
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w") as tar:
    folder = tarfile.TarInfo("subdir")
    folder.type = tarfile.DIRTYPE
    tar.addfile(folder)  # not a file: ignored
    for name, data in members:
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  data = buf.getvalue()
  with open(path, "wb") as f:
    f.write(data[:truncate_to] if truncate_to else data)


def test_bad_records_are_skipped_and_counted(tmp_path):
  png = _png()
  _write_tar(str(tmp_path / "bad-0.tar"), [
      ("a/001.png", png), ("a/001.txt", b"ok caption "), ("a/001.cls", b"3"),
      ("002.jpg", png), ("002.json", b"{}"),                 # no caption
      ("003.txt", b"text only"), ("003.cls", b"1"),            # no image
      ("004.webp", png), ("004.txt", b"caf\xe9 latte"),        # latin-1 text
      ("005.jpeg", png), ("005.txt", b"x"), ("005.cls", b"z"),  # bad label
  ])
  source = WebDatasetSource({"train": str(tmp_path / "bad-*.tar")},
                            with_labels=True)
  examples = list(source.get_dataset("train", shuffle=False).as_numpy_iterator())
  assert [e["key"] for e in examples] == [b"a/001", b"004", b"005"]
  assert examples[0]["text"] == b"ok caption" and examples[0]["label"] == 3
  assert examples[1]["text"] == "caf\ufffd latte".encode()
  assert examples[1]["label"] == -1 and examples[2]["label"] == -1
  assert tf.io.decode_image(examples[0]["image"]).shape == (6, 5, 3)
  assert source.bad_record_counts() == {
      "missing_caption": 1, "missing_image": 1, "bad_caption_utf8": 1,
      "missing_label": 1, "bad_label": 1}
  # Auto-detection: the first sample has a .cls member, so labels are on.
  auto = WebDatasetSource({"train": str(tmp_path / "bad-*.tar")})
  assert "label" in auto.get_dataset("train", shuffle=False).element_spec


# Layout: a 512-byte folder header, then 2048 bytes per sample (two members,
# each a header block and one data block).
@pytest.mark.parametrize("cut,complete_samples", [
    (512 + 2 * 2048 + 100, 2),  # inside a header: tarfile stops silently
    (512 + 2048 + 512 + 50, 1),  # inside member data: tarfile raises
    (512 + 3 * 2048, 3),  # at a sample boundary: end marker missing
])
def test_truncated_shard_keeps_earlier_samples(tmp_path, cut, complete_samples):
  png = _png()
  members = [(f"{i:03d}.{e}", png if e == "png" else b"caption")
             for i in range(4) for e in ("png", "txt")]
  _write_tar(str(tmp_path / "t.tar"), members)
  _write_tar(str(tmp_path / "cut.tar"), members, truncate_to=cut)
  whole = WebDatasetSource({"train": str(tmp_path / "t.tar")})
  assert len(_keys(whole.get_dataset("train"))) == 4
  assert whole.bad_record_counts() == {}
  source = WebDatasetSource({"train": str(tmp_path / "cut.tar")})
  keys = _keys(source.get_dataset("train", shuffle=False))
  assert keys == [f"{i:03d}" for i in range(complete_samples)]
  assert source.bad_record_counts()["corrupt_shard"] == 1


def test_select_features_drops_and_casts(demo_dir):
  ds = _source(demo_dir).get_dataset("eval", shuffle=False)
  out = select_features(ds, keys=("image", "text", "label"))
  assert set(out.element_spec) == {"image", "text", "label"}
  assert out.element_spec["label"].dtype == tf.int32
  with pytest.raises(ValueError, match="label"):
    select_features(_source(demo_dir, with_labels=False).get_dataset("train"),
                    keys=("image", "label"))


def test_seqio_task_falls_back_to_example_sharding(demo_dir):
  # With fewer files than hosts, SeqIO reads without shard_info and shards by
  # example instead of calling the source with too many shards.
  task = seqio.Task("sources_test_task", source=_source(demo_dir),
                    output_features={}, preprocessors=[])
  counts = [len(list(task.get_dataset(
      None, split="eval", shuffle=False,
      shard_info=seqio.ShardInfo(index=i, num_shards=3)))) for i in range(3)]
  assert counts == [10, 10, 10]


def test_group_members_follows_webdataset():
  names = ["a/b/0001.seg.PNG", "a/b/0001.txt", "0002.jpg", "dir.v1/0003.txt",
           "0002.png", "0002.png"]
  groups = sources.group_members(tf.constant(names))
  assert [k.decode() for k in groups["key"].numpy()] == [
      "a/b/0001", "a/b/0001", "0002", "dir.v1/0003", "0002", "0002"]
  assert [e.decode() for e in groups["ext"].numpy()] == [
      "seg.png", "txt", "jpg", "txt", "png", "png"]
  # A key seen again after another one starts a new sample.
  assert groups["sample"].numpy().tolist() == [0, 0, 1, 2, 3, 3]
  assert groups["first"].numpy().tolist() == [0, 2, 3, 4]
  # Preference order across extensions; the first member of a repeated one.
  assert sources.pick_member(groups, ["png", "jpg"]).numpy().tolist() == [-1, 2, -1, 4]
  assert sources.pick_member(groups, ["SEG.PNG"]).numpy().tolist() == [0, -1, -1, -1]
  empty = sources.group_members(tf.constant([], tf.string))
  assert int(empty["num_samples"]) == 0
  assert sources.pick_member(empty, ["jpg"]).numpy().tolist() == []


def test_first_sample_members_reads_the_first_sample_only(tmp_path):
  path = str(tmp_path / "s.tar")
  _write_tar(path, [("x/1.JPG", b"a"), ("x/1.cls", b"3"), ("x/2.jpg", b"b"),
                    ("x/2.txt", b"t")])
  assert sources._first_sample_members(path) == ["jpg", "cls"]  # pylint: disable=protected-access


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT,
                                 tarfile.PAX_FORMAT])
def test_index_tar_matches_python_tarfile(fmt):
  long_dir = "deep/" + "d" * 120 + "/"  # > 100 chars: prefix, 'L' or pax path
  names = ["a.jpg", "a.txt", "empty.txt", long_dir + "b.jpg",
           long_dir + "b.txt", "sub/c.png"]
  if fmt == tarfile.PAX_FORMAT:
    names.append("caf\u00e9/d.txt")  # non-ASCII name: pax path record
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
    folder = tarfile.TarInfo("sub")
    folder.type = tarfile.DIRTYPE
    tar.addfile(folder)
    link = tarfile.TarInfo("sub/link")
    link.type, link.linkname = tarfile.SYMTYPE, "a.jpg"
    tar.addfile(link)
    for i, name in enumerate(names):
      data = b"" if name == "empty.txt" else bytes([i]) * (100 + 300 * i)
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  raw = buf.getvalue()
  index = {k: v.numpy() for k, v in
           sources.index_tar(tf.constant(raw)).items()}
  with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
    ref = tar.getmembers()
  # tarfile drops the trailing "/" of folder names.
  assert [n.decode().rstrip("/") for n in index["name"]] == [m.name for m in ref]
  assert index["regular"].tolist() == [m.isfile() for m in ref]
  assert index["complete"]
  for m, start, size in zip(ref, index["start"], index["size"]):
    assert (start, size) == (m.offset_data, m.size)


def test_index_tar_stops_at_corrupt_header():
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w") as tar:
    for i in range(3):
      info = tarfile.TarInfo(f"{i}.txt")
      info.size = 10
      tar.addfile(info, io.BytesIO(b"x" * 10))
  raw = bytearray(buf.getvalue())
  raw[1024 + 5] ^= 0xFF  # second header's name: checksum no longer matches
  index = sources.index_tar(tf.constant(bytes(raw)))
  assert [n.decode() for n in index["name"].numpy()] == ["0.txt"]
  assert not bool(index["complete"])
  empty = sources.index_tar(tf.constant(b""))
  assert empty["name"].shape == (0,) and not bool(empty["complete"])
