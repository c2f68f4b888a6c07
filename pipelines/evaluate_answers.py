"""`rag eval answers QA.csv`: questions with reference answers, run through the configured
pipeline and backend (extracts when no LLM is configured), and checked per question and overall:

- hit: a passage of the prompt comes from a document the question's source glob names
  (`*2023 Q3 AAPL*`, matched against the file name); on target: the share of the prompt's
  passages that do;
- figures: the share of the reference answer's figures ($82,959 million, 12.5% ...; see
  `rag.evaluation.figures`) found in the prompt's passages, and in the answer;
- citations valid: the answer cites at least one passage, and only passages it was given;
- grounding: the share of the answer's sentences the grounding check marks unsupported;
- latency: seconds from the question to the finished answer (retrieval included).

The CSV needs a question column and a reference-answer column, and may have a source-document
glob column; names are matched loosely (`Question`, `Answer` / `Reference answer`, `Source
Docs` / `Source`), as in ../shared/data/sec10q/qna_multi.csv. `--fail-under METRIC=VALUE` turns
the overall figures into a gate (every metric is "higher is better": `grounded_rate` is the
share of sentences *not* marked unsupported).
"""

from __future__ import annotations

import csv
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from rag.errors import ConfigError, LoadError
from rag.evaluation.figures import context_numbers, figures, source_globs, source_matches

QUESTION_COLUMNS = ("question", "query")
ANSWER_COLUMNS = ("answer", "reference answer", "reference", "reference_answer", "expected answer")
SOURCE_COLUMNS = ("source docs", "source_docs", "source documents", "sources", "source", "source glob", "docs")

#: The overall figures `--fail-under` can gate on (all: higher is better).
GATED = ("hit_rate", "on_target_rate", "figure_recall_passages", "all_figures_passages_rate",
         "figure_recall_answer", "citation_valid_rate", "grounded_rate")


class QAItem(BaseModel):
    question: str
    reference: str
    globs: list[str] = Field(default_factory=list)


class QuestionResult(BaseModel):
    question: str
    globs: list[str]
    answer: str
    kind: str
    backend: str
    passages: int
    hit: bool | None = Field(description="a passage from a document the glob names (None: no glob)")
    on_target: float | None = Field(description="share of the passages from those documents")
    figures: list[str] = Field(description="the reference answer's figures")
    figures_in_passages: list[str]
    figures_in_answer: list[str]
    citations_valid: bool
    invalid_citations: list[int]
    sentences: int
    unsupported: int
    seconds: float


class AnswerEvalReport(BaseModel):
    file: str
    collection: str
    backend: str = Field(description="how the backend was chosen (the pipeline's origin line)")
    questions: int
    overall: dict[str, float]
    per_question: list[QuestionResult]


def load_qa(path: str | Path, limit: int | None = None) -> list[QAItem]:
    """The questions of a CSV file (see the module's doc for its columns). LoadError naming the
    file (and line) for a missing file, a missing column or an empty question."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            q_col, a_col = _column(header, QUESTION_COLUMNS), _column(header, ANSWER_COLUMNS)
            s_col = _column(header, SOURCE_COLUMNS)
            if q_col is None or a_col is None:
                raise LoadError(str(path), f"needs a question and a reference-answer column (found: "
                                           f"{', '.join(header) or 'no header'})")
            items = []
            for row in reader:
                question = (row.get(q_col) or "").strip()
                if not question:
                    raise LoadError(str(path), f"line {reader.line_num}: empty question")
                items.append(QAItem(question=question, reference=(row.get(a_col) or "").strip(),
                                    globs=source_globs(row.get(s_col)) if s_col else []))
                if limit and len(items) >= limit:
                    break
    except OSError as e:
        raise LoadError(str(path), f"cannot read file: {e.strerror or e}") from e
    except (csv.Error, UnicodeDecodeError) as e:
        raise LoadError(str(path), f"not a UTF-8 CSV file: {e}") from e
    if not items:
        raise LoadError(str(path), "no questions")
    return items


def _column(header: Sequence[str], names: Iterable[str]) -> str | None:
    by_name = {h.strip().lower(): h for h in header if h}
    return next((by_name[n] for n in names if n in by_name), None)


def evaluate_answers(pipeline, items: Sequence[QAItem], file: str = "",
                     advance: Callable[[int], None] | None = None) -> AnswerEvalReport:
    """Ask each question of `items` through `pipeline` (a RagPipeline), and check its answer."""
    results = []
    for item in items:
        started = time.perf_counter()
        answer = pipeline.ask(item.question)
        seconds = time.perf_counter() - started
        results.append(check_answer(item, answer, seconds))
        if advance is not None:
            advance(1)
    return AnswerEvalReport(file=str(file), collection=pipeline.store.describe(), backend=pipeline.llm_origin,
                            questions=len(results), overall=overall(results), per_question=results)


def check_answer(item: QAItem, answer, seconds: float) -> QuestionResult:
    """One answer (a rag.models.Answer) against its question's reference and source glob."""
    wanted = sorted(figures(item.reference))
    in_context = context_numbers("\n".join(p.text for p in answer.passages))
    in_answer = context_numbers(answer.text)
    on = [source_matches(p.source, item.globs) for p in answer.passages] if item.globs else []
    return QuestionResult(
        question=item.question, globs=item.globs, answer=answer.text, kind=answer.kind, backend=answer.backend,
        passages=len(answer.passages), hit=any(on) if item.globs else None,
        on_target=(sum(on) / len(on) if on else 0.0) if item.globs else None,
        figures=wanted, figures_in_passages=[f for f in wanted if f in in_context],
        figures_in_answer=[f for f in wanted if f in in_answer], citations_valid=answer.citations_valid,
        invalid_citations=list(answer.invalid_citations), sentences=len(answer.support),
        unsupported=len(answer.unsupported), seconds=seconds)


def overall(results: Sequence[QuestionResult]) -> dict[str, float]:
    """The overall figures: rates over the questions that can have them (hits over questions
    with a glob, figures over all reference figures, grounding over all answer sentences)."""
    globbed = [r for r in results if r.hit is not None]
    with_figures = [r for r in results if r.figures]
    n_figures = sum(len(r.figures) for r in results)
    sentences = sum(r.sentences for r in results)
    unsupported = sum(r.unsupported for r in results)
    latencies = [r.seconds for r in results] or [0.0]
    return {
        "questions": float(len(results)),
        "hit_rate": _share(sum(bool(r.hit) for r in globbed), len(globbed)),
        "on_target_rate": _share(sum(r.on_target or 0.0 for r in globbed), len(globbed)),
        "questions_with_figures": float(len(with_figures)),
        "figures": float(n_figures),
        "figure_recall_passages": _share(sum(len(r.figures_in_passages) for r in results), n_figures),
        "all_figures_passages_rate": _share(sum(len(r.figures_in_passages) == len(r.figures) for r in with_figures),
                                            len(with_figures)),
        "figure_recall_answer": _share(sum(len(r.figures_in_answer) for r in results), n_figures),
        "citation_valid_rate": _share(sum(r.citations_valid for r in results), len(results)),
        "sentences": float(sentences),
        "unsupported_rate": _share(unsupported, sentences),
        "grounded_rate": 1.0 - _share(unsupported, sentences),
        "latency_p50": statistics.median(latencies),
        "latency_mean": statistics.mean(latencies),
        "latency_max": max(latencies),
    }


def _share(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def parse_bars(specs: Iterable[str]) -> dict[str, float]:
    """`--fail-under METRIC=VALUE` options -> {metric: bar}. ConfigError for an unknown metric
    or a value that is not a number."""
    bars = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        name = name.strip()
        if not sep or name not in GATED:
            raise ConfigError(f"--fail-under '{spec}': give METRIC=VALUE with METRIC one of {', '.join(GATED)}")
        try:
            bars[name] = float(value)
        except ValueError:
            raise ConfigError(f"--fail-under '{spec}': '{value}' is not a number") from None
    return bars


def unmet(report: AnswerEvalReport, bars: dict[str, float]) -> list[str]:
    """One line per bar the report's overall figures fall under."""
    return [f"{name} {report.overall[name]:.3f} < {bar:g}" for name, bar in bars.items()
            if report.overall[name] < bar]
