"""A synthetic Slack workspace export in the real layout, for the scale benchmark, the end-to-end tests and
trying *Your own chat* without one's own data:

    python -m thread_embed_pipeline.sources.exports.synthetic out/demo_slack --messages 20000

It writes what an admin's export holds: ``users.json`` (profiles with names and e-mails, bots, people who
never post), ``channels.json``, and ``<channel>/<YYYY-MM-DD>.json`` day files (JSON arrays, indented like
Slack's) whose messages carry ``client_msg_id``, ``team``, ``user_profile`` and ``blocks`` as real exports do.
Threads: about a third of the top-level messages get replies (1-8, and 9-20 for one thread in seven), minutes to a day and a half later, so
many replies sit in a later day file than their parent. Also joins, topic changes, bot posts, file shares
without text, deleted thread parents (tombstones), ``<@U...>`` mentions (of people who never post too),
links and ``&amp;`` escapes. Each thread keeps to one topic's words, so its messages belong together.

Seeded: the same arguments write the same bytes. Not real chat: use it to measure and to test plumbing,
never as evidence of retrieval quality.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
from datetime import datetime, timezone
from pathlib import Path

TOPICS = (
    "cache build ci pipeline runner artifact docker layer image registry",
    "database migration schema index query postgres transaction lock table",
    "deploy kubernetes pod helm cluster node rollout service ingress",
    "frontend react component state hook render css bundle webpack",
    "auth token oauth login session cookie sso permission role",
    "test flaky mock fixture coverage assertion timeout retry suite",
    "release version changelog tag semver branch merge hotfix",
    "monitoring alert metric dashboard latency error rate log trace",
    "python package dependency venv pip wheel import module typing",
    "network dns proxy tls certificate firewall port timeout socket",
)
FILLER = "the a it is we you i this that to on in for with and but so maybe still now again why how does anyone know".split()
START = int(datetime(2021, 1, 4, tzinfo=timezone.utc).timestamp())
DAY = 86_400


def _profile(user: dict) -> dict:
    p = user["profile"]
    return {"avatar_hash": "g0123456789a", "image_72": "https://avatars.example/72.png", "first_name": p["real_name"].split()[0], "real_name": p["real_name"],
            "display_name": p["display_name"], "team": "T0SYNTH", "name": user["name"], "is_restricted": False, "is_ultra_restricted": False}  # fmt: skip


def _users(n: int, rng: random.Random) -> list[dict]:
    first = "Ada Ben Cleo Dev Eli Fay Gus Hana Ivo Jun Kai Lea Max Nia Oto Pia Rui Sol Tam Uma Vic Wes Xia Yul Zoe".split()
    last = "Arden Birch Cole Dune Ember Frost Grove Hale Ivory Jett Knoll Lake Moss Nash Oak Pike Quill Reed Stone Thorn".split()
    users = []
    for i in range(n):
        real = f"{first[i % len(first)]} {last[(i // len(first)) % len(last)]}"
        name = real.lower().replace(" ", ".") + (str(i // (len(first) * len(last))) if i >= len(first) * len(last) else "")
        users.append({"id": f"U{i:08d}", "team_id": "T0SYNTH", "name": name, "real_name": real, "deleted": False, "is_bot": False,
                      "profile": {"real_name": real, "display_name": name.split(".")[0] if rng.random() < 0.6 else "", "email": f"{name}@synth.example"}})  # fmt: skip
    users.append({"id": "U0DEPLOYB", "team_id": "T0SYNTH", "name": "deploybot", "real_name": "Deploy Bot", "is_bot": True, "profile": {"real_name": "Deploy Bot", "display_name": "deploybot"}})
    return users


def _text(topic: list[str], rng: random.Random, users: list[dict], question: bool) -> str:
    words = [rng.choice(topic) if rng.random() < 0.45 else rng.choice(FILLER) for _ in range(rng.randint(4, 22))]
    if rng.random() < 0.1:
        words.insert(rng.randrange(len(words) + 1), f"<@{rng.choice(users)['id']}>")
    if rng.random() < 0.05:
        words.append(f"<https://docs.synth.example/{rng.choice(topic)}|the {rng.choice(topic)} docs>")
    if rng.random() < 0.03:
        words.insert(rng.randrange(len(words) + 1), "&amp;")
    return " ".join(words) + ("?" if question else ".")


def _message(ts: float, user: dict, text: str, rng: random.Random, **extra) -> dict:
    stamp = f"{ts:.6f}"
    message = {"client_msg_id": f"{rng.getrandbits(64):016x}-synth", "type": "message", "text": text, "user": user["id"], "ts": stamp, "team": "T0SYNTH",
               "user_team": "T0SYNTH", "source_team": "T0SYNTH", "user_profile": _profile(user),
               "blocks": [{"type": "rich_text", "block_id": f"{rng.getrandbits(20):05x}", "elements": [{"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}]}]}  # fmt: skip
    message.update(extra)
    return message


def generate_slack_export(folder: Path | str, messages: int, *, channels: int = 8, users: int = 120, posting_share: float = 0.8, per_day: int = 400, seed: int = 0) -> dict:
    """Write a synthetic export of about ``messages`` messages (system events and bot posts included) under
    ``folder``; returns ``{"messages", "threads", "replies", "day_files", "bytes"}``."""
    folder = Path(folder)
    rng = random.Random(seed)
    people = _users(users, rng)
    bot = people[-1]
    posting = people[: max(2, int(len(people[:-1]) * posting_share))]  # the rest are only ever mentioned
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "users.json").write_text(json.dumps(people, indent=4) + "\n")
    names = [f"team-{TOPICS[i % len(TOPICS)].split()[0]}-{i}" for i in range(channels)]
    (folder / "channels.json").write_text(json.dumps([{"id": f"C{i:08d}", "name": n, "created": START, "members": [u["id"] for u in posting]} for i, n in enumerate(names)], indent=4) + "\n")
    totals = {"messages": 0, "threads": 0, "replies": 0, "day_files": 0, "bytes": 0}
    for c, name in enumerate(names):
        quota = messages // channels + (1 if c < messages % channels else 0)
        _write_channel(folder / name, quota, posting, people, bot, per_day, rng, totals)
    return totals


def _write_channel(out: Path, quota: int, posting, people, bot, per_day: int, rng: random.Random, totals: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    pending: list[tuple[float, int, dict]] = []  # (ts, tie-break, message): replies and events waiting for their day
    made, t, day, tick = 0, float(START), START, 0
    gap = DAY / per_day
    while made < quota or pending:
        if made < quota:
            t += rng.expovariate(1 / gap)
            topic = TOPICS[rng.randrange(len(TOPICS))].split()
            user = rng.choice(posting)
            roll = rng.random()
            if roll < 0.02:
                message = _message(t, user, f"<@{user['id']}> has joined the channel", rng, subtype="channel_join")
            elif roll < 0.03:
                message = _message(t, bot, f"Deployed build {rng.randint(1, 9999)} to staging", rng, subtype="bot_message", bot_id="B0DEPLOY", username="deploybot")
            elif roll < 0.035:
                message = _message(t, user, "", rng, subtype="file_share", files=[{"id": f"F{rng.getrandbits(32):08X}", "name": "screenshot.png"}])
            elif roll < 0.037:
                message = _message(t, user, f"<@{user['id']}> set the channel topic: {' '.join(topic[:3])}", rng, subtype="channel_topic")
            else:
                message = _message(t, user, _text(topic, rng, people, question=rng.random() < 0.5), rng)
                if rng.random() < 0.33 and made + 2 <= quota:
                    stamp = message["ts"]
                    replies = min(rng.randint(1, 8) if rng.random() < 0.85 else rng.randint(9, 20), quota - made - 1)  # a long tail of long threads
                    message.update(thread_ts=stamp, reply_count=replies)
                    at = t
                    for _ in range(replies):
                        at += rng.choice((rng.uniform(30, 900), rng.uniform(900, 7200), rng.uniform(7200, DAY * 1.5)))
                        who = rng.choice(posting)
                        reply = _message(at, who, _text(topic, rng, people, question=False), rng, thread_ts=stamp, parent_user_id=user["id"])
                        tick += 1
                        heapq.heappush(pending, (at, tick, reply))
                    made += replies
                    totals["threads"] += 1
                    totals["replies"] += replies
                    if rng.random() < 0.02:  # the parent was deleted later: a tombstone, its replies stay
                        message = {"type": "message", "subtype": "tombstone", "text": "This message was deleted.", "user": "USLACKBOT", "hidden": True, "ts": stamp, "thread_ts": stamp}
            tick += 1
            heapq.heappush(pending, (t, tick, message))
            made += 1
        # a day is complete once generation has passed its end: later messages are all later than that
        done = made >= quota
        while pending and (done or t >= day + DAY):
            day_messages = []
            while pending and pending[0][0] < day + DAY:
                day_messages.append(heapq.heappop(pending)[2])
            if day_messages:
                _write_day(out, day, day_messages, totals)
            day += DAY
    totals["messages"] += quota


def _write_day(out: Path, day: int, messages: list[dict], totals: dict) -> None:
    path = out / (datetime.fromtimestamp(day, tz=timezone.utc).strftime("%Y-%m-%d") + ".json")
    data = json.dumps(messages, indent=4, ensure_ascii=False) + "\n"
    path.write_text(data, encoding="utf-8")
    totals["day_files"] += 1
    totals["bytes"] += len(data.encode("utf-8"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m thread_embed_pipeline.sources.exports.synthetic", description="Write a synthetic Slack workspace export (the real layout).")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--users", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    totals = generate_slack_export(args.folder, args.messages, channels=args.channels, users=args.users, seed=args.seed)
    print(json.dumps(totals))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
