"""Early exit for non-autoregressive decoders: the pieces ELMER (Li et al. 2022, arXiv:2210.13304) is built from,
usable by any model whose decoder is a stack of fairseq transformer layers.

* :mod:`.sampling`: exit layers drawn uniformly per token (the Layer Permutation LM of ELMER, Eq. 9) and the entropy
  of an off-ramp distribution (the confidence of the hard exit, Eq. 10).
* :mod:`.off_ramps`: off-ramp classifiers at every layer, shared or independent (Eq. 7-8), and the soft-exit fusion
  ``W [Embed(y^) ; h]`` (Eq. 12).
* :mod:`.canvas`: the decoder canvas (how many ``[MASK]`` positions a sentence gets, from the source length only),
  its training labels (the target, then the end token) and the output cut at the first end token.
* :mod:`.policies`: the three layer loops: LPLM (assigned exit layers, exited states copied upward), hard exit
  (entropy below a threshold; the loop stops when every token has exited and, with a live-position layer, exited
  positions stop costing query and FFN work) and soft exit (every layer predicts; the prediction is fed upward).
* :mod:`.live_layer`: one post-LN fairseq decoder layer computed for a subset of query positions (the live tokens),
  keys and values still covering every position.
"""
from .canvas import CanvasLabels, CanvasRule, canvas_labels, cut_at_first_eos  # noqa: F401
from .live_layer import decoder_layer_at, pack_positions  # noqa: F401
from .off_ramps import OFF_RAMP_HEADS, OffRamps, SoftExitFusion  # noqa: F401
from .policies import HardExit, run_hard_exit, run_lplm, run_soft_exit  # noqa: F401
from .sampling import entropy, sample_exit_layers  # noqa: F401
