"""The vocabulary bridge: a fairseq ``Dictionary`` whose index ``i`` is row ``i`` of a pretrained checkpoint's
embedding matrix.

fairseq's ``Dictionary`` always puts ``<s> <pad> </s> <unk>`` at indices 0-3 and appends the file's symbols after
them. That happens to match RoBERTa and XLM-R, but not BERT (``[PAD]`` = 0, ``[UNK]`` = 100, ``[CLS]`` = 101,
``[SEP]`` = 102, ``[MASK]`` = 103 in the English vocabularies). :class:`PretrainedDictionary` instead holds the
checkpoint's vocabulary row by row, and points fairseq's special symbols at the checkpoint's own:

==============  ===========  =========================
fairseq         BERT         RoBERTa / XLM-R
==============  ===========  =========================
``bos()``       ``[CLS]``    ``<s>``
``pad()``       ``[PAD]``    ``<pad>``
``eos()``       ``[SEP]``    ``</s>``
``unk()``       ``[UNK]``    ``<unk>``
``mask()``      ``[MASK]``   ``<mask>``
==============  ===========  =========================

so that fairseq's usual ``<s> w1 ... wn </s>`` rows are exactly ``[CLS] w1 ... wn [SEP]`` for BERT.
fairseq's mask name ``<mask>`` is an alias of the checkpoint's mask token: ``add_symbol("<mask>")``, which fairseq's
``sentence_prediction`` and ``masked_lm`` tasks call when they load a dictionary, returns the ``[MASK]`` row instead
of appending a row the checkpoint has no embedding for (any other new symbol is still appended, and then refused by
:mod:`.pretrained_import`).

File format (``dict.txt``), one line per embedding row after a header line::

    # fairseq-nar-plugins pretrained vocabulary: load it with --user-dir fairseq_nar_plugins | v1 family=bert bos=101 pad=0 eos=102 unk=100 mask=103
    [PAD] 1
    [unused0] 1
    ...

Line ``i + 2`` holds the symbol of row ``i`` and a count (always 1: pretrained vocabularies have no counts). Every
symbol is a non-empty string without whitespace and appears once, so that a token written in a text file is read
back by ``fairseq-preprocess`` as the same row. A vocabulary entry that cannot be written that way (it contains
whitespace, it repeats an earlier entry, or the row has no token) gets the placeholder symbol ``<row:I>``; the text
preparation writes the same placeholder, so ids still round-trip (:mod:`scripts/prepare_pretrained_text.py` writes
``dictionary[id]`` for every id, never the raw token).

Plain fairseq (without ``--user-dir``) refuses the file ("Incorrect dictionary format" quoting the header, which says
what to do) instead of silently shifting every id by four. With the plugin loaded, :func:`install` makes fairseq's
``Dictionary.load`` read such files as a :class:`PretrainedDictionary`, so ``fairseq-preprocess --user-dir ...
--srcdict dict.txt``, ``fairseq-train`` and ``fairseq-generate`` of any task use the checkpoint's ids; no file that
plain fairseq accepts is read differently. Tasks can also call :meth:`PretrainedDictionary.load_dictionary`
explicitly in their ``load_dictionary``.
"""
import io
import json
import logging
import os
import re
from typing import Dict, List, Optional, Sequence

from fairseq.data import Dictionary
from fairseq.tokenizer import tokenize_line

logger = logging.getLogger(__name__)

MAGIC = "# fairseq-nar-plugins pretrained vocabulary: load it with --user-dir fairseq_nar_plugins |"
FORMAT_VERSION = "v1"
_PLACEHOLDER = re.compile(r"<row:(\d+)>")
#: fairseq's name for the mask symbol; ``add_symbol(MASK_ALIAS)`` returns the checkpoint's mask row (``[MASK]``)
MASK_ALIAS = "<mask>"


def placeholder(row: int) -> str:
    """The symbol of a row whose token cannot be written as a whitespace-free, unique symbol."""
    return f"<row:{row}>"


def is_writable_symbol(token: Optional[str]) -> bool:
    """True if fairseq's line tokenizer reads ``token`` back as exactly one symbol equal to it."""
    return bool(token) and tokenize_line(token) == [token] and "\n" not in token and "\r" not in token


class PretrainedDictionary(Dictionary):
    """A fairseq ``Dictionary`` over a pretrained checkpoint's embedding rows (see the module docstring).

    Args:
        symbols: one symbol per embedding row, in row order (unique, whitespace-free: use :meth:`from_tokens` to
            build it from raw tokenizer tokens).
        bos, pad, eos, unk: row indices of the checkpoint's ``[CLS]``/``<s>``, ``[PAD]``/``<pad>``,
            ``[SEP]``/``</s>``, ``[UNK]``/``<unk>``.
        mask: row of ``[MASK]``/``<mask>``, or None.
        family: ``bert``, ``roberta``, ``xlm-roberta`` (informational, kept in the file).
    """

    def __init__(self, symbols: Sequence[str], bos: int, pad: int, eos: int, unk: int, mask: Optional[int] = None,
                 family: str = ""):
        super().__init__(add_special_symbols=False)
        for row, sym in enumerate(symbols):
            if not is_writable_symbol(sym):
                raise ValueError(f"row {row}: symbol {sym!r} is empty or contains whitespace; use "
                                 "PretrainedDictionary.from_tokens, which writes such rows as placeholders")
            if sym in self.indices:
                raise ValueError(f"row {row}: symbol {sym!r} repeats row {self.indices[sym]}")
            super().add_symbol(sym, n=1)
        for name, row in (("bos", bos), ("pad", pad), ("eos", eos), ("unk", unk), ("mask", mask)):
            if row is not None and not 0 <= row < len(self.symbols):
                raise ValueError(f"special symbol {name} at row {row} is outside the vocabulary of "
                                 f"{len(self.symbols)} rows")
        self.bos_index, self.pad_index, self.eos_index, self.unk_index = bos, pad, eos, unk
        self.bos_word, self.pad_word, self.eos_word, self.unk_word = (self.symbols[i] for i in (bos, pad, eos, unk))
        self.mask_index = mask
        self.family = family
        # fairseq treats symbols[:nspecial] as "never a content token" (e.g. MaskTokensDataset's random
        # replacements): here, every row up to the last of bos/pad/eos/unk (BERT: [PAD], [unused*], [UNK],
        # [CLS], [SEP]; RoBERTa / XLM-R: the four fairseq specials)
        self.nspecial = 1 + max(bos, pad, eos, unk)

    # ----------------------------------------------------------------------------------------------- building
    @classmethod
    def from_tokens(cls, tokens: Sequence[Optional[str]], specials: Dict[str, Optional[str]], family: str = "",
                    ) -> "PretrainedDictionary":
        """Build from raw tokens by row (``tokens[i]`` is row ``i``'s token; None for a row with no token).

        ``specials`` maps ``bos``/``pad``/``eos``/``unk``/``mask`` to the checkpoint's token strings (``mask`` may be
        None). Rows whose token is not a writable symbol, or repeats an earlier row, get :func:`placeholder`.
        """
        symbols, seen, escaped = [], set(), 0
        for row, tok in enumerate(tokens):
            if tok is None or not is_writable_symbol(tok) or tok in seen or _PLACEHOLDER.fullmatch(tok):
                tok = placeholder(row)
                escaped += 1
            seen.add(tok)
            symbols.append(tok)
        if escaped:
            logger.info(f"{escaped} of {len(tokens)} vocabulary rows have no writable token and use <row:I> "
                        "placeholders")
        index = {}
        for row, tok in enumerate(tokens):
            if tok is not None:
                index.setdefault(tok, row)
        rows = {}
        for name in ("bos", "pad", "eos", "unk", "mask"):
            tok = specials.get(name)
            if tok is None:
                if name == "mask":
                    rows[name] = None
                    continue
                raise ValueError(f"the checkpoint's vocabulary defines no {name} token")
            if tok not in index:
                raise ValueError(f"special token {tok!r} ({name}) is not in the checkpoint's vocabulary")
            rows[name] = index[tok]
        return cls(symbols, family=family, **rows)

    # ---------------------------------------------------------------------------------------------- file I/O
    def header(self) -> str:
        fields = dict(family=self.family or "-", bos=self.bos_index, pad=self.pad_index, eos=self.eos_index,
                      unk=self.unk_index, mask=-1 if self.mask_index is None else self.mask_index)
        return f"{MAGIC} {FORMAT_VERSION} " + " ".join(f"{k}={v}" for k, v in fields.items())

    def save(self, f):
        """Write the file format of the module docstring (every row, header first)."""
        if isinstance(f, (str, os.PathLike)):
            os.makedirs(os.path.dirname(os.path.abspath(f)), exist_ok=True)
            with open(f, "w", encoding="utf-8", newline="\n") as fd:
                return self.save(fd)
        f.write(self.header() + "\n")
        for sym, count in zip(self.symbols, self.count):
            f.write(f"{sym} {count}\n")

    @classmethod
    def load(cls, f, add_special_symbols=True) -> "PretrainedDictionary":
        """Read a file written by :meth:`save` (a path or a text file object)."""
        if isinstance(f, (str, os.PathLike)):
            if not os.path.isfile(f):
                raise FileNotFoundError(f"dictionary file {os.fspath(f)!r} does not exist")
            with open(f, "r", encoding="utf-8", newline="") as fd:
                try:
                    return cls.load(fd)
                except ValueError as e:
                    raise ValueError(f"{os.fspath(f)}: {e}") from e
        lines = f.read().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if not lines or not lines[0].startswith(MAGIC):
            raise ValueError("not a pretrained-vocabulary dictionary (its first line must start with "
                             f"{MAGIC!r})")
        fields = lines[0][len(MAGIC):].split()
        if not fields or fields[0] != FORMAT_VERSION:
            raise ValueError(f"unsupported pretrained-vocabulary format {fields[:1]}, expected {FORMAT_VERSION}")
        meta = dict(item.split("=", 1) for item in fields[1:])
        symbols, counts = [], []
        for lineno, line in enumerate(lines[1:], start=2):
            sym, sep, count = line.rstrip("\r").rpartition(" ")
            if not sep or not count.isdigit():
                raise ValueError(f"line {lineno}: expected '<symbol> <count>', got {line!r}")
            symbols.append(sym)
            counts.append(int(count))
        mask = int(meta["mask"])
        d = cls(symbols, bos=int(meta["bos"]), pad=int(meta["pad"]), eos=int(meta["eos"]), unk=int(meta["unk"]),
                mask=None if mask < 0 else mask, family="" if meta.get("family", "-") == "-" else meta["family"])
        d.count = counts
        return d

    @classmethod
    def load_dictionary(cls, filename: str) -> Dictionary:
        """For tasks' ``load_dictionary``: a :class:`PretrainedDictionary` if ``filename`` is in the format above,
        else fairseq's plain ``Dictionary.load``."""
        if is_pretrained_dictionary_file(filename):
            return cls.load(filename)
        return _ORIGINAL_LOAD(Dictionary, filename)

    # ----------------------------------------------------------------------------------- fairseq API changes
    def mask(self) -> int:
        """Row of the checkpoint's mask token (``[MASK]`` / ``<mask>``)."""
        if self.mask_index is None:
            raise ValueError("this pretrained vocabulary has no mask token")
        return self.mask_index

    def add_symbol(self, word, n=1, overwrite=False):
        """As fairseq's, with one alias: fairseq's mask symbol ``<mask>`` (:data:`MASK_ALIAS`).

        * A symbol the vocabulary already holds returns its row (fairseq's behaviour, count increased by ``n``).
          RoBERTa / XLM-R vocabularies hold ``<mask>`` itself.
        * ``<mask>`` when the vocabulary has a mask token under another name (BERT's ``[MASK]``) returns that row,
          unchanged: fairseq code that asks for its mask with ``dictionary.add_symbol("<mask>")`` (the
          ``sentence_prediction`` and ``masked_lm`` tasks' ``load_dictionary``) gets the checkpoint's mask and the
          dictionary keeps exactly the checkpoint's rows.
        * Any other new symbol (and ``<mask>`` for a vocabulary without a mask token) becomes a new row past the
          checkpoint's embedding rows: it then no longer fits the checkpoint, and :mod:`.pretrained_import` refuses
          it. Symbols that are empty or contain whitespace are refused here.
        """
        if not is_writable_symbol(word):
            raise ValueError(f"cannot add symbol {word!r}: it is empty or contains whitespace")
        if word == MASK_ALIAS and word not in self.indices and self.mask_index is not None:
            return self.mask_index
        return super().add_symbol(word, n=n, overwrite=overwrite)

    def finalize(self, threshold=-1, nwords=-1, padding_factor=8):
        raise RuntimeError("a pretrained vocabulary is fixed by its checkpoint: it cannot be re-sorted, "
                           "thresholded or padded")

    def pad_to_multiple_(self, padding_factor):
        if len(self) % padding_factor:
            raise RuntimeError("a pretrained vocabulary is fixed by its checkpoint: it cannot be padded")


def is_pretrained_dictionary_file(f) -> bool:
    """True if ``f`` (a path, or a seekable text file object) starts with the pretrained-vocabulary header."""
    if isinstance(f, (str, os.PathLike)):
        if not os.path.isfile(f):
            return False
        with open(f, "r", encoding="utf-8", errors="replace") as fd:
            return fd.readline(len(MAGIC) + 1).startswith(MAGIC)
    if isinstance(f, io.TextIOBase) and f.seekable():
        pos = f.tell()
        first = f.readline(len(MAGIC) + 1)
        f.seek(pos)
        return first.startswith(MAGIC)
    return False


_ORIGINAL_LOAD = Dictionary.__dict__["load"].__func__


def _load(cls, f, add_special_symbols=True):
    if is_pretrained_dictionary_file(f):
        return PretrainedDictionary.load(f)
    return _ORIGINAL_LOAD(cls, f, add_special_symbols=add_special_symbols)


def install():
    """Make fairseq's ``Dictionary.load`` (and so every task's ``load_dictionary``, fairseq-preprocess's
    ``--srcdict``/``--tgtdict``) read pretrained-vocabulary files as :class:`PretrainedDictionary` (idempotent).
    Files without the header are loaded by fairseq's own code, unchanged."""
    if not getattr(Dictionary.load, "__nar_plugins_pretrained__", False):
        _load.__nar_plugins_pretrained__ = True
        Dictionary.load = classmethod(_load)


# ------------------------------------------------------------------------------------ reading checkpoints' vocabs
DEFAULT_SPECIALS = {
    "bert": dict(bos="[CLS]", pad="[PAD]", eos="[SEP]", unk="[UNK]", mask="[MASK]"),
    "roberta": dict(bos="<s>", pad="<pad>", eos="</s>", unk="<unk>", mask="<mask>"),
}
DEFAULT_SPECIALS["xlm-roberta"] = DEFAULT_SPECIALS["roberta"]


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def hf_special_tokens(folder: str, family: str) -> Dict[str, Optional[str]]:
    """The checkpoint's bos/pad/eos/unk/mask tokens: ``cls_token``/``pad_token``/``sep_token``/``unk_token``/
    ``mask_token`` of ``special_tokens_map.json`` or ``tokenizer_config.json`` where present, else the family's
    defaults."""
    specials = dict(DEFAULT_SPECIALS[family])
    for name in ("tokenizer_config.json", "special_tokens_map.json"):  # the latter wins, as in transformers
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        data = _read_json(path)
        for ours, theirs in (("bos", "cls_token"), ("pad", "pad_token"), ("eos", "sep_token"), ("unk", "unk_token"),
                             ("mask", "mask_token")):
            value = data.get(theirs)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                specials[ours] = value
    return specials


def xlmr_sentencepiece_tokens(spm_path: str) -> List[str]:
    """Tokens by row of an XLM-R checkpoint built from ``sentencepiece.bpe.model``: fairseq's ``<s> <pad> </s>
    <unk>`` first, then sentencepiece piece ``j`` (``j >= 3``) at row ``j + 1``, then ``<mask>`` (the mapping of
    fairseq's XLM-R dictionary and of Hugging Face's ``XLMRobertaTokenizer``)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=spm_path)
    return ["<s>", "<pad>", "</s>", "<unk>"] + [sp.id_to_piece(j) for j in range(3, sp.get_piece_size())] + ["<mask>"]


def hf_vocabulary_tokens(folder: str, family: str) -> List[Optional[str]]:
    """Tokens by id of a Hugging Face checkpoint folder, from the first of ``tokenizer.json``, ``vocab.txt``
    (WordPiece), ``vocab.json`` (+ ``added_tokens.json``; byte-level BPE) or ``sentencepiece.bpe.model`` (XLM-R)
    that is present. Ids without a token are None."""
    by_id: Dict[int, str] = {}
    tokenizer_json = os.path.join(folder, "tokenizer.json")
    vocab_txt = os.path.join(folder, "vocab.txt")
    vocab_json = os.path.join(folder, "vocab.json")
    spm_model = os.path.join(folder, "sentencepiece.bpe.model")
    if os.path.isfile(tokenizer_json):
        from tokenizers import Tokenizer

        for tok, i in Tokenizer.from_file(tokenizer_json).get_vocab(with_added_tokens=True).items():
            by_id[i] = tok
    elif os.path.isfile(vocab_txt):
        with open(vocab_txt, encoding="utf-8", newline="") as f:
            for i, line in enumerate(f.read().split("\n")):
                if line or i == 0:
                    by_id.setdefault(i, line.rstrip("\r"))
    elif os.path.isfile(vocab_json):
        for tok, i in _read_json(vocab_json).items():
            by_id[i] = tok
        added = os.path.join(folder, "added_tokens.json")
        if os.path.isfile(added):
            for tok, i in _read_json(added).items():
                by_id[i] = tok
    elif family == "xlm-roberta" and os.path.isfile(spm_model):
        return xlmr_sentencepiece_tokens(spm_model)
    else:
        raise FileNotFoundError(
            f"no tokenizer vocabulary in {folder!r}: expected tokenizer.json, vocab.txt (BERT), vocab.json "
            "(RoBERTa) or sentencepiece.bpe.model (XLM-R)"
        )
    size = max(by_id) + 1 if by_id else 0
    return [by_id.get(i) for i in range(size)]


def fairseq_vocabulary_tokens(dict_path: str) -> List[str]:
    """Tokens by row of a fairseq RoBERTa / XLM-R release: its ``dict.txt`` as fairseq loads it (``<s> <pad> </s>
    <unk>`` first) plus ``<mask>``, which fairseq's masked_lm task and RoBERTa hub interface append."""
    if not os.path.isfile(dict_path):
        raise FileNotFoundError(f"fairseq dictionary {dict_path!r} does not exist (releases ship it as dict.txt "
                                "beside model.pt)")
    d = _ORIGINAL_LOAD(Dictionary, dict_path)
    symbols = list(d.symbols)
    if "<mask>" not in d.indices:
        symbols.append("<mask>")
    return symbols
