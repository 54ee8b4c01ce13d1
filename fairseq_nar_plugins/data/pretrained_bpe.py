"""fairseq BPE ``pretrained_tokenizer``: a pretrained checkpoint's own tokenizer as a fairseq ``--bpe``.

Data tokenized with ``scripts/prepare_pretrained_text.py encode`` holds the checkpoint's tokens spelled as the
symbols of its vocabulary bridge (``dict.txt``). With this BPE, ``fairseq-generate`` / ``fairseq-interactive``
print detokenized ``D-`` lines (what sacreBLEU needs) and ``fairseq-interactive`` tokenizes raw input, exactly as
the checkpoint's tokenizer does::

    fairseq-generate BIN --user-dir fairseq_nar_plugins --path ckpt.pt \\
        --bpe pretrained_tokenizer --pretrained-tokenizer work/pretrained/minilm

The same class is registered as the fairseq *tokenizer* ``pretrained_tokenizer`` too, for the validation BLEU of
``--eval-bleu`` (fairseq's ``translation`` task and the plugin's NAR tasks detokenize with ``--eval-bleu-detok``, a
tokenizer, not a BPE; its ``post_process`` does not know WordPiece's ``##``)::

    --eval-bleu --eval-bleu-detok pretrained_tokenizer --eval-bleu-detok-args '{"pretrained_tokenizer": "PT"}'

``--pretrained-tokenizer`` takes the same folders as ``scripts/prepare_pretrained_text.py --checkpoint``: a folder
written by ``scripts/convert_pretrained.py``, a Hugging Face folder, or a fairseq release folder.
"""
from dataclasses import dataclass, field

from fairseq.data.encoders import register_bpe, register_tokenizer
from fairseq.dataclass import FairseqDataclass


@dataclass
class PretrainedTokenizerBPEConfig(FairseqDataclass):
    pretrained_tokenizer: str = field(
        default="???",
        metadata={"help": "checkpoint folder whose tokenizer and vocabulary bridge (dict.txt) to use: a "
                          "scripts/convert_pretrained.py output, a Hugging Face folder or a fairseq release folder"})


@register_tokenizer("pretrained_tokenizer", dataclass=PretrainedTokenizerBPEConfig)
@register_bpe("pretrained_tokenizer", dataclass=PretrainedTokenizerBPEConfig)
class PretrainedTokenizerBPE(object):
    """``encode``: raw text -> space-separated bridge symbols; ``decode``: bridge symbols -> detokenized text
    (specials dropped)."""

    def __init__(self, cfg):
        import os

        from ..modules.pretrained.pretrained_import import PretrainedCheckpointError, read_checkpoint_dictionary
        from ..modules.pretrained.pretrained_tokenizer import PretrainedTokenizer

        path = cfg.pretrained_tokenizer
        if not path or path == "???" or not os.path.isdir(path):
            raise ValueError(f"--bpe pretrained_tokenizer needs --pretrained-tokenizer FOLDER (a checkpoint folder "
                             f"with tokenizer files and dict.txt); got {path!r}")
        try:
            self.dictionary = read_checkpoint_dictionary(path)
            self.tokenizer = PretrainedTokenizer.from_checkpoint(path, self.dictionary)
        except (FileNotFoundError, PretrainedCheckpointError) as e:
            raise ValueError(f"--pretrained-tokenizer {path}: {e}") from e

    def encode(self, x: str) -> str:
        return " ".join(self.dictionary[i] for i in self.tokenizer.encode(x))

    def decode(self, x: str) -> str:
        return self.tokenizer.decode([self.dictionary.index(s) for s in x.split()])

    def is_beginning_of_word(self, x: str) -> bool:
        return not x.startswith("##")
