"""Figure: bounces as the real world sends them. flufl.bounce's own test corpus (real
bounces from Postfix, Exim, qmail, Exchange, GroupWise, AOL, Yahoo, SMTP32 and DSNs with
real-world oddities), with the answers its tests expect, read by tidings' classifier
(`tidings.inbound.classify`: the RFC 3464/5965 parser first, flufl.bounce for the rest) and by
flufl.bounce alone.

A bounce counts as read when it is recognised as one, names exactly the addresses the corpus
expects, and is hard or temporary as the corpus says. The corpus is not in this repository:
the sdist of the installed flufl.bounce is downloaded with pip into a temporary folder at run
time, and deleted afterwards.

    python bench/bounce_corpus.py      (or: python bench/run bounce_corpus)
"""

from __future__ import annotations

import ast
import email
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from common import report
from flufl.bounce import all_failures

from tidings.inbound.classify import classify
from tidings.inbound.reports import NotAReport, parse_report


@dataclass(frozen=True)
class Case:
    detector: str
    file: str
    expected: frozenset[str]  # lower case
    temporary: bool


@dataclass
class Score:
    recognised: int = 0
    addresses: int = 0
    read: int = 0  # recognised, the right addresses, and hard or temporary as expected

    def add(self, recognised: bool, addresses: bool, kind: bool) -> None:
        self.recognised += recognised
        self.addresses += recognised and addresses
        self.read += recognised and addresses and kind


def download_corpus(folder: Path) -> Path:
    """flufl.bounce's sdist, unpacked; returns its tests/ folder."""
    wanted = f"flufl.bounce=={version('flufl.bounce')}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-binary",
            ":all:",
            "--no-deps",
            "--quiet",
            "-d",
            str(folder),
            wanted,
        ],
        check=True,
    )
    (archive,) = folder.glob("flufl*bounce-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    (tests,) = folder.glob("flufl*bounce-*/tests")
    return tests


def known_answers(tests: Path) -> list[Case]:
    """The DETECTORS table of tests/test_detectors.py: (detector, file, addresses, temporary)."""
    tree = ast.parse((tests / "test_detectors.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DETECTORS":
            rows = ast.literal_eval(node.value)
            return [
                Case(d, f, frozenset(a.decode().lower() for a in addresses), t)
                for d, f, addresses, t in rows
            ]
    raise SystemExit("no DETECTORS table in flufl.bounce's tests: has its layout changed?")


def read_by_tidings(raw: bytes, case: Case) -> tuple[bool, bool, bool, str]:
    inbound = classify(raw)
    if inbound.kind != "bounce" or inbound.report is None:
        return False, False, False, inbound.kind
    got = set(inbound.report.recipients)
    temporary = inbound.report.kind == "soft"
    path = "rfc" if "flufl" not in inbound.why else "flufl"
    return True, got == case.expected, temporary == case.temporary, path


def read_by_flufl(raw: bytes, case: Case) -> tuple[bool, bool, bool]:
    temporary, permanent = all_failures(email.message_from_bytes(raw))
    lower = {a.decode().lower() for a in (temporary if case.temporary else permanent)}
    either = {a.decode().lower() for a in temporary | permanent}
    return bool(either), either == case.expected, lower == case.expected


def read_by_rfc_parser_alone(raw: bytes, case: Case) -> tuple[bool, bool]:
    try:
        found = parse_report(raw)
    except NotAReport:
        return False, False
    return True, found.recipient in case.expected


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="tidings-bench-bounces-"))
    try:
        tests = download_corpus(folder)
        cases = known_answers(tests)
        answered = [c for c in cases if c.expected]
        tidings, flufl = Score(), Score()
        rfc_alone = [0, 0]
        paths = {"rfc": 0, "flufl": 0}
        missed: list[str] = []
        for case in answered:
            raw = (tests / "data" / case.file).read_bytes()
            *scores, path = read_by_tidings(raw, case)
            tidings.add(*scores)
            if all(scores):
                paths[path] += 1
            else:
                missed.append(f"{case.file} ({case.detector}): {path}")
            flufl.add(*read_by_flufl(raw, case))
            recognised, right = read_by_rfc_parser_alone(raw, case)
            rfc_alone[0] += recognised
            rfc_alone[1] += recognised and right
        no_answer = [c for c in cases if not c.expected]
        flagged = sum(
            classify((tests / "data" / c.file).read_bytes()).kind == "bounce" for c in no_answer
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    total = len(answered)
    report(
        "bounce corpus (flufl.bounce's): read right",
        tidings.read,
        flufl.read,
        round(tidings.read / flufl.read, 3) if flufl.read else None,
        ">= flufl.bounce",
        tidings.read >= flufl.read,
        unit=f"of {total} bounces",
        note=f"recognised {tidings.recognised}, right addresses {tidings.addresses}, "
        f"hard/temporary as expected {tidings.read}; RFC parser alone: recognised "
        f"{rfc_alone[0]}, right address {rfc_alone[1]}",
    )
    print(f"flufl.bounce {version('flufl.bounce')} corpus: {total} bounces with known answers")
    print(f"{'':28} recognised  right addresses  and hard/temporary right")
    for name, score in (("tidings (classify)", tidings), ("flufl.bounce alone", flufl)):
        print(f"{name:28} {score.recognised:>10}  {score.addresses:>15}  {score.read:>24}")
    print(f"{'RFC 3464/5965 parser alone':28} {rfc_alone[0]:>10}  {rfc_alone[1]:>15}")
    print(f"tidings read {paths['rfc']} with its RFC parser and {paths['flufl']} with flufl.bounce")
    print(f"{len(no_answer)} corpus messages name no address: tidings calls {flagged} a bounce")
    for line in missed:
        print(f"  not read right: {line}")


if __name__ == "__main__":
    main()
