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
    from fairseq_nar_plugins.modules.pretrained.warm_start import warm_start

    other = torch.nn.Linear(3, 3)  # no tensor of the teacher matches it
    with pytest.raises(ValueError, match="no tensor of the checkpoint matches"):
        warm_start(other, ar_teacher)
    with pytest.raises(FileNotFoundError, match="--init-from-checkpoint .*missing.pt: file not found"):
        warm_start(other, str(tmp_path / "missing.pt"))


def _build(data_bin, *flags):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import fairseq_nar_plugins  # noqa: F401

    args = options.parse_args_and_arch(options.get_training_parser(), [
        data_bin, "--user-dir", USER_DIR, "--task", "translation_lev_ctc", "--criterion", "ctc", "--cpu", *flags])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(0)
    return task, task.build_model(cfg.model), cfg


LAYER_TENSORS = ("self_attn.q_proj.weight", "self_attn.out_proj.bias", "self_attn_layer_norm.weight", "fc1.weight", "fc1.bias",
                 "fc2.bias", "final_layer_norm.bias")


def _weight(state, name):
    """A tensor by its plain name, or by its parametrized original (DEER's pruned linears)."""
    if name in state:
        return state[name]
    module, leaf = name.rsplit(".", 1)
    return state[f"{module}.parametrizations.{leaf}.original"]


def test_bnb_takes_the_teacher_layers_embeddings_and_output_layer(ar_teacher, toy_data_bin):
    from fairseq import checkpoint_utils

    teacher = checkpoint_utils.load_checkpoint_to_cpu(ar_teacher)["model"]
    task, model, cfg = _build(toy_data_bin, "--noise", "full_mask", "--arch", "bnb_tiny", "--length-mode", "ctc",
                              "--share-all-embeddings", "--init-from-checkpoint", ar_teacher)
    own = model.state_dict()
    for side in ("encoder", "decoder"):
        for i in range(2):
            names = LAYER_TENSORS + (("encoder_attn.k_proj.weight", "encoder_attn_layer_norm.bias")
                                     if side == "decoder" else ())
            for t in names:
                assert torch.equal(own[f"{side}.backbone.layers.{i}.{t}"], teacher[f"{side}.layers.{i}.{t}"]), t
    emb_t = teacher["encoder.embed_tokens.weight"]
    for name in ("encoder.backbone.embeddings.embed_tokens.weight", "decoder.lm_head.weight"):
        assert torch.equal(own[name][: emb_t.shape[0]], emb_t) and own[name].shape[0] == emb_t.shape[0] + 1
    assert cfg.model.init_from_checkpoint is None
    # what the teacher does not have keeps its initialisation: the latent projection is not all zeros
    assert own["encoder.latent_proj.weight"].abs().sum() > 0


def test_deer_stacks_the_teacher_encoder_then_decoder_layers(ar_teacher, toy_data_bin):
    from fairseq import checkpoint_utils

    teacher = checkpoint_utils.load_checkpoint_to_cpu(ar_teacher)["model"]
    task, model, cfg = _build(toy_data_bin, "--noise", "random_delete", "--arch", "deer_tiny", "--encoder-layers",
                              "4", "--share-all-embeddings", "--prune", "--prune-sizes", "1.0,0.5",
                              "--init-from-checkpoint", ar_teacher)
    own = model.state_dict()
    for layer, source in ((0, "encoder.layers.0"), (1, "encoder.layers.1"), (2, "decoder.layers.0"),
                          (3, "decoder.layers.1")):
        for t in LAYER_TENSORS:
            assert torch.equal(_weight(own, f"backbone.layers.{layer}.{t}"), teacher[f"{source}.{t}"]), (layer, t)
    emb_t = teacher["encoder.embed_tokens.weight"]
    assert torch.equal(own["backbone.embeddings.embed_tokens.weight"][: emb_t.shape[0]], emb_t)
    assert not any("encoder_attn" in k for k in own)
    assert cfg.model.init_from_checkpoint is None
    with pytest.raises(ValueError, match="--init-from-checkpoint and --pretrained-encoder"):
        _build(toy_data_bin, "--noise", "random_delete", "--arch", "deer_tiny", "--share-all-embeddings",
               "--init-from-checkpoint", ar_teacher, "--pretrained-encoder", ar_teacher)


def test_elmer_takes_the_teacher_layers_and_embeddings(ar_teacher, toy_data_bin):
    from fairseq import checkpoint_utils

    teacher = checkpoint_utils.load_checkpoint_to_cpu(ar_teacher)["model"]
    _, model, cfg = _build(toy_data_bin, "--task", "translation_lev", "--noise", "full_mask", "--arch", "elmer_tiny",
                           "--criterion", "layer_permutation", "--share-all-embeddings",
                           "--init-from-checkpoint", ar_teacher)
    own = model.state_dict()
    for side in ("encoder", "decoder"):
        for i in range(2):
            for t in LAYER_TENSORS:
                assert torch.equal(own[f"{side}.backbone.layers.{i}.{t}"], teacher[f"{side}.layers.{i}.{t}"]), t
    emb_t = teacher["encoder.embed_tokens.weight"]
    emb = own["encoder.backbone.embeddings.embed_tokens.weight"]
    assert torch.equal(emb[: emb_t.shape[0]], emb_t)
    assert cfg.model.init_from_checkpoint is None


def test_fairseq_cmlm_warm_starts_through_an_initial_checkpoint(ar_teacher, toy_data_bin, tmp_path):
    """fairseq's own NAR models have no --init-from-checkpoint: scripts/save_initial_checkpoint.py --warm-start-from
    writes the model with the teacher's tensors (the new length table keeps its initialisation), and fairseq-train
    --finetune-from-model trains from exactly those weights (make bench's cmlm_warm)."""
    from fairseq import checkpoint_utils

    from scripts_loader import load_script

    import fairseq_nar_plugins  # noqa: F401

    flags = [toy_data_bin, "--user-dir", USER_DIR, "--task", "translation_lev_bleu", "--noise", "random_mask",
             "--arch", "cmlm_transformer", *TINY, "--share-all-embeddings", "--apply-bert-init",
             "--criterion", "nat_loss", "--optimizer", "adam", "--lr", "0.001", "--max-tokens", "2048", "--cpu",
             "--num-workers", "0", "--seed", "1"]
    start = tmp_path / "warm_start.pt"
    load_script("save_initial_checkpoint").main(flags + ["--warm-start-from", ar_teacher, "--output", str(start)])
    teacher = checkpoint_utils.load_checkpoint_to_cpu(ar_teacher)["model"]
    student = checkpoint_utils.load_checkpoint_to_cpu(str(start))["model"]
    taken = [k for k in teacher if k in student and student[k].shape == teacher[k].shape]
    assert len(taken) >= len(teacher) - 1 and "decoder.layers.1.encoder_attn.k_proj.weight" in taken
    for k in taken:
        assert torch.equal(student[k], teacher[k]), k
    assert "decoder.embed_length.weight" in student and "decoder.embed_length.weight" not in teacher
    # fairseq-train starts from the file (0 updates: the model it validates is the file's, as its loss shows)
    save = tmp_path / "run"
    proc = run_cli("fairseq_cli.train", flags + ["--finetune-from-model", str(start), "--max-update", "1",
                                                 "--save-dir", str(save), "--no-epoch-checkpoints",
                                                 "--log-format", "simple"])
    out = proc.stdout + proc.stderr
    assert "loaded checkpoint" in out.lower() and str(start) in out
    trained = checkpoint_utils.load_checkpoint_to_cpu(str(save / "checkpoint_last.pt"))["model"]
    moved = max((trained[k] - student[k]).abs().max().item() for k in taken)
    assert 0 < moved < 0.01  # one Adam step from the warm start, not a fresh initialisation
