"""Encoder-decoder models: translation (many-to-many) and captioning (one-to-many).

Both read a context (source tokens, or an image) and a target sequence,
and return the log-probabilities of each target token given the context and
the tokens before it: the target is shifted right inside the model, as in
the language model, so training is teacher-forced and the batch's target
is also the model's second input. The decoder is the toolkit's ElmanRNN,
started from a state computed from the context.

Each model is a context part, then a Serial named DECODER that reads the
target and what the context part computed (`split_at_decoder`). In
`mode='predict'` the target is not shifted: the caller runs the context
part once, then feeds the decoder one previous token at a time (PAD_ID
first), and the decoder's ElmanRNN carries its state between calls (see
models/decoding.py). The context part then runs in eval mode, so it keeps
no state.
"""

from collections.abc import Sequence

import jax
from jax import numpy as jnp
import numpy as np
from trax import layers as tl

from models import classifier
from models import rnn


def RNNSeq2Seq(vocab_size: int, d_model: int = 128, n_units: int = 256,  # pylint: disable=invalid-name
               n_encoder_layers: int = 1, bidirectional_encoder: bool = True,
               attention: bool = True, dropout: float = 0.1,
               mode: str = 'train') -> tl.Serial:
  """Returns an encoder-decoder translation model built from ElmanRNN layers.

  Inputs: source int32[batch, source_len], target int32[batch, target_len]
  (PAD_ID after each sequence's end; one vocabulary for both sides).
  Output: f32[batch, target_len, vocab_size] log-probabilities.

  Args:
    vocab_size: number of token ids (source and target share them).
    d_model: width of the token embeddings.
    n_units: units of each ElmanRNN layer (each direction, in the encoder).
    n_encoder_layers: stacked ElmanRNN layers in the encoder.
    bidirectional_encoder: run a second encoder layer over the reversed
      source at each level.
    attention: let each decoder step attend to the encoder states (Luong's
      "general" score); without it, the decoder sees the source only
      through its initial state.
    dropout: dropout rate on embeddings, between layers and before the
      output layer.
    mode: 'train', 'eval' or 'predict'.
  """
  encoder_mode = 'eval' if mode == 'predict' else mode
  encoded_width = n_units * (2 if bidirectional_encoder else 1)
  return tl.Serial(                                   # source, target
      classifier.Encoder(tl.Embedding(vocab_size, d_model), 'elman', n_units,
                         n_encoder_layers, bidirectional_encoder, dropout,
                         encoder_mode),               # encoded, mask, target
      tl.Branch(_InitialState(n_units, bidirectional_encoder),
                tl.Select([0, 1, 2])),                # h0, encoded, mask, target
      tl.Select([3, 0, 1, 2]),                        # target, h0, encoded, mask
      tl.Serial(
          _Decoder(vocab_size, d_model, n_units, dropout, mode),  # decoded, ...
          (_Attention(n_units, encoded_width) if attention
           else tl.Select([0], n_in=3)),              # features
          _Output(vocab_size, dropout, mode),         # log-probabilities
          name=DECODER),
      name='RNNSeq2Seq' + ('_attention' if attention else ''),
  )


def RNNCaptioner(vocab_size: int, d_model: int = 128, n_units: int = 256,  # pylint: disable=invalid-name
                 conv_channels: Sequence[int] = (32, 64),
                 dropout: float = 0.1, mode: str = 'train') -> tl.Serial:
  """Returns an image captioner: a conv stack starts an ElmanRNN decoder.

  Inputs: images f32[batch, size, size, 3], captions int32[batch, length].
  Output: f32[batch, length, vocab_size] log-probabilities.

  Args:
    vocab_size: number of caption token ids.
    d_model: width of the token embeddings.
    n_units: units of the decoder's ElmanRNN.
    conv_channels: channels of each 3x3 convolution; each is followed by a
      ReLU and a 2x2 max-pool, so the image shrinks 2x per entry.
    dropout: dropout rate on the embeddings and before the output layer.
    mode: 'train', 'eval' or 'predict'.
  """
  encoder_mode = 'eval' if mode == 'predict' else mode
  convs = [[tl.Conv(channels, (3, 3), padding='SAME'), tl.Relu(),
            tl.MaxPool((2, 2), strides=(2, 2))] for channels in conv_channels]
  return tl.Serial(                                   # images, captions
      convs,                                          # feature maps
      tl.Flatten(),                                   # features
      tl.Dropout(rate=dropout, mode=encoder_mode),
      tl.Dense(n_units), tl.Tanh(),                   # h0, captions
      tl.Swap(),                                      # captions, h0
      tl.Serial(
          _Decoder(vocab_size, d_model, n_units, dropout, mode),  # decoded
          _Output(vocab_size, dropout, mode),         # log-probabilities
          name=DECODER),
      name='RNNCaptioner',
  )


def _InitialState(n_units, bidirectional):  # pylint: disable=invalid-name
  """(encoded, mask) -> the decoder's h0 f32[batch, n_units].

  From the encoder's states after the last source token (and, when
  bidirectional, the backward states after the first).
  """
  return tl.Serial(classifier.Pool('last', bidirectional),
                   tl.Dense(n_units), tl.Tanh())


def _Decoder(vocab_size, d_model, n_units, dropout, mode):  # pylint: disable=invalid-name
  """(target, h0) -> decoder states f32[batch, length, n_units]."""
  return [                                            # target, h0
      tl.ShiftRight(mode=mode),                       # previous tokens, h0
      tl.Embedding(vocab_size, d_model),              # vectors, h0
      tl.Dropout(rate=dropout, mode=mode),
      rnn.ConfiguredElman(n_units, mode, use_initial_state=True),  # decoded
  ]


def _Output(vocab_size, dropout, mode):  # pylint: disable=invalid-name
  return [tl.Dropout(rate=dropout, mode=mode),
          tl.Dense(vocab_size),                       # logits
          tl.LogSoftmax()]                            # log-probabilities


def _Attention(n_units, encoded_width):  # pylint: disable=invalid-name
  """(decoded, encoded, mask) -> tanh(W [decoded; context]) f32[batch, length, n_units].

  Luong et al. (2015)'s global attention with the "general" score
  decoded_t · W_a · encoded_s, over the real source steps only. Each target
  step's context depends on its own decoder state alone, so feeding one
  step at a time (predict mode) gives what the whole sequence does.
  """
  def attend(query, decoded, encoded, mask):
    weights = attention_weights(query, encoded, mask)
    context = jnp.einsum('bts,bsd->btd', weights, encoded)
    return jnp.concatenate([decoded, context], axis=-1)

  return tl.Serial(                                   # decoded, encoded, mask
      tl.Select([0, 0, 1, 2]),                        # decoded, decoded, ...
      tl.Dense(encoded_width, use_bias=False),        # query, decoded, ...
      tl.Fn('Attend', attend),                        # [decoded; context]
      tl.Dense(n_units), tl.Tanh(),                   # features
      name=ATTENTION,
  )


ATTENTION = 'Attention'
DECODER = 'Decoder'


def split_at_decoder(model: tl.Serial) -> tuple[tl.Serial, tl.Layer]:
  """Splits an RNNSeq2Seq or RNNCaptioner into (context part, decoder).

  The context part maps (context, target) to (target, *memory), where
  memory is all the decoder reads of the context: (h0, encoded, mask) for a
  translator, (h0,) for a captioner. The decoder maps (target, *memory) to
  the log-probabilities. Generation runs the context part once and the
  decoder once per token.

  Returns:
    A Serial of the model's sublayers before the decoder (sharing their
    weights; `model.weights[:-1]` are its weights) and the decoder layer
    (`model.weights[-1]`).

  Raises:
    ValueError: the model does not end in a decoder.
  """
  *context, decoder = model.sublayers
  if decoder.name != DECODER:
    raise ValueError(f'{model.name} is not an encoder-decoder model: its last '
                     f'layer is {decoder.name}, not {DECODER}.')
  return tl.Serial(context), decoder


def attention_weights(query: jax.Array, encoded: jax.Array,
                      mask: jax.Array) -> jax.Array:
  """f32[batch, target_len, source_len]: each target step's weights, summing to 1.

  Args:
    query: f32[batch, target_len, width], the decoder states times W_a.
    encoded: f32[batch, source_len, width], the encoder states.
    mask: f32[batch, source_len], 1 at real source steps.
  """
  scores = jnp.einsum('btd,bsd->bts', query, encoded)
  scores = jnp.where(mask[:, None, :] > 0, scores, -1e9)
  return jax.nn.softmax(scores, axis=-1)


def attention_of(model: tl.Serial, source: np.ndarray,
                 target: np.ndarray) -> jax.Array:
  """The attention weights of an RNNSeq2Seq (in eval mode) reading `target`.

  Args:
    model: an RNNSeq2Seq with attention, with its weights.
    source: int32[batch, source_len] source tokens.
    target: int32[batch, target_len] target tokens (e.g. its own output).

  Returns:
    f32[batch, target_len, source_len]: the weights of target step t (which
    predicts token t from the tokens before it) over the source steps.

  Raises:
    ValueError: the model has no attention.
  """
  if not has_attention(model):
    raise ValueError(f'{model.name} has no attention to show.')
  context, decoder = split_at_decoder(model)
  at = [layer.name for layer in decoder.sublayers].index(ATTENTION)
  before_attention = tl.Serial(context, decoder.sublayers[:at])
  decoded, encoded, mask = _apply(before_attention, (source, target))
  query = _apply(decoder.sublayers[at].sublayers[1], decoded)  # W_a
  return attention_weights(query, encoded, mask)


def _apply(layer, inputs):
  outputs, _ = layer.pure_fn(inputs, layer.weights, layer.state,
                             jax.random.PRNGKey(0))
  return outputs


def has_attention(model: tl.Serial) -> bool:
  """Whether `model` (an RNNSeq2Seq) attends to the encoder states.

  Raises:
    ValueError: the model is not an encoder-decoder (`split_at_decoder`).
  """
  _, decoder = split_at_decoder(model)
  return any(layer.name == ATTENTION for layer in decoder.sublayers)
