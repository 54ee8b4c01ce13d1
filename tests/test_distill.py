"""scripts/distill.py trains an AR teacher, decodes the training set and re-binarizes it with the same dictionaries."""
import filecmp
import os
import subprocess
import sys

from fairseq.data import Dictionary, data_utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_distillation_one_command(toy_data_bin, tmp_path):
    out = tmp_path / "distilled"
    teacher_args = ("--share-all-embeddings --encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 64 "
                    "--decoder-embed-dim 64 --encoder-ffn-embed-dim 128 --decoder-ffn-embed-dim 128 "
                    "--encoder-attention-heads 2 --decoder-attention-heads 2 --optimizer adam --lr 0.003 "
                    "--lr-scheduler inverse_sqrt --warmup-updates 100 --max-tokens 4096 --dropout 0 "
                    "--num-workers 0 --data-buffer-size 0 --seed 1")
    proc = subprocess.run([
        sys.executable, os.path.join(ROOT, "scripts", "distill.py"), "--data-bin", toy_data_bin,
        "--out-bin", str(out), "--train-teacher", "--teacher-save-dir", str(tmp_path / "teacher"),
        "--teacher-max-update", "500", "--teacher-args", teacher_args, "--beam", "2", "--cpu",
    ], capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("NAR_TEST_THREADS", "1")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distilled 4,000 of 4,000 training pairs" in proc.stdout
    # same dictionaries, valid/test unchanged
    for name in ("dict.src.txt", "dict.tgt.txt", "valid.src-tgt.tgt.bin", "test.src-tgt.src.idx"):
        assert filecmp.cmp(os.path.join(toy_data_bin, name), out / name, shallow=False), name
    d = Dictionary.load(str(out / "dict.tgt.txt"))
    orig = data_utils.load_indexed_dataset(os.path.join(toy_data_bin, "train.src-tgt.tgt"), d)
    dist = data_utils.load_indexed_dataset(str(out / "train.src-tgt.tgt"), d)
    src_o = data_utils.load_indexed_dataset(os.path.join(toy_data_bin, "train.src-tgt.src"), d)
    src_d = data_utils.load_indexed_dataset(str(out / "train.src-tgt.src"), d)
    assert len(dist) == len(orig) == 4000
    assert all(src_o[i].tolist() == src_d[i].tolist() for i in range(0, 4000, 37))  # sources kept in order
    # the teacher learned the (deterministic) toy mapping: distilled targets are close to the references
    from fairseq_nar_plugins.scoring import sacrebleu_score
    bleu, _ = sacrebleu_score([d.string(dist[i]) for i in range(len(orig))], [d.string(orig[i]) for i in range(len(orig))])
    assert bleu.score > 50, f"distilled targets BLEU {bleu.score:.1f} against the references: the teacher did not learn"
