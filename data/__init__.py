"""Input pipelines: TFDS datasets to the batches trax trains on."""

from rnn_toolkit.runtime import trax_compat  # noqa: F401  (must precede the first trax import)

from data import generated  # registers the toolkit's generated datasets
from data.captioning import CaptioningInputs
from data.char_lm import CharLMInputs
from data.feature_vectors import FeatureVectorInputs
from data.inputs import Feature, Inputs
from data.text_classification import TaggingInputs, TextClassificationInputs
from data.tfds_io import get_builder, resolve_data_dir
from data.translation import TranslationInputs
from data.vocab import (CharVocab, EOS_ID, LabelVocab, PAD_ID, TokenVocab,
                        UNK_ID, WordVocab, load_vocab)
