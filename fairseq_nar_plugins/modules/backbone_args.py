"""Command-line flags and architecture defaults shared by the models built on :class:`.bert_backbone.BertBackbone`
(bnb, bnb_classifier, deer), so that every model names and defaults them the same way."""


def add_dropout_args(parser):
    """``--dropout``, ``--attention-dropout``, ``--activation-dropout`` (BERT's 0.1 / 0.1 / 0.0 by default)."""
    parser.add_argument("--dropout", type=float, metavar="D", help="dropout probability")
    parser.add_argument("--attention-dropout", type=float, metavar="D", help="attention dropout")
    parser.add_argument("--activation-dropout", type=float, metavar="D", help="FFN activation dropout")


def set_dropout_defaults(args):
    """BERT's dropouts where the flags are unset: 0.1 on states and attention, 0.0 after the FFN activation."""
    for name, default in (("dropout", 0.1), ("attention_dropout", 0.1), ("activation_dropout", 0.0)):
        if getattr(args, name, None) is None:
            setattr(args, name, default)


def set_encoder_sizes(args, layers: int, dim: int, heads: int, ffn: int):
    """``--encoder-{layers,embed-dim,attention-heads,ffn-embed-dim}`` where unset (flags win over architectures)."""
    args.encoder_layers = getattr(args, "encoder_layers", None) or layers
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", None) or dim
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", None) or ffn
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", None) or heads
