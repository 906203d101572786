"""Bad IRC log exports (``irc_log``): hand-written, each a folder of log files."""

from __future__ import annotations

_GOOD = b"[10:00:00] <ann> is the oven on?\n[10:00:30] <bob> ann: yes, since ten\n"

BAD_CASES: dict[str, dict[str, bytes]] = {
    # a file in no IRC style, next to a good one: the error names it, its first line and the styles expected
    "irc_log_not_a_log": {"#kitchen/2021-01-04.log": _GOOD, "notes.txt": b"\nshopping list\n- flour\n- yeast\n"},
    # another platform's JSON export declared as an IRC log
    "irc_log_json_file": {"result.json": b'{"name": "Kitchen", "messages": [{"id": 1, "text": "hi"}]}\n'},
    # bytes that are no text at all
    "irc_log_binary_file": {"#kitchen.log": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10"},
    # nothing to read: empty and blank files
    "irc_log_empty_export": {"#empty.log": b"", "#blank.log": b"\n   \n\t\n"},
    # structurally a log, without a single channel line: irssi's open/close markers only
    "irc_log_markers_only": {"#quiet.log": b"--- Log opened Mon Jan 04 10:00:00 2021\n--- Log closed Mon Jan 04 11:00:00 2021\n"},
    # a ZNC log with lines in no shape, and an impossible clock: malformed rows, counted drops
    "irc_log_malformed_lines": {
        "libera/#kitchen/2021-01-05.log": b"[10:00:00] <ann> is the dough ready?\n[10:00:05] ann says hi without brackets\n"
        b"no timestamp at all\n[25:61:00] <bob> impossible clock\n[10:01:00] <bob> ann: give it an hour\n",
    },
    # an irssi log with a Latin-1 line: malformed (and counted), never mangled into the corpus
    "irc_log_invalid_utf8": {"#kitchen.log": b"10:00 < ann> caf\xe9 au lait?\n10:01 < bob> ann: two please\n"},
    # a weechat log with a date that does not exist, and a stray line before any message
    "irc_log_weechat_bad_date": {
        "irc.libera.#kitchen.weechatlog": b"stray text before any message\n2021-02-30 10:00:00\tann\tno such day\n"
        b"2021-02-28 10:00:00\tann\tthe last day of February\n",
    },
}
