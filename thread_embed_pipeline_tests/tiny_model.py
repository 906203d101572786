"""A tiny, random-init BERT sentence-transformer built fully offline, for fast tests.

WordPiece tokenizer trained on a few dozen chat-like lines, 2-layer BERT (hidden 32),
mean pooling + L2 normalisation. Weights are random (fixed torch seed): embeddings are
deterministic but semantically meaningless -- use it to exercise plumbing, not quality.
"""

from __future__ import annotations

from pathlib import Path

TINY_MODEL_HIDDEN = 32
TINY_MODEL_MAX_SEQ_LENGTH = 128
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

CHAT_SENTENCES = [
    "alice: hey everyone, anyone know why apt-get update fails with a gpg error?",
    "bob: try sudo apt-key adv --recv-keys with the missing key id",
    "carol: did you check /etc/apt/sources.list for a typo?",
    "dave: how do I mount an ntfs partition on boot?",
    "erin: add a line to /etc/fstab with the uuid from blkid",
    "frank: my wifi driver stopped working after the kernel upgrade",
    "grace: boot the old kernel from grub and reinstall the dkms module",
    "heidi: thanks, that fixed it!",
    "ivan: is there a way to list installed packages by size?",
    "judy: dpkg-query -W --showformat with installed-size, then sort -n",
    "mallory: racket question: how do I define a macro with syntax-rules?",
    "niaj: use define-syntax and syntax-rules, pattern on the left, template on the right",
    "olivia: what's the difference between let and let* in scheme?",
    "peggy: let* binds sequentially, so later bindings can see earlier ones",
    "rupert: can someone review my pull request for the parser?",
    "sybil: left a few comments, mostly about error handling",
    "trent: the build is failing on windows because of path separators",
    "victor: use pathlib instead of joining strings by hand",
    "walter: anyone up for a quick call about the release schedule?",
    "alice: sure, give me five minutes to finish this test",
    "bob: the docs say python 3.11 is required now",
    "carol: i get a segfault when i run the binary with -O2",
    "dave: compile with -g and run it under gdb, then post the backtrace",
    "erin: lol that was a typo in my config file all along",
    "frank: how do i resize a partition without losing data?",
    "grace: gparted from a live usb, but back up first",
    "heidi: what does this error mean: permission denied (publickey)",
    "ivan: your ssh key is not added to the agent, run ssh-add",
    "judy: which discord channel is for beginner questions?",
    "mallory: slack notifications are broken on linux again",
    "niaj: restart the app and clear the cache folder",
    "olivia: can you paste the full log on a pastebin please",
    "peggy: the server returns 502 bad gateway after deploying",
    "rupert: check the nginx upstream and the gunicorn workers",
    "sybil: good morning all, happy friday",
    "trent: is the meeting still at 3pm utc today?",
    "victor: yes, same link as last week",
    "walter: how do I install nvidia drivers on ubuntu 22.04?",
    "alice: use ubuntu-drivers autoinstall and reboot",
    "bob: does anyone have experience with docker compose networking?",
    "carol: containers on the same network can reach each other by service name",
    "dave: my cron job is not running, what am i missing?",
    "erin: cron has a minimal PATH, use absolute paths in the script",
    "frank: thank you so much, works perfectly now",
    "judy: the unit tests pass locally but the ci pipeline times out",
    "mallory: bump the timeout or split the slow integration tests into another job",
    "niaj: which python version does the project support these days?",
    "olivia: my laptop overheats when compiling firefox from source",
    "peggy: try limiting make to four jobs and clean the fan",
    "rupert: postgres refuses connections after the upgrade to version sixteen",
    "sybil: check pg_hba.conf and listen_addresses in postgresql.conf",
    "trent: vim or emacs for editing yaml files?",
    "victor: whatever you like, just turn on an indentation linter",
    "walter: the bot keeps spamming the channel, can an op kick it?",
    "alice: done, banned the hostmask too",
    "bob: git rebase interactive squashed the wrong commits, help",
    "carol: git reflog shows the previous head, reset hard to it",
    "dave: good night everybody, see you tomorrow",
    "erin: welcome to the server! please read the rules channel first",
    "frank: the raspberry pi keeps rebooting whenever the usb drive spins up",
    "grace: underpowered supply, get an official adapter or a powered hub",
    "heidi: anybody going to the conference in berlin next month?",
    "ivan: firewall blocks outgoing smtp, mail never leaves the queue",
    "judy: javascript promise chain swallows exceptions silently",
    "mallory: always return or await inside then, and add a catch handler",
    "niaj: kubernetes pod stuck in crashloopbackoff, logs are empty",
    "olivia: describe the pod, maybe the liveness probe kills it too early",
    "peggy: bluetooth headphones connect but audio output stays on speakers",
    "rupert: pick the a2dp profile in pavucontrol and switch the sink",
    "grace: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 ~ ! @ # $ % ^ & * ( ) - _ = + [ ] { } ; : ' \" , . < > / ? |",
]


def build_tiny_sentence_transformer(out_dir: Path, *, seed: int = 0) -> Path:
    """Build and save the tiny model under ``out_dir`` (returned); loadable with ``SentenceTransformer(str(out_dir))``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out_dir = Path(out_dir)
    hf_dir = out_dir.parent / f"{out_dir.name}_hf"
    hf_dir.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=5000, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tok.train_from_iterator(CHAT_SENTENCES, trainer=trainer)
    # WordPiece training breaks frequency ties in (randomised) hash order, so the
    # intermediate sub-word pieces differ between runs. Keep the run-independent part of
    # the learned vocab -- the alphabet (plain and ##-continuation) and the whole words
    # (training runs to exhaustion, so every corpus word is learned) -- numbered
    # deterministically, so the tokenizer and hence the model are reproducible.
    words = {w for s in CHAT_SENTENCES for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(s))}
    learned = sorted(
        t for t in set(tok.get_vocab()) - set(SPECIAL_TOKENS) if len(t.removeprefix("##")) == 1 or t in words
    )
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + learned)}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    hf_tokenizer = BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        do_lower_case=True,
        model_max_length=TINY_MODEL_MAX_SEQ_LENGTH,
    )
    hf_tokenizer.save_pretrained(hf_dir)

    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=TINY_MODEL_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=tok.token_to_id("[PAD]"),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bert = BertModel(config)
    bert.save_pretrained(hf_dir)

    transformer = Transformer(str(hf_dir), processor_kwargs={"model_max_length": TINY_MODEL_MAX_SEQ_LENGTH})
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
    model.save(str(out_dir))
    return out_dir
