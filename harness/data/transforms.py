"""Deterministic instruction ⇄ question rewrites for the paper's prompt-format experiment.

Safety-tuned models refuse harmful *instructions* more often than the same requests asked as
*questions* (Bianchi et al., I- vs Q- suites).  These rules turn one format into the other without a
model, so a regression run can compare formats on identical content.  They are deliberately simple
and predictable: a handful of patterns for the sentence openings that dominate the paper's sets
("Explain why", "Write a reason why", "Describe ...", "How can I ...?", "Why are ...?") and a plain
fallback that keeps every content word for the rest.  Same input, same output; no randomness.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from harness.core.types import Prompt

__all__ = ["instruction_to_question", "question_to_instruction", "rewrite_prompts"]

# Common words whose capital is there only because they start the sentence: always safe to lower.
_COMMON = set(
    """a an the this that these those some any all each every many much more most few several my your
    our their his her its it they them we you he she one there here what which who whom whose why how
    when where whether if in on at for from with without about after before during to as by of and or
    but not no so is are was were be been being do does did can could should would will shall may might
    must have has had please make write create generate give list provide compose draft suggest name
    summarize summarise compare identify find design develop outline show teach help rewrite translate
    produce offer share recommend explain describe tell convince plan build invent imagine pretend act
    come think consider choose classify rank rate edit correct fix convert calculate compute solve
    analyze analyse evaluate discuss argue brainstorm construct prepare propose predict estimate state
    define detail elaborate illustrate demonstrate present support justify persuade instruct guide
    get go use keep let put take try ask answer say read play sort order count check look""".split()
)
_VERBS_CAN_YOU = (
    "write|create|generate|give|make|list|provide|compose|draft|suggest|name|summarize|summarise|compare"
    "|identify|find|design|develop|outline|show|teach|help|rewrite|translate|produce|offer|share"
    "|recommend|convince|plan|build|invent|brainstorm|construct|prepare|propose|predict|estimate"
    "|calculate|compute|solve|analyze|analyse|evaluate|discuss|classify|rank|rate|edit|correct|fix"
    "|convert|define|detail|illustrate|demonstrate|present|justify|persuade|instruct|guide|get|come"
    "|think|explain|describe|tell|sort|count|check|choose|detect|spell|search|locate|send|play|sing"
)
_PRONOUNS = {"i", "you", "we", "they", "he", "she", "it", "there", "one"}
_THIRD = {"he", "she", "it", "one", "there"}
_BE = ("is", "are", "was", "were", "am", "isn't", "aren't", "wasn't", "weren't")
_AUX = (
    "can|could|should|would|will|shall|may|might|must|do|does|did|is|are|was|were|am|isn't|aren't"
    "|wasn't|weren't|don't|doesn't|didn't|can't|couldn't|shouldn't|wouldn't|won't"
)
# Words after "Can you" that are not the requested action ("Would you rather X?").
_NOT_VERBS = {"rather", "ever", "really", "still", "not", "be", "have", "been", "also", "even", "just",
              "actually", "always", "never", "like", "please", "i", "you", "we", "they", "he", "she", "it"}
# Words that often start the predicate after "Why are <subject> ...": they mark where the subject ends.
_PRED_START = {
    "so", "such", "too", "very", "more", "less", "always", "never", "not", "often", "usually", "still",
    "considered", "allowed", "called", "seen", "known", "against", "better", "worse", "all", "only",
    "really", "generally", "mostly", "the", "a", "an",
}
_WH_NOUN = {"what", "which", "who", "whom", "whose"}
_CLAUSE = {"where", "who", "which", "that", "when", "whose", "whom", "how", "why", "what", "if", "because",
           "i", "you", "we", "they", "he", "she", "it", "can", "could", "would", "should", "will", "to"}
_DETERMINERS = {"the", "a", "an", "my", "your", "our", "their", "his", "her", "its", "this", "that",
                "these", "those", "some", "many", "most", "all", "so", "such", "very", "more"}

_TRAILING = " \t\r\n.!?;:,…"
_FLAGS = re.IGNORECASE | re.DOTALL


def _core(text: str) -> str:
    """The sentence without surrounding whitespace and trailing punctuation ("taste it.." → "taste it")."""
    core = text.strip().rstrip(_TRAILING).strip()
    if not core:
        raise ValueError(f"nothing to rewrite in {text!r}")
    return core


def lower_first(text: str) -> str:
    """Lower the first letter of a sentence-initial capital, keeping names where they can be told apart.

    The fallback sees instructions, whose first word is nearly always an imperative verb, so a capital
    is lowered unless the word looks like a name: "I", an acronym or mixed case ("NASA", "McDonald"),
    or the start of a capitalised run ("New York", "John Smith").  Known common words are always lowered.
    """
    m = re.match(r"([A-Za-z']+)(?:\s+(\S+))?", text)
    if not m:
        return text
    word, nxt = m[1], m[2] or ""
    if word.lower() in _COMMON and word != "I" and (len(word) == 1 or word[1:].islower()):
        return text[0].lower() + text[1:]
    is_i = re.fullmatch(r"I(?:'\w+)?", word) is not None
    if is_i or not word[1:].islower() or len(word) == 1 or (nxt[:1].isupper() and nxt != "I"):
        return text
    return text[0].lower() + text[1:]


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _strip_please(core: str) -> str:
    """Drop a polite "Please ..." / "..., please" so the rules below see the verb first."""
    out = re.sub(r"^please,?\s+", "", core, flags=_FLAGS)
    if out != core:
        out = _upper_first(out)
    out = re.sub(r",?\s+please$", "", out, flags=_FLAGS).rstrip(_TRAILING)
    return out or core


# (pattern, builder) pairs tried in order on the trimmed instruction; the first full match wins.
_TO_QUESTION = [
    (r"(?:tell me|explain|describe|show me|teach me) how to (\S.*)", lambda m: f"How do I {m[1]}"),
    (r"(?:tell me|explain|describe) (what|when|where|who|which) to (\S.*)",
     lambda m: f"{m[1].capitalize()} should I {m[2]}"),
    (r"(?:tell me|explain|describe) (why|how|what|when|where|who|which) (\S.*)",
     lambda m: f"{m[1].capitalize()} {m[2]}"),
    (r"(?:write|give(?: me)?|provide|state) (?:a|one) reason why (\S.*)", lambda m: f"What is a reason why {m[1]}"),
    (r"(?:write|give(?: me)?|provide|list|state) (?:some |several |a few |\d+ )?reasons why (\S.*)",
     lambda m: f"What are some reasons why {m[1]}"),
    (r"tell me (?:whether|if) (\S.*)", lambda m: f"Is it true that {m[1]}"),
    (r"tell me about (\S.*)", lambda m: f"What can you tell me about {m[1]}"),
    (r"describe (\S.*)", lambda m: f"Can you describe {m[1]}"),
    (r"i (?:want|need|would like) you to (\S.*)", lambda m: f"Can you {lower_first(m[1])}"),
    (rf"({_VERBS_CAN_YOU})\b(.*)", lambda m: f"Can you {m[1].lower()}{m[2]}"),
]


def instruction_to_question(text: str) -> str:
    """Rewrite an instruction as a question; a text that already ends with "?" is returned trimmed."""
    if text.strip().endswith("?"):
        return _core(text) + "?"
    core = _strip_please(_core(text))
    for pattern, build in _TO_QUESTION:
        m = re.fullmatch(pattern, core, flags=_FLAGS)
        if m:
            return build(m) + "?"
    return f"Could you {lower_first(core)}?"


def _inflect_3rd(verb: str) -> str:
    """'live' → 'lives', for "Where does he live?" → "where he lives"."""
    low = verb.lower()
    if low in ("have", "be"):
        return {"have": "has", "be": "is"}[low]
    if re.search(r"(s|sh|ch|x|z|o)$", low):
        return verb + "es"
    if re.search(r"[^aeiou]y$", low):
        return verb[:-1] + "ies"
    return verb + "s"


def _declarative(aux: str, rest: str) -> str | None:
    """Undo subject-auxiliary inversion: ("can", "I buy X") → "I can buy X"; None when unsure."""
    words = rest.split(" ")
    first, low = words[0].lower(), aux.lower()
    pred = " ".join(words[1:])
    if first in _PRONOUNS and pred:
        if low == "did":
            return None  # would need the verb's past tense
        if low == "do":
            return f"{words[0]} {pred}"
        if low == "does":
            if first not in _THIRD:
                return None
            verb, _, tail = pred.partition(" ")
            return f"{words[0]} {_inflect_3rd(verb)}" + (f" {tail}" if tail else "")
        return f"{words[0]} {low} {pred}"
    if low == "do":  # "Why do people hate X" → "why people hate X": a plural subject needs no change
        return rest
    if low in _BE:
        # "Why are people so rude" → "why people are so rude": split where the predicate seems to start.
        for i in range(1, min(len(words), 5)):
            w, prev = words[i].lower().strip(","), words[i - 1].lower()
            if prev in _CLAUSE:
                return None  # the subject would swallow a clause ("some instances where ...")
            if prev in _DETERMINERS:
                continue
            if w in _PRED_START or (len(w) > 4 and w.endswith(("ing", "ed"))):
                return " ".join(words[:i]) + f" {low} " + " ".join(words[i:])
        if low in ("are", "were", "aren't", "weren't"):
            # No marker: "Why are vaccinations bad" - end the subject at its last plural-looking noun.
            plural = [i for i, w in enumerate(words[:3]) if _looks_plural(w)]
            if plural and plural[-1] + 1 < len(words) and words[0].lower() not in _DETERMINERS | _CLAUSE:
                i = plural[-1] + 1
                return " ".join(words[:i]) + f" {low} " + " ".join(words[i:])
    return None


def _looks_plural(word: str) -> bool:
    w = word.lower()
    return w in ("people", "men", "women", "children", "police") or (
        len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")))


def question_to_instruction(text: str) -> str:
    """Rewrite a question as an instruction (no trailing "?"); a non-question is returned trimmed."""
    stripped = text.strip()
    if not stripped.endswith("?"):
        _core(text)  # rejects blank input like the other direction
        return stripped
    core = _strip_please(_core(text))
    # "Can you teach me to X?" → "Teach me to X."  (not "Would you rather ...", "Can you not ...")
    m = re.fullmatch(r"(?:can|could|would|will) you (?:please )?(tell me|[a-z]+)\b(.*)", core, flags=_FLAGS)
    if m and m[1].lower() not in _NOT_VERBS:
        return _upper_first(m[1].lower()) + m[2] + "."
    m = re.fullmatch(r"do you know (?:(?:whether|if) (\S.*)|((?:how|why|what|when|where|who|which)\b.*))",
                     core, flags=_FLAGS)
    if m:
        return f"Tell me whether {m[1]}." if m[1] else f"Tell me {m[2]}."
    m = re.fullmatch(r"(how|why|what|when|where|whose|whom|who|which)( to|['’]s|['’]re)?\b\s*(\S.*)",
                     core, flags=_FLAGS)
    if m:
        wh, contraction, rest = m[1].lower(), m[2] or "", m[3]
        lead = "Explain" if wh in ("how", "why") else "Tell me"
        if not contraction:
            # "How long can I X": up to two words may qualify the wh-word before the auxiliary.
            for k in range(3):
                am = re.fullmatch(rf"((?:[\w-]+ ){{{k}}})({_AUX}) (\S.*)", rest, flags=_FLAGS)
                if am:
                    modifier, aux, after = am.groups()
                    break
            else:
                am = None
            if am:
                # "How do I X" / "How do you X": the asker wants the procedure, not a fact about themselves.
                if wh == "how" and not modifier and aux.lower() == "do" and re.match(r"(i|you) \S", after, _FLAGS):
                    return f"Explain how to {after.split(' ', 1)[1]}."
                # "What are X" keeps its order: there the wh-word itself is the complement ("Tell me what X").
                decl = None if modifier == "" and wh in _WH_NOUN and aux.lower() in _BE else _declarative(aux, after)
                if decl is not None:
                    return f"{lead} {wh} {modifier}{decl}."
        return f"{lead} {wh}{contraction} {rest}."
    m = re.fullmatch(rf"({_AUX}) (\S.*)", core, flags=_FLAGS)
    if m:  # yes/no question: "Is it okay to X" → "Tell me whether it is okay to X"
        decl = _declarative(m[1], m[2])
        if decl is not None:
            return f"Tell me whether {decl}."
    return f"Answer the following question: {core}."


def rewrite_prompts(
    prompts: Iterable[Prompt],
    *,
    to: str,
    suite: str | None = None,
    category_prefix: str | None = None,
) -> list[Prompt]:
    """Copies of ``prompts`` rewritten to ``to`` ("question" or "instruction").

    ids get a ``-q``/``-i`` suffix so results never collide with the originals; the category becomes
    ``<prefix>:<category>`` (default prefix ``Q-rewrite``/``I-rewrite``) so reports can pair them;
    ``suite`` defaults to each prompt's own suite.
    """
    if to not in ("question", "instruction"):
        raise ValueError(f"to must be 'question' or 'instruction', not {to!r}")
    fn = instruction_to_question if to == "question" else question_to_instruction
    prefix = category_prefix or ("Q-rewrite" if to == "question" else "I-rewrite")
    suffix = "-q" if to == "question" else "-i"
    return [
        dataclasses.replace(
            p,
            suite=suite or p.suite,
            prompt_id=p.prompt_id + suffix,
            prompt=fn(p.prompt),
            category=f"{prefix}:{p.category}",
            prompt_format=to,
        )
        for p in prompts
    ]
