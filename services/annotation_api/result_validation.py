"""Checking annotation and prediction results against their project's label config.

Label Studio stores any result and the editor later shows broken regions; we refuse a result that
does not fit the config with a 400 naming the field, using the same rules the gateway applies to
backend predictions (``shared.prediction_validation``).
"""

from __future__ import annotations

from typing import Any

from services.annotation_api.errors import BadRequest
from shared.label_config import LabelConfig
from shared.prediction_validation import validate_result, validate_score

#: Errors listed in one response at most; a result with thousands of bad regions stays readable.
MAX_REPORTED_ERRORS = 10


def check_result(config: LabelConfig, result: Any, *, score: Any = None, where: str = "") -> None:
    """Raise 400 naming the field (``result``, or ``3.result`` with ``where="3."``) when it does not fit."""
    score_errors = validate_score(score)
    if score_errors:
        raise BadRequest(score_errors[0], field=f"{where}score")
    errors = validate_result(config, result)
    if errors:
        shown = "; ".join(errors[:MAX_REPORTED_ERRORS])
        hidden = len(errors) - MAX_REPORTED_ERRORS
        more = f" (and {hidden} more)" if hidden > 0 else ""
        raise BadRequest(f"{where}result: {shown}{more}", field=f"{where}result")
