#!/usr/bin/env python3
"""Check every crate in Cargo.lock for licence, source and known advisories.

The check runs offline. It reads Cargo.lock, the licence expressions and
sources from `cargo metadata --offline --locked`, and the RustSec advisories
from a local copy of the advisory database (`crates/*/RUSTSEC-*.md`). The
policy and every exception, each with its reason, are in supply-chain.toml
at the repository root.

It fails (exit status 1) on:
- a licence expression that the allow list does not satisfy,
- a source other than the crates.io registry or a path inside the repository,
- an advisory that affects a locked version, unless the config lists the
  advisory id with a reason,
- a config exception without a reason.
Duplicate versions of a crate, and exceptions that no longer match anything,
are printed as warnings and do not fail the check.

Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CONFIG = "supply-chain.toml"
DEFAULT_DB_PATH = "../shared/advisory-db"


class CheckError(Exception):
    """An input (config, lock file, advisory, version) that cannot be read."""


# --- Versions and Cargo version requirements ---------------------------------

_VERSION_RE = re.compile(
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$"
)


def _parse_prerelease(text: str) -> tuple[str, ...]:
    identifiers = tuple(text.split("."))
    if any(identifier == "" for identifier in identifiers):
        raise CheckError(f"invalid pre-release {text!r}: empty identifier between dots")
    return identifiers


def _prerelease_key(pre: tuple[str, ...]) -> tuple:
    # Semver precedence: numeric identifiers compare as numbers and sort below
    # alphanumeric ones, and a longer list wins when all shared ones are equal.
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in pre)


def _pre_rank(pre: tuple[str, ...]) -> tuple:
    # A release (no pre-release) sorts above every pre-release of the same
    # MAJOR.MINOR.PATCH.
    return (1,) if not pre else (0, _prerelease_key(pre))


@dataclass(frozen=True)
class Version:
    """A semantic version; build metadata is kept but ignored in comparisons."""

    major: int
    minor: int
    patch: int
    pre: tuple[str, ...] = ()
    build: str = ""

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _VERSION_RE.match(text.strip())
        if match is None:
            raise CheckError(f"invalid version {text!r}: expected MAJOR.MINOR.PATCH[-PRE][+BUILD]")
        major, minor, patch, pre, build = match.groups()
        return cls(int(major), int(minor), int(patch), _parse_prerelease(pre) if pre else (), build or "")

    def key(self) -> tuple:
        return (self.major, self.minor, self.patch, _pre_rank(self.pre))

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.pre:
            text += "-" + ".".join(self.pre)
        if self.build:
            text += "+" + self.build
        return text


_COMPARATOR_RE = re.compile(
    r"^(>=|<=|>|<|=|\^|~)?\s*"
    r"(0|[1-9][0-9]*)(?:\.(0|[1-9][0-9]*))?(?:\.(0|[1-9][0-9]*))?"
    r"(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$"
)


@dataclass(frozen=True)
class Comparator:
    """One comparator of a Cargo requirement, such as `>= 1.2` or `^0.3.1-rc.1`."""

    op: str
    major: int
    minor: int | None
    patch: int | None
    pre: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Comparator:
        match = _COMPARATOR_RE.match(text.strip())
        if match is None:
            raise CheckError(f"invalid version requirement {text!r}: expected an operator and a version")
        op, major, minor, patch, pre = match.groups()
        if pre and patch is None:
            raise CheckError(f"invalid version requirement {text!r}: a pre-release needs MAJOR.MINOR.PATCH")
        return cls(
            op=op or "^",  # Cargo reads a bare version as a caret requirement.
            major=int(major),
            minor=int(minor) if minor is not None else None,
            patch=int(patch) if patch is not None else None,
            pre=_parse_prerelease(pre) if pre else (),
        )

    def matches(self, version: Version) -> bool:
        """Apply the comparator to MAJOR.MINOR.PATCH-PRE, as the `semver` crate does."""
        if self.op == "=":
            return self._matches_exact(version)
        if self.op == ">":
            return self._matches_greater(version)
        if self.op == ">=":
            return self._matches_exact(version) or self._matches_greater(version)
        if self.op == "<":
            return self._matches_less(version)
        if self.op == "<=":
            return self._matches_exact(version) or self._matches_less(version)
        if self.op == "~":
            return self._matches_tilde(version)
        return self._matches_caret(version)

    def _pre_key(self) -> tuple:
        return _pre_rank(self.pre)

    def _matches_exact(self, version: Version) -> bool:
        if version.major != self.major:
            return False
        if self.minor is not None and version.minor != self.minor:
            return False
        if self.patch is not None and version.patch != self.patch:
            return False
        return version.pre == self.pre

    def _matches_greater(self, version: Version) -> bool:
        if version.major != self.major:
            return version.major > self.major
        if self.minor is None:
            return False
        if version.minor != self.minor:
            return version.minor > self.minor
        if self.patch is None:
            return False
        if version.patch != self.patch:
            return version.patch > self.patch
        return _pre_rank(version.pre) > self._pre_key()

    def _matches_less(self, version: Version) -> bool:
        if version.major != self.major:
            return version.major < self.major
        if self.minor is None:
            return False
        if version.minor != self.minor:
            return version.minor < self.minor
        if self.patch is None:
            return False
        if version.patch != self.patch:
            return version.patch < self.patch
        return _pre_rank(version.pre) < self._pre_key()

    def _matches_tilde(self, version: Version) -> bool:
        if version.major != self.major:
            return False
        if self.minor is not None and version.minor != self.minor:
            return False
        if self.patch is not None and version.patch != self.patch:
            return version.patch > self.patch
        return _pre_rank(version.pre) >= self._pre_key()

    def _matches_caret(self, version: Version) -> bool:
        if version.major != self.major:
            return False
        if self.minor is None:
            return True
        if self.patch is None:
            # ^I.J means >= I.J.0 and below the next change of the left-most non-zero part.
            return version.minor >= self.minor if self.major > 0 else version.minor == self.minor
        if self.major > 0:
            if version.minor != self.minor:
                return version.minor > self.minor
            if version.patch != self.patch:
                return version.patch > self.patch
        elif self.minor > 0:
            if version.minor != self.minor:
                return False
            if version.patch != self.patch:
                return version.patch > self.patch
        elif version.minor != self.minor or version.patch != self.patch:
            return False
        return _pre_rank(version.pre) >= self._pre_key()


def parse_requirement(text: str) -> list[Comparator]:
    """Parse a comma-separated conjunction of comparators (`>= 0.9, < 0.10.0-rc.1`)."""
    parts = [part.strip() for part in text.split(",")]
    if text.strip() in {"*", ""}:
        return []
    if any(part == "" for part in parts):
        raise CheckError(f"invalid version requirement {text!r}: empty comparator between commas")
    return [Comparator.parse(part) for part in parts]


def requirement_matches(text: str, version: Version) -> bool:
    """Match a version against a Cargo requirement, with Cargo's pre-release rule.

    A pre-release version matches only when every comparator matches and at
    least one comparator names the same MAJOR.MINOR.PATCH with a pre-release,
    so `>= 1.0.0` does not match `2.0.0-rc.1`.
    """
    comparators = parse_requirement(text)
    if not all(comparator.matches(version) for comparator in comparators):
        return False
    if not version.pre:
        return True
    return any(
        comparator.pre
        and (comparator.major, comparator.minor, comparator.patch)
        == (version.major, version.minor, version.patch)
        for comparator in comparators
    )


# --- SPDX licence expressions ------------------------------------------------

_LICENSE_TOKEN_RE = re.compile(r"\s*(\(|\)|/|[A-Za-z0-9.+:-]+)")


def _tokenize_license(expression: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    stripped = expression.rstrip()
    while position < len(stripped):
        match = _LICENSE_TOKEN_RE.match(stripped, position)
        if match is None:
            raise CheckError(
                f"invalid licence expression {expression!r}: unexpected character at offset {position}"
            )
        tokens.append(match.group(1))
        position = match.end()
    return tokens


class _LicenseParser:
    """Recursive-descent evaluator: WITH binds tighter than AND, AND than OR.

    The legacy `/` separator found in older crates (`MIT/Apache-2.0`) is read
    as OR. `A WITH B` is satisfied only if the allow list names `A WITH B`.
    """

    def __init__(self, expression: str, allowed: frozenset[str]):
        self.expression = expression
        self.tokens = _tokenize_license(expression)
        self.position = 0
        self.allowed = allowed

    def evaluate(self) -> bool:
        if not self.tokens:
            raise CheckError("invalid licence expression '': empty")
        result = self._or()
        if self.position != len(self.tokens):
            self._fail(f"unexpected {self.tokens[self.position]!r}")
        return result

    def _fail(self, reason: str) -> None:
        raise CheckError(f"invalid licence expression {self.expression!r}: {reason}")

    def _peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _or(self) -> bool:
        result = self._and()
        while self._peek() in {"OR", "/"}:
            self.position += 1
            right = self._and()
            result = result or right
        return result

    def _and(self) -> bool:
        result = self._with()
        while self._peek() == "AND":
            self.position += 1
            right = self._with()
            result = result and right
        return result

    def _with(self) -> bool:
        token = self._peek()
        if token == "(":
            self.position += 1
            result = self._or()
            if self._peek() != ")":
                self._fail("missing ')'")
            self.position += 1
            return result
        license_id = self._identifier()
        if self._peek() == "WITH":
            self.position += 1
            exception_id = self._identifier()
            return f"{license_id} WITH {exception_id}" in self.allowed
        return license_id in self.allowed

    def _identifier(self) -> str:
        token = self._peek()
        if token is None:
            self._fail("expected a licence identifier at the end")
        if token in {"(", ")", "/", "AND", "OR", "WITH"}:
            self._fail(f"expected a licence identifier, found {token!r}")
        self.position += 1
        return token


def license_allowed(expression: str, allowed: frozenset[str] | set[str]) -> bool:
    """Return whether the allow list satisfies an SPDX expression (OR needs one side)."""
    return _LicenseParser(expression, frozenset(allowed)).evaluate()


# --- Advisories ----------------------------------------------------------------

_FRONT_MATTER_RE = re.compile(r"^```toml[ \t]*\n(.*?)\n```", re.DOTALL)


@dataclass(frozen=True)
class Advisory:
    id: str
    package: str
    patched: tuple[str, ...]
    unaffected: tuple[str, ...]
    informational: str | None
    withdrawn: str | None
    title: str
    path: Path

    def affects(self, version: Version) -> bool:
        """An advisory affects every version not matched by a patched or unaffected range."""
        ranges = self.patched + self.unaffected
        return not any(requirement_matches(requirement, version) for requirement in ranges)


def parse_advisory(path: Path) -> Advisory:
    text = path.read_text(encoding="utf-8").lstrip()
    match = _FRONT_MATTER_RE.match(text)
    if match is None:
        raise CheckError(f"{path}: missing the ```toml front matter block at the start")
    try:
        front = tomllib.loads(match.group(1))
    except tomllib.TOMLDecodeError as error:
        raise CheckError(f"{path}: invalid TOML front matter: {error}") from error

    advisory = front.get("advisory", {})
    versions = front.get("versions", {})
    advisory_id = advisory.get("id")
    package = advisory.get("package")
    if not isinstance(advisory_id, str) or not isinstance(package, str):
        raise CheckError(f"{path}: [advisory] needs string fields id and package")
    patched = versions.get("patched", [])
    unaffected = versions.get("unaffected", [])
    if not all(isinstance(item, str) for item in [*patched, *unaffected]):
        raise CheckError(f"{path}: [versions] patched and unaffected must be lists of strings")

    body = text[match.end() :]
    title = next((line.lstrip("# ").strip() for line in body.splitlines() if line.startswith("#")), "")
    return Advisory(
        id=advisory_id,
        package=package,
        patched=tuple(patched),
        unaffected=tuple(unaffected),
        informational=advisory.get("informational"),
        withdrawn=advisory.get("withdrawn"),
        title=title,
        path=path,
    )


def load_advisories(db_path: Path) -> dict[str, list[Advisory]]:
    """Read `crates/*/RUSTSEC-*.md` under db_path, grouped by package name."""
    crates_dir = db_path / "crates"
    if not crates_dir.is_dir():
        raise CheckError(
            f"advisory database not found: {crates_dir} is not a directory; "
            "pass --db-path or set [advisories] db-path to a copy of the RustSec advisory-db"
        )
    by_package: dict[str, list[Advisory]] = {}
    for path in sorted(crates_dir.glob("*/RUSTSEC-*.md")):
        advisory = parse_advisory(path)
        by_package.setdefault(advisory.package, []).append(advisory)
    if not by_package:
        raise CheckError(f"advisory database {db_path} has no crates/*/RUSTSEC-*.md files")
    return by_package


# --- Crates: Cargo.lock and cargo metadata --------------------------------------


@dataclass
class Crate:
    name: str
    version: str
    source: str | None
    license: str | None = None
    manifest_path: str | None = None
    workspace_member: bool = False

    def label(self) -> str:
        return f"{self.name} {self.version}"


def read_lock(lock_path: Path) -> list[Crate]:
    try:
        lock = tomllib.loads(lock_path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise CheckError(f"{lock_path} not found: run `cargo generate-lockfile` first") from error
    except tomllib.TOMLDecodeError as error:
        raise CheckError(f"{lock_path}: invalid TOML: {error}") from error
    return [
        Crate(name=package["name"], version=package["version"], source=package.get("source"))
        for package in lock.get("package", [])
    ]


def run_cargo_metadata(root: Path) -> dict:
    cargo = os.environ.get("CARGO", "cargo")
    command = [cargo, "metadata", "--format-version", "1", "--offline", "--locked"]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CheckError(
            f"`{' '.join(command)}` failed (exit {result.returncode}); run `cargo fetch --locked` "
            f"to download the locked crates first:\n{result.stderr.strip()}"
        )
    return json.loads(result.stdout)


def merge_metadata(crates: list[Crate], metadata: dict) -> None:
    """Fill in licence and manifest path of each locked crate from cargo metadata."""
    members = set(metadata.get("workspace_members", []))
    by_key = {(p["name"], p["version"], p.get("source")): p for p in metadata.get("packages", [])}
    for crate in crates:
        package = by_key.get((crate.name, crate.version, crate.source))
        if package is None:
            raise CheckError(
                f"{crate.label()} is in Cargo.lock but not in `cargo metadata`; "
                "Cargo.lock is out of date: run `cargo update --workspace`"
            )
        crate.license = package.get("license")
        crate.manifest_path = package.get("manifest_path")
        crate.workspace_member = package["id"] in members


# --- Config and the checks -----------------------------------------------------------


@dataclass
class Config:
    db_path: str
    advisory_exceptions: dict[str, str]
    license_allow: frozenset[str]
    license_exceptions: dict[str, str]
    allowed_registries: frozenset[str]


def _reasoned_entries(entries: list, key: str, section: str, config_path: Path) -> dict[str, str]:
    reasons: dict[str, str] = {}
    for entry in entries:
        name = entry.get(key) if isinstance(entry, dict) else None
        reason = entry.get("reason", "") if isinstance(entry, dict) else ""
        if not isinstance(name, str) or not name:
            raise CheckError(f"{config_path}: every [[{section}]] entry needs a {key} string")
        if not isinstance(reason, str) or not reason.strip():
            raise CheckError(f"{config_path}: [[{section}]] {key} = {name!r} has no reason; write why it is allowed")
        reasons[name] = reason.strip()
    return reasons


def load_config(config_path: Path) -> Config:
    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise CheckError(f"config {config_path} not found: pass --config or create it") from error
    except tomllib.TOMLDecodeError as error:
        raise CheckError(f"{config_path}: invalid TOML: {error}") from error

    advisories = data.get("advisories", {})
    licenses = data.get("licenses", {})
    sources = data.get("sources", {})
    allow = licenses.get("allow", [])
    registries = sources.get("allow-registry", [])
    if not allow:
        raise CheckError(f"{config_path}: [licenses] allow is empty; list the allowed SPDX identifiers")
    if not registries:
        raise CheckError(f"{config_path}: [sources] allow-registry is empty; list the crates.io index URL")
    return Config(
        db_path=advisories.get("db-path", DEFAULT_DB_PATH),
        advisory_exceptions=_reasoned_entries(advisories.get("ignore", []), "id", "advisories.ignore", config_path),
        license_allow=frozenset(allow),
        license_exceptions=_reasoned_entries(licenses.get("exceptions", []), "crate", "licenses.exceptions", config_path),
        allowed_registries=frozenset(registries),
    )


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    advisories_checked: int = 0
    exceptions_used: set[str] = field(default_factory=set)


def check_licenses(crates: list[Crate], config: Config, report: Report) -> None:
    for crate in crates:
        if crate.name in config.license_exceptions:
            report.exceptions_used.add(f"licence:{crate.name}")
            continue
        if not crate.license:
            report.errors.append(
                f"licence: {crate.label()} declares no SPDX `license` field; "
                "review its licence file and add a [[licenses.exceptions]] entry with a reason"
            )
            continue
        try:
            allowed = license_allowed(crate.license, config.license_allow)
        except CheckError as error:
            report.errors.append(f"licence: {crate.label()}: {error}")
            continue
        if not allowed:
            report.errors.append(
                f"licence: {crate.label()} is licensed {crate.license!r}, which the allow list "
                "does not satisfy; allow one of its licences in [licenses] allow or replace the crate"
            )


def check_sources(crates: list[Crate], config: Config, root: Path, report: Report) -> None:
    root = root.resolve()
    for crate in crates:
        if crate.source is None:
            manifest = Path(crate.manifest_path or "").resolve()
            if not manifest.is_relative_to(root):
                report.errors.append(
                    f"source: {crate.label()} is a path dependency outside the repository ({manifest}); "
                    "depend on the crates.io release instead"
                )
            continue
        if crate.source not in config.allowed_registries:
            report.errors.append(
                f"source: {crate.label()} comes from {crate.source!r}, not from an allowed registry; "
                "depend on the crates.io release instead"
            )


def check_advisories(crates: list[Crate], advisories: dict[str, list[Advisory]], config: Config, report: Report) -> None:
    report.advisories_checked = sum(len(items) for items in advisories.values())
    for crate in crates:
        if crate.source is None:
            continue  # Workspace crates are not published, so no advisory is about them.
        version = Version.parse(crate.version)
        for advisory in advisories.get(crate.name, []):
            if advisory.withdrawn or not advisory.affects(version):
                continue
            if advisory.id in config.advisory_exceptions:
                report.exceptions_used.add(advisory.id)
                continue
            kind = f"informational: {advisory.informational}" if advisory.informational else "vulnerability"
            patched = ", ".join(advisory.patched) or "none"
            report.errors.append(
                f"advisory: {crate.label()} is affected by {advisory.id} ({kind}) \"{advisory.title}\"; "
                f"patched versions: {patched}. Upgrade the crate, or add [[advisories.ignore]] "
                f"id = \"{advisory.id}\" with a reason to the config"
            )


def check_duplicates(crates: list[Crate], report: Report) -> None:
    versions: dict[str, list[str]] = {}
    for crate in crates:
        versions.setdefault(crate.name, []).append(crate.version)
    for name, found in sorted(versions.items()):
        if len(found) > 1:
            report.warnings.append(f"duplicate: {name} is locked at {len(found)} versions: {', '.join(found)}")


def check_unused_exceptions(config: Config, report: Report) -> None:
    for advisory_id in sorted(set(config.advisory_exceptions) - report.exceptions_used):
        report.warnings.append(
            f"unused exception: advisory {advisory_id} matches no locked crate; remove it from the config"
        )
    for crate_name in sorted(config.license_exceptions):
        if f"licence:{crate_name}" not in report.exceptions_used:
            report.warnings.append(
                f"unused exception: licence exception for {crate_name} matches no locked crate; remove it"
            )


def run_checks(root: Path, crates: list[Crate], advisories: dict[str, list[Advisory]], config: Config) -> Report:
    report = Report()
    check_licenses(crates, config, report)
    check_sources(crates, config, root, report)
    check_advisories(crates, advisories, config, report)
    check_duplicates(crates, report)
    check_unused_exceptions(config, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="workspace root with Cargo.lock (default: the repository that contains this script)",
    )
    parser.add_argument("--config", type=Path, help=f"policy file (default: ROOT/{DEFAULT_CONFIG})")
    parser.add_argument(
        "--db-path",
        type=Path,
        help="advisory-db copy, relative to ROOT unless absolute (default: [advisories] db-path of the config)",
    )
    args = parser.parse_args(argv)

    root = args.root
    try:
        config = load_config(args.config or root / DEFAULT_CONFIG)
        db_path = root / (args.db_path or Path(config.db_path))
        advisories = load_advisories(db_path)
        crates = read_lock(root / "Cargo.lock")
        merge_metadata(crates, run_cargo_metadata(root))
        report = run_checks(root, crates, advisories, config)
    except CheckError as error:
        print(f"supply chain: error: {error}", file=sys.stderr)
        return 2

    for warning in report.warnings:
        print(f"warning: {warning}")
    for error in report.errors:
        print(f"error: {error}", file=sys.stderr)
    exceptions = len(report.exceptions_used)
    print(
        f"supply chain: {len(crates)} crates, {report.advisories_checked} advisories checked, "
        f"{exceptions} exceptions, {len(report.warnings)} warnings, {len(report.errors)} errors "
        f"(advisory-db {db_path})"
    )
    if report.errors:
        print(f"supply chain: FAILED with {len(report.errors)} errors, listed above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
