"""Warm start of a NAR student from its AR teacher (``--init-from-checkpoint``), and teacher checkpoints written with
fairseq's ``--eval-bleu`` (numpy arrays in their metrics state) loading through the plugin's safe loader."""
import pytest
import torch

from helpers_cli import USER_DIR, run_cli

TINY = ["--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "64", "--decoder-embed-dim", "64",
        "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128", "--encoder-attention-heads", "2",
        "--decoder-attention-heads", "2"]


@pytest.fixture(scope="module")
def ar_teacher(toy_data_bin, tmp_path_factory):
    """A tiny fairseq transformer after a few updates, validated with --eval-bleu (as examples/multi30k/teacher.sh
    trains the teacher)."""
    save = tmp_path_factory.mktemp("ar_teacher")
    run_cli("fairseq_cli.train", [
        toy_data_bin, "--user-dir", USER_DIR, "--task", "translation", "--arch", "transformer", *TINY,
        "--share-all-embeddings", "--criterion", "label_smoothed_cross_entropy", "--optimizer", "adam",
        "--lr", "0.001", "--max-tokens", "2048", "--max-update", "3", "--save-dir", str(save),
        "--no-epoch-checkpoints", "--cpu", "--num-workers", "0", "--seed", "1", "--log-format", "simple",
        "--eval-bleu", "--eval-bleu-detok", "space", "--best-checkpoint-metric", "bleu",
        "--maximize-best-checkpoint-metric", "--validate-interval-updates", "3",
    ])
    return str(save / "checkpoint_last.pt")


def build_student(data_bin, init):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import fairseq_nar_plugins  # noqa: F401

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        data_bin, "--user-dir", USER_DIR, "--task", "translation_lev_ctc", "--noise", "no_noise",
        "--arch", "nat_ctc_transformer_tiny", *TINY, "--share-all-embeddings", "--criterion", "ctc", "--cpu",
        "--init-from-checkpoint", init,
    ])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(0)
    return task, task.build_model(cfg.model), cfg


def test_eval_bleu_checkpoint_loads_safely(ar_teacher):
    """fairseq's --eval-bleu stores BLEU counts as numpy arrays in the checkpoint's metrics state: the allow-list
    must take them (without it, resuming the teacher or distilling from it failed with UnsafeCheckpointError)."""
    from fairseq import checkpoint_utils

    import fairseq_nar_plugins  # noqa: F401

    state = checkpoint_utils.load_checkpoint_to_cpu(ar_teacher)
    assert "model" in state and "extra_state" in state


def test_student_takes_the_teacher_tensors(ar_teacher, toy_data_bin):
    from fairseq import checkpoint_utils

    teacher = checkpoint_utils.load_checkpoint_to_cpu(ar_teacher)["model"]
    task, student, cfg = build_student(toy_data_bin, ar_teacher)
    own = student.state_dict()
    same = [k for k in teacher if own[k].shape == teacher[k].shape]
    assert len(same) >= len(teacher) - 3  # all but the vocabulary tables
    for k in same:
        assert torch.equal(own[k], teacher[k]), k
    emb_t, emb_s = teacher["encoder.embed_tokens.weight"], own["encoder.embed_tokens.weight"]
    assert emb_s.shape[0] == emb_t.shape[0] + 1 and task.blank_idx == emb_t.shape[0]  # the task appended the blank
    assert torch.equal(emb_s[: emb_t.shape[0]], emb_t)
    assert emb_s[task.blank_idx].abs().sum() > 0  # the blank row keeps its own initialisation
    # a one-time initialisation: the saved configuration must not send generation looking for the file
    assert cfg.model.init_from_checkpoint is None


def test_warm_start_refuses_a_checkpoint_of_another_shape(ar_teacher, tmp_path):
    from fairseq_nar_plugins.modules.warm_start import warm_start

    other = torch.nn.Linear(3, 3)  # no tensor of the teacher matches it
    with pytest.raises(ValueError, match="no tensor of the checkpoint matches"):
        warm_start(other, ar_teacher)
    with pytest.raises(FileNotFoundError, match="--init-from-checkpoint .*missing.pt: file not found"):
        warm_start(other, str(tmp_path / "missing.pt"))
