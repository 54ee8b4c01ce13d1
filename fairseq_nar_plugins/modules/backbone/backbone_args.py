"""Command-line flags and architecture defaults shared by the models built on :class:`.bert_backbone.BertBackbone`
(bnb, bnb_classifier, deer), so that every model names and defaults them the same way."""


def add_dropout_args(parser):
    """``--dropout``, ``--attention-dropout``, ``--activation-dropout`` (BERT's 0.1 / 0.1 / 0.0 by default)."""
    parser.add_argument("--dropout", type=float, metavar="D", help="dropout probability")
    parser.add_argument("--attention-dropout", type=float, metavar="D", help="attention dropout")
    parser.add_argument("--activation-dropout", type=float, metavar="D", help="FFN activation dropout")


def set_default(args, name: str, default):
    """``args.<name> = default`` only where the flag was not given (absent or None): a given value wins, 0 and
    ``False`` included (never ``getattr(args, name, None) or default``, which turns a user's 0 into the default)."""
    if getattr(args, name, None) is None:
        setattr(args, name, default)
    return getattr(args, name)


def require_positive(args, *names: str):
    """Refuse a size flag that is not a positive number, naming the flag (``encoder_layers`` ->
    ``--encoder-layers``)."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} {value}: must be positive")


def set_dropout_defaults(args):
    """BERT's dropouts where the flags are unset: 0.1 on states and attention, 0.0 after the FFN activation."""
    for name, default in (("dropout", 0.1), ("attention_dropout", 0.1), ("activation_dropout", 0.0)):
        set_default(args, name, default)


def set_encoder_sizes(args, layers: int, dim: int, heads: int, ffn: int):
    """``--encoder-{layers,embed-dim,attention-heads,ffn-embed-dim}`` where unset (flags win over architectures);
    a given value must be positive."""
    set_default(args, "encoder_layers", layers)
    set_default(args, "encoder_embed_dim", dim)
    set_default(args, "encoder_ffn_embed_dim", ffn)
    set_default(args, "encoder_attention_heads", heads)
    require_positive(args, "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads")
