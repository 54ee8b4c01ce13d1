"""fairseq-nar-plugins: non-autoregressive text generation for fairseq (BnB, ELMER, DEER, MLAE).

Load with ``fairseq-train --user-dir /path/to/fairseq_nar_plugins`` (or ``import fairseq_nar_plugins``). Importing the
package registers its tasks, models and criterions and makes fairseq checkpoints load with ``weights_only=True``
(see :mod:`fairseq_nar_plugins.checkpoint_safety`).
"""
from . import checkpoint_safety

checkpoint_safety.install()

from . import criterions, models, tasks  # noqa: E402,F401
from .data import pretrained_bpe  # noqa: E402,F401  (registers --bpe pretrained_tokenizer)

__version__ = "0.1.0"
