"""``textgym rate DB``: rate pending samples in the terminal, one at a time.

Shows the prompt and the completion of the oldest sample the rater has not rated, and reads a rating: a number
on the store's scale (``--scale``, default 1-5), ``s`` to skip (shown again next session), ``u`` to undo the
last rating (it is kept in the store, marked retracted, and its sample comes back), ``q`` to quit. Every rating
is committed as it is given, so quitting (or a crash) loses nothing and the next session resumes with the
rater's next pending sample. On a terminal, a one-key scale (e.g. 1-5) takes single key presses; from a pipe
or tmux ``send-keys`` it reads one answer per line.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import TextIO

from textgym.human.store import RatingError, RatingStore

HELP = "keys: a number on the scale = rate, s = skip, u = undo the last rating, q = quit, ? = this help"


def default_rater() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "anonymous"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("db", help="rating store file")
    parser.add_argument("--rater", default=None, help="your name, recorded with each rating (default: login name)")
    parser.add_argument("--scale", default=None, help="scalar scale MIN-MAX, e.g. 1-5 (sets the store's scale; "
                        "default: the store's, 1-5 for a new store)")


def _read_key(inp: TextIO, single_key: bool) -> str | None:
    """One answer: a key press on a terminal with a one-key scale, else a line. None at end of input."""
    if single_key:
        import termios
        import tty

        fd = inp.fileno()
        old = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            ch = os.read(fd, 1).decode(errors="replace")
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, old)
        return None if ch in ("", "\x04") else ch
    line = inp.readline()
    return None if line == "" else line.strip()


def _fmt(x: float) -> str:
    return f"{x:g}"


def rate_loop(store: RatingStore, rater: str, inp: TextIO, out: TextIO, single_key: bool = False) -> dict[str, int]:
    """Run the rating session until ``q``, end of input or no pending sample; returns counts
    ``{"rated", "skipped", "undone"}`` for this session."""
    lo, hi = store.scale
    counts = {"rated": 0, "skipped": 0, "undone": 0}
    skipped: set[int] = set()
    again: int | None = None  # an undone rating's sample is shown next
    while True:
        sample = store.get_sample(again) if again is not None else store.next_pending(rater, exclude=skipped)
        again = None
        if sample is None:
            st = store.stats(rater)
            print(f"nothing left to rate for {rater} ({st['ratings']} rated, {len(skipped)} skipped this session)",
                  file=out)
            return counts
        st = store.stats(rater)
        print(f"\n--- sample {sample.id}  ({st['ratings']} rated by {rater}, {st['pending']} pending) ---", file=out)
        print(f"PROMPT:\n{sample.prompt}\nCOMPLETION:\n{sample.completion}", file=out)
        while True:
            print(f"rate {_fmt(lo)}-{_fmt(hi)}, s skip, u undo, q quit, ? help > ", end="", file=out, flush=True)
            key = _read_key(inp, single_key)
            if single_key and key is not None:
                print(key, file=out)
            if key is None or key.lower() == "q":
                print(f"bye: {counts['rated']} rated, {counts['skipped']} skipped, {counts['undone']} undone "
                      "this session", file=out)
                return counts
            key = key.lower()
            if key == "?":
                print(HELP, file=out)
                continue
            if key == "s":
                skipped.add(sample.id)
                counts["skipped"] += 1
                break
            if key == "u":
                r = store.undo(rater)
                if r is None:
                    print("nothing to undo", file=out)
                    continue
                counts["undone"] += 1
                print(f"undid your rating of sample {r.sample_id}", file=out)
                skipped.discard(r.sample_id)
                again = r.sample_id
                break
            try:
                score = float(key)
            except ValueError:
                print(f"not a rating: {key!r}. {HELP}", file=out)
                continue
            try:
                store.add_rating(sample.id, rater, score=score)
            except RatingError as e:
                print(str(e), file=out)
                continue
            counts["rated"] += 1
            break


def main(args: argparse.Namespace) -> int:
    try:
        store = RatingStore(args.db, scale=args.scale)
    except ValueError as e:
        print(f"textgym rate: {e}", file=sys.stderr)
        return 2
    rater = args.rater or default_rater()
    lo, hi = store.scale
    one_key = lo == int(lo) and hi == int(hi) and 0 <= lo and hi <= 9
    single_key = one_key and sys.stdin.isatty()
    rate_loop(store, rater, sys.stdin, sys.stdout, single_key=single_key)
    return 0
