"""fairseq criterions of the plugin. fairseq does not auto-import criterions from --user-dir: the package
``__init__`` imports this module."""
from . import ctc  # noqa: F401
from . import layer_permutation  # noqa: F401
