"""Math word problems from a local JSONL file (GSM8K / MATH style), verified with math-verify.

GSM8K answers ``"... #### 42"`` give the reference ``"42"``; a ``\\boxed{...}`` in the answer is
used likewise. The model's final answer is the last ``\\boxed{...}``, else the text after the last
``####``, else the last number; it is compared with ``math_verify.parse``/``verify`` and, failing
that, numerically. Model output is only ever parsed, never evaluated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import string
import threading
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from ablate.errors import ConfigError
from ablate.spec.params import Frac, NonNegInt, PosInt, require
from ablate.tasks.base import Problem, Reward, Task

PRINTABLE = "".join(c for c in string.printable if c not in "\r\x0b\x0c")  # digits, letters, punct, " \t\n"
_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_CALC = re.compile(r"<<[^<>]*>>")  # GSM8K calculator annotations
MAX_ANSWER_CHARS = 64
OVERLONG = ("error", "truncate", "skip")
log = logging.getLogger(__name__)


def _clean_number(s: str) -> str:
    s = s.strip().rstrip(".").replace(",", "").replace("$", "").strip()
    return s


def last_boxed(text: str) -> Optional[str]:
    """Content of the last ``\\boxed{...}`` (balanced braces), or None."""
    i = text.rfind("\\boxed")
    while i != -1:
        j = text.find("{", i)
        if j != -1 and text[i + len("\\boxed"):j].strip() == "":
            depth, k = 0, j
            while k < len(text):
                if text[k] == "{":
                    depth += 1
                elif text[k] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[j + 1:k].strip()
                k += 1
        i = text.rfind("\\boxed", 0, i)
    return None


def extract_answer(text: str) -> Optional[str]:
    """The final answer of a solution: last ``\\boxed{}``, else after the last ``####``, else the
    last number. None when there is none."""
    if not isinstance(text, str):
        return None
    boxed = last_boxed(text)
    if boxed:
        return boxed
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip()
        nums = _NUM.findall(tail)
        if nums:
            return _clean_number(nums[0])
        tail = tail.splitlines()[0].strip() if tail else ""
        return tail or None
    nums = _NUM.findall(text)
    return _clean_number(nums[-1]) if nums else None


def _to_float(s: str) -> Optional[float]:
    s = _clean_number(s)
    try:
        if re.fullmatch(r"-?\d+/\d+", s):
            a, b = s.split("/")
            return int(a) / int(b) if int(b) != 0 else None
        if re.fullmatch(r"-?(\d+\.?\d*|\.\d+)", s):
            return float(s)
    except (ValueError, OverflowError):
        return None
    return None


def answers_match(reference: str, predicted: str) -> bool:
    """math-verify equivalence of two final answers, with a plain numeric fallback."""
    if predicted is None or reference is None:
        return False
    if len(predicted) > MAX_ANSWER_CHARS:
        return False
    main = threading.current_thread() is threading.main_thread()
    # math-verify's timeout uses SIGALRM, which only works in the main thread; off it, keep
    # sympy away from inputs that could explode (towers of powers).
    use_mv = main or not any(t in predicted for t in ("^", "**", "!"))
    if use_mv:
        try:
            from math_verify import parse, verify
            to = 3 if main else None
            gold = parse(reference if "$" in reference or "\\" in reference else f"${reference}$",
                         parsing_timeout=to)
            pred = parse(predicted if "$" in predicted or "\\" in predicted else f"${predicted}$",
                         parsing_timeout=to)
            if gold and pred and verify(gold, pred, timeout_seconds=to):
                return True
        except Exception:  # math-verify/sympy failures count as "not verified"
            pass
    a, b = _to_float(reference), _to_float(predicted)
    if a is None or b is None:
        return _clean_number(reference) == _clean_number(predicted)
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _resolve_path(path: str) -> Path:
    """``path`` as given; a relative path missing from the cwd is also tried against Hydra's
    original working directory (Hydra may chdir into the run directory)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.is_file():
        return p.resolve() if p.exists() else p
    try:
        from hydra.core.hydra_config import HydraConfig
        if HydraConfig.initialized():
            alt = Path(HydraConfig.get().runtime.cwd) / p
            if alt.is_file():
                return alt.resolve()
    except Exception:  # hydra absent or not running
        pass
    return p


class JsonlMath(Task):
    """Problems from ``path`` (one JSON object per line); a fixed ``eval_fraction`` is held out."""

    name = "jsonl_math"
    reward_names = ("correct", "format")

    def __init__(self, path: Optional[str], question_key: str = "question", answer_key: str = "answer",
                 prompt_template: str = "Q: {question}\nA: ", eval_fraction: Frac = 0.2,
                 seed: NonNegInt = 0, demo_key: Optional[str] = None, max_new_tokens: PosInt = 128,
                 max_chars: PosInt = 8192, on_overlong: Literal[OVERLONG] = "error"):
        """Rows are checked as they are read: a null, missing, empty or non-text field is an error
        naming its line. A question, answer or demonstration longer than ``max_chars`` is an error
        (``on_overlong: error``), or its row is dropped (``skip``) or cut (``truncate``: questions
        keep their first ``max_chars`` characters, demonstrations their last, which hold the final
        answer); both are logged with the line numbers."""
        if path is None or str(path) in ("", "???"):
            raise ConfigError("task.path: required (a local .jsonl file of problems)")
        p = _resolve_path(str(path))
        if not p.is_file():
            raise ConfigError(f"task.path: file not found: {p}; allowed: an existing local JSONL file")
        require("{question}" in prompt_template, self, "prompt_template", prompt_template,
                "a string containing '{question}'")
        for fld, key in (("question_key", question_key), ("answer_key", answer_key), ("demo_key", demo_key)):
            require(key != "", self, fld, key, "a field name (a non-empty string)")
        self.path, self.question_key, self.answer_key = str(p), question_key, answer_key
        self.prompt_template, self.eval_fraction, self.seed = prompt_template, eval_fraction, seed
        self.demo_key = demo_key
        self.max_new_tokens = int(max_new_tokens)
        self.max_chars, self.on_overlong = int(max_chars), on_overlong
        raw = p.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"task.path: {p} is not UTF-8 text ({e.reason} at byte {e.start})") from None
        problems: list[Problem] = []
        altered: list[int] = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"task.path: {p}:{lineno} is not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ConfigError(f"task.path: {p}:{lineno} is not a JSON object")
            for fld, key in (("question_key", question_key), ("answer_key", answer_key),
                             ("demo_key", demo_key)):
                if key is None:
                    continue
                if key not in obj:
                    raise ConfigError(f"task.{fld}: key {key!r} missing in {p}:{lineno}; "
                                      f"keys there: {', '.join(sorted(obj))}")
                v = obj[key]
                if v is None or isinstance(v, (bool, dict, list)) or not str(v).strip():
                    raise ConfigError(f"task.path: {p}:{lineno}: {key!r} is {json.dumps(v)[:40]}; "
                                      "allowed: a non-empty string or number")
            prob = self._problem(len(problems), obj, f"{p}:{lineno}")
            if prob is None:
                altered.append(lineno)
                continue
            if prob.meta.pop("truncated", False):
                altered.append(lineno)
            problems.append(prob)
        if altered:
            what = "truncated" if on_overlong == "truncate" else "skipped"
            shown = ", ".join(map(str, altered[:10])) + (", ..." if len(altered) > 10 else "")
            log.warning("task: %d over-long row(s) of %s %s (task.on_overlong=%s, task.max_chars=%d): "
                        "lines %s", len(altered), p, what, on_overlong, self.max_chars, shown)
        self.num_overlong = len(altered)
        if len(problems) < 2:
            raise ConfigError(f"task.path: {p} holds {len(problems)} usable problem(s); allowed: a file with at least 2")
        if not any(_to_float(q.answer) is not None for q in problems):
            raise ConfigError(f"task.answer_key: no reference answer in {p} is a number (e.g. "
                              f"{problems[0].answer[:40]!r}); allowed: a field holding numeric "
                              "answers (the verifier compares numbers)")
        self._spec = dict(path=str(p), sha256=hashlib.sha256(raw).hexdigest(), question_key=question_key,
                          answer_key=answer_key, prompt_template=prompt_template,
                          eval_fraction=self.eval_fraction, seed=self.seed, demo_key=demo_key,
                          max_new_tokens=self.max_new_tokens, max_chars=self.max_chars,
                          on_overlong=on_overlong)
        order = np.random.default_rng(self.seed).permutation(len(problems))
        n_eval = int(round(self.eval_fraction * len(problems)))
        if self.eval_fraction > 0:
            n_eval = min(max(n_eval, 1), len(problems) - 1)
        self._eval = [problems[i] for i in order[:n_eval]]
        self._train = [problems[i] for i in order[n_eval:]]

    def _fit(self, where: str, what: str, text: str, keep_tail: bool) -> Optional[str]:
        """``text`` within ``max_chars``: as is, cut (truncate), None (skip), or an error."""
        if len(text) <= self.max_chars:
            return text
        if self.on_overlong == "error":
            raise ConfigError(f"task.max_chars: {where}: {what} has {len(text)} characters, over "
                              f"task.max_chars={self.max_chars}; allowed: shorten it, raise "
                              "task.max_chars, or set task.on_overlong=truncate|skip")
        if self.on_overlong == "skip":
            return None
        return text[-self.max_chars:] if keep_tail else text[:self.max_chars]

    def _problem(self, idx: int, row: dict, where: str) -> Optional[Problem]:
        raw_q = str(row[self.question_key])
        raw_answer = str(row[self.answer_key])
        question = self._fit(where, repr(self.question_key), raw_q, keep_tail=False)
        ref = extract_answer(raw_answer) if ("####" in raw_answer or "\\boxed" in raw_answer) else None
        ref = ref if ref is not None else _clean_number(raw_answer)
        if self.on_overlong == "truncate" and len(ref) > self.max_chars:
            raise ConfigError(f"task.max_chars: {where}: the reference answer has {len(ref)} "
                              f"characters, over task.max_chars={self.max_chars} (an answer cannot "
                              "be truncated); allowed: fix the row, raise task.max_chars, or set "
                              "task.on_overlong=skip")
        ref_fit = self._fit(where, "the reference answer", ref, keep_tail=True)
        if self.demo_key is not None:
            demo_raw, demo_what = str(row[self.demo_key]), repr(self.demo_key)
        elif "####" in raw_answer or "\\boxed" in raw_answer:
            demo_raw, demo_what = _CALC.sub("", raw_answer).strip(), repr(self.answer_key)
        else:
            demo_raw, demo_what = ref, repr(self.answer_key)
        demo = self._fit(where, demo_what, demo_raw, keep_tail=True)
        if question is None or ref_fit is None or demo is None:
            return None
        try:
            prompt = self.prompt_template.format(question=question)
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(f"task.prompt_template: cannot format ({e}); use only {{question}} "
                              "(double other braces)") from None
        meta = {"index": idx, "line": int(where.rsplit(":", 1)[1])}
        if question != raw_q or demo != demo_raw:
            meta["truncated"] = True
        return Problem(prompt=prompt, answer=ref, demo=demo, meta=meta, question=question)

    def longest_example(self) -> Optional[tuple[int, int]]:
        """(line, characters) of the longest prompt + demonstration (warm-start sequence)."""
        probs = self._train + self._eval
        if not probs:
            return None
        p = max(probs, key=lambda q: len(q.prompt) + len(q.demo or q.answer))
        return int(p.meta.get("line", 0)), len(p.prompt) + len(p.demo or p.answer)

    def train_problems(self, n: int, rng: np.random.Generator) -> list[Problem]:
        idx = rng.choice(len(self._train), size=n, replace=n > len(self._train))
        return [self._train[int(i)] for i in idx]

    def eval_problems(self, n: int) -> list[Problem]:
        """The first ``n`` held-out problems (all of them when the split is smaller)."""
        return list(self._eval[:n])

    @property
    def num_train(self) -> int:
        return len(self._train)

    @property
    def num_eval(self) -> int:
        return len(self._eval)

    def verify(self, problem: Problem, completion: str) -> Reward:
        pred = extract_answer(completion)
        ok_format = pred is not None
        correct = ok_format and answers_match(problem.answer, pred)
        return Reward(total=float(correct), components={"correct": float(correct),
                                                        "format": float(ok_format)})

    def alphabet(self) -> str:
        return PRINTABLE
