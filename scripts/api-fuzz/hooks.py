"""Schemathesis hooks for scripts/api-fuzz.sh.

Clients must send a fresh Idempotency-Key per intended operation (the same key with
another body is refused, 422 idempotency-key-reused, as documented); generated requests
reuse the few simplest values, so each call gets its own key here.
"""
import uuid

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = f"fuzz-{uuid.uuid4()}"
