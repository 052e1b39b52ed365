"""The CLIPA two-tower model and its t5x ``BaseModel``-like wrapper.

``TwoTower`` is the Flax module: an image tower, a text tower and a learnable
log-temperature, returning L2-normalised features. ``ClipaModel`` is the plain
Python object the trainer talks to: it builds the initial (boxed) variables and
computes the contrastive loss from *unboxed* parameters.
"""

from typing import Any, Dict, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from clipa_t5x import losses
from clipa_t5x.losses import l2_normalize
from clipa_t5x.models import layers
from clipa_t5x.models.configs import ClipaConfig, get_config
from clipa_t5x.models.text import TextTransformer
from clipa_t5x.models.vit import MASK_RNG, VisionTransformer


class TwoTower(nn.Module):
  """Image and text towers plus the loss's learnable scalars.

  Attributes:
    config: the model sizes and options. Parameters live under ``img``,
      ``txt`` and ``log_temperature``, plus ``logit_bias`` when
      ``config.loss == 'sigmoid'`` (a softmax model has none, so its
      checkpoints keep their layout).
  """
  config: ClipaConfig

  def setup(self):
    c = self.config
    dtype = layers.canonical_dtype(c.dtype)
    # What both towers share: the output width and how their layers run.
    shared = dict(out_dim=c.embed_dim, dtype=dtype, remat_policy=c.remat_policy,
                  attention_impl=c.attention_impl, norm_impl=c.norm_impl,
                  mlp_impl=c.mlp_impl)
    self.img = VisionTransformer(
        width=c.image.width, depth=c.image.depth, heads=c.image.heads,
        mlp_dim=c.image.mlp_dim, patch_size=c.image.patch_size, **shared)
    self.txt = TextTransformer(
        width=c.text.width, depth=c.text.depth, heads=c.text.heads,
        mlp_dim=c.text.mlp_dim, vocab_size=c.text.vocab_size, **shared)
    init_t = (c.init_log_temperature if c.init_log_temperature is not None
              else losses.default_init_log_temperature(c.loss))
    # Scalars: no logical axes, replicated on every device.
    self.log_temperature = self.param(
        "log_temperature", layers.boxed(nn.initializers.constant(init_t), ()), (), jnp.float32)
    if c.loss == "sigmoid":
      self.logit_bias = self.param(
          "logit_bias", layers.boxed(nn.initializers.constant(c.init_logit_bias), ()), (),
          jnp.float32)

  def encode_images(self, images: jax.Array, train: bool = False, mask_ratio: float = 0.0,
                    mask_type: str = "random") -> jax.Array:
    """L2-normalised image features [B, embed_dim] (float32); masked only in training."""
    return l2_normalize(self.img(images, train=train, mask_ratio=mask_ratio,
                                 mask_type=mask_type).astype(jnp.float32))

  def encode_texts(self, tokens: jax.Array) -> jax.Array:
    """L2-normalised text features [B, embed_dim] (float32)."""
    return l2_normalize(self.txt(tokens).astype(jnp.float32))

  def image_representations(self, images: jax.Array) -> jax.Array:
    """The image tower's output before its projection [B, width] (float32, not normalised)."""
    return self.img.representation(images).astype(jnp.float32)

  def __call__(self, images: jax.Array, texts: jax.Array, train: bool = False,
               mask_ratio: float = 0.0, mask_type: str = "random"
               ) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """Returns ``(zimg, ztxt, log_temperature)``; features are L2-normalised.

    ``mask_ratio`` / ``mask_type`` (patch masking when ``train``) are training
    settings, passed per call: the module holds the architecture only.
    """
    return (self.encode_images(images, train=train, mask_ratio=mask_ratio,
                               mask_type=mask_type),
            self.encode_texts(texts), self.log_temperature)


class ClipaModel:
  """t5x ``BaseModel``-like wrapper around ``TwoTower``.

  Args:
    config: a ``ClipaConfig`` (see ``configs.get_config``).
  """

  def __init__(self, config: ClipaConfig):
    if not isinstance(config, ClipaConfig):
      raise ValueError(f"ClipaModel needs a ClipaConfig, got {type(config).__name__}.")
    self.config = config
    self.module = TwoTower(config)

  def get_initial_variables(self, rng: jax.Array, image_size: int,
                            text_length: int) -> Dict[str, Any]:
    """Initialises the model; parameters are boxed ``nn.LogicallyPartitioned``.

    Args:
      rng: PRNG key for the parameter initialisers.
      image_size: square input resolution (any multiple of the patch size).
      text_length: token length; fixes the text ``pos_embedding`` length.

    Returns:
      ``{'params': ...}`` with boxed leaves; use ``nn.get_partition_spec`` for
      the logical specs and ``nn.meta.unbox`` for plain arrays. Works under
      ``jax.eval_shape`` (bind the two ints with ``functools.partial``).
    """
    image_size, text_length = int(image_size), int(text_length)
    if image_size < 1 or text_length < 1:
      raise ValueError(
          f"image_size and text_length must be positive, got {image_size} and {text_length}.")
    images = jnp.zeros((1, image_size, image_size, 3), jnp.uint8)
    texts = jnp.zeros((1, text_length), jnp.int32)
    variables = self.module.init({"params": rng}, images, texts, train=False)
    return dict(variables)

  def _apply(self, params: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
    return self.module.apply({"params": params}, *args, **kwargs)

  def loss_fn(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array],
              rng: Optional[jax.Array], mask_ratio: float = 0.0, mask_type: str = "random"
              ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """The contrastive loss of a batch (``config.loss``: softmax or sigmoid).

    Args:
      params: unboxed parameters (``variables['params']`` after ``nn.meta.unbox``).
      batch: ``{'image': uint8 [B, H, W, 3], 'text': int32 [B, L]}``.
      rng: key for the patch mask. ``None`` (t5x's ``eval_fn``) runs without
        masking, i.e. ``train=False``.
      mask_ratio: fraction of image patches dropped (0 = none).
      mask_type: 'random', 'grid' or 'block' (``vit.check_masking``).

    Returns:
      ``(loss, metrics)`` from ``losses.contrastive_loss``.
    """
    scalars = self.loss_params(params)  # first: a clear error for another loss's params
    zimg, ztxt, _ = self.features(params, batch, rng, mask_ratio, mask_type)
    return self.contrastive_loss(zimg, ztxt, scalars)

  def loss_params(self, params: Mapping[str, Any]) -> Dict[str, jax.Array]:
    """The loss's scalar parameters (``log_temperature``, ``logit_bias``) out of ``params``."""
    names = losses.LOSS_PARAMS[self.config.loss]
    missing = [k for k in names if k not in params]
    if missing:
      raise ValueError(f"parameters lack {missing} for the {self.config.loss} loss; were they "
                       "made with another LOSS? Set LOSS (and the model config) to match.")
    return {k: params[k] for k in names}

  def contrastive_loss(self, image_features: jax.Array, text_features: jax.Array,
                       loss_params: Mapping[str, jax.Array]
                       ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """``(loss, metrics)`` of features of the whole batch (``losses.contrastive_loss``)."""
    return losses.contrastive_loss(self.config.loss, image_features, text_features, loss_params)

  def features(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array],
               rng: Optional[jax.Array], mask_ratio: float = 0.0, mask_type: str = "random"
               ) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """``(image features, text features, log_temperature)`` of a batch.

    Features are L2-normalised; with an ``rng`` the images are patch-masked
    by ``mask_ratio`` / ``mask_type`` (training), without one they are not.
    The loss is ``contrastive_loss`` of the features and ``loss_params``;
    gradient accumulation uses the features directly.
    """
    missing = {"image", "text"} - set(batch)
    if missing:
      raise ValueError(f"batch lacks feature(s) {sorted(missing)}; expected 'image' and 'text'.")
    train = rng is not None
    rngs = {MASK_RNG: rng} if train else {}
    return self._apply(params, batch["image"], batch["text"], train=train,
                       mask_ratio=mask_ratio, mask_type=mask_type, rngs=rngs)

  def eval_fn(self, params: Mapping[str, Any],
              batch: Mapping[str, jax.Array]) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """``loss_fn`` without masking (t5x's eval_fn)."""
    return self.loss_fn(params, batch, None)

  def encode_images(self, params: Mapping[str, Any], images: jax.Array) -> jax.Array:
    """L2-normalised image features [B, embed_dim]; never masked."""
    return self._apply(params, images, train=False, method=TwoTower.encode_images)

  def encode_texts(self, params: Mapping[str, Any], tokens: jax.Array) -> jax.Array:
    """L2-normalised text features [B, embed_dim]."""
    return self._apply(params, tokens, method=TwoTower.encode_texts)

  def image_representations(self, params: Mapping[str, Any], images: jax.Array) -> jax.Array:
    """Image features before the projection head [B, image width] (few-shot probes)."""
    return self._apply(params, images, method=TwoTower.image_representations)


def make_model(variant: str, **overrides: Any) -> ClipaModel:
  """Builds a ``ClipaModel`` from a variant name (gin-friendly factory).

  Args:
    variant: a name in ``configs.VARIANTS``, e.g. 'H/14'.
    **overrides: ``ClipaConfig`` fields to replace (see ``configs.get_config``).

  Returns:
    The wrapped model.
  """
  return ClipaModel(get_config(variant, **overrides))
