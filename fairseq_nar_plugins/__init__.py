"""fairseq-nar-plugins: non-autoregressive text generation for fairseq (BnB, ELMER, DEER, MLAE).

Load with ``fairseq-train --user-dir /path/to/fairseq_nar_plugins`` (or ``import fairseq_nar_plugins``). Importing the
package registers its tasks, models and criterions, makes fairseq checkpoints load with ``weights_only=True``, write
atomically and resume from the newest intact file (see :mod:`fairseq_nar_plugins.checkpoint_safety`), and checks
checkpoints against the data and flags they are used with (:mod:`fairseq_nar_plugins.fingerprint`), and restores
the ``np.compat.long`` fairseq's data pipeline reads on numpy 2 (:mod:`fairseq_nar_plugins.numpy_compat`).
"""
from . import checkpoint_safety, fingerprint, numpy_compat

numpy_compat.install()
checkpoint_safety.install()
checkpoint_safety.add_load_hook(fingerprint.attach)

from . import criterions, models, tasks  # noqa: E402,F401
from .data import pretrained_bpe  # noqa: E402,F401  (registers --bpe pretrained_tokenizer)

__version__ = "0.1.0"
