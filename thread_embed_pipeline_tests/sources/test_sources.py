"""Sources: registry, manifests, mirror checks, HTTP download, and the three parsers."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import re
import tempfile
import threading
from pathlib import Path

import pandas as pd
import pytest

from thread_embed_pipeline.storage import PROJECT_ROOT
from thread_embed_pipeline.schemas import RAW_COLUMNS
from thread_embed_pipeline.sources import (
    SOURCES,
    SourceDataError,
    SourceParseError,
    ensure_source_files,
    get_source,
)
from thread_embed_pipeline.sources.annot import parse_annot
from thread_embed_pipeline.sources.parsing import undo_backslash_escapes
from thread_embed_pipeline.sources.chat_xml import parse_chat_xml
from thread_embed_pipeline.sources.irc import parse_irc

# --------------------------------------------------------------------------------------------
# tiny files
# --------------------------------------------------------------------------------------------

IRC_REL = "data/train/2020-01-02_03.ascii.txt"
IRC_ANN_REL = "data/train/2020-01-02_03.annotation.txt"
IRC_LINES = [
    "[03:00] <alice> hello from the context",  # 0 context
    "=== bob has joined #ubuntu",  # 1 context (system shape)
    "[03:01] <bob> alice: hi",  # 2 context
    "[03:02] <carol> how do I mount a disk?",  # 3
    "=== dave has quit IRC",  # 4 system
    "[03:03]  * alice waves",  # 5 action
    "[03:04] <bob> carol: use mount",  # 6
    "[03:05] (weird/#ubuntu) relayed text",  # 7 malformed
    "[03:06] <dave>    ",  # 8 empty text
    "[03:07] <carol> thanks",  # 9
    "[03:08] <bob> np",  # 10
]
IRC_LINKS = ["0 5 -", "2 5 -", "3 3 -", "3 6 -", "4 4 -", "7 7 -", "6 8 -", "3 9 -", "8 9 -", "6 10 -", "9 10 -"]


def write_irc(root: Path, links: list[str] | None = None, lines: list[str] | None = None) -> None:
    (root / "data/train").mkdir(parents=True, exist_ok=True)
    (root / IRC_REL).write_text("\n".join(lines or IRC_LINES) + "\n")
    (root / IRC_ANN_REL).write_text("".join(f"{ln} \n" for ln in (links or IRC_LINKS)))


SLACK_REL = "data/racket/2017/merged-racket-general.xml"
SLACK_XML = """<slack>
  <team_domain>racket</team_domain>
  <channel_name>general</channel_name>
  <start_date>2017-01-01T00:00:00</start_date>
  <end_date>2017-12-31T00:00:00</end_date>
  <message conversation_id="1">
    <ts>2017-05-11T15:46:08.512661</ts>
    <user>Jacob</user>
    <text>`(displayln "a \\"quoted\\" word")`</text>
  </message>
  <message conversation_id="2">
    <ts>2017-05-12T10:21:29.214211</ts>
    <user>David</user>
    <text />
    <text>&lt;@Jacob&gt; second
line</text>
  </message>
  <message conversation_id="1">
    <ts>2017-05-12T11:00:00</ts>
    <user>Theron</user>
    <text>  padded  </text>
  </message>
</slack>
"""

DISCORD_REL = "data/racketgeneral/Nov2019-Jan2020/x.xml.out"
DISCORD_XML = """<discord>
<team_domain>Racket</team_domain>
<channel_name>general</channel_name>
<message conversation_id="7">
  <ts>2020-08-01T14:31:40.017000</ts>
  <user>Aleck</user>
  <text>i\\'m sure `(char-&gt;integer #\\\\2)` says \\"50\\"</text>
</message>
</discord>
"""

ANNOT_REL = "codi-annot/python_test.annot"
ANNOT_LINES = [
    "T1 0 Dawid :  networking is hard",
    "T1 23 Dawid :  isn\\'t it",
    "T2 40 Pariss :",
    "T1 162 Georges :  Ok",
]


# --------------------------------------------------------------------------------------------
# registry and manifests
# --------------------------------------------------------------------------------------------


def test_registry_order_and_lookup():
    assert list(SOURCES) == ["irc_disentangle", "slack_dev_chats", "discord_disco"]
    assert [s.platform for s in SOURCES.values()] == ["irc", "slack", "discord"]
    assert get_source("slack_dev_chats") is SOURCES["slack_dev_chats"]
    with pytest.raises(KeyError, match="irc_disentangle, slack_dev_chats, discord_disco"):
        get_source("nope")
    with pytest.raises(dataclasses.FrozenInstanceError):
        SOURCES["irc_disentangle"].name = "x"  # type: ignore[misc]


@pytest.mark.parametrize("name", list(SOURCES))
def test_manifests_are_portable_and_pinned(name):
    m = SOURCES[name].manifest
    assert m["source"] == name
    assert re.fullmatch(r"[0-9a-f]{40}", m["upstream"]["commit"])
    paths = [f["path"] for f in m["files"]]
    assert paths == sorted(paths) and len(set(paths)) == len(paths)
    pinned = {(u["repo"], u["commit"]) for u in [m["upstream"], *m.get("other_upstreams", [])]}
    for f in m["files"]:
        assert not f["path"].startswith("/") and ".." not in f["path"].split("/")
        assert re.fullmatch(r"[0-9a-f]{64}", f["sha256"]) and f["size"] > 0
        assert f["url"].startswith("https://raw.githubusercontent.com/")
        assert any(f["url"].startswith(f"https://raw.githubusercontent.com/{r}/{c}/") for r, c in pinned)
    text = json.dumps(m)
    # no folder of the machine that generated the manifest (project, mirror, home, temp) leaks into it
    for local in {str(PROJECT_ROOT), str(PROJECT_ROOT.parent), str(Path.home()), tempfile.gettempdir()}:
        assert local not in text
    expected = {"irc_disentangle": 346, "slack_dev_chats": 5, "discord_disco": 9}[name]
    assert len(m["files"]) == expected


def test_discord_annot_url_points_at_codi():
    (entry,) = [f for f in SOURCES["discord_disco"].manifest["files"] if f["path"].endswith(".annot")]
    assert entry["url"] == (
        "https://raw.githubusercontent.com/USIREVEAL/CODI/dd13be13a73fb2a073442c750186a923257c657b/"
        "datasets/annot/from_previous_papers/python_march_2020_algorithm.annot"
    )


# --------------------------------------------------------------------------------------------
# mirror checks
# --------------------------------------------------------------------------------------------

FAKE_FILES = {
    "data/a.txt": b"alpha\n" * 100,
    "data/sub/b.txt": b"bravo bravo\n" * 3000,
    "c.bin": bytes(range(256)) * 40,
}


def fake_manifest(files: dict[str, bytes] = FAKE_FILES) -> dict:
    return {
        "source": "fake",
        "upstream": {"repo": "example/fake", "commit": "0" * 40},
        "files": [
            {
                "path": p,
                "url": f"https://raw.githubusercontent.com/example/fake/{'0' * 40}/{p}",
                "size": len(b),
                "sha256": hashlib.sha256(b).hexdigest(),
            }
            for p, b in sorted(files.items())
        ],
    }


FAKE_SPEC = dataclasses.replace(SOURCES["slack_dev_chats"], name="fake", mirror_subdir="fake-src")


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def test_mirror_ok_returns_folder_without_copying(tmp_path):
    write_tree(tmp_path / "mirror/fake-src", FAKE_FILES)
    logs: list[str] = []
    root = ensure_source_files(
        FAKE_SPEC,
        mirror_dir=tmp_path / "mirror",
        cache_dir=tmp_path / "cache",
        manifest=fake_manifest(),
        log=logs.append,
    )
    assert root == tmp_path / "mirror/fake-src"
    assert not (tmp_path / "cache").exists()
    assert logs


def test_mirror_folder_missing(tmp_path):
    (tmp_path / "mirror").mkdir()
    with pytest.raises(SourceDataError) as e:
        ensure_source_files(
            FAKE_SPEC, mirror_dir=tmp_path / "mirror", cache_dir=tmp_path, manifest=fake_manifest(), log=print
        )
    msg = str(e.value)
    assert str(tmp_path / "mirror/fake-src") in msg and "THREAD_EMBED_MIRROR" in msg and "mirror_dir" in msg


def test_mirror_file_missing(tmp_path):
    files = dict(FAKE_FILES)
    del files["data/sub/b.txt"]
    write_tree(tmp_path / "m/fake-src", files)
    with pytest.raises(SourceDataError, match=r"data/sub/b\.txt.*is missing.*THREAD_EMBED_MIRROR"):
        ensure_source_files(
            FAKE_SPEC, mirror_dir=tmp_path / "m", cache_dir=tmp_path, manifest=fake_manifest(), log=print
        )


def test_mirror_wrong_size_and_checksum(tmp_path):
    files = dict(FAKE_FILES)
    files["data/a.txt"] = b"short"
    write_tree(tmp_path / "m/fake-src", files)
    with pytest.raises(SourceDataError, match=r"data/a\.txt of source 'fake' has 5 bytes, the manifest says 600"):
        ensure_source_files(
            FAKE_SPEC, mirror_dir=tmp_path / "m", cache_dir=tmp_path, manifest=fake_manifest(), log=print
        )

    files["data/a.txt"] = b"ALPHA\n" * 100  # right size, wrong content
    write_tree(tmp_path / "m/fake-src", files)
    with pytest.raises(SourceDataError, match=r"data/a\.txt of source 'fake' has sha256"):
        ensure_source_files(
            FAKE_SPEC, mirror_dir=tmp_path / "m", cache_dir=tmp_path, manifest=fake_manifest(), log=print
        )
    # sizes only
    ensure_source_files(
        FAKE_SPEC,
        mirror_dir=tmp_path / "m",
        cache_dir=tmp_path,
        manifest=fake_manifest(),
        verify_checksums=False,
        log=print,
    )


# --------------------------------------------------------------------------------------------
# download from a local HTTP server
# --------------------------------------------------------------------------------------------


class FakeUpstream:
    """Serves FAKE_FILES on 127.0.0.1 with byte-range support; knobs to misbehave."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.ignore_range: set[str] = set()
        self.fail_next: dict[str, int] = {}
        self.serve_instead: dict[str, bytes] = {}
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                path = self.path.lstrip("/")
                rng = self.headers.get("Range")
                owner.requests.append((path, rng))
                if owner.fail_next.get(path, 0) > 0:
                    owner.fail_next[path] -= 1
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = owner.serve_instead.get(path, owner.files.get(path))
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and path not in owner.ignore_range:
                    start = int(m.group(1))
                    body = data[start:]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    body = data
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _download(tmp_path, server, logs=None, **kw):
    return ensure_source_files(
        FAKE_SPEC,
        mirror_dir=None,
        cache_dir=tmp_path / "cache",
        manifest=fake_manifest(),
        base_url_override=server.url,
        backoff_s=0.0,
        log=(logs.append if logs is not None else (lambda s: None)),
        **kw,
    )


def test_download_fresh_then_cached(tmp_path):
    with FakeUpstream(FAKE_FILES) as server:
        logs: list[str] = []
        root = _download(tmp_path, server, logs)
        assert root == tmp_path / "cache/fake-src"
        for rel, data in FAKE_FILES.items():
            assert (root / rel).read_bytes() == data
        assert not list(root.rglob("*.part"))
        assert sorted(p for p, _ in server.requests) == sorted(FAKE_FILES)
        assert sum("downloaded" in s for s in logs) == 3

        server.requests.clear()
        logs.clear()
        _download(tmp_path, server, logs)
        assert server.requests == []  # everything cached and verified
        assert sum("cached" in s for s in logs) == 3


def test_download_resumes_part_and_refetches_corrupt(tmp_path):
    root = tmp_path / "cache/fake-src"
    b = FAKE_FILES["data/sub/b.txt"]
    write_tree(root, {"data/sub/b.txt.part": b[:1000]})  # partial download
    a = FAKE_FILES["data/a.txt"]
    write_tree(root, {"data/a.txt": b"X" + a[1:]})  # corrupt cached copy, right size
    write_tree(root, {"c.bin": FAKE_FILES["c.bin"]})  # good cached copy
    with FakeUpstream(FAKE_FILES) as server:
        logs: list[str] = []
        _download(tmp_path, server, logs)
        assert ("data/sub/b.txt", "bytes=1000-") in server.requests
        assert ("data/a.txt", None) in server.requests
        assert all(p != "c.bin" for p, _ in server.requests)
    for rel, data in FAKE_FILES.items():
        assert (root / rel).read_bytes() == data
    assert any("resuming at byte 1000" in s for s in logs)
    assert any("data/a.txt" in s and "fetching again" in s for s in logs)


def test_download_restarts_when_server_ignores_range(tmp_path):
    root = tmp_path / "cache/fake-src"
    b = FAKE_FILES["data/sub/b.txt"]
    write_tree(root, {"data/sub/b.txt.part": b[:1000]})
    with FakeUpstream(FAKE_FILES) as server:
        server.ignore_range.add("data/sub/b.txt")
        _download(tmp_path, server)
        assert ("data/sub/b.txt", "bytes=1000-") in server.requests
    assert (root / "data/sub/b.txt").read_bytes() == b


def test_download_retries_server_errors(tmp_path):
    with FakeUpstream(FAKE_FILES) as server:
        server.fail_next["data/a.txt"] = 2
        logs: list[str] = []
        _download(tmp_path, server, logs, retries=3)
        assert [p for p, _ in server.requests].count("data/a.txt") == 3
        assert any("attempt 2/4" in s for s in logs)
    assert (tmp_path / "cache/fake-src/data/a.txt").read_bytes() == FAKE_FILES["data/a.txt"]


def test_download_gives_up_on_bad_checksum(tmp_path):
    with FakeUpstream(FAKE_FILES) as server:
        server.serve_instead["c.bin"] = b"\0" * len(FAKE_FILES["c.bin"])
        with pytest.raises(SourceDataError, match=r"could not download .*c\.bin after 3 attempts \(sha256"):
            _download(tmp_path, server, retries=2)
    assert not (tmp_path / "cache/fake-src/c.bin").exists()
    assert not (tmp_path / "cache/fake-src/c.bin.part").exists()


# --------------------------------------------------------------------------------------------
# IRC parser
# --------------------------------------------------------------------------------------------


def test_irc_parser_shapes_links_and_context(tmp_path):
    write_irc(tmp_path)
    raw = parse_irc(tmp_path, [IRC_REL, IRC_ANN_REL])
    assert tuple(raw.columns) == RAW_COLUMNS
    assert len(raw) == len(IRC_LINES)
    assert raw["record_type"].tolist() == [
        "context",
        "context",
        "context",
        "message",
        "system",
        "message",
        "message",
        "malformed",
        "message",
        "message",
        "message",
    ]
    assert raw["message_id"].tolist() == list(range(11))
    assert raw["line"].tolist() == list(range(1, 12))
    assert set(raw["file"]) == {IRC_REL} and set(raw["split_hint"]) == {"train"} and set(raw["channel"]) == {"ubuntu"}
    assert raw["conversation_key"].isna().all()
    r = raw.set_index("message_id")
    assert (r.at[0, "author"], r.at[0, "text"]) == ("alice", "hello from the context")  # context keeps content
    assert r.at[4, "author"] is None and r.at[4, "text"] is None
    assert (r.at[5, "author"], r.at[5, "text"]) == ("alice", "waves")
    assert r.at[7, "author"] is None and r.at[7, "text"] == IRC_LINES[7]
    assert r.at[8, "text"] == "   "
    assert r.at[5, "parent_ids"] == [0, 2] and r.at[3, "parent_ids"] == [3] and r.at[0, "parent_ids"] == []
    assert r.at[10, "parent_ids"] == [6, 9]
    assert r.at[3, "timestamp"] == pd.Timestamp("2020-01-02 03:02")
    assert pd.isna(r.at[4, "timestamp"])
    assert str(raw["timestamp"].dtype) == "datetime64[ns]"


def test_irc_timestamps_roll_over_midnight(tmp_path):
    lines = ["[23:58] <a> late", "[23:59] <b> later", "[00:01] <a> after midnight", "[00:02] <b> x"]
    write_irc(tmp_path, links=["2 2 -", "3 3 -"], lines=lines)
    raw = parse_irc(tmp_path, [IRC_REL])
    assert raw["record_type"].tolist() == ["context", "context", "message", "message"]
    assert raw["timestamp"].tolist() == [
        pd.Timestamp("2020-01-01 23:58"),
        pd.Timestamp("2020-01-01 23:59"),
        pd.Timestamp("2020-01-02 00:01"),
        pd.Timestamp("2020-01-02 00:02"),
    ]


def test_irc_bad_annotation_line(tmp_path):
    write_irc(tmp_path, links=["3 3 -", "3 x -", "4 4 -"])
    with pytest.raises(SourceParseError) as e:
        parse_irc(tmp_path, [IRC_REL])
    assert e.value.file == IRC_ANN_REL and e.value.line == 2
    assert str(e.value) == f"{IRC_ANN_REL}:2: an annotation line '<int> <int> -', got '3 x - '"


def test_irc_annotation_past_end(tmp_path):
    write_irc(tmp_path, links=["3 3 -", "3 11 -"])
    with pytest.raises(SourceParseError, match=rf"{re.escape(IRC_ANN_REL)}:2: link indices below 11"):
        parse_irc(tmp_path, [IRC_REL])


def test_irc_missing_annotation_file(tmp_path):
    write_irc(tmp_path)
    (tmp_path / IRC_ANN_REL).unlink()
    with pytest.raises(SourceDataError, match="annotation.txt"):
        parse_irc(tmp_path, [IRC_REL])


def test_parse_error_cuts_long_lines():
    err = SourceParseError("f.txt", 3, "something", "x" * 200)
    assert str(err) == "f.txt:3: something, got " + repr("x" * 80)
    assert isinstance(err, SourceDataError)


# --------------------------------------------------------------------------------------------
# XML and .annot parsers
# --------------------------------------------------------------------------------------------


def test_slack_xml_parser(tmp_path):
    write_tree(tmp_path, {SLACK_REL: SLACK_XML.encode()})
    raw = parse_chat_xml(tmp_path, [SLACK_REL], source="slack_dev_chats")
    assert tuple(raw.columns) == RAW_COLUMNS
    assert raw["line"].tolist() == [6, 11, 18]  # lines of the <message> start tags
    assert raw["message_id"].tolist() == [0, 1, 2]
    assert raw["conversation_key"].tolist() == ["1", "2", "1"]
    assert set(raw["channel"]) == {"racket/general"} and raw["split_hint"].isna().all()
    assert raw["author"].tolist() == ["Jacob", "David", "Theron"]
    # Slack keeps its backslashes; empty <text/> siblings are skipped; entities decoded
    assert raw["text"].tolist() == ['`(displayln "a \\"quoted\\" word")`', "<@Jacob> second\nline", "  padded  "]
    assert raw["timestamp"].tolist()[0] == pd.Timestamp("2017-05-11T15:46:08.512661")
    assert set(raw["record_type"]) == {"message"}
    assert raw["parent_ids"].tolist() == [[], [], []]


def test_discord_xml_unescapes(tmp_path):
    write_tree(tmp_path, {DISCORD_REL: DISCORD_XML.encode()})
    raw = parse_chat_xml(tmp_path, [DISCORD_REL], source="discord_disco", unescape=True)
    assert raw["text"].tolist() == ['i\'m sure `(char->integer #\\2)` says "50"']
    assert raw["channel"].tolist() == ["Racket/general"] and raw["line"].tolist() == [4]
    assert undo_backslash_escapes("a\\\\'b") == "a\\'b"


def test_broken_xml(tmp_path):
    broken = SLACK_XML.replace("<user>David</user>", "<user>David</usr>")
    write_tree(tmp_path, {SLACK_REL: broken.encode()})
    with pytest.raises(SourceParseError) as e:
        parse_chat_xml(tmp_path, [SLACK_REL], source="slack_dev_chats")
    assert e.value.file == SLACK_REL and e.value.line == 13
    assert str(e.value).startswith(f"{SLACK_REL}:13: well-formed XML (mismatched tag")
    assert "<user>David</usr>" in str(e.value)


def test_xml_message_without_conversation_id(tmp_path):
    write_tree(tmp_path, {SLACK_REL: SLACK_XML.replace(' conversation_id="2"', "").encode()})
    with pytest.raises(SourceParseError, match=rf"{re.escape(SLACK_REL)}:11: a <message> with a conversation_id"):
        parse_chat_xml(tmp_path, [SLACK_REL], source="slack_dev_chats")


def test_annot_parser(tmp_path):
    write_tree(tmp_path, {ANNOT_REL: ("\n".join(ANNOT_LINES) + "\n").encode()})
    raw = parse_annot(
        tmp_path, [ANNOT_REL], source="discord_disco", channels={ANNOT_REL: "python/general"}, unescape=True
    )
    assert tuple(raw.columns) == RAW_COLUMNS
    assert raw["conversation_key"].tolist() == ["1", "1", "2", "1"]
    assert raw["author"].tolist() == ["Dawid", "Dawid", "Pariss", "Georges"]
    assert raw["text"].tolist() == ["networking is hard", "isn't it", "", "Ok"]
    assert raw["line"].tolist() == [1, 2, 3, 4] and raw["message_id"].tolist() == [0, 1, 2, 3]
    assert raw["timestamp"].isna().all() and str(raw["timestamp"].dtype) == "datetime64[ns]"
    assert set(raw["channel"]) == {"python/general"}


def test_annot_bad_line(tmp_path):
    lines = [*ANNOT_LINES[:2], "Tx 5 who : nope", *ANNOT_LINES[2:]]
    write_tree(tmp_path, {ANNOT_REL: "\n".join(lines).encode()})
    with pytest.raises(SourceParseError) as e:
        parse_annot(tmp_path, [ANNOT_REL], source="discord_disco")
    assert (e.value.file, e.value.line) == (ANNOT_REL, 3)
    assert str(e.value) == f"{ANNOT_REL}:3: a line 'T<thread> <secs> <user> :  text', got 'Tx 5 who : nope'"


def test_source_parse_fns_dispatch_by_suffix(tmp_path):
    write_tree(tmp_path, {DISCORD_REL: DISCORD_XML.encode(), ANNOT_REL: "\n".join(ANNOT_LINES).encode()})
    raw = SOURCES["discord_disco"].parse(tmp_path, [ANNOT_REL, DISCORD_REL])
    assert tuple(raw.columns) == RAW_COLUMNS
    assert raw["file"].tolist() == [DISCORD_REL] + [ANNOT_REL] * 4
    assert set(raw["source"]) == {"discord_disco"}
    assert raw["text"].iloc[2] == "isn't it"


# --------------------------------------------------------------------------------------------
# real mirror
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_raw(mirror_root):
    out = {}
    for name, spec in SOURCES.items():
        root = ensure_source_files(spec, mirror_dir=mirror_root, cache_dir=Path("/nonexistent"), log=lambda s: None)
        out[name] = spec.load_raw(root)
    return out


def test_real_irc_raw(real_raw):
    raw = real_raw["irc_disentangle"]
    assert tuple(raw.columns) == RAW_COLUMNS
    assert len(raw) == 247_963
    assert raw["record_type"].value_counts().to_dict() == {"context": 173_000, "message": 66_293, "system": 8_670}
    assert raw["file"].nunique() == 173
    per_file = raw.groupby("file")["record_type"].apply(lambda s: int((s == "context").sum()))
    assert set(per_file) == {1000}  # first annotated index is 1000 in every file
    annotated = raw[raw["record_type"] != "context"]
    assert annotated.groupby("split_hint").size().to_dict() == {"train": 67_463, "dev": 2_500, "test": 5_000}
    # irregular shapes: actions (author = nick), notices, one relayed line (malformed, in context)
    assert raw["timestamp"].isna().sum() == 25_783  # exactly the untimestamped `=== ` lines
    odd = raw[(raw["file"] == "data/train/2006-12-06.train-c.ascii.txt") & (raw["message_id"] == 862)].iloc[0]
    assert odd["author"] is None and odd["text"].startswith("[01:09] (soundray/#ubuntu)")
    action = raw[(raw["file"] == "data/dev/2008-12-11_11.ascii.txt") & (raw["message_id"] == 1155)].iloc[0]
    assert (action["author"], action["text"], action["record_type"]) == ("Panarchy", "says Hi", "message")


def test_real_slack_raw(real_raw):
    raw = real_raw["slack_dev_chats"]
    assert tuple(raw.columns) == RAW_COLUMNS
    counts = raw.groupby("file").size().to_dict()
    assert counts == {
        "data/clojurians/2019/merged-clojurians-clojure.xml": 16_057,
        "data/elmlang/2019/merged-elmlang-general.xml": 14_510,
        "data/racket/2017/merged-racket-general.xml": 6_757,
        "data/racket/2018/merged-racket-general.xml": 9_709,
        "data/racket/2019/merged-racket-general.xml": 5_706,
    }
    convs = raw.groupby("file")["conversation_key"].nunique().to_dict()
    assert convs["data/racket/2018/merged-racket-general.xml"] == 1_088
    assert raw["timestamp"].notna().all()
    assert set(raw["channel"]) == {"clojurians/clojure", "elmlang/general", "racket/general"}


def test_real_discord_raw(real_raw):
    raw = real_raw["discord_disco"]
    assert tuple(raw.columns) == RAW_COLUMNS
    xml = raw[raw["file"].str.endswith(".xml.out")]
    annot = raw[raw["file"].str.endswith(".annot")]
    assert len(xml) == 6_552 and xml["file"].nunique() == 8
    assert len(annot) == 56_763 and annot["conversation_key"].nunique() == 1_328
    assert set(annot["channel"]) == {"python/general"}
    assert (annot["text"] == "").sum() == 193
    assert not xml["text"].str.contains("\\'", regex=False).any()
    # one genuine backslash-quote remains: upstream `\\\'` = escaped backslash + escaped quote
    assert annot["text"].str.contains("\\'", regex=False).sum() == 1
