"""Logic-of-Thought augmentation by rules: statements read from the input, extended with logical laws in Python.

Logic-of-Thought (LoT) extracts propositions and implications from a problem, extends them with logical laws
(contraposition, transitivity) and adds the derived statements to the input as text, so the model reads them
before it answers. This module does the extraction with rules where the input's language is regular enough
(no model call, so it costs no tokens and cannot hallucinate a premise):

* truth-teller puzzles (BBH web_of_lies): "A says B lies." is A <-> not B; "A tells the truth." a fact;
* categorical premises (BBH formal_fallacies, syllogisms): "whoever is X is (not) Y", "every X is Y",
  "no X is Y", "being X is sufficient / necessary for being Y" - read only before the conclusion marker
  ("Therefore", "Hence", ...), so the argument's own conclusion is never used as a premise;
* plain conditionals anywhere: "If A, then B."

Derived statements are implications the input does not state: contrapositives and chains (A -> B -> C gives
A -> C). Facts are not applied to them (no modus ponens), so the model still draws the conclusion itself.
An input where no rule applies is left unchanged (:func:`augment` says so by returning no statements).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

RULES_VERSION = "1"  # part of the cache key: new rules, new results
HEADER = "Logical consequences of the statements above (contraposition, transitivity):"
MAX_DERIVED = 8


@dataclass(frozen=True, order=True)
class Lit:
    atom: str
    neg: bool = False

    def __invert__(self) -> Lit:
        return Lit(self.atom, not self.neg)


Implication = tuple[Lit, Lit]


def closure(rules: set[Implication]) -> set[Implication]:
    """Every implication that follows from ``rules`` by contraposition and transitivity (a -> a excluded)."""
    edges: dict[Lit, set[Lit]] = {}
    for a, b in rules:
        edges.setdefault(a, set()).add(b)
        edges.setdefault(~b, set()).add(~a)
    out: set[Implication] = set()
    for start in edges:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        out.update((start, end) for end in seen if end != start)
    return out


# -- truth-tellers -----------------------------------------------------------------------------------------

_NAME = r"([A-Z][\w'-]*(?: [A-Z][\w'-]*)?)"
_SAYS = re.compile(_NAME + r" says " + _NAME + r" (tells the truth|lies)\.")
_FACT = re.compile(r"(?:^|[.:?] )" + _NAME + r" (tells the truth|lies)\.")
_ASK = re.compile(r"Does " + _NAME + r" tell the truth\?")


def _truth_text(lit: Lit) -> str:
    return f"{lit.atom} {'lies' if lit.neg else 'tells the truth'}"


def truth_tellers(text: str) -> list[str]:
    says = _SAYS.findall(text)
    if not says:
        return []
    rules: set[Implication] = set()
    for speaker, subject, claim in says:
        a, b = Lit(speaker), Lit(subject, claim == "lies")
        rules |= {(a, b), (b, a)}  # a truthful speaker's claim holds; a liar's claim is false
    stated = {(a, b) for a, b in rules} | {(~a, ~b) for a, b in rules}
    starts = {Lit(name) for name, _ in _FACT.findall(text) if not _SAYS.search(name)}
    ask = _ASK.search(text)
    target = ask.group(1) if ask else None

    def relevant(a: Lit, b: Lit) -> bool:  # from a stated fact's person to the asked one (both polarities)
        return Lit(a.atom) in starts and (target is None or b.atom == target)

    derived = sorted((a, b) for a, b in closure(rules) if (a, b) not in stated and a.atom != b.atom and relevant(a, b))
    return [f"If {_truth_text(a)}, then {_truth_text(b)}." for a, b in derived]


# -- categorical premises ------------------------------------------------------------------------------------

_CONCLUSION = re.compile(
    r"\b(Therefore|Hence|Thus|So|Consequently|In consequence|It follows that|We may conclude|"
    r"From this follows|Which derives from|This means)\b"
)
_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.IGNORECASE)
_PATTERNS: list[tuple[re.Pattern, Callable[[re.Match], Implication]]] = []


_SHOWN: dict[str, str] = {}  # atom -> the phrase as the input wrote it (with its article), per call


def _term(text: str) -> Lit:
    text = text.strip().strip(",.\"'")
    neg = False
    if text.startswith("not "):
        neg, text = True, text[4:]
    atom = _ARTICLE.sub("", text)
    if text != atom or atom not in _SHOWN:  # prefer the form with an article ("a cousin of Chris")
        _SHOWN[atom] = text
    return Lit(atom, neg)


def _pattern(regex: str):
    def register(fn: Callable[[re.Match], Implication]):
        _PATTERNS.append((re.compile(regex, re.IGNORECASE), fn))
        return fn

    return register


_X = r"((?:not )?(?:a |an |the )?[^,.;:]+?)"


@_pattern(r"\bwhoever is " + _X + r" is " + _X + r"(?:[.,;]|$)")
def _whoever(m):
    return _term(m.group(1)), _term(m.group(2))


@_pattern(r"\bevery(?:one who is| )\s*" + _X + r" is " + _X + r"(?:[.,;]|$)")
def _every(m):
    return _term(m.group(1)), _term(m.group(2))


@_pattern(r"\bno " + _X + r" is " + _X + r"(?:[.,;]|$)")
def _no(m):
    return _term(m.group(1)), ~_term(m.group(2))


@_pattern(r"\bbeing " + _X + r" is sufficient for (not )?being " + _X + r"(?:[.,;]|$)")
def _sufficient(m):
    then = _term(m.group(3))
    return _term(m.group(1)), ~then if m.group(2) else then


@_pattern(r"\b(?:being|to be) " + _X + r" is necessary for (not )?being " + _X + r"(?:[.,;]|$)")
def _necessary(m):
    cond = _term(m.group(3))
    return (~cond if m.group(2) else cond), _term(m.group(1))


@_pattern(
    r"\bif (?:someone|somebody|something) is " + _X + r", then (?:they are|it is|he is|she is) " + _X + r"(?:[.,;]|$)"
)
def _if_someone(m):
    return _term(m.group(1)), _term(m.group(2))


def _category_text(lit: Lit, shown: dict[str, str]) -> str:
    text = shown.get(lit.atom, lit.atom)
    if text == lit.atom and " of " in text:  # "every ingredient of X" -> "an ingredient of X"
        text = ("an " if text[:1] in "aeiou" else "a ") + text
    return ("not " if lit.neg else "") + text


def _premises(text: str) -> str:
    """The text before the argument's conclusion (all of it when there is no conclusion marker)."""
    start = text.lower().find("argument")
    body = text[start:] if start >= 0 else text
    m = _CONCLUSION.search(body)
    return body[: m.start()] if m else body


def categorical(text: str) -> list[str]:
    premises = _premises(text)
    _SHOWN.clear()
    rules: set[Implication] = set()
    for sentence in re.split(
        r"(?<=[.;])\s+|\b(?:First|Second|Third|Fourth|Next|Moreover|Plus|Also|Furthermore),", premises
    ):
        for regex, make in _PATTERNS:
            for m in regex.finditer(sentence or ""):
                a, b = make(m)
                compound = any(re.search(r"\b(or|and|neither|nor|both|either|who|whoever)\b", t.atom) for t in (a, b))
                if a.atom and b.atom and a.atom != b.atom and not compound:  # "X or not Y" is no literal
                    rules.add((a, b))
                break
    if not rules:
        return []
    shown = dict(_SHOWN)
    derived = sorted(closure(rules) - rules, key=lambda ab: (ab[0].neg, ab[1].neg, ab))  # contrapositives count
    return [f"Whoever is {_category_text(a, shown)} is {_category_text(b, shown)}." for a, b in derived]


# -- plain conditionals ---------------------------------------------------------------------------------

_IF_THEN = re.compile(r"\bIf ([^,.?]+), then ([^.?]+)\.")


def _clause_text(lit: Lit) -> str:
    return f"it is not the case that {lit.atom}" if lit.neg else lit.atom


def conditionals(text: str) -> list[str]:
    rules = {(Lit(a.strip()), Lit(b.strip())) for a, b in _IF_THEN.findall(text)}
    rules = {(a, b) for a, b in rules if not a.atom.lower().startswith(("someone", "somebody", "something"))}
    if not rules:
        return []
    derived = sorted(closure(rules) - rules)
    return [f"If {_clause_text(a)}, then {_clause_text(b)}." for a, b in derived]


def derive(text: str) -> list[str]:
    """The derived statements for one input (at most :data:`MAX_DERIVED`, shortest first), or [] if no rule
    applies. The first reader that finds statements wins (an input is one kind of problem)."""
    for reader in (truth_tellers, categorical, conditionals):
        found = reader(text)
        if found:
            return sorted(dict.fromkeys(found), key=len)[:MAX_DERIVED]
    return []


def augment(text: str) -> tuple[str, list[str]]:
    """(the input with the derived statements appended, the statements); the input unchanged when none."""
    found = derive(text)
    if not found:
        return text, []
    return text.rstrip() + "\n\n" + HEADER + "\n" + "\n".join(f"- {s}" for s in found), found
