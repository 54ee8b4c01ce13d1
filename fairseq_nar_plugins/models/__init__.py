"""fairseq models of the plugin (imported by fairseq from --user-dir, and by the package itself)."""
from . import bnb, bnb_classifier, nat_ctc_transformer  # noqa: F401
from . import deer  # noqa: F401,E402
from . import mlae  # noqa: F401,E402
from . import elmer  # noqa: F401,E402
