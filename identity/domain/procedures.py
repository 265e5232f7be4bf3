"""Pure rules of the operator procedures (R-LEG-4) that are not about one aggregate state:
the registered phone numbers an operator types from the paper form, and what a temporary
password must look like. The decisions themselves are in ``customer.decide``."""
from __future__ import annotations

import unicodedata

from contracts.errors import ValidationFailed
from identity.domain import messages as msg
from identity.domain.legacy_record import MAX_PHONES, normalise_phone
from identity.domain.passwords import satisfies_rules

# A temporary password is read off paper or a screen by the customer: no 0/O, 1/l/I.
TEMPORARY_ALPHABET_UPPER = "ABCDEFGHJKLMNPQRSTUVWXYZ"
TEMPORARY_ALPHABET_LOWER = "abcdefghijkmnpqrstuvwxyz"
TEMPORARY_ALPHABET_DIGITS = "23456789"
TEMPORARY_LENGTH = 10


def registered_phones(raw) -> tuple[str, ...]:
    """The new registered phone numbers as E.164, in the order given, duplicates dropped.
    Every entry must be a valid Japanese number (one bad entry refuses the whole change:
    an operator must not half-apply a paper form)."""
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValidationFailed(msg.PHONES_REQUIRED, "validation_failed",
                               errors={"phones": [msg.PHONES_REQUIRED]})
    phones: list[str] = []
    errors: list[str] = []
    for index, value in enumerate(raw, start=1):
        e164 = normalise_phone(unicodedata.normalize("NFKC", value)) \
            if isinstance(value, str) and len(value) <= 40 else None
        if e164 is None:
            errors.append(msg.PHONE_INVALID.format(index=index))
        elif e164 not in phones:
            phones.append(e164)
    if errors:
        raise ValidationFailed(errors[0], "phone_invalid", errors={"phones": errors})
    if len(phones) > MAX_PHONES:
        message = msg.PHONES_TOO_MANY.format(max=MAX_PHONES)
        raise ValidationFailed(message, "too_many_phones", errors={"phones": [message]})
    return tuple(phones)


def names_operator_and_reason(metadata, service: str) -> bool:
    """R-LEG-4: a procedure is an event naming the operator and the reason, so the call must
    carry both, not only ``actor_kind=operator``: without ``actor_id`` the context's actor id
    defaults to the service's own name (services.dependencies.metadata_from_context)."""
    actor = metadata.actor
    return (actor.kind == "operator" and bool((actor.id or "").strip()) and actor.id != service
            and bool((metadata.reason or "").strip()))


def temporary_password_ok(value: str) -> bool:
    """A temporary login or confirmation password satisfies the rules of R-INI-2 (so the
    customer's forced change is an ordinary change) and contains a digit and both cases."""
    return (satisfies_rules("login_password", value) and any(c.isdigit() for c in value)
            and set(value) <= set(TEMPORARY_ALPHABET_UPPER + TEMPORARY_ALPHABET_LOWER + TEMPORARY_ALPHABET_DIGITS))
