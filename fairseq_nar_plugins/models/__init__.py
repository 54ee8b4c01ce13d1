"""fairseq models of the plugin (imported by fairseq from --user-dir, and by the package itself)."""
from . import bnb, nat_ctc_transformer  # noqa: F401
