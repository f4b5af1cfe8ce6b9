"""Schemathesis hooks for tests/conformance (loaded through ``SCHEMATHESIS_HOOKS``).

``storable_values_accepted``: the specs declare which values the services cannot store or pass on (text
without NUL in the API — a lone surrogate is no Unicode text, so no JSON Schema string —, numbers within
64 bits; nesting is described), so a request generated to fit
the spec must never be refused for one of them. ``positive_data_acceptance`` cannot tell that refusal
from the 400s a schema cannot foresee (an unknown id, a result that does not fit the label config).
"""

from __future__ import annotations

import re

import schemathesis
from schemathesis import Case, CheckContext, Response

_UNSTORABLE = re.compile(
    r"contains a (?:NUL|lone)|beyond 64 bits|not a finite number|magnitude 2\^63|nested deeper"
)
"""The refusals ``shared.json_values`` words (object keys included: the specs declare ``propertyNames``)."""


@schemathesis.check
def storable_values_accepted(ctx: CheckContext, response: Response, case: Case) -> None:
    meta = case.meta
    if meta is None or response.status_code not in (400, 422):
        return
    if meta.generation.mode.is_negative or any(info.mode.is_negative for info in meta.components.values()):
        return  # a stateful step may carry a negated part in a case marked positive
    if _UNSTORABLE.search(response.text):
        raise AssertionError(
            f"A schema-valid request was refused for a value the spec allows: {response.text[:500]}"
        )
