#!/usr/bin/env python3
"""Writes the demo's data: a high-quality set of solved arithmetic word problems, a noisy pretraining corpus built
from the same kind of text, and held-out evaluation files. Standard library only; the output depends only on the
arguments (--seed included).

Files written to --out:
  hq.jsonl              {"text"}: one solved problem per line ("Question: ...\\nAnswer: ... The answer is N.")
  corpus.jsonl          {"text", "noise"}: clean problems, noisy documents, and clean problems with noise inside;
                        "noise" lists [start, end, kind] character spans (all text is ASCII, so these are byte
                        offsets too) of every noisy piece: removing the spans that are not "wrong_arithmetic"
                        gives back clean problems exactly
  eval_problems.jsonl   {"question", "answer", "final"}: held-out problems for rho_eval --fewshot
  eval_clean.jsonl      {"text"}: held-out clean problems for the target-domain loss
  fewshot_prompt.txt    4 solved problems for rho_eval --fewshot-prompt
  stats.json            sizes and the noise actually written, by kind

No question appears twice across hq, corpus, eval and the few-shot prompt.
"""
import argparse
import json
import random
import string
from pathlib import Path

NAMES = [("Tom", "he"), ("Anna", "she"), ("Ben", "he"), ("Lucy", "she"), ("Sam", "he"), ("Mia", "she"),
         ("Leo", "he"), ("Emma", "she"), ("Jack", "he"), ("Zoe", "she"), ("Omar", "he"), ("Nina", "she"),
         ("Ravi", "he"), ("Ella", "she"), ("Hugo", "he"), ("Ivy", "she"), ("Max", "he"), ("Lily", "she")]
POSSESSIVE = {"he": "his", "she": "her"}
ITEMS = ["apple", "pencil", "book", "cookie", "marble", "card", "orange", "sticker", "ball", "notebook", "cupcake",
         "toy car", "shell", "flower", "candle", "egg"]
THINGS = ["bike", "game", "jacket", "lamp", "radio", "backpack", "kite", "puzzle"]
VEHICLES = ["car", "bus", "train", "truck", "boat", "cyclist"]


class Problem:
    """A question and the steps of its solution; an operand is a number or ("r", i), the result of step i."""

    def __init__(self, question, steps):
        self.question = question
        self.steps = steps  # (prefix, x, op, y, suffix)

    def render(self, corrupt=None):
        """The problem's text and the character spans of corrupted results. corrupt = (step, delta): that step's
        result is off by delta and later steps compute with the wrong value (the error propagates, as in real
        text). Returns None when the corruption would make a value negative."""
        text = "Question: " + self.question + "\nAnswer:"
        values, wrong = [], []
        for i, (prefix, x, op, y, suffix) in enumerate(self.steps):
            a = values[x[1]] if isinstance(x, tuple) else x
            b = values[y[1]] if isinstance(y, tuple) else y
            r = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b else -1}[op]
            if op == "/" and (b == 0 or a % b):
                return None
            if corrupt and corrupt[0] == i:
                r += corrupt[1]
            if r < 0:
                return None
            values.append(r)
            text += " " + prefix + f" {a} {op} {b} = "
            if corrupt and corrupt[0] == i:
                wrong.append([len(text), len(text) + len(str(r)), "wrong_arithmetic"])
            text += f"{r}{suffix}"
        text += f" The answer is {values[-1]}."
        return text, wrong, values[-1]


def person(rng, exclude=None):
    while True:
        n = rng.choice(NAMES)
        if n[0] != exclude:
            return n


def shopping_total(rng):
    (n, he) = person(rng)
    i1, i2 = rng.sample(ITEMS, 2)
    a, p, b, q = rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 9)
    return Problem(f"{n} buys {a} {i1}s for {p} dollars each and {b} {i2}s for {q} dollars each. "
                   f"How many dollars does {he} spend?",
                   [(f"The {i1}s cost", a, "*", p, " dollars."), (f"The {i2}s cost", b, "*", q, " dollars."),
                    (f"In total {he} spends", ("r", 0), "+", ("r", 1), " dollars.")])


def shopping_change(rng):
    (n, he) = person(rng)
    item = rng.choice(ITEMS)
    a, p = rng.randint(2, 9), rng.randint(2, 9)
    m = a * p + rng.randint(1, 40)
    return Problem(f"{n} has {m} dollars. {he.capitalize()} buys {a} {item}s for {p} dollars each. "
                   f"How many dollars does {he} have left?",
                   [(f"The {item}s cost", a, "*", p, " dollars."),
                    (f"{he.capitalize()} has", m, "-", ("r", 0), " dollars left.")])


def ages_older(rng):
    (n, _) = person(rng)
    (m, _) = person(rng, exclude=n)
    a, b, c = rng.randint(3, 40), rng.randint(1, 30), rng.randint(2, 20)
    return Problem(f"{n} is {a} years old. {m} is {b} years older than {n}. How old will {m} be in {c} years?",
                   [(f"{m} is", a, "+", b, " years old now."), (f"In {c} years {m} will be", ("r", 0), "+", c,
                                                                " years old.")])


def ages_times(rng):
    (n, he) = person(rng)
    a, k = rng.randint(3, 15), rng.randint(2, 5)
    return Problem(f"{n} is {a} years old and {POSSESSIVE[he]} aunt is {k} times as old. "
                   f"How many years older than {n} is the aunt?",
                   [("The aunt is", a, "*", k, " years old."), ("She is", ("r", 0), "-", a, " years older.")])


def distance(rng):
    v = rng.choice(VEHICLES)
    s, h, d = rng.randint(5, 60), rng.randint(2, 6), rng.randint(1, 30)
    return Problem(f"A {v} travels {s} km each hour. It moves for {h} hours, then {d} more km. "
                   f"How many km does it travel in total?",
                   [(f"In {h} hours it travels", s, "*", h, " km."), ("In total it travels", ("r", 0), "+", d,
                                                                      " km.")])


def walking(rng):
    (n, he) = person(rng)
    a, b = rng.randint(2, 15), rng.randint(2, 15)
    c = rng.randint(1, a + b - 1)
    return Problem(f"{n} walks {a} km on Monday and {b} km on Tuesday. {POSSESSIVE[he].capitalize()} friend walks "
                   f"{c} km less in total. How many km does the friend walk?",
                   [(f"{n} walks", a, "+", b, " km."), ("The friend walks", ("r", 0), "-", c, " km.")])


def sharing(rng):
    (n, he) = person(rng)
    item = rng.choice(ITEMS)
    b, each = rng.randint(2, 8), rng.randint(2, 12)
    steps = [("Each friend gets", b * each, "/", b, f" {item}s.")]
    q = f"{n} has {b * each} {item}s and shares them equally among {b} friends. "
    if rng.random() < 0.5:
        c = rng.randint(1, each)
        q += f"Each friend gives away {c} of them. How many {item}s does each friend keep?"
        steps.append(("Each friend keeps", ("r", 0), "-", c, f" {item}s."))
    else:
        q += f"How many {item}s does each friend get?"
    return Problem(q, steps)


def marbles(rng):
    (n, he) = person(rng)
    item = rng.choice(ITEMS)
    a, b = rng.randint(3, 30), rng.randint(1, 20)
    c = rng.randint(1, a + b)
    return Problem(f"{n} had {a} {item}s. {he.capitalize()} won {b} more, lost {c}, and then {POSSESSIVE[he]} "
                   f"collection doubled. How many {item}s does {he} have now?",
                   [(f"After winning {he} had", a, "+", b, "."), (f"After losing {he} had", ("r", 0), "-", c, "."),
                    ("After doubling there are", ("r", 1), "*", 2, f" {item}s.")])


def boxes(rng):
    (n, _) = person(rng)
    item = rng.choice(ITEMS)
    a, b = rng.randint(2, 9), rng.randint(2, 12)
    c = rng.randint(1, a * b - 1)
    return Problem(f"There are {a} boxes with {b} {item}s in each box. {n} takes out {c} {item}s. "
                   f"How many {item}s are left in the boxes?",
                   [("The boxes hold", a, "*", b, f" {item}s."), ("There are", ("r", 0), "-", c, f" {item}s left.")])


def savings(rng):
    (n, he) = person(rng)
    thing = rng.choice(THINGS)
    a, w = rng.randint(2, 20), rng.randint(2, 10)
    c = rng.randint(1, a * w)
    return Problem(f"{n} saves {a} dollars every week for {w} weeks. Then {he} spends {c} dollars on a {thing}. "
                   f"How many dollars are left?",
                   [(f"{he.capitalize()} saves", a, "*", w, " dollars."), ("There are", ("r", 0), "-", c,
                                                                          " dollars left.")])


TEMPLATES = [shopping_total, shopping_change, ages_older, ages_times, distance, walking, sharing, marbles, boxes,
             savings]


class SmallNumbers:
    """The templates' random source with every drawn number capped at `cap` (0: no cap), for models too small to
    learn two-digit arithmetic in the time they get; names, items and choices come from the same stream."""

    def __init__(self, rng, cap):
        self.rng, self.cap = rng, cap

    def randint(self, lo, hi):
        return self.rng.randint(lo, max(lo, min(hi, self.cap)) if self.cap else hi)

    def __getattr__(self, name):
        return getattr(self.rng, name)


class Problems:
    """Fresh problems: a question is never handed out twice."""

    def __init__(self, rng, max_operand=0):
        self.rng, self.seen = rng, set()
        self.draw = SmallNumbers(rng, max_operand)

    def next(self, template=None):
        for _ in range(1000):
            p = (template or self.rng.choice(TEMPLATES))(self.draw)
            if p.question not in self.seen:
                self.seen.add(p.question)
                return p
        raise SystemExit("make_corpus: ran out of distinct problems; ask for less text")


# ---- noise -----------------------------------------------------------------------------------------------------
NAV = ["Home", "About", "Blog", "Contact", "Login", "Sign up", "Shop", "FAQ", "Archive", "Forum", "Privacy Policy",
       "Terms of Use", "Sitemap", "Careers", "Help"]
BOILER = [
    "We use cookies to improve your experience. By continuing to browse this site you agree to our use of cookies. "
    "[Accept] [Manage preferences]",
    "This website uses cookies. Accept all cookies?",
    "Click here to subscribe to our newsletter!",
    "Subscribe now and get 10% off your first order.",
    "Share on Facebook | Share on Twitter | Pin it",
    "Read more >>",
    "Advertisement",
    "Sponsored content",
    "All rights reserved.",
    "Posted by admin in Uncategorized | Leave a comment",
    "You must be logged in to post a comment.",
    "Skip to main content",
    "Loading...",
    "Enable JavaScript to view this page.",
    "Related posts:",
    "Tags: math, homework, kids, school",
]
TAGS = ['<div class="post-body">', "</div>", "<p>", "</p>", "<br/>", "<br>", '<span style="color:#ff0000">',
        "</span>", "<li>", "</li>", "<ul>", "</ul>", '<a href="/page/2">', "</a>", "<b>", "</b>", "&nbsp;",
        "&amp;", "&lt;", "&gt;", "&quot;", "[[Category:Arithmetic]]", "{{cite web|url=http://example.com}}",
        "== See also ==", "'''", "[[File:Example.png|thumb]]", "{{stub}}", "<!-- end content -->"]
SUBJECTS = ["The weather", "My neighbour", "The river", "Our garden", "The old bridge", "The museum", "A small cafe",
            "The committee", "The festival", "Her grandmother", "The new phone", "The city council"]
VERBS = ["was", "seemed", "became", "remained", "looked", "felt"]
ADJS = ["quiet", "busy", "colourful", "expensive", "popular", "crowded", "calm", "strange", "famous", "bright"]
TAILS = ["last summer", "in the morning", "during the holidays", "after the storm", "on weekends",
         "for many years", "near the station", "at night"]


def noise_piece(rng, kind):
    if kind == "boilerplate":
        if rng.random() < 0.3:
            sep = rng.choice([" | ", " > ", " / ", " - "])
            return sep.join(rng.sample(NAV, rng.randint(3, 7)))
        s = rng.choice(BOILER)
        if rng.random() < 0.3:
            s = f"Copyright {rng.randint(1998, 2024)} {rng.choice(['MathHelp', 'KidsLearn', 'EduSite', 'Worksheets'])}"\
                f".com. {s}"
        return s
    if kind == "markup":
        return "".join(rng.choice(TAGS) + rng.choice(["", " ", "\n"]) for _ in range(rng.randint(1, 5))).strip()
    if kind == "unrelated":
        return " ".join(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(ADJS)} {rng.choice(TAILS)}."
                        for _ in range(rng.randint(1, 4)))
    if kind == "random":
        form = rng.randrange(4)
        if form == 0:
            return "".join(rng.choice("0123456789abcdef") for _ in range(rng.choice([16, 32, 40, 64])))
        if form == 1:
            n = rng.randint(12, 60)
            return "".join(rng.choice(string.ascii_letters + string.digits + "+/") for _ in range(n)) + "=" * (n % 3)
        if form == 2:
            return " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9)))
                            for _ in range(rng.randint(2, 8)))
        return f"session_id={''.join(rng.choice('0123456789ABCDEF') for _ in range(24))}&ref=" \
               f"{''.join(rng.choice(string.ascii_lowercase) for _ in range(8))}"
    raise ValueError(kind)


INSERT_KINDS = ["boilerplate", "markup", "unrelated", "random"]


def noisy_document(rng):
    """A whole document of noise: a web page's leftovers. Every character is in some span."""
    text, spans = "", []
    for i in range(rng.randint(2, 6)):
        kind = rng.choice(INSERT_KINDS)
        piece = noise_piece(rng, kind)
        start = len(text)
        if text:
            text += rng.choice(["\n", " ", "\n\n"])
        text += piece
        spans.append([start, len(text), kind])
    return text, spans


def sentence_starts(text):
    """Where a noise insertion may go: after each sentence's ". " (before the next sentence) of the answer."""
    answer = text.index("\nAnswer:")
    return [i + 2 for i in range(answer, len(text) - 1) if text[i] == "." and text[i + 1] == " "]


def insert(text, spans, at, piece, kind):
    """Inserts `piece` at `at`, shifting later spans; the new span covers what removal must take out."""
    for s in spans:
        if s[0] >= at:
            s[0] += len(piece)
            s[1] += len(piece)
    spans.append([at, at + len(piece), kind])
    spans.sort()
    return text[:at] + piece + text[at:]


def problem_with_noise(rng, problem):
    """A clean problem with noise inside: wrong arithmetic, insertions between sentences, a header or footer."""
    wrong = []
    text = None
    if rng.random() < 0.4:  # wrong arithmetic in an otherwise fine solution
        for _ in range(20):
            step = rng.randrange(len(problem.steps))
            rendered = problem.render((step, rng.choice([-10, -2, -1, 1, 2, 3, 10])))
            if rendered:
                text, wrong, _ = rendered
                break
    if text is None:
        text, wrong, _ = problem.render()
    spans = list(wrong)
    n_inserts = rng.randint(0 if wrong else 1, 3)
    for _ in range(n_inserts):
        kind = rng.choice(INSERT_KINDS)
        piece = noise_piece(rng, kind)
        where = rng.random()
        if where < 0.2:  # header
            text = insert(text, spans, 0, piece + "\n", kind)
        elif where < 0.4:  # footer
            text = insert(text, spans, len(text), "\n" + piece, kind)
        else:
            starts = sentence_starts(text)
            if not starts:
                text = insert(text, spans, len(text), "\n" + piece, kind)
                continue
            at = rng.choice(starts)
            # Never inside a span already there (an earlier insertion).
            if any(s[0] < at < s[1] for s in spans):
                continue
            text = insert(text, spans, at, piece + " ", kind)
    return text, spans


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hq-chars", type=int, default=300_000, help="size of hq.jsonl's text")
    ap.add_argument("--corpus-chars", type=int, default=1_500_000, help="size of corpus.jsonl's text")
    ap.add_argument("--noise-fraction", type=float, default=0.3, help="share of the corpus's characters in noise")
    ap.add_argument("--eval-problems", type=int, default=200)
    ap.add_argument("--eval-clean-chars", type=int, default=40_000)
    ap.add_argument("--max-operand", type=int, default=0,
                    help="cap on every number a problem draws (0: each template's own range, up to 60)")
    args = ap.parse_args()
    if not 0 <= args.noise_fraction < 1:
        raise SystemExit("make_corpus: --noise-fraction must be in [0, 1)")
    rng = random.Random(args.seed)
    if args.max_operand < 0:
        raise SystemExit("make_corpus: --max-operand must be >= 0")
    problems = Problems(rng, args.max_operand)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def write_jsonl(name, rows):
        with open(out / name, "w", encoding="ascii") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")

    # Held-out first (evaluation problems, the few-shot examples, clean held-out text); then hq and corpus draw
    # fresh problems only.
    eval_rows = []
    for _ in range(args.eval_problems):
        p = problems.next()
        text, _, final = p.render()
        eval_rows.append({"question": p.question, "answer": text[text.index("\nAnswer:") + 9:], "final": final})
    shots = [problems.next(t).render()[0] for t in (shopping_change, ages_older, marbles, sharing)]
    eval_clean, size = [], 0
    while size < args.eval_clean_chars:
        text = problems.next().render()[0]
        eval_clean.append({"text": text})
        size += len(text)

    hq, hq_size = [], 0
    while hq_size < args.hq_chars:
        text = problems.next().render()[0]
        hq.append({"text": text})
        hq_size += len(text)

    # Corpus: each document is chosen to pull the running noise share towards the target; whole noisy documents
    # get more common as the target grows, since noise inside a problem is only part of its text.
    whole_noisy = min(0.9, 0.2 + args.noise_fraction)
    corpus, total, noise = [], 0, 0
    by_kind = {}
    docs = {"clean": 0, "noisy": 0, "clean_with_noise": 0}
    while total < args.corpus_chars:
        if noise < args.noise_fraction * (total + 1):
            if rng.random() < whole_noisy:
                text, spans = noisy_document(rng)
                docs["noisy"] += 1
            else:
                text, spans = problem_with_noise(rng, problems.next())
                docs["clean_with_noise"] += 1
        else:
            text = "\n\n".join(problems.next().render()[0] for _ in range(rng.randint(1, 3)))
            spans = []
            docs["clean"] += 1
        corpus.append({"text": text, "noise": spans})
        total += len(text)
        for s in spans:
            noise += s[1] - s[0]
            by_kind[s[2]] = by_kind.get(s[2], 0) + s[1] - s[0]

    rng.shuffle(corpus)
    write_jsonl("eval_problems.jsonl", eval_rows)
    write_jsonl("eval_clean.jsonl", eval_clean)
    write_jsonl("hq.jsonl", hq)
    write_jsonl("corpus.jsonl", corpus)
    (out / "fewshot_prompt.txt").write_text("\n\n".join(shots) + "\n", encoding="ascii")
    stats = {
        "seed": args.seed,
        "max_operand": args.max_operand,
        "hq": {"documents": len(hq), "chars": hq_size},
        "corpus": {"documents": len(corpus), "chars": total, "noise_chars": noise,
                   "noise_fraction": round(noise / total, 4), "noise_chars_by_kind": dict(sorted(by_kind.items())),
                   "documents_by_kind": docs},
        "eval_problems": len(eval_rows),
        "eval_clean": {"documents": len(eval_clean), "chars": size},
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="ascii")
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
