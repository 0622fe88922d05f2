"""One-to-many input pipeline: an image -> its caption, for image captioners.

Batches are (images f32[batch, size, size, 3] in [0, 1], captions
int32[batch, max_caption_len], the captions again, weights
f32[batch, max_caption_len]); captions end with EOS_ID, as translation
targets do. An image with several captions (coco_captions has five) is
one training example per caption; evaluation teacher-forces the first and
scores generated captions against all of them.
"""

from typing import Any

import numpy as np
import tensorflow as tf
from trax import shapes

from data.translation import Seq2SeqInputs
from rnn_toolkit.errors import UsageError


class CaptioningInputs(Seq2SeqInputs):
  """Batches of images and captions, with a vocabulary of the captions.

  Args:
    dataset: TFDS name of a dataset with an image feature and a sequence
      of captions (`coco_captions`, or the generated `shape_captions`).
    image_key: name of the image feature.
    captions_key: name of the sequence-of-captions feature.
    caption_text_key: name of the text inside each caption.
    image_size: images are resized to image_size x image_size.
    level: 'word' or 'char' tokens (see data.vocab.TokenVocab).
    vocab_size, min_count: as in TranslationInputs, over the captions.
    max_caption_len: caption tokens, EOS included; longer training captions
      are skipped, longer evaluation captions cut.
    The others are as in `data.inputs.Inputs`.
  """

  task = 'captioning'

  def __init__(self, dataset: str = 'coco_captions', image_key: str = 'image',
               captions_key: str = 'captions', caption_text_key: str = 'text',
               image_size: int = 64, level: str = 'word',
               vocab_size: int = 10_000, min_count: int = 2,
               max_caption_len: int = 24, data_dir: str | None = None,
               train_split: str = 'train', eval_split: str = 'val',
               batch_size: int = 64, shuffle_buffer: int = 5_000,
               data_shards: int | None = None, download: bool = True):
    self.image_key = image_key
    self.captions_key = captions_key
    self.caption_text_key = caption_text_key
    self.image_size = image_size
    self.level = level
    self.vocab_size = vocab_size
    self.min_count = min_count
    self.max_target_len = max_caption_len
    super().__init__(
        dataset=dataset, data_dir=data_dir, train_split=train_split,
        eval_split=eval_split, batch_size=batch_size,
        shuffle_buffer=shuffle_buffer, data_shards=data_shards,
        download=download,
        features={'image': image_key, 'captions': captions_key},
        positive={'image_size': image_size, 'batch_size': batch_size,
                  'shuffle_buffer': shuffle_buffer, 'vocab_size': vocab_size,
                  'min_count': min_count, 'max_caption_len': max_caption_len})
    captions = self.builder.info.features[captions_key]
    if caption_text_key not in getattr(captions, 'feature', {}):
      raise UsageError(
          f'Feature {captions_key!r} of {self.builder.info.full_name} is not '
          f'a sequence of captions with a {caption_text_key!r} text. Bind '
          f'CaptioningInputs.captions_key and caption_text_key to its '
          f'captions (coco_captions: captions, text).')

  def example_spec(self) -> dict[str, Any]:
    """{image_key: uint8[h, w, c], captions_key: {caption_text_key: string[n]}}.

    Any image size will do (images are resized); of the captions, only
    their text is read.
    """
    spec = super().example_spec()
    image = spec[self.image_key]
    spec[self.image_key] = tf.TensorSpec([None, None, image.shape[-1]],
                                         image.dtype)
    spec[self.captions_key] = {
        self.caption_text_key:
            spec[self.captions_key][self.caption_text_key]}
    return spec

  def context_signature(self) -> shapes.ShapeDtype:
    """f32[batch_size, image_size, image_size, 3]: the images."""
    size = self.image_size
    return shapes.ShapeDtype((self.batch_size, size, size, 3), np.float32)

  def load_image(self, path: str) -> np.ndarray:
    """f32[image_size, image_size, 3]: the image file at `path`, as in training.

    Raises:
      UsageError: the file cannot be read or is not an image.
    """
    try:
      data = tf.io.read_file(path)
      image = tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.OpError, ValueError) as e:
      reason = ' '.join(str(getattr(e, 'message', e)).split())[:200]
      raise UsageError(f'Cannot read {path!r} as an image ({reason}). Pass a '
                       f'PNG, JPEG, GIF or BMP file.') from None
    return self._scaled(image).numpy()

  def _scaled(self, image):
    """uint8[h, w, c] -> f32[image_size, image_size, 3] in [0, 1]."""
    image = tf.image.convert_image_dtype(image, tf.float32)
    if image.shape[-1] == 1:
      image = tf.image.grayscale_to_rgb(image)
    return tf.image.resize(image, [self.image_size] * 2, antialias=True)

  def _context(self, table, ex):
    del table
    return self._scaled(ex[self.image_key])

  def _target_texts(self, ex):
    return ex[self.captions_key][self.caption_text_key]
