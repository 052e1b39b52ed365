"""Tests of clipa_t5x.interop.open_clip: export, import, parity with open_clip."""

import copy
import functools
import json
import logging
import os
import sys

import jax
import numpy as np
import pytest
from flax import linen as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop_helpers  # noqa: E402
import torch_required  # noqa: E402

from clipa_t5x import checkpoints  # noqa: E402
from clipa_t5x import convert  # noqa: E402
from clipa_t5x.interop import open_clip as oc  # noqa: E402
from clipa_t5x.interop import open_clip_config  # noqa: E402
from clipa_t5x.models import clip  # noqa: E402
from clipa_t5x.models import config_io  # noqa: E402
from clipa_t5x.models import configs  # noqa: E402
from clipa_t5x.models import vit  # noqa: E402

VARIANT_OF_RELEASED = {"ViT-L-14-CLIPA": "L/14", "ViT-H-14-CLIPA": "H/14",
                       "ViT-bigG-14-CLIPA": "bigG/14"}


@functools.lru_cache(maxsize=None)
def _params(variant: str, image_size: int, text_length: int, seed: int = 0):
  return interop_helpers.random_params(variant, image_size, text_length, seed)


def _copy(params):
  return jax.tree.map(np.array, params)


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("variant", ["Ti/8", "Mu/8"])
def test_export_then_load_gives_identical_params(tmp_path, variant):
  params = _params(variant, 32, 8)
  config = configs.get_config(variant)
  out = oc.export_open_clip(params, config, str(tmp_path / "exp"), image_size=48,
                            text_length=8)
  assert sorted(os.listdir(out)) == [oc.CONFIG_FILE, oc.WEIGHTS_FILE]
  with open(os.path.join(out, oc.CONFIG_FILE)) as f:
    record = json.load(f)
  assert record["model_cfg"] == open_clip_config.open_clip_model_config(config, 48, 8)
  assert record["preprocess_cfg"]["size"] == 48
  loaded, loaded_config, image_size, text_length = oc.load_open_clip(out)
  assert (loaded_config, image_size, text_length) == (config, 48, 8)
  interop_helpers.assert_identical(params, loaded)


def test_state_dict_layout_matches_numpy_reference():
  """Each converted weight computes what our layer computes (independent numpy maths)."""
  config = configs.get_config("Ti/8")
  params = _params("Ti/8", 32, 8)
  sd = oc.to_open_clip_state_dict(params, config, 32)
  assert {k: v.shape for k, v in sd.items()} == oc.open_clip_state_dict_shapes(config, 32, 8)
  assert all(v.dtype == np.float32 for v in sd.values())
  rng = np.random.RandomState(1)
  w, h, d = 64, 4, 16
  x = rng.standard_normal((5, w)).astype(np.float32)
  block = params["txt"]["encoder"]["encoderblock_1"]["attention"]
  in_w, in_b = sd["transformer.resblocks.1.attn.in_proj_weight"], sd[
      "transformer.resblocks.1.attn.in_proj_bias"]
  for j, name in enumerate(("query", "key", "value")):
    ours = np.einsum("bw,whd->bhd", x, block[name]["kernel"]) + block[name]["bias"]
    torch_linear = x @ in_w[j * w:(j + 1) * w].T + in_b[j * w:(j + 1) * w]
    np.testing.assert_allclose(torch_linear.reshape(5, h, d), ours, atol=1e-5)
  y = rng.standard_normal((5, h, d)).astype(np.float32)
  ours = np.einsum("bhd,hdw->bw", y, block["out"]["kernel"]) + block["out"]["bias"]
  torch_linear = (y.reshape(5, h * d) @ sd["transformer.resblocks.1.attn.out_proj.weight"].T
                  + sd["transformer.resblocks.1.attn.out_proj.bias"])
  np.testing.assert_allclose(torch_linear, ours, atol=1e-5)
  # Patch embedding: one 8x8 patch, HWIO kernel vs OIHW conv weight on CHW pixels.
  patch = rng.standard_normal((8, 8, 3)).astype(np.float32)
  kernel = params["img"]["embedding"]["kernel"]
  np.testing.assert_allclose(
      np.einsum("chw,ochw->o", patch.transpose(2, 0, 1), sd["visual.conv1.weight"]),
      np.einsum("hwc,hwco->o", patch, kernel), atol=1e-4)
  mlp = params["img"]["encoder"]["encoderblock_0"]["mlp"]
  np.testing.assert_array_equal(sd["visual.transformer.resblocks.0.mlp.c_fc.weight"],
                                mlp["fc_in"]["kernel"].T)
  np.testing.assert_array_equal(sd["visual.class_embedding"], params["img"]["cls"][0, 0])
  np.testing.assert_array_equal(sd["positional_embedding"], params["txt"]["pos_embedding"][0])
  np.testing.assert_array_equal(sd["logit_scale"], params["log_temperature"])
  pos = sd["visual.positional_embedding"]
  np.testing.assert_array_equal(pos[0], np.zeros(w))
  np.testing.assert_array_equal(pos[1:], vit.posemb_sincos_2d(4, 4, w))


def test_export_accepts_boxed_jax_params(tmp_path):
  config = configs.get_config("Ti/8")
  params = _params("Ti/8", 32, 8)
  boxed = jax.tree.map(
      lambda x: nn.LogicallyPartitioned(jax.numpy.asarray(x), (None,) * np.ndim(x)), params)
  sd = oc.to_open_clip_state_dict(boxed, config, 32)
  np.testing.assert_array_equal(sd["text_projection"], params["txt"]["head"]["kernel"])


def test_export_at_another_text_length_resizes_the_position_embedding(tmp_path):
  config = configs.get_config("Ti/8")
  params = _params("Ti/8", 32, 8)
  out = oc.export_open_clip(params, config, str(tmp_path / "e"), 32, text_length=16)
  loaded, _, _, text_length = oc.load_open_clip(out)
  assert text_length == 16
  expected = checkpoints.resize_text_pos_embedding(params["txt"]["pos_embedding"], 16)
  np.testing.assert_allclose(loaded["txt"]["pos_embedding"], expected, atol=1e-6)


def test_export_refuses_a_non_empty_directory_and_overwrites_on_request(tmp_path):
  config = configs.get_config("Ti/8")
  params = _params("Ti/8", 32, 8)
  out = tmp_path / "exp"
  out.mkdir()
  (out / "keep.txt").write_text("x")
  with pytest.raises(ValueError, match="not empty.*overwrite"):
    oc.export_open_clip(params, config, str(out), 32)
  assert os.listdir(out) == ["keep.txt"]
  oc.export_open_clip(params, config, str(out), 32, overwrite=True)
  assert sorted(os.listdir(out)) == [oc.CONFIG_FILE, oc.WEIGHTS_FILE]
  # No temporary folders are left next to it; an empty existing folder is fine.
  assert sorted(os.listdir(tmp_path)) == ["exp"]
  (tmp_path / "empty").mkdir()
  oc.export_open_clip(params, config, str(tmp_path / "empty"), 32)


def test_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
  import safetensors.numpy  # pylint: disable=import-outside-toplevel

  def broken(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(safetensors.numpy, "save_file", broken)
  with pytest.raises(OSError):
    oc.export_open_clip(_params("Ti/8", 32, 8), configs.get_config("Ti/8"),
                        str(tmp_path / "exp"), 32)
  assert os.listdir(tmp_path) == []


def test_export_rejects_params_of_another_config():
  params = _params("Ti/8", 32, 8)
  with pytest.raises(ValueError, match="img/embedding/kernel.*shape"):
    oc.to_open_clip_state_dict(params, configs.get_config("Ti/8", image={"patch_size": 4}), 32)
  with pytest.raises(ValueError, match="lack.*encoderblock_2"):
    oc.to_open_clip_state_dict(params, configs.get_config("Ti/8", image={"depth": 3}), 32)
  with pytest.raises(ValueError, match="multiple of the patch size"):
    oc.to_open_clip_state_dict(params, configs.get_config("Ti/8"), 36)


def test_import_to_checkpoint_round_trips(tmp_path):
  config = configs.get_config("Ti/8")
  params = _params("Ti/8", 32, 8)
  exported = oc.export_open_clip(params, config, str(tmp_path / "exp"), 32)
  ckpt = convert.to_checkpoint(exported, str(tmp_path / "imported"))
  assert ckpt == str(tmp_path / "imported" / "checkpoint_0")
  restored, meta, _ = checkpoints.load_params(str(tmp_path / "imported"))
  interop_helpers.assert_identical(params, jax.tree.map(np.asarray, restored))
  assert meta["source"]["format"] == "open_clip"
  record = config_io.read_model_config(str(tmp_path / "imported"))
  assert (record["model"], record["image_size"], record["text_length"]) == (config, 32, 8)
  with pytest.raises(ValueError, match="not empty"):
    convert.to_checkpoint(exported, str(tmp_path / "imported"))


# ------------------------------------------------------------ released configs


def test_released_configs_map_to_our_variants():
  for name, cfg in oc.RELEASED_CONFIGS.items():
    variant = VARIANT_OF_RELEASED[name.replace("-336", "")]
    config, image_size, text_length = oc.clipa_config_from_open_clip(cfg)
    assert config == configs.get_config(variant), name
    assert image_size == (336 if name.endswith("-336") else 224)
    assert text_length == 32


@pytest.mark.parametrize("name", sorted(VARIANT_OF_RELEASED))
def test_released_configs_have_our_param_shapes(name):
  """The import mapping yields exactly our model's parameter tree (shapes only, no init)."""
  config, image_size, text_length = oc.clipa_config_from_open_clip(oc.RELEASED_CONFIGS[name])
  model = clip.ClipaModel(config)
  abstract = jax.eval_shape(functools.partial(
      model.get_initial_variables, image_size=image_size, text_length=text_length),
      jax.random.PRNGKey(0))
  leaves = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(abstract["params"]))[0]
  ours = {"/".join(str(p.key) for p in path): tuple(leaf.shape) for path, leaf in leaves}
  assert ours == oc.clipa_param_shapes(config, text_length)


def test_released_configs_equal_open_clip_json():
  _, open_clip = torch_required.require_torch()
  folder = os.path.join(os.path.dirname(open_clip.__file__), "model_configs")
  for name, cfg in oc.RELEASED_CONFIGS.items():
    with open(os.path.join(folder, f"{name}.json")) as f:
      assert json.load(f) == cfg, name


@pytest.mark.parametrize("name", sorted(oc.RELEASED_CONFIGS))
def test_open_clip_state_dict_shapes_match_open_clip(name):
  torch, open_clip = torch_required.require_torch()
  cfg = copy.deepcopy(oc.RELEASED_CONFIGS[name])
  with torch.device("meta"):  # shapes only: bigG is never allocated
    model = open_clip.model.CLIP(**cfg)
  theirs = {k: tuple(v.shape) for k, v in model.state_dict().items()}
  config, image_size, text_length = oc.clipa_config_from_open_clip(cfg)
  assert theirs == oc.open_clip_state_dict_shapes(config, image_size, text_length)


def test_released_config_import_logs_the_gelu_note(caplog):
  with caplog.at_level(logging.INFO, logger=oc.__name__):
    oc.clipa_config_from_open_clip(oc.RELEASED_CONFIGS["ViT-H-14-CLIPA"])
  assert "tanh GELU" in caplog.text and "original CLIPA" in caplog.text
  caplog.clear()
  with caplog.at_level(logging.INFO, logger=oc.__name__):
    oc.clipa_config_from_open_clip(open_clip_config.open_clip_model_config(
        configs.get_config("Ti/8"), 32, 8))
  assert caplog.text == ""


# ---------------------------------------------------------------- parity


def _open_clip_inputs(images: np.ndarray) -> np.ndarray:
  mean = np.asarray(vit.IMAGENET_MEAN, np.float32)
  std = np.asarray(vit.IMAGENET_STD, np.float32)
  return ((images.astype(np.float32) / 255.0 - mean) / std).transpose(0, 3, 1, 2)


def _tokens(rng: np.random.RandomState, batch: int, length: int) -> np.ndarray:
  """[CLS] + ids (some in 30522..31999, beyond BERT's vocab) + zero padding."""
  tokens = np.zeros((batch, length), np.int32)
  for i in range(batch):
    n = rng.randint(2, length + 1)
    tokens[i, 0] = 101
    tokens[i, 1:n] = rng.randint(1000, 32000, n - 1)
  tokens[0, 1] = 31999
  tokens[1 % batch, -1] = 30600
  return tokens


@pytest.mark.parametrize("image_size,text_length", [(32, 8), (64, 32)])
def test_open_clip_reproduces_our_embeddings(tmp_path, image_size, text_length):
  torch, open_clip = torch_required.require_torch()
  config = configs.get_config("Mu/8")
  params = _params("Mu/8", image_size, text_length, seed=3)
  out = oc.export_open_clip(params, config, str(tmp_path / "exp"), image_size, text_length)
  model = open_clip.create_model("local-dir:" + out)  # strict=True inside
  model.eval()
  rng = np.random.RandomState(4)
  images = rng.randint(0, 256, (3, image_size, image_size, 3)).astype(np.uint8)
  tokens = _tokens(rng, 4, text_length)
  ours = clip.ClipaModel(config)
  with torch.no_grad():
    theirs_img = model.encode_image(torch.from_numpy(_open_clip_inputs(images)),
                                    normalize=True).numpy()
    theirs_txt = model.encode_text(torch.from_numpy(tokens).long(), normalize=True).numpy()
    logit_scale = float(model.logit_scale)
  ours_img = np.asarray(ours.encode_images(params, images))
  ours_txt = np.asarray(ours.encode_texts(params, tokens))
  assert np.max(np.abs(theirs_img - ours_img)) <= 1e-4
  assert np.max(np.abs(theirs_txt - ours_txt)) <= 1e-4
  assert logit_scale == pytest.approx(float(params["log_temperature"]), abs=1e-6)
  # The features are not degenerate: different inputs, different embeddings.
  assert np.max(np.abs(ours_img[0] - ours_img[1])) > 1e-2
  assert np.max(np.abs(ours_txt[0] - ours_txt[1])) > 1e-2


@pytest.mark.slow
def test_training_matches_open_clip_training_from_the_same_weights():
  """Our Trainer step (loss, gradients, AdamW with CLIPA's decay mask) against
  open_clip's ClipLoss + torch AdamW with open_clip's parameter groups."""
  torch, open_clip = torch_required.require_torch()
  from open_clip.loss import ClipLoss  # pylint: disable=import-outside-toplevel
  from clipa_t5x import optimizers, partitioning, train_state, trainer
  size, length, batch, steps = 16, 8, 8, 4
  config = configs.get_config("Ti/8")
  model = clip.ClipaModel(config)
  partitioner = partitioning.PjitPartitioner(
      num_partitions=1, logical_axis_rules=partitioning.data_parallel_logical_axis_rules(),
      devices=jax.local_devices()[:1])
  opt = optimizers.OptimizerConfig(base_learning_rate=1e-3)
  tx, lr_fn = optimizers.make_optimizer(opt, batch, total_steps=10_000)
  _, _, shardings = train_state.abstract_train_state(model, tx, size, length, partitioner)
  state = train_state.create_train_state(model, tx, jax.random.key(0), size, length,
                                         partitioner, shardings)
  step = trainer.Trainer(model, tx, lr_fn, partitioner, shardings, batch,
                         flops_per_example=1.0)
  rng = np.random.RandomState(6)
  data = {"image": rng.randint(0, 256, (batch, size, size, 3)).astype(np.uint8),
          "text": _tokens(rng, batch, length)}

  theirs = open_clip.CLIP(**open_clip_config.open_clip_model_config(config, size, length))
  weights = oc.to_open_clip_state_dict(jax.device_get(state.params), config, size)
  theirs.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
  theirs.visual.positional_embedding.requires_grad_(False)  # CLIPA's is fixed sin-cos
  theirs.train()
  no_decay = lambda n, p: p.ndim < 2 or "ln" in n or "bias" in n or "logit_scale" in n
  named = [(n, p) for n, p in theirs.named_parameters() if p.requires_grad]
  torch_opt = torch.optim.AdamW(
      [{"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0},
       {"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": opt.weight_decay}],
      lr=float(lr_fn(0)), betas=(opt.b1, opt.b2), eps=opt.eps)
  images = torch.from_numpy(_open_clip_inputs(data["image"]))
  texts = torch.from_numpy(data["text"]).long()
  ours_losses, theirs_losses = [], []
  for _ in range(steps):
    state, metrics = step.step(state, data, jax.random.key(1))
    ours_losses.append(float(metrics["loss"]))
    loss = ClipLoss()(*theirs(images, texts))
    torch_opt.zero_grad()
    loss.backward()
    torch_opt.step()
    theirs_losses.append(float(loss))
  # The losses move (the weights change) and stay together (float32 rounding;
  # open_clip also decays the token embedding, which CLIPA does not).
  assert ours_losses[0] - ours_losses[-1] > 0.05
  np.testing.assert_allclose(ours_losses, theirs_losses, atol=2e-4)


# ------------------------------------------------ import from open_clip itself

_SMALL_RELEASED_STYLE = {
    "embed_dim": 48,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 16,
                   "patch_size": 8, "no_ln_pre": True, "pool_type": "avg",
                   "final_ln_after_pool": True},
    "text_cfg": {"context_length": 8, "vocab_size": 32000,
                 "hf_tokenizer_name": "bert-base-uncased",
                 "tokenizer_kwargs": {"strip_sep_token": True}, "width": 32, "heads": 2,
                 "layers": 2, "pool_type": "last", "no_causal_mask": True},
}


def _open_clip_clipa_model(torch, open_clip, cfg):
  torch.manual_seed(0)
  model = open_clip.model.CLIP(**copy.deepcopy(cfg))
  with torch.no_grad():
    # open_clip initialises a learnable position embedding; CLIPA weights hold
    # the fixed sin-cos there, with a (here non-zero) cls row.
    pos = np.concatenate([np.random.RandomState(5).standard_normal((1, 64)),
                          vit.posemb_sincos_2d(4, 4, 64)]).astype(np.float32)
    model.visual.positional_embedding.copy_(torch.from_numpy(pos))
    model.logit_scale.fill_(3.1)
    for name, p in model.named_parameters():  # LayerNorms away from 1 / 0
      if "ln" in name:
        p.add_(0.1 * torch.randn_like(p))
  return model.eval()


def test_import_weights_built_by_open_clip(tmp_path):
  torch, open_clip = torch_required.require_torch()
  import safetensors.torch  # pylint: disable=import-outside-toplevel
  model = _open_clip_clipa_model(torch, open_clip, _SMALL_RELEASED_STYLE)
  sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
  torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "w.bin")
  safetensors.torch.save_file(sd, str(tmp_path / "w.safetensors"))
  folder = tmp_path / "hub"
  folder.mkdir()
  torch.save(sd, folder / "open_clip_pytorch_model.bin")
  (folder / oc.CONFIG_FILE).write_text(json.dumps({"model_cfg": _SMALL_RELEASED_STYLE}))
  cfg_path = tmp_path / "cfg.json"
  cfg_path.write_text(json.dumps(_SMALL_RELEASED_STYLE))

  loads = [oc.load_open_clip(str(tmp_path / "w.bin"), _SMALL_RELEASED_STYLE),
           oc.load_open_clip(str(tmp_path / "w.safetensors"), str(cfg_path)),
           oc.load_open_clip(str(folder))]
  for got in loads[1:]:
    interop_helpers.assert_identical(loads[0][0], got[0])
    assert got[1:] == loads[0][1:]
  params, config, image_size, text_length = loads[0]
  assert (image_size, text_length) == (32, 8)
  assert (config.image.width, config.image.heads, config.image.mlp_dim) == (64, 4, 256)
  assert (config.text.width, config.text.heads, config.text.depth, config.embed_dim) == (
      32, 2, 2, 48)
  np_sd = {k: v.numpy() for k, v in sd.items()}
  # Values, by an independent reading of the torch layout.
  np.testing.assert_array_equal(params["img"]["cls"][0, 0], np_sd["visual.class_embedding"]
                                + np_sd["visual.positional_embedding"][0])
  np.testing.assert_array_equal(params["txt"]["embedding"]["embedding"],
                                np_sd["token_embedding.weight"])
  np.testing.assert_array_equal(
      params["txt"]["encoder"]["encoderblock_1"]["attention"]["value"]["kernel"].reshape(32, 32),
      np_sd["transformer.resblocks.1.attn.in_proj_weight"][64:].T)
  np.testing.assert_array_equal(params["img"]["embedding"]["kernel"][2, 5, 1],
                                np_sd["visual.conv1.weight"][:, 1, 2, 5])
  assert float(params["log_temperature"]) == pytest.approx(3.1)

  # Same function as open_clip once it runs CLIPA's tanh GELU and eps 1e-6.
  exact = copy.deepcopy(_SMALL_RELEASED_STYLE)
  for tower in ("vision_cfg", "text_cfg"):
    exact[tower].update(act_kwargs={"approximate": "tanh"}, norm_kwargs={"eps": 1e-6})
  clipa_like = open_clip.model.CLIP(**exact)
  clipa_like.load_state_dict(sd, strict=True)
  clipa_like.eval()
  rng = np.random.RandomState(6)
  images = rng.randint(0, 256, (2, 32, 32, 3)).astype(np.uint8)
  tokens = _tokens(rng, 3, 8)
  ours = clip.ClipaModel(config)
  with torch.no_grad():
    theirs_img = clipa_like.encode_image(torch.from_numpy(_open_clip_inputs(images)),
                                         normalize=True).numpy()
    theirs_txt = clipa_like.encode_text(torch.from_numpy(tokens).long(), normalize=True).numpy()
  np.testing.assert_allclose(np.asarray(ours.encode_images(params, images)), theirs_img,
                             atol=1e-4)
  np.testing.assert_allclose(np.asarray(ours.encode_texts(params, tokens)), theirs_txt,
                             atol=1e-4)


# ---------------------------------------------------------------- errors


def _mutated(change):
  cfg = copy.deepcopy(oc.RELEASED_CONFIGS["ViT-L-14-CLIPA"])
  change(cfg)
  return cfg


@pytest.mark.parametrize("change,needle", [
    (lambda c: c["vision_cfg"].update(pool_type="tok"), "vision_cfg.pool_type"),
    (lambda c: c["vision_cfg"].pop("no_ln_pre"), "vision_cfg.no_ln_pre"),
    (lambda c: c["vision_cfg"].pop("final_ln_after_pool"), "vision_cfg.final_ln_after_pool"),
    (lambda c: c["vision_cfg"].update(attentional_pool=True), "vision_cfg.attentional_pool"),
    (lambda c: c["vision_cfg"].update(pos_embed_type="sin_cos_2d"), "vision_cfg.pos_embed_type"),
    (lambda c: c["vision_cfg"].update(timm_model_name="vit_base"), "vision_cfg.timm_model_name"),
    (lambda c: c["vision_cfg"].update(ls_init_value=1e-5), "vision_cfg.ls_init_value"),
    (lambda c: c["vision_cfg"].update(act_kwargs={"approximate": "sigmoid"}),
     "vision_cfg.act_kwargs"),
    (lambda c: c["vision_cfg"].update(image_size=[224, 112]), "square"),
    (lambda c: c["text_cfg"].pop("no_causal_mask"), "text_cfg.no_causal_mask"),
    (lambda c: c["text_cfg"].update(pool_type="argmax"), "text_cfg.pool_type"),
    (lambda c: c["text_cfg"].update(hf_model_name="bert-base-uncased"), "text_cfg.hf_model_name"),
    (lambda c: c["text_cfg"].pop("hf_tokenizer_name"), "text_cfg.hf_tokenizer_name"),
    (lambda c: c["text_cfg"].update(embed_cls=True), "text_cfg.embed_cls"),
    (lambda c: c.update(quick_gelu=True), "quick_gelu"),
    (lambda c: c.update(multimodal_cfg={}) or c.update(custom_text=True), "custom_text"),
    (lambda c: c["text_cfg"].update(rope=True), "rope"),
    (lambda c: c.pop("text_cfg"), "text_cfg"),
])
def test_non_clipa_configs_are_refused_by_key(change, needle):
  with pytest.raises(ValueError) as info:
    oc.clipa_config_from_open_clip(_mutated(change))
  assert needle in str(info.value)
  assert "\n" not in str(info.value)


def _ti_state_dict():
  return oc.to_open_clip_state_dict(_params("Ti/8", 32, 8), configs.get_config("Ti/8"), 32)


def test_missing_unexpected_and_misshapen_keys_are_named():
  config = configs.get_config("Ti/8")
  sd = _ti_state_dict()
  missing = dict(sd)
  del missing["visual.transformer.resblocks.1.mlp.c_proj.bias"]
  with pytest.raises(ValueError, match=r"lacks.*resblocks\.1\.mlp\.c_proj\.bias"):
    oc.from_open_clip_state_dict(missing, config)
  with pytest.raises(ValueError, match=r"visual\.ln_pre\.weight"):
    oc.from_open_clip_state_dict({**sd, "visual.ln_pre.weight": np.ones(64, np.float32)}, config)
  bad = {**sd, "text_projection": np.zeros((64, 32), np.float32)}
  with pytest.raises(ValueError, match=r"'text_projection' has shape \(64, 32\), expected "
                                       r"\(64, 64\)"):
    oc.from_open_clip_state_dict(bad, config)
  with pytest.raises(ValueError, match=r"'positional_embedding' has shape \(8, 64\), expected "
                                       r"\(32, 64\)"):
    oc.from_open_clip_state_dict(sd, config, image_size=32, text_length=32)
  with pytest.raises(ValueError, match=r"visual\.positional_embedding.*\(17, 64\).*\(50, 64\)"):
    oc.from_open_clip_state_dict(sd, config, image_size=56)
  # A (1,)-shaped logit_scale (open_clip's nonscalar variant) is accepted.
  params = oc.from_open_clip_state_dict({**sd, "logit_scale": sd["logit_scale"].reshape(1)},
                                        config)
  assert params["log_temperature"].shape == ()


def test_learned_image_position_embedding_is_refused():
  sd = _ti_state_dict()
  pos = sd["visual.positional_embedding"].copy()
  pos[3, 5] += 0.01
  with pytest.raises(ValueError, match="visual.positional_embedding.*learned"):
    oc.from_open_clip_state_dict({**sd, "visual.positional_embedding": pos},
                                 configs.get_config("Ti/8"))
  # Within tolerance (float32 rounding of the same constant) it is accepted.
  pos = sd["visual.positional_embedding"] + np.float32(2e-5)
  pos[0] = 0
  oc.from_open_clip_state_dict({**sd, "visual.positional_embedding": pos},
                               configs.get_config("Ti/8"))


def test_load_errors_are_clear(tmp_path):
  sd = _ti_state_dict()
  np.savez(tmp_path / "w.npz", **sd)
  with pytest.raises(ValueError, match="unknown open_clip model 'ViT-X-CLIPA'.*ViT-H-14-CLIPA"):
    oc.load_open_clip(str(tmp_path / "w.npz"), "ViT-X-CLIPA")
  with pytest.raises(ValueError, match="without a model config.*model_config"):
    oc.load_open_clip(str(tmp_path / "w.npz"))
  with pytest.raises(ValueError, match="no open_clip weights"):
    oc.load_open_clip(str(tmp_path / "nothing"), "ViT-H-14-CLIPA")
  (tmp_path / "w.ckpt").write_bytes(b"x")
  with pytest.raises(ValueError, match="unknown weights file type"):
    oc.load_open_clip(str(tmp_path / "w.ckpt"), "ViT-H-14-CLIPA")
  with pytest.raises(ValueError, match="lacks"):  # an L/14 config for Ti/8 weights
    oc.load_open_clip(str(tmp_path / "w.npz"), "ViT-L-14-CLIPA")
  folder = tmp_path / "folder"
  folder.mkdir()
  with pytest.raises(ValueError, match="none of the weight files"):
    oc.load_open_clip(str(folder))
  np.savez(folder / "x.npz", **sd)
  os.rename(folder / "x.npz", folder / "model.safetensors")
  with pytest.raises(Exception):
    oc.load_open_clip(str(folder))  # not a safetensors file: the reader's own error
  # npz with a DataParallel prefix, and a model_cfg given as a dict.
  np.savez(tmp_path / "m.npz", **{"module." + k: v for k, v in sd.items()})
  cfg = open_clip_config.open_clip_model_config(configs.get_config("Ti/8"), 32, 8)
  params, config, _, _ = oc.load_open_clip(str(tmp_path / "m.npz"), cfg)
  assert config == configs.get_config("Ti/8")
  interop_helpers.assert_identical(params, _params("Ti/8", 32, 8))


def test_torch_files_without_torch_name_the_extra(tmp_path, monkeypatch):
  (tmp_path / "w.bin").write_bytes(b"x")
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
  with pytest.raises(ValueError, match=r"needs torch: pip install \.\[torch\]"):
    oc.load_open_clip(str(tmp_path / "w.bin"), "ViT-H-14-CLIPA")


# ------------------------------------------------------------- sigmoid loss


def test_sigmoid_loss_matches_open_clip_siglip_loss():
  """Same embeddings, scale and bias: open_clip's SigLipLoss and ours agree, values and grads."""
  torch, _ = torch_required.require_torch()
  from open_clip.loss import SigLipLoss  # pylint: disable=import-outside-toplevel
  from clipa_t5x import losses  # pylint: disable=import-outside-toplevel
  rng = np.random.RandomState(0)
  img, txt = rng.randn(12, 16), rng.randn(12, 16)
  txt = txt + img  # partly aligned pairs
  img = (img / np.linalg.norm(img, axis=1, keepdims=True)).astype(np.float32)
  txt = (txt / np.linalg.norm(txt, axis=1, keepdims=True)).astype(np.float32)
  log_t, bias = np.float32(np.log(10.0) + 0.3), np.float32(-4.0)

  t_img, t_txt = (torch.tensor(x, requires_grad=True) for x in (img, txt))
  t_log_t, t_bias = (torch.tensor(x, requires_grad=True) for x in (log_t, bias))
  # open_clip's models pass logit_scale.exp() to the loss.
  theirs = SigLipLoss()(t_img, t_txt, t_log_t.exp(), t_bias)
  theirs.backward()
  (ours, _), grads = jax.value_and_grad(losses.sigmoid_contrastive_loss, argnums=(0, 1, 2, 3),
                                        has_aux=True)(img, txt, log_t, bias)
  assert float(ours) == pytest.approx(float(theirs.detach()), rel=1e-5)
  for mine, tensor in zip(grads, (t_img, t_txt, t_log_t, t_bias)):
    np.testing.assert_allclose(np.asarray(mine), tensor.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_sigmoid_model_exports_and_imports_its_logit_bias(tmp_path):
  torch, open_clip = torch_required.require_torch()
  config = configs.get_config("Ti/8", loss="sigmoid", init_logit_bias=-7.0)
  params = interop_helpers.random_params("Ti/8", 32, 8, seed=2)
  params = {**params, "logit_bias": np.float32(-6.25)}  # a trained value, not the init
  sigmoid_params = clip.ClipaModel(config).get_initial_variables(jax.random.key(0), 32, 8)
  assert set(nn.meta.unbox(sigmoid_params)["params"]) == set(params)
  out = oc.export_open_clip(params, config, str(tmp_path / "exp"), 32, 8)
  with open(os.path.join(out, oc.CONFIG_FILE)) as f:
    model_cfg = json.load(f)["model_cfg"]
  assert model_cfg["init_logit_bias"] == -7.0
  assert model_cfg["init_logit_scale"] == pytest.approx(np.log(10.0))
  model = open_clip.create_model("local-dir:" + out)  # strict=True: logit_bias is expected
  model.eval()
  assert float(model.logit_bias.detach()) == -6.25
  loaded, loaded_config, _, _ = oc.load_open_clip(out)
  assert loaded_config == config  # loss and init_logit_bias come back
  interop_helpers.assert_identical(params, loaded)
  rng = np.random.RandomState(4)
  images = rng.randint(0, 256, (3, 32, 32, 3)).astype(np.uint8)
  tokens = _tokens(rng, 3, 8)
  with torch.no_grad():
    theirs_img = model.encode_image(torch.from_numpy(_open_clip_inputs(images)),
                                    normalize=True).numpy()
    theirs_txt = model.encode_text(torch.from_numpy(tokens).long(), normalize=True).numpy()
    theirs_logits = (model.logit_scale.exp() * torch.from_numpy(theirs_img)
                     @ torch.from_numpy(theirs_txt).T + model.logit_bias).numpy()
  ours = clip.ClipaModel(loaded_config)
  ours_img = np.asarray(ours.encode_images(loaded, images))
  ours_txt = np.asarray(ours.encode_texts(loaded, tokens))
  ours_logits = np.exp(loaded["log_temperature"]) * ours_img @ ours_txt.T + loaded["logit_bias"]
  assert np.max(np.abs(theirs_img - ours_img)) <= 1e-4
  assert np.max(np.abs(theirs_txt - ours_txt)) <= 1e-4
  assert np.max(np.abs(theirs_logits - ours_logits)) <= 1e-4


def test_softmax_export_has_no_logit_bias():
  config = configs.get_config("Ti/8")
  model_cfg = open_clip_config.open_clip_model_config(config, 32, 8)
  assert "init_logit_bias" not in model_cfg
  assert "logit_bias" not in oc.open_clip_state_dict_shapes(config, 32, 8)
  assert oc.clipa_config_from_open_clip(model_cfg)[0].loss == "softmax"
