"""The token ids that models and data pipelines agree on.

Pipelines (data/) encode with them, and models (models/) mask padding and
stop decoding with them; both import them from here, so neither package
depends on the other.
"""

PAD_ID = 0  # padding, and the "previous token" the model sees at position 0
UNK_ID = 1  # characters or words not seen when the vocabulary was built
FIRST_CHAR_ID = 2  # ids of characters (and of words) start here
EOS_ID = 2  # TokenVocab: the end of a sequence; its tokens start at 3
