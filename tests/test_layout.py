"""The package layout: checkpoints saved before the modules/ re-layout still load and decode the same.

tests/data/pre_layout/ holds a tiny DEER (deer_tiny, --prune), nat_ctc_transformer and BnB (bnb_tiny, length
classifier), each trained for 5 updates on the toy task with fairseq-train before modules/ was regrouped, the toy
dictionary, 12 toy test sentences and the hypotheses fairseq-generate printed for them then (make_fixtures.py wrote
them all). fairseq checkpoints hold the arguments and tensors, not module paths; the test checks that too.
fairseq-preprocess and fairseq-generate run in the test's process (their ``main``), to keep the test cheap.
"""
import json
import os
import pickletools
import re
import zipfile

import pytest
from helpers_cli import USER_DIR

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "pre_layout")
RECORDED = json.load(open(os.path.join(FIXTURES, "hypotheses.json")))
MODEL_CLASSES = {"deer": "DEERModel", "nat_ctc": "NATCTCTransformerModel", "bnb": "BnBModel"}


@pytest.fixture(scope="module")
def fixture_data_bin(tmp_path_factory):
    """The fixture's 12 test sentences binarized with the fixture's toy dictionary."""
    from fairseq import options
    from fairseq_cli import preprocess

    dest = str(tmp_path_factory.mktemp("pre_layout_bin"))
    preprocess.main(options.get_preprocessing_parser().parse_args([
        "--source-lang", "src", "--target-lang", "tgt", "--srcdict", os.path.join(FIXTURES, "dict.src.txt"),
        "--tgtdict", os.path.join(FIXTURES, "dict.tgt.txt"), "--testpref", os.path.join(FIXTURES, "test"),
        "--destdir", dest, "--workers", "1"]))
    return dest


def make_fixtures():
    """tests/data/pre_layout/make_fixtures.py as a module (it records what this test compares)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_fixtures", os.path.join(FIXTURES, "make_fixtures.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pickled_globals(path):
    """Every ``module.name`` the checkpoint's pickle refers to (what unpickling would import)."""
    with zipfile.ZipFile(path) as zf:
        data = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            found.add(".".join(strings[-2:]))
    return found


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_pre_layout_checkpoint_loads_and_decodes_as_before(name, fixture_data_bin):
    from fairseq import checkpoint_utils

    ckpt = os.path.join(FIXTURES, f"{name}.pt")
    assert os.path.getsize(ckpt) < 500_000, "fixture checkpoints stay small"
    assert not [g for g in pickled_globals(ckpt) if "fairseq_nar_plugins" in g], "a module path in the pickle"
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([ckpt], arg_overrides={"data": fixture_data_bin})
    assert type(models[0]).__name__ == MODEL_CLASSES[name]
    # every tensor loaded: the same count, and the same values as the model built before the move
    fixtures = make_fixtures()
    tensors, magnitude, non_finite = fixtures.loaded_weights(ckpt, fixture_data_bin)
    assert [tensors, non_finite] == [RECORDED[name]["_weights"][0], RECORDED[name]["_weights"][2]]
    assert magnitude == pytest.approx(RECORDED[name]["_weights"][1], rel=1e-9)

    for label, gen_args in RECORDED[name]["_generate_args"].items():
        hyps = fixtures.hypotheses(fixtures.fairseq_generate([
            fixture_data_bin, "--user-dir", USER_DIR, "--path", ckpt, "--gen-subset", "test", "--batch-size", "100",
            "--required-batch-size-multiple", "1", "--cpu", *gen_args]))
        recorded = RECORDED[name][label]
        assert len(hyps) == len(recorded) == 12, f"{name} {label}: {len(hyps)} hypotheses"
        assert [text for _, text in hyps] == [text for _, text in recorded], f"{name} {label}"
        # equal up to float summation order
        assert [score for score, _ in hyps] == pytest.approx([score for score, _ in recorded], abs=1e-4)


# ------------------------------------------------------------------------------------------------------ the layout
PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fairseq_nar_plugins")


def package_modules():
    """``{dotted module name: file path}`` of every module of the package, found on disk (nothing imported)."""
    found = {}
    root = os.path.dirname(PACKAGE)
    for dirpath, dirnames, filenames in os.walk(PACKAGE):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for fn in sorted(filenames):
            if fn.endswith(".py"):
                parts = os.path.relpath(os.path.join(dirpath, fn), root)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = os.path.join(dirpath, fn)
    return found


def import_targets():
    """``{module: set of dotted names it imports}``, from every import statement of the package (function-level ones
    included), relative imports resolved; ``from X import y`` names ``X.y`` when that is a module, else ``X``."""
    import ast

    modules = package_modules()
    targets = {}
    for name, path in modules.items():
        here = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
        targets[name] = found
    return targets


def import_graph():
    """``{module: set of modules of the package it imports}`` (see :func:`import_targets`)."""
    modules = package_modules()
    return {name: {t for t in found if t in modules and t != name} for name, found in import_targets().items()}


def test_package_has_no_import_cycle():
    graph = import_graph()
    assert "fairseq_nar_plugins.modules.ctc.ctc_utils" in graph["fairseq_nar_plugins.criterions.ctc"]
    state, path = {}, []

    def visit(node):  # depth-first search; a grey node met again closes a cycle
        state[node] = "grey"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "grey":
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "black"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_cycle_check_finds_a_cycle(monkeypatch):
    """The check above against a graph with the cycle the flat layout had (ctc_utils <-> source_copy)."""
    import sys
    graph = {"a.ctc_utils": {"a.source_copy"}, "a.source_copy": {"a.ctc_utils"}}
    monkeypatch.setattr(sys.modules[__name__], "import_graph", lambda: dict(graph, **{
        "fairseq_nar_plugins.criterions.ctc": {"fairseq_nar_plugins.modules.ctc.ctc_utils"},
        "fairseq_nar_plugins.modules.ctc.ctc_utils": set()}))
    with pytest.raises(AssertionError, match="import cycle: a.ctc_utils -> a.source_copy -> a.ctc_utils"):
        test_package_has_no_import_cycle()


def test_every_module_imports_on_its_own(tmp_path):
    """Each module imported first, in a process of its own: a fresh interpreter (torch and fairseq loaded once)
    forks one child per module. Importing ``fairseq_nar_plugins.X`` runs the package's ``__init__`` first whatever X
    is, so the package itself is imported in a child of the bare interpreter, and every other module in a child
    forked after that import (the state a fresh ``import fairseq_nar_plugins.X`` reaches before X itself)."""
    script = tmp_path / "import_each.py"
    script.write_text(
        "import os, sys, traceback, importlib\n"
        "import torch, fairseq, fairseq.models, fairseq.tasks, fairseq.criterions, fairseq.data\n"
        "failed = []\n"
        "def in_child(name):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        try:\n"
        "            importlib.import_module(name)\n"
        "        except BaseException:\n"
        "            traceback.print_exc()\n"
        "            os._exit(1)\n"
        "        os._exit(0)\n"
        "    if os.waitpid(pid, 0)[1] != 0:\n"
        "        failed.append(name)\n"
        "in_child('fairseq_nar_plugins')\n"
        "import fairseq_nar_plugins\n"
        "for name in sys.argv[1:]:\n"
        "    in_child(name)\n"
        "print('FAILED', failed)\n"
        "sys.exit(1 if failed else 0)\n")
    names = sorted(package_modules())
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, str(script), *names], capture_output=True, text=True, timeout=600,
                          cwd=os.path.dirname(PACKAGE),
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.path.dirname(PACKAGE)))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    assert len(names) > 60


def test_modules_grouped_by_kind_and_models_one_per_method():
    modules_dir = os.path.join(PACKAGE, "modules")
    flat = sorted(f for f in os.listdir(modules_dir) if f.endswith(".py"))
    assert flat == ["__init__.py"], f"modules/ holds subpackages only, found {flat}"
    groups = sorted(d for d in os.listdir(modules_dir) if os.path.isfile(os.path.join(modules_dir, d, "__init__.py")))
    assert groups == ["backbone", "corruption", "ctc", "exits", "nat", "pretrained", "pruning", "single_stack"]
    import ast
    for group in groups:
        doc = ast.get_docstring(ast.parse(open(os.path.join(modules_dir, group, "__init__.py")).read()))
        assert doc and len(doc.split()) > 10, f"modules/{group}/__init__.py needs a package docstring"
    models = sorted(f[:-3] if f.endswith(".py") else f for f in os.listdir(os.path.join(PACKAGE, "models"))
                    if f != "__pycache__" and f != "__init__.py")
    assert models == ["bnb", "bnb_classifier", "deer", "elmer", "mlae", "nat_ctc_transformer"]
    # every model the plugin registers lives in the module (or package) of its method
    from fairseq.models import MODEL_REGISTRY
    ours = {k: v.__module__ for k, v in MODEL_REGISTRY.items() if v.__module__.startswith("fairseq_nar_plugins.")}
    method = {k: m.split(".")[2] for k, m in ours.items()}
    assert method == {"bnb": "bnb", "bnb_classifier": "bnb_classifier", "deer": "deer", "elmer": "elmer",
                      "nat_ctc_transformer": "nat_ctc_transformer", "mlae": "mlae", "mlae_cmlm": "mlae",
                      "mlae_seq2seq": "mlae", "mlae_unilm": "mlae", "mlae_classifier": "mlae"}


def test_package_imports_new_paths_and_old_paths_still_resolve():
    """Inside the package every import names a module's new path; outside (recipes, old scripts) the old flat
    ``fairseq_nar_plugins.modules.<name>`` paths give the very same module objects."""
    import importlib

    from fairseq_nar_plugins.modules import MOVED
    modules = package_modules()
    unknown = {(name, t) for name, found in import_targets().items() for t in found
               if t.startswith("fairseq_nar_plugins") and t not in modules}
    assert not unknown, f"imports of paths that are not modules of the package (old paths?): {sorted(unknown)}"
    for old, group in MOVED.items():
        new = importlib.import_module(f"fairseq_nar_plugins.modules.{group}.{old}")
        assert importlib.import_module(f"fairseq_nar_plugins.modules.{old}") is new
        assert new.__spec__.name == new.__name__ == f"fairseq_nar_plugins.modules.{group}.{old}"
    from fairseq_nar_plugins.modules import levenshtein_editor, pretrained_vocab  # noqa: F401  (the old flat paths)
    from fairseq_nar_plugins.modules.ctc.ctc_utils import num_frames
    from fairseq_nar_plugins.modules.nat.source_copy import num_frames as moved_num_frames
    assert num_frames is moved_num_frames
    assert levenshtein_editor is importlib.import_module("fairseq_nar_plugins.modules.single_stack.levenshtein_editor")
