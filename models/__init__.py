"""Trax models built from the toolkit's shared-weight recurrent layer."""

import trax_compat  # noqa: F401  (must precede the first trax import)

from models.classifier import RNNClassifier, RNNTagger
from models.language_model import RNNLanguageModel
from models.recurrence import elman_scan
from models.rnn import (CELLS, ElmanRNN, MaskedRNN, RecurrentLayer,
                        StackedElmanRNN)
