"""Trax models built from the toolkit's shared-weight recurrent layer."""

from rnn_toolkit.runtime import trax_compat  # noqa: F401  (must precede the first trax import)

from models.classifier import RNNClassifier, RNNTagger, VectorClassifier
from models.language_model import RNNLanguageModel
from models.recurrence import elman_scan
from models.seq2seq import RNNCaptioner, RNNSeq2Seq
from models.carried_state import CarriedState
from models.dropout import ByteDropout
from models.embedded_recurrence import EmbeddedRecurrence
from models.gated_rnn import GatedRNN
from models.rnn import (CELLS, ConfiguredElman, ElmanRNN, MaskedRNN,
                        RecurrentLayer, StackedElmanRNN)
