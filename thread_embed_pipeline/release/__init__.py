"""The release: a checkpoint and its eval report in, what users take away out: the model card and
hybrid weight (:mod:`.published_report`, :mod:`.card`), the ONNX files (:mod:`.onnx`), the release folder
and its push to the Hugging Face Hub (:mod:`.hub`).

May import: the shared modules, ``sources`` (retries), ``evaluation`` and ``search``.
"""

from __future__ import annotations

from thread_embed_pipeline.release.hub import CARD_FILE, PublishError, PublishSettings, assemble_release, make_release, publish_release, release_card

__all__ = ["CARD_FILE", "PublishError", "PublishSettings", "assemble_release", "make_release", "publish_release", "release_card"]
