"""A pretrained checkpoint's own tokenizer, giving the checkpoint's token ids (embedding rows).

Backends, chosen from the files of the checkpoint folder (the first that applies):

* ``tokenizer.json`` -> the ``tokenizers`` library (any Hugging Face fast tokenizer: WordPiece, byte-level BPE,
  Unigram);
* ``vocab.txt`` -> WordPiece through ``tokenizers`` (``BertWordPieceTokenizer``), with ``do_lower_case`` /
  ``strip_accents`` / ``tokenize_chinese_chars`` from ``tokenizer_config.json`` (defaults as Hugging Face's
  ``BertTokenizer``: lower-casing on);
* ``vocab.json`` + ``merges.txt`` -> byte-level BPE through ``tokenizers`` (RoBERTa, no prefix space);
* ``sentencepiece.bpe.model`` -> ``sentencepiece``: when the vocabulary follows XLM-R's layout (row ``j + 1`` is
  piece ``j``; Hugging Face XLM-R and fairseq's XLM-R release), id = piece id + 1 and sentencepiece's ``<unk>`` is
  the checkpoint's ``<unk>`` (Hugging Face's ``XLMRobertaTokenizer``); otherwise pieces are looked up in the
  vocabulary (``dict.txt``), as fairseq does;
* ``encoder.json`` + ``vocab.bpe`` (fairseq RoBERTa releases) -> GPT-2 byte-level BPE through ``tokenizers``; the
  GPT-2 ids are looked up in ``dict.txt`` as fairseq's ``gpt2`` BPE does.

:meth:`PretrainedTokenizer.encode` returns ids **without** special tokens: fairseq adds ``</s>`` (= ``[SEP]``)
when binarizing and tasks prepend ``<s>`` (= ``[CLS]``), which gives the checkpoint's own ``[CLS] ... [SEP]`` rows.
"""
import json
import os
from typing import Callable, List, Sequence

from fairseq.data import Dictionary


class PretrainedTokenizer:
    """``encode(text) -> ids`` and ``decode(ids) -> text`` with a checkpoint's tokenizer (see module docstring).

    Args:
        encode_fn: text -> list of checkpoint ids (no special tokens).
        decode_fn: list of checkpoint ids (specials already removed) -> text.
        special_ids: ids dropped before decoding (bos/pad/eos/mask, ...).
        description: which files and backend are used (for logs).
    """

    def __init__(self, encode_fn: Callable[[str], List[int]], decode_fn: Callable[[List[int]], str],
                 special_ids: Sequence[int], description: str):
        self._encode, self._decode = encode_fn, decode_fn
        self.special_ids = set(int(i) for i in special_ids)
        self.description = description

    def encode(self, text: str) -> List[int]:
        return list(self._encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self._decode([int(i) for i in ids if int(i) not in self.special_ids])

    @classmethod
    def from_checkpoint(cls, folder: str, dictionary: Dictionary, backend: str = "auto") -> "PretrainedTokenizer":
        """The tokenizer of the checkpoint folder ``folder`` (a Hugging Face folder, a fairseq release folder, or a
        folder written by ``scripts/convert_pretrained.py``, which copies the tokenizer files).

        ``dictionary`` is the checkpoint's vocabulary (:class:`.pretrained_vocab.PretrainedDictionary`): its
        specials are dropped when decoding, and fairseq releases map tokens through it. ``backend`` forces
        ``tokenizers`` or ``sentencepiece`` when a folder has files for both.
        """
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"checkpoint folder {folder!r} does not exist")
        specials = [dictionary.bos(), dictionary.pad(), dictionary.eos()]
        if getattr(dictionary, "mask_index", None) is not None:
            specials.append(dictionary.mask_index)

        def has(*names):
            return all(os.path.isfile(os.path.join(folder, n)) for n in names)

        path = lambda n: os.path.join(folder, n)  # noqa: E731
        if backend not in ("auto", "tokenizers", "sentencepiece"):
            raise ValueError(f"unknown tokenizer backend {backend!r}")
        if backend != "sentencepiece":
            tok = None
            if has("tokenizer.json"):
                from tokenizers import Tokenizer

                tok, what = Tokenizer.from_file(path("tokenizer.json")), "tokenizer.json (tokenizers)"
                # a tokenizer.json may pad or truncate (sentence-transformers: 128 tokens): the data keep every
                # token, without padding; length limits are the task's (--max-source-positions)
                tok.no_padding()
                tok.no_truncation()
            elif has("vocab.txt"):
                tok, what = _wordpiece_from_vocab(folder), "vocab.txt (tokenizers WordPiece)"
            elif has("vocab.json", "merges.txt"):
                from tokenizers import ByteLevelBPETokenizer

                tok = ByteLevelBPETokenizer(path("vocab.json"), path("merges.txt"), add_prefix_space=False,
                                            trim_offsets=True)
                what = "vocab.json + merges.txt (tokenizers byte-level BPE)"
            if tok is not None:
                _check_ids_fit(tok.get_vocab_size(with_added_tokens=True), dictionary, what)
                return cls(lambda text: tok.encode(text, add_special_tokens=False).ids,
                           lambda ids: tok.decode(ids, skip_special_tokens=True), specials, what)
            if has("encoder.json", "vocab.bpe"):
                return _fairseq_gpt2(path("encoder.json"), path("vocab.bpe"), dictionary, specials)
            if backend == "tokenizers":
                raise FileNotFoundError(f"no tokenizers files in {folder!r}: expected tokenizer.json, vocab.txt or "
                                        "vocab.json + merges.txt")
        if has("sentencepiece.bpe.model"):
            import sentencepiece as spm

            sp = spm.SentencePieceProcessor(model_file=path("sentencepiece.bpe.model"))
            if not _xlmr_aligned(sp, dictionary):  # a fairseq release: pieces -> dict.txt, as fairseq does
                what = "sentencepiece.bpe.model + dict.txt (sentencepiece, fairseq mapping)"
                return cls(lambda text: [dictionary.index(p) for p in sp.encode(text, out_type=str)],
                           lambda ids: sp.decode_pieces([dictionary[i] for i in ids]), specials, what)
            # XLM-R (Hugging Face, and fairseq's release whose dict.txt follows the pieces): id = piece id + 1,
            # sentencepiece's <unk> (0) -> the checkpoint's unk
            unk = dictionary.unk()
            return cls(lambda text: [j + 1 if j > 0 else unk for j in sp.encode(text)],
                       lambda ids: sp.decode([i - 1 for i in ids if i != unk]),
                       specials, "sentencepiece.bpe.model (sentencepiece, XLM-R mapping: id = piece id + 1)")
        raise FileNotFoundError(
            f"no tokenizer in {folder!r}: expected tokenizer.json, vocab.txt, vocab.json + merges.txt, "
            "sentencepiece.bpe.model, or encoder.json + vocab.bpe"
        )


#: tokenizer files copied by scripts/convert_pretrained.py so that a converted folder tokenizes by itself
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "added_tokens.json", "sentencepiece.bpe.model", "encoder.json", "vocab.bpe")


def _xlmr_aligned(sp, dictionary: Dictionary) -> bool:
    """True if row ``j + 1`` of the vocabulary is sentencepiece piece ``j`` for every ordinary piece (``j >= 3``):
    XLM-R's layout. Rows whose piece could not be written as a symbol hold a ``<row:I>`` placeholder."""
    from .pretrained_vocab import placeholder

    n = sp.get_piece_size()
    if len(dictionary) < n + 1:
        return False
    return all(dictionary[j + 1] in (sp.id_to_piece(j), placeholder(j + 1)) for j in range(3, n))


def _check_ids_fit(vocab_size: int, dictionary: Dictionary, what: str):
    if vocab_size > len(dictionary):
        raise ValueError(f"the tokenizer ({what}) has {vocab_size} ids but the checkpoint's vocabulary has only "
                         f"{len(dictionary)} rows")


def _wordpiece_from_vocab(folder: str):
    from tokenizers import BertWordPieceTokenizer

    cfg = {}
    cfg_path = os.path.join(folder, "tokenizer_config.json")
    if os.path.isfile(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    lowercase = cfg.get("do_lower_case", True)
    return BertWordPieceTokenizer(
        os.path.join(folder, "vocab.txt"),
        lowercase=lowercase,
        strip_accents=cfg.get("strip_accents"),
        handle_chinese_chars=cfg.get("tokenize_chinese_chars", True),
        clean_text=True,
        unk_token=_content(cfg.get("unk_token", "[UNK]")),
        sep_token=_content(cfg.get("sep_token", "[SEP]")),
        cls_token=_content(cfg.get("cls_token", "[CLS]")),
        pad_token=_content(cfg.get("pad_token", "[PAD]")),
        mask_token=_content(cfg.get("mask_token", "[MASK]")),
    )


def _content(value):
    return value.get("content") if isinstance(value, dict) else value


def _fairseq_gpt2(encoder_json: str, vocab_bpe: str, dictionary: Dictionary, specials) -> PretrainedTokenizer:
    """fairseq's ``gpt2`` BPE: byte-level BPE to GPT-2 ids, written as decimal strings and looked up in dict.txt."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    tok = Tokenizer(BPE.from_file(encoder_json, vocab_bpe))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()

    def decode(ids: List[int]) -> str:
        gpt2_ids = [int(dictionary[i]) for i in ids if dictionary[i].isdigit()]
        return tok.decode(gpt2_ids)

    return PretrainedTokenizer(lambda text: [dictionary.index(str(i)) for i in tok.encode(text).ids], decode,
                               specials, "encoder.json + vocab.bpe (tokenizers GPT-2 BPE, fairseq dict.txt mapping)")

