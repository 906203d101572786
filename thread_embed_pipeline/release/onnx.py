"""ONNX export of a checkpoint (fp32 and dynamic int8) and CPU inference through ONNX Runtime.

The files follow the Hub layout sentence-transformers' ``backend="onnx"`` reads: ``onnx/model.onnx``
(fp32, with ONNX Runtime's BERT fusions: embedding + layer norm, multi-head ``Attention``, skip-layer-norm,
bias-GELU) and ``onnx/model_qint8.onnx`` (the MatMul and Attention weights in int8 per output channel,
activations quantised at run time), each with inputs ``input_ids``, ``attention_mask`` (and
``token_type_ids`` when the tokenizer makes them) and output ``last_hidden_state``, dynamic in batch and
sequence length.

Why the attention fuses: the graph is traced with the TorchScript exporter (``dynamo=False``) from the
model loaded with ``attn_implementation="eager"``, the pattern ONNX Runtime's transformer optimizer
matches. The dynamo exporter, or the default SDPA attention, leaves the attention as loose MatMul /
Softmax nodes (measured: no ``Attention`` node either way; docs/inference.md).

Why not sentence-transformers' own export: ``backend="onnx"`` and its export helpers go through
``optimum-onnx``, whose only release (0.1.0) needs ``transformers<4.58``, while sentence-transformers 6
needs ``transformers>=5``, so ``sentence-transformers[onnx]`` cannot be installed next to it. The export
here is ``torch.onnx.export`` and ``onnxruntime.quantization.quantize_dynamic``;
:func:`load_onnx_model` runs a file inside the checkpoint's own ``SentenceTransformer``, whose transformer
module calls an ONNX Runtime session instead of PyTorch, the way the ``onnx`` backend plugs Optimum's
``ORTModelForFeatureExtraction`` in. Tokenizer, pooling and normalisation stay sentence-transformers'.
Once an ``optimum-onnx`` for transformers 5 exists, the same folder loads with
``SentenceTransformer(path, backend="onnx", model_kwargs={"file_name": ...})``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# ONNX_FILE, INT8_FILE, ONNX_VARIANTS and load_onnx_model also import from here (the 0.5 path, until 0.7)
from thread_embed_pipeline.models import INT8_FILE, ONNX_FILE, ONNX_VARIANTS, load_onnx_model
from thread_embed_pipeline.schemas import Log
from thread_embed_pipeline.storage import replace_dir

OPSET = 17  # the TorchScript exporter's graphs at opset 17 are what ONNX Runtime's BERT fusions match
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# texts the export traces with and checks the ONNX outputs on (any texts work: shapes are dynamic)
_PROBE_TEXTS = (
    "speaker_1: apt-get install fails with a broken dependency, any idea?",
    "speaker_2: try sudo apt --fix-broken install first",
    "hi",
    "speaker_3: [URL] has the release notes for 24.04, the kernel moved to 6.8 and the nvidia driver needs a rebuild",
)


def export_onnx(model_dir: Path | str, out_dir: Path | str, *, opset: int = OPSET, log: Log = None) -> dict:
    """Write ``out_dir``: the checkpoint's files plus :data:`ONNX_FILE` and :data:`INT8_FILE`.

    ``out_dir`` is replaced whole (built beside it and renamed), so it is always a complete
    sentence-transformers folder in the Hub layout. Each ONNX file is checked against PyTorch on a
    few texts; the returned summary has, per variant, the file, its bytes and the smallest cosine
    between its sentence embeddings and PyTorch's (``min_cosine_vs_pytorch``).
    """
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sentence_transformers import SentenceTransformer

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "modules.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a Sentence Transformers checkpoint (no modules.json)")
    model = SentenceTransformer(str(model_dir), device="cpu").eval()
    # the traced copy uses eager attention (same weights, same outputs): its graph is the pattern ONNX
    # Runtime fuses into Attention nodes; SDPA's is not
    traced = SentenceTransformer(str(model_dir), device="cpu", model_kwargs={"attn_implementation": "eager"}).eval()
    transformer = traced[0]
    backbone = transformer.model
    features = model.preprocess(list(_PROBE_TEXTS))
    names = [n for n in _INPUTS if n in features]

    class _LastHiddenState(torch.nn.Module):  # one tensor out, the input order fixed
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        shutil.copytree(model_dir, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint-*", "runs", "onnx"))
        (staging / "onnx").mkdir()
        dynamic = {n: {0: "batch_size", 1: "sequence_length"} for n in [*names, "last_hidden_state"]}
        start = time.perf_counter()
        with torch.no_grad(), warnings.catch_warnings():
            # torch marks the TorchScript exporter (and helpers inside it) deprecated; it is the one whose graph
            # fuses (module docstring), so its deprecation notices are silenced for this call only
            warnings.simplefilter("ignore", DeprecationWarning)
            # the attention mask's indexing exports as Gather ops that need non-negative indices, which it
            # has; the outputs are checked against PyTorch below
            warnings.filterwarnings("ignore", message="Exporting aten::index operator", category=UserWarning)
            torch.onnx.export(
                _LastHiddenState(backbone).eval(),
                tuple(features[n] for n in names),
                str(staging / ONNX_FILE),
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes=dynamic,
                opset_version=opset,
                dynamo=False,
            )
        fused = _fuse(staging / ONNX_FILE, backbone.config)
        exported_s = time.perf_counter() - start
        if log:
            log(f"exported {ONNX_FILE} (opset {opset}, fused: {fused or 'none'}) in {exported_s:.1f} s")
        start = time.perf_counter()
        # per-channel int8 weights: per-tensor scales cost the fine-tuned MiniLM 0.03-0.05 of cosine to
        # fp32 (mean 0.967 against 0.993 on 600 chat messages, docs/inference.md)
        quantize_dynamic(
            staging / ONNX_FILE, staging / INT8_FILE, weight_type=QuantType.QInt8, per_channel=True,
            op_types_to_quantize=["MatMul", "Attention"], extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        quantized_s = time.perf_counter() - start
        reference = model.encode(list(_PROBE_TEXTS), convert_to_numpy=True, normalize_embeddings=True)
        variants = {}
        for suffix, file in ONNX_VARIANTS.items():
            onnx_model = load_onnx_model(staging, file)
            got = onnx_model.encode(list(_PROBE_TEXTS), convert_to_numpy=True, normalize_embeddings=True)
            cosine = float(np.min(np.sum(got * reference, axis=1)))
            variants[suffix] = {"file": file, "bytes": (staging / file).stat().st_size, "min_cosine_vs_pytorch": round(cosine, 6)}
            if log:
                log(f"{file}: {variants[suffix]['bytes'] / 1e6:.1f} MB, min cosine to PyTorch on {len(_PROBE_TEXTS)} texts {cosine:.5f}")
        if variants["onnx"]["min_cosine_vs_pytorch"] < 0.9999:
            raise RuntimeError(f"the fp32 ONNX export disagrees with PyTorch (min cosine {variants['onnx']['min_cosine_vs_pytorch']})")
        replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"folder": str(out_dir), "opset": opset, "inputs": names, "fused": fused, "export_s": round(exported_s, 2), "quantize_s": round(quantized_s, 2), "variants": variants}


def _fuse(path: Path, config) -> dict[str, int]:
    """Rewrite ``path`` with ONNX Runtime's transformer optimizer (fused embeddings and layer norms, GELU,
    attention) for the architectures it knows; returns the fused operator counts (empty: left as is)."""
    from onnxruntime.transformers.optimizer import MODEL_TYPES, optimize_model

    model_type = getattr(config, "model_type", "")
    if model_type not in MODEL_TYPES:
        return {}
    heads, hidden = int(getattr(config, "num_attention_heads", 0) or 0), int(getattr(config, "hidden_size", 0) or 0)
    optimized = optimize_model(str(path), model_type=model_type, num_heads=heads, hidden_size=hidden)
    optimized.save_model_to_file(str(path))
    return {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}


def texts_per_second(model, texts: Sequence[str], *, batch_size: int, repeats: int = 1) -> float:
    """Best-of-``repeats`` encoding throughput of ``model`` on ``texts``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best
