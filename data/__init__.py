"""Input pipelines: TFDS datasets to the batches trax trains on."""

import trax_compat  # noqa: F401  (must precede the first trax import)

from data.char_lm import CharLMInputs
from data.text_classification import TaggingInputs, TextClassificationInputs
from data.tfds_io import get_builder, resolve_data_dir
from data.vocab import CharVocab, PAD_ID, UNK_ID, WordVocab, load_vocab
