"""Which columns of an imported CSV are kept: the least data that works. The address, the name
and the timezone always are; any other column only when named (`--keep COLUMN`, or the setting
TIDINGS_IMPORT_KEEP_COLUMNS); everything else is dropped, never stored, and reported.

A CRM or practice-management export carries clinical and identifying columns (a diagnosis,
medications, appointment dates, insurance, a date of birth, free-text notes). A column whose
name looks like one of those is refused even when named, unless the operator says
`--allow-sensitive`: a newsletter never needs them, and an address tied to a mental-health
provider is already protected health information. Names are matched on their words, without
regard to case or spelling style ("Primary Diagnosis", "primary_diagnosis", "PrimaryDiagnosis").
Pure: no database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tidings.errors import InvalidInput

MAX_COLUMN_NAME_CHARS = 64
SETTING = "TIDINGS_IMPORT_KEEP_COLUMNS"

# One word of a column name is enough. Clinical: what someone has, takes, is treated for, and
# who treats them; identifying: numbers and dates that name one person, and the special
# categories of data (health, sex life, race, religion).
SENSITIVE_WORDS = frozenset(
    {
        # clinical
        "diagnosis", "diagnoses", "diagnosed", "dx", "icd", "icd9", "icd10", "dsm", "cpt",
        "condition", "conditions", "disorder", "disorders", "illness", "disease", "symptom",
        "symptoms", "medication", "medications", "meds", "medicine", "prescription",
        "prescriptions", "rx", "drug", "drugs", "dose", "dosage", "treatment", "treatments",
        "therapy", "therapies", "therapist", "psychiatrist", "psychologist", "counselor",
        "counsellor", "clinician", "physician", "doctor", "provider", "clinical", "medical",
        "health", "mental", "patient", "chart", "appointment", "appointments", "visit",
        "visits", "session", "sessions", "admission", "discharge", "referral", "intake",
        "assessment", "screening", "allergy", "allergies", "ketamine", "esketamine",
        "substance", "alcohol", "addiction", "overdose", "suicide", "suicidal", "crisis",
        "pregnant", "pregnancy", "hiv", "disability", "disabilities",
        # free text, where any of that ends up
        "note", "notes", "comment", "comments", "remark", "remarks", "memo", "history",
        # insurance and payment
        "insurance", "insurer", "insured", "payer", "medicaid", "medicare", "copay",
        "billing", "invoice",
        # identifying
        "dob", "birthday", "birthdate", "dateofbirth", "ssn", "mrn", "passport", "license",
        "licence", "phone", "mobile", "fax", "street", "address", "zip", "zipcode",
        "postcode", "ip",
        # special categories
        "gender", "sex", "sexual", "sexuality", "race", "ethnicity", "ethnic", "religion",
        "religious",
    }
)  # fmt: skip
# Words that only say something together.
SENSITIVE_PHRASES = (
    ("date", "of", "birth"),
    ("birth", "date"),
    ("social", "security"),
    ("medical", "record"),
    ("record", "number"),
    ("health", "plan"),
    ("member", "id"),
    ("policy", "number"),
    ("postal", "code"),
    ("self", "harm"),
)
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def words_of(name: str) -> list[str]:
    """The words of a column name, lower case: 'Primary Diagnosis', 'primary_diagnosis' and
    'PrimaryDiagnosis' are all ['primary', 'diagnosis']; 'ICD10' is ['icd', '10']."""
    return [w.lower() for w in _WORD.findall(name)]


def sensitive_part(name: str) -> str | None:
    """The word or words of `name` that make it look clinical or identifying, or None."""
    words = words_of(name)
    for word in words:
        if word in SENSITIVE_WORDS:
            return word
    joined = "".join(words)
    if joined in SENSITIVE_WORDS:  # "Date-Of-Birth" as one spelling or another
        return joined
    for phrase in SENSITIVE_PHRASES:
        for start in range(len(words) - len(phrase) + 1):
            if tuple(words[start : start + len(phrase)]) == phrase:
                return " ".join(phrase)
    return None


def from_setting(text: str) -> tuple[str, ...]:
    """The setting's comma-separated column names."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def check_kept(names: Iterable[str], source: str, allow_sensitive: bool) -> tuple[str, ...]:
    """Column names to keep, checked: one line each, and none that looks clinical or
    identifying unless `allow_sensitive`. `source` names where they come from (an option, the
    setting) in the message."""
    kept: list[str] = []
    for raw in names:
        name = raw.strip()
        if not name:
            raise InvalidInput(source, "a column name must not be empty")
        if _CONTROL.search(name) or len(name) > MAX_COLUMN_NAME_CHARS:
            raise InvalidInput(
                source,
                f"{name!r} is not a usable column name (one line, at most "
                f"{MAX_COLUMN_NAME_CHARS} characters)",
            )
        part = sensitive_part(name)
        if part is not None and not allow_sensitive:
            raise InvalidInput(
                source,
                f"the column {name!r} looks like clinical or identifying data ({part!r}), "
                "which a newsletter does not need and tidings does not keep by default. Leave "
                "it out and it is dropped at import; if keeping it was decided on purpose "
                "(by your privacy officer, say), add --allow-sensitive",
            )
        kept.append(name)
    return tuple(dict.fromkeys(kept))
