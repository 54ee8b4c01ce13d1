"""fairseq tasks of the plugin (imported by fairseq from --user-dir, and by the package itself)."""
from . import translation_lev_bleu  # noqa: F401
from . import translation_lev_ctc  # noqa: F401
from . import masked_autoencoder_pretrain  # noqa: F401
