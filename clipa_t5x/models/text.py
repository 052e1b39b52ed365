"""CLIPA text tower: a BERT-token transformer without any attention mask.

As in the released CLIPA-v2 models: a 32,000-row token table, a *learned*
position embedding ``pos_embedding`` (1, L, W) whose length L is taken from the
tokens at init (8 in pre-training, 32 in fine-tuning; the trainer resizes it
between stages), pre-LN blocks with no causal and no padding mask (pads are
attended), a final LayerNorm on all tokens, pooling at the **last position**
``x[:, -1]`` and a bias-free projection head.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from clipa_t5x.models import layers

# open_clip-style init uses the depth of the residual branch sum; CLIPA's code
# never passes the real depth to the blocks, so 12 is used for every variant.
INIT_DEPTH = 12
POS_EMBEDDING = "pos_embedding"


class TextTransformer(layers.Tower, kw_only=True):
  """CLIPA text encoder → [B, out_dim] (not L2-normalised).

  Attributes: ``layers.Tower``'s, and ``vocab_size``: rows of the token table.
  """
  vocab_size: int

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    """Encodes int token ids [B, L] → features [B, out_dim].

    Raises:
      ValueError: if ``tokens`` is not an integer [B, L] array, or if L differs
        from the length of the existing ``pos_embedding`` parameter.
    """
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(
          f"text tokens must be an integer [batch, length] array, got {tokens.dtype} "
          f"{tuple(tokens.shape)}.")
    length = tokens.shape[1]
    if self.has_variable("params", POS_EMBEDDING):
      stored = jnp.shape(nn.meta.unbox(self.get_variable("params", POS_EMBEDDING)))
      if stored[1] != length:
        raise ValueError(
            f"Text length {length} differs from the pos_embedding length {stored[1]}; "
            f"set the text length to {stored[1]} or resize txt pos_embedding to {length}.")

    w = self.width
    attn_std = w**-0.5
    proj_std = w**-0.5 * (2 * INIT_DEPTH)**-0.5
    fc_std = (2 * w)**-0.5
    normal = nn.initializers.normal

    embed = nn.Embed(
        num_embeddings=self.vocab_size,
        features=w,
        dtype=self.dtype,
        param_dtype=jnp.float32,
        embedding_init=layers.boxed(normal(stddev=0.02), ("vocab", "embed")),
        name="embedding",
    )
    x = embed(tokens)
    pos = self.param(POS_EMBEDDING, layers.boxed(normal(stddev=0.01), (None, "length", "embed")),
                     (1, length, w), jnp.float32)
    x = layers.constrain(x + pos.astype(self.dtype), layers.RESIDUAL_AXES)
    x = layers.tower_encoder(self, normal(stddev=attn_std), normal(stddev=proj_std),
                             normal(stddev=fc_std), normal(stddev=proj_std), name="encoder")(x)
    x = layers.layer_norm(self.dtype, name="encoder_norm")(x)
    pooled = layers.constrain(x[:, -1], ("batch", "embed"))
    out = layers.projection_head(self.out_dim, w, self.dtype, name="head")(pooled)
    return layers.constrain(out, ("batch", "proj"))
