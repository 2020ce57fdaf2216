"""RouteLLM's evaluation records: GPT-4 Turbo against Mixtral 8x7B.

MMLU (14,042 prompts, verdicts only), GSM8K (1,319 prompts with responses) and
MT-Bench (80 questions, their first turn; GPT-4 judge ratings 1-10 of that turn,
scored here as rating / 10). Items
RouteLLM lists as overlapping its router's training data are flagged
``contaminated`` in their meta.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from xrouter.core.errors import SourceFormatError
from xrouter.records import verifiers
from xrouter.records.schema import Item
from xrouter.records.sources.base import (
    Origin,
    PriceBook,
    Source,
    SourceBatch,
    read_csv,
    read_jsonl,
    reading,
)

__all__ = ["RouteLLM"]

_MODELS = ("gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1")
_GSM = "evals/gsm8k/gsm8k_responses.csv"
_GSM_GOLD = "evals/gsm8k/test.jsonl"
_MT_QUESTIONS = "evals/mt_bench/question.jsonl"
_MT_JUDGEMENTS = "evals/mt_bench/judgements.jsonl"
# The prompts of each task that RouteLLM's routers were trained on.
_CONTAMINATED = tuple(
    f"evals/{task}/contaminated_prompts.jsonl" for task in ("mmlu", "gsm8k", "mt_bench")
)


# The 57 subjects of MMLU (Hendrycks et al. 2021), one response file each.
_MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
    "college_biology", "college_chemistry", "college_computer_science",
    "college_mathematics", "college_medicine", "college_physics", "computer_security",
    "conceptual_physics", "econometrics", "electrical_engineering",
    "elementary_mathematics", "formal_logic", "global_facts", "high_school_biology",
    "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics",
    "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history",
    "high_school_world_history", "human_aging", "human_sexuality", "international_law",
    "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios",
    "nutrition", "philosophy", "prehistory", "professional_accounting",
    "professional_law", "professional_medicine", "professional_psychology",
    "public_relations", "security_studies", "sociology", "us_foreign_policy",
    "virology", "world_religions",
)  # fmt: skip


class RouteLLM(Source):
    name = "routellm"
    folder = "routellm"
    origins = (
        Origin(
            repo="lm-sys/RouteLLM",
            commit="0b64fdafe049e596a3f5657c219329f24af24198",
            patterns=(
                "routellm/evals/mmlu/responses/*.csv",
                "routellm/evals/*/contaminated_prompts.jsonl",
                "routellm/evals/gsm8k/*",
                "routellm/evals/mt_bench/*.jsonl",
                "benchmarks/mt-bench/*.jsonl",
            ),
        ),
    )

    def _mmlu_files(self, root: Path) -> list[Path]:
        """The MMLU response files, one per subject; a missing subject is named
        (without it, its items would silently be left out)."""
        files = self.glob(root, "evals/mmlu/responses", "mmlu_*.csv")
        found = {f.name.removeprefix("mmlu_").removesuffix(".csv") for f in files}
        missing = [s for s in _MMLU_SUBJECTS if s not in found]
        if missing:
            raise SourceFormatError(
                f"{files[0].parent} lacks mmlu_{missing[0]}.csv"
                f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''} of "
                f"the {len(_MMLU_SUBJECTS)} MMLU subjects: point --from at a complete "
                "copy of the data (see `xrouter data pull`)"
            )
        return files

    def files(self, root: Path) -> list[Path]:
        named = [_GSM, _GSM_GOLD, _MT_QUESTIONS, _MT_JUDGEMENTS, *_CONTAMINATED]
        return self._mmlu_files(root) + [self.require(root, n) for n in named]

    def read(
        self, root: Path, prices: PriceBook, advance: Callable[[], None]
    ) -> Iterator[SourceBatch]:
        base = root / self.folder
        models = {m: prices.model_id(m, base) for m in _MODELS}
        dirty = _contaminated(base)
        for file in self._mmlu_files(root):
            yield _mmlu(file, models, prices, dirty.get("mmlu", set()))
            advance()
        yield _gsm8k(base, models, prices, dirty.get("gsm8k", set()))
        advance()
        advance()
        yield _mt_bench(base, models, prices, dirty.get("mt_bench", set()))
        advance()
        advance()


def _contaminated(base: Path) -> dict[str, set[str]]:
    flagged: dict[str, set[str]] = {}
    for name in _CONTAMINATED:
        file = base / name
        with reading(file):
            rows = read_jsonl(file)
            flagged[Path(name).parent.name] = {
                str(r["eval_prompt"]).strip() for r in rows
            }
    return flagged


def _verdict(value: str, file: Path, line: int, column: str) -> float:
    if value not in ("True", "False"):
        raise SourceFormatError(
            f"{file}, line {line}: column {column!r} holds {value!r}, expected True "
            "or False"
        )
    return 1.0 if value == "True" else 0.0


def _mmlu(
    file: Path, models: dict[str, str], prices: PriceBook, dirty: set[str]
) -> SourceBatch:
    subject = file.stem.removeprefix("mmlu_")
    batch = SourceBatch()
    with reading(file):
        for number, (line, row) in enumerate(read_csv(file)):
            prompt = row.get("prompt")
            if prompt is None:
                raise SourceFormatError(f"{file}: no 'prompt' column")
            item = Item(
                item_id=f"routellm/mmlu/{subject}-{number}",
                source="routellm",
                task="mmlu",
                messages=(("user", prompt),),
                verifier="choice",
                meta=_meta(prompt, dirty, subject=subject),
            )
            batch.items.append(item)
            for name, model in models.items():
                score = _verdict(row.get(name, ""), file, line, name)
                batch.records.append(
                    prices.estimate(item, model, None, score, score_origin="source")
                )
    return batch


def _meta(prompt: str, dirty: set[str], **extra: str) -> dict[str, Any]:
    meta: dict[str, Any] = dict(extra)
    if prompt.strip() in dirty:
        meta["contaminated"] = True
    return meta


def _gsm8k(
    base: Path, models: dict[str, str], prices: PriceBook, dirty: set[str]
) -> SourceBatch:
    gold = {}
    with reading(base / _GSM_GOLD):
        for row in read_jsonl(base / _GSM_GOLD):
            gold[str(row["question"]).strip()] = str(row["answer"]).split("####")[-1]
    file = base / _GSM
    batch = SourceBatch()
    with reading(file):
        for number, (line, row) in enumerate(read_csv(file)):
            prompt = row["prompt"]
            answer = gold.get(prompt.strip())
            item = Item(
                item_id=f"routellm/gsm8k/{number}",
                source="routellm",
                task="gsm8k",
                messages=(("user", prompt),),
                gold=answer.strip().replace(",", "") if answer else None,
                verifier="gsm8k",
                meta=_meta(prompt, dirty),
            )
            batch.items.append(item)
            for name, model in models.items():
                score = _verdict(row.get(name, ""), file, line, name)
                text = row.get(f"{name}_response")
                extracted = verifiers.extract_answer("gsm8k", text) if text else None
                batch.records.append(
                    prices.estimate(
                        item,
                        model,
                        text,
                        score,
                        score_origin="source",
                        extracted=extracted,
                    )
                )
    return batch


def _mt_bench(
    base: Path, models: dict[str, str], prices: PriceBook, dirty: set[str]
) -> SourceBatch:
    # An item holds the question's first turn, so it is scored by the judge's
    # ratings of the first turn alone; FastChat writes -1 for a rating it could
    # not read from the judge, which is no rating.
    ratings: dict[tuple[str, str], list[float]] = defaultdict(list)
    file = base / _MT_JUDGEMENTS
    with reading(file):
        rows = read_jsonl(file)
        if not rows:
            raise SourceFormatError(f"{file} holds no judgements; fetch it again")
        for line, row in enumerate(rows, 1):
            score = float(row["score"])
            if score == -1:
                continue
            if not 1 <= score <= 10:
                raise SourceFormatError(
                    f"{file}, judgement {line}: rating {score:g} is not from 1 to 10 "
                    "(or -1, unread); fetch the file again"
                )
            if int(row.get("turn", 1)) == 1:
                ratings[(str(row["question_id"]), str(row["model"]))].append(score)
    with reading(base / _MT_QUESTIONS):
        return _mt_items(base, models, prices, dirty, ratings)


def _mt_items(
    base: Path,
    models: dict[str, str],
    prices: PriceBook,
    dirty: set[str],
    ratings: dict[tuple[str, str], list[float]],
) -> SourceBatch:
    batch = SourceBatch()
    for row in read_jsonl(base / _MT_QUESTIONS):
        turns = [str(t) for t in row["turns"]]
        qid = str(row["question_id"])
        item = Item(
            item_id=f"routellm/mt-bench/{qid}",
            source="routellm",
            task="mt-bench",
            messages=(("user", turns[0]),),
            meta=_meta(turns[0], dirty, category=str(row.get("category", ""))),
        )
        batch.items.append(item)
        for name, model in models.items():
            scores = ratings.get((qid, name))
            if not scores:
                continue
            rating = sum(scores) / len(scores) / 10.0
            batch.records.append(
                prices.estimate(item, model, None, rating, score_origin="source")
            )
    return batch
