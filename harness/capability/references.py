"""The AlpacaEval data a capability judge needs: the reference outputs (selectable) and the GPT-4
pairwise preferences used to validate a judge.

References are named (``text_davinci_003`` is AlpacaEval 1's, ``gpt4_1106_preview`` AlpacaEval 2's) or
given as a path to any AlpacaEval ``model_outputs.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import DataError

REFERENCES = {
    "text_davinci_003": "alpaca_eval/text_davinci_003_outputs.json",  # AlpacaEval 1
    "gpt4_1106_preview": "alpaca_eval/gpt4_1106_preview_outputs.json",  # AlpacaEval 2
}
DEFAULT_REFERENCE = "text_davinci_003"


def reference_path(reference: str, data_dir: Path | None) -> Path:
    """A reference name (see ``REFERENCES``) found under the data folder, or a path to a JSON file."""
    from harness.data.suites import find_data_file

    if reference in REFERENCES:
        from harness.data.fetch import DataFetchError, named_data
        from harness.data.suites import SuiteDataMissing

        try:  # in the data folder or the cache, else fetched (the default reference comes with the suite)
            return named_data(REFERENCES[reference], data_dir) or find_data_file(data_dir, REFERENCES[reference],
                                                                                 "capability")
        except DataFetchError as exc:
            raise SuiteDataMissing(str(exc)) from None
    path = Path(reference)
    if path.is_file():
        return path
    raise DataError(f"capability reference {reference!r}: neither a known name "
                    f"({', '.join(REFERENCES)}) nor an existing file")


def load_references(reference: str, data_dir: Path | None) -> dict[str, str]:
    """Instruction -> reference output."""
    from harness.data.loaders import load_alpaca_eval_references

    return load_alpaca_eval_references(reference_path(reference, data_dir))


# -- GPT-4 preferences (dev_annotations) -------------------------------------------------------------


@dataclass(frozen=True)
class Annotation:
    instruction: str
    output_1: str
    output_2: str
    preference: float  # 1.0 = output_1 better, 2.0 = output_2 better, 1.5 = tie
    generator_2: str
    source: str  # "file: item i"


def parse_preference(value, where: str) -> float:
    """AlpacaEval's preference in any of the forms found upstream: 1/2 (int, float or text such as "2.0")
    mean output_1/output_2 better; 0, 1.5, None, "None", "" and NaN mean a tie or no preference (1.5).
    Anything else is a one-line ``DataError`` naming ``where``."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null", "nan", "tie")):
        return 1.5
    if isinstance(value, bool):
        raise DataError(f"{where}: preference {value!r} is not 1, 2 or a tie")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: preference {value!r} is not 1, 2 or a tie (0, 1.5, None)") from None
    if math.isnan(number) or number in (0.0, 1.5):
        return 1.5
    if number in (1.0, 2.0):
        return number
    raise DataError(f"{where}: preference {value!r} is not 1, 2 or a tie (0, 1.5, None)")


def load_annotations(path: str | Path) -> list[Annotation]:
    """One ``annotations.json`` of AlpacaEval (output_1 is the reference model, output_2 the other)."""
    from harness.data.tables import load_json

    path, data = load_json(path)  # one-line DataErrors naming the file (and line, for malformed JSON)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of annotations, got a JSON {type(data).__name__}")
    out = []
    for i, item in enumerate(data):
        where = f"{path}: item {i}"
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(item).__name__}")
        missing = [k for k in ("instruction", "output_1", "output_2") if not isinstance(item.get(k), str)]
        if missing:
            raise DataError(f"{where}: missing or non-text {', '.join(missing)}")
        out.append(Annotation(item["instruction"], item["output_1"], item["output_2"],
                              parse_preference(item.get("preference"), where),
                              str(item.get("generator_2", path.stem)), where))
    return out
