"""Tests for supply_chain.py: run with `python3 -m unittest discover -s scripts`."""

import io
import sys
import tempfile
import textwrap
import unittest
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

import supply_chain as sc  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DB = REPO_ROOT / "../shared/advisory-db"


def matches(requirement: str, version: str) -> bool:
    return sc.requirement_matches(requirement, sc.Version.parse(version))


class VersionOrderTest(unittest.TestCase):
    def test_semver_precedence_chain(self):
        # The precedence example of the SemVer 2.0.0 specification, section 11.
        chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.1.0",
            "2.0.0",
        ]
        keys = [sc.Version.parse(text).key() for text in chain]
        for lower, higher, lower_text, higher_text in zip(keys, keys[1:], chain, chain[1:]):
            self.assertLess(lower, higher, f"{lower_text} should sort below {higher_text}")

    def test_build_metadata_ignored(self):
        with_build = sc.Version.parse("0.11.1+wasi-snapshot-preview1")
        self.assertEqual(with_build.key(), sc.Version.parse("0.11.1").key())
        self.assertEqual(with_build.build, "wasi-snapshot-preview1")
        self.assertEqual(str(with_build), "0.11.1+wasi-snapshot-preview1")

    def test_invalid_versions_rejected(self):
        for text in ["1.2", "01.2.3", "1.2.3-", "1.2.3-a..b", "v1.2.3", ""]:
            with self.subTest(text=text), self.assertRaises(sc.CheckError):
                sc.Version.parse(text)


class RequirementTest(unittest.TestCase):
    def assert_table(self, requirement, expected):
        for version, result in expected.items():
            with self.subTest(requirement=requirement, version=version):
                self.assertEqual(matches(requirement, version), result)

    def test_greater_or_equal(self):
        self.assert_table(">= 0.10.2", {"0.10.1": False, "0.10.2": True, "0.11.2": True, "1.0.0": True})
        self.assert_table(">= 1.2", {"1.1.9": False, "1.2.0": True, "3.0.0": True})
        self.assert_table(">=1", {"0.9.9": False, "1.0.0": True})

    def test_less(self):
        self.assert_table("< 0.3.0", {"0.2.9": True, "0.3.0": False, "0.3.1": False})
        self.assert_table("< 1.2", {"1.1.9": True, "1.2.0": False})

    def test_greater(self):
        self.assert_table("> 1.2.3", {"1.2.3": False, "1.2.4": True, "2.0.0": True})
        self.assert_table("> 1.2", {"1.2.9": False, "1.3.0": True})
        self.assert_table("> 1", {"1.9.9": False, "2.0.0": True})

    def test_less_or_equal(self):
        self.assert_table("<= 1.2.3", {"1.2.3": True, "1.2.4": False, "0.1.0": True})
        self.assert_table("<= 1.2", {"1.2.9": True, "1.3.0": False})

    def test_exact(self):
        self.assert_table("=0.2.1", {"0.2.1": True, "0.2.2": False, "0.2.0": False})
        self.assert_table("=1.2", {"1.2.0": True, "1.2.7": True, "1.3.0": False})

    def test_caret(self):
        self.assert_table("^1.2.3", {"1.2.2": False, "1.2.3": True, "1.9.0": True, "2.0.0": False})
        self.assert_table("^0.2.3", {"0.2.3": True, "0.2.9": True, "0.3.0": False, "0.2.2": False})
        self.assert_table("^0.0.3", {"0.0.3": True, "0.0.4": False})
        self.assert_table("^0.2", {"0.2.0": True, "0.2.9": True, "0.3.0": False})
        self.assert_table("^1", {"1.0.0": True, "1.9.9": True, "2.0.0": False})

    def test_bare_version_is_caret(self):
        # The advisory database writes backported fixes this way: "0.54.2".
        self.assert_table("0.54.2", {"0.54.1": False, "0.54.2": True, "0.54.9": True, "0.55.0": False})
        self.assert_table("1.3.1", {"1.3.0": False, "1.4.0": True, "2.0.0": False})

    def test_tilde(self):
        self.assert_table("~1.2.3", {"1.2.3": True, "1.2.9": True, "1.3.0": False, "1.2.2": False})
        self.assert_table("~1.2", {"1.2.0": True, "1.3.0": False})
        self.assert_table("~1", {"1.0.0": True, "1.9.0": True, "2.0.0": False})

    def test_conjunction(self):
        self.assert_table(
            ">= 0.9.5, < 0.10.0",
            {"0.9.4": False, "0.9.5": True, "0.9.99": True, "0.10.0": False},
        )
        self.assert_table(
            "< 0.10.0-alpha.1, >= 0.9.6",
            {"0.9.5": False, "0.9.6": True, "0.9.100": True, "0.10.0": False},
        )

    def test_prerelease_needs_same_triple(self):
        # Cargo's rule: a pre-release matches only if a comparator names the
        # same MAJOR.MINOR.PATCH with a pre-release.
        self.assert_table(">= 1.0.0", {"2.0.0-rc.1": False, "1.0.0-rc.1": False})
        self.assert_table(
            ">= 0.10.0-alpha.2",
            {"0.10.0-alpha.1": False, "0.10.0-alpha.2": True, "0.10.0-rc.3": True, "0.10.0": True, "0.11.0-rc.1": False},
        )
        self.assert_table(
            ">= 0.103.12, < 0.104.0-alpha.1",
            {"0.103.12": True, "0.103.20": True, "0.104.0-alpha.0": True, "0.104.0-alpha.1": False},
        )
        self.assert_table("< 1.0.0-0", {"0.9.0": True, "1.0.0-alpha": False, "1.0.0": False})
        self.assert_table("^0.3.0-rc.0", {"0.3.0-rc.0": True, "0.3.0-rc.1": True, "0.3.0": True, "0.3.1-rc.0": False})
        self.assert_table("=1.2.3-rc.1", {"1.2.3-rc.1": True, "1.2.3-rc.2": False, "1.2.3": False})
        self.assert_table("~1.2", {"1.2.3-alpha": False})

    def test_star_matches_releases_only(self):
        self.assert_table("*", {"0.0.1": True, "9.9.9": True, "1.0.0-rc.1": False})

    def test_invalid_requirements_rejected(self):
        for text in ["!= 1.0.0", ">= ", "1.2.3,", ">= 1.2-rc.1", "=> 1.0.0", "1.2.3.4"]:
            with self.subTest(text=text), self.assertRaises(sc.CheckError):
                sc.parse_requirement(text)


class LicenseExpressionTest(unittest.TestCase):
    ALLOWED = {"MIT", "Apache-2.0", "ISC"}

    def assert_license(self, expression, expected, allowed=None):
        with self.subTest(expression=expression):
            self.assertEqual(sc.license_allowed(expression, allowed or self.ALLOWED), expected)

    def test_single_identifiers(self):
        self.assert_license("MIT", True)
        self.assert_license("GPL-3.0-only", False)
        self.assert_license("mit", False)  # SPDX identifiers are matched exactly.

    def test_or_needs_one_side(self):
        self.assert_license("MIT OR GPL-3.0-only", True)
        self.assert_license("GPL-3.0-only OR MIT", True)
        self.assert_license("GPL-3.0-only OR LGPL-2.1-or-later", False)
        self.assert_license("MIT OR Apache-2.0 OR LGPL-2.1-or-later", True)

    def test_and_needs_both_sides(self):
        self.assert_license("MIT AND ISC", True)
        self.assert_license("MIT AND GPL-3.0-only", False)

    def test_and_binds_tighter_than_or(self):
        # MIT OR (Apache-2.0 AND GPL-3.0-only)
        self.assert_license("MIT OR Apache-2.0 AND GPL-3.0-only", True)
        # (GPL-3.0-only AND MIT) OR (Zlib AND ISC)
        self.assert_license("GPL-3.0-only AND MIT OR Zlib AND ISC", False)

    def test_parentheses(self):
        self.assert_license("(MIT OR Apache-2.0) AND Unicode-3.0", False)
        self.assert_license("(MIT OR Apache-2.0) AND Unicode-3.0", True, self.ALLOWED | {"Unicode-3.0"})
        self.assert_license("(GPL-3.0-only OR MIT) AND (Zlib OR ISC)", True)
        self.assert_license("GPL-3.0-only OR (MIT AND Zlib)", False)
        self.assert_license(
            "ISC AND (Apache-2.0 OR ISC) AND Apache-2.0 AND MIT AND (Apache-2.0 OR ISC OR MIT-0)", True
        )

    def test_with_needs_exact_entry(self):
        self.assert_license("Apache-2.0 WITH LLVM-exception", False)
        self.assert_license("Apache-2.0 WITH LLVM-exception", True, {"Apache-2.0 WITH LLVM-exception"})
        self.assert_license("Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT", True)
        self.assert_license("GPL-2.0-only WITH Classpath-exception-2.0 OR GPL-3.0-only", False)

    def test_legacy_slash_is_or(self):
        self.assert_license("MIT/Apache-2.0", True)
        self.assert_license("Apache-2.0 / MIT", True)
        self.assert_license("Unlicense/MIT", True)
        self.assert_license("Unlicense/GPL-3.0-only", False)

    def test_invalid_expressions_rejected(self):
        for expression in ["", "MIT OR", "(MIT", "MIT)", "MIT AND AND ISC", "OR MIT", "MIT WITH", "MIT ISC", "MIT, ISC"]:
            with self.subTest(expression=expression), self.assertRaises(sc.CheckError):
                sc.license_allowed(expression, self.ALLOWED)


def write_advisory(db: Path, package: str, advisory_id: str, front_matter: str, title: str = "Example flaw"):
    directory = db / "crates" / package
    directory.mkdir(parents=True, exist_ok=True)
    text = f"```toml\n[advisory]\nid = \"{advisory_id}\"\npackage = \"{package}\"\n{textwrap.dedent(front_matter)}```\n\n# {title}\n\nBody.\n"
    (directory / f"{advisory_id}.md").write_text(text, encoding="utf-8")


CONFIG = """
[advisories]
db-path = "db"
{ignores}
[licenses]
allow = ["MIT", "Apache-2.0"]

[sources]
allow-registry = ["registry+https://github.com/rust-lang/crates.io-index"]
"""

CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"


class FakeDatabaseTest(unittest.TestCase):
    def setUp(self):
        self.temp = tempfile.TemporaryDirectory()
        self.addCleanup(self.temp.cleanup)
        self.root = Path(self.temp.name)
        self.db = self.root / "db"
        write_advisory(self.db, "vulnerable", "RUSTSEC-2099-0001", '\n[versions]\npatched = [">= 0.4.0", "0.2.5"]\n')
        write_advisory(
            self.db,
            "vulnerable",
            "RUSTSEC-2099-0002",
            'withdrawn = "2099-02-01"\n\n[versions]\npatched = []\n',
        )
        write_advisory(
            self.db,
            "abandoned",
            "RUSTSEC-2099-0003",
            'informational = "unmaintained"\n\n[versions]\npatched = []\n',
            title="abandoned is unmaintained",
        )
        write_advisory(
            self.db,
            "ranged",
            "RUSTSEC-2099-0004",
            '\n[versions]\npatched = [">= 0.3.0"]\nunaffected = ["< 0.2.0"]\n',
        )

    def config(self, ignores: str = "") -> sc.Config:
        path = self.root / "supply-chain.toml"
        path.write_text(CONFIG.format(ignores=ignores), encoding="utf-8")
        return sc.load_config(path)

    def crate(self, name, version, source=CRATES_IO, license="MIT"):
        return sc.Crate(name=name, version=version, source=source, license=license,
                        manifest_path=str(self.root / "registry" / name / "Cargo.toml"))

    def run_checks(self, crates, ignores=""):
        advisories = sc.load_advisories(self.db)
        return sc.run_checks(self.root, crates, advisories, self.config(ignores))

    def test_parse_advisory_fields(self):
        advisory = sc.parse_advisory(self.db / "crates/abandoned/RUSTSEC-2099-0003.md")
        self.assertEqual(advisory.id, "RUSTSEC-2099-0003")
        self.assertEqual(advisory.package, "abandoned")
        self.assertEqual(advisory.informational, "unmaintained")
        self.assertEqual(advisory.patched, ())
        self.assertEqual(advisory.title, "abandoned is unmaintained")

    def test_patched_and_backport_ranges(self):
        advisory = sc.load_advisories(self.db)["vulnerable"][0]
        self.assertTrue(advisory.affects(sc.Version.parse("0.2.4")))
        self.assertFalse(advisory.affects(sc.Version.parse("0.2.5")))
        self.assertTrue(advisory.affects(sc.Version.parse("0.3.0")))
        self.assertFalse(advisory.affects(sc.Version.parse("0.4.0")))

    def test_unaffected_range(self):
        advisory = sc.load_advisories(self.db)["ranged"][0]
        self.assertFalse(advisory.affects(sc.Version.parse("0.1.9")))
        self.assertTrue(advisory.affects(sc.Version.parse("0.2.0")))
        self.assertFalse(advisory.affects(sc.Version.parse("0.3.0")))

    def test_affected_crate_fails_with_names(self):
        report = self.run_checks([self.crate("vulnerable", "0.3.0")])
        self.assertEqual(len(report.errors), 1)
        self.assertIn("vulnerable 0.3.0", report.errors[0])
        self.assertIn("RUSTSEC-2099-0001", report.errors[0])
        self.assertIn("Example flaw", report.errors[0])
        self.assertEqual(report.advisories_checked, 4)

    def test_patched_crate_passes(self):
        report = self.run_checks([self.crate("vulnerable", "0.4.1"), self.crate("ranged", "0.1.0")])
        self.assertEqual(report.errors, [])

    def test_withdrawn_advisory_ignored(self):
        report = self.run_checks([self.crate("vulnerable", "0.4.0")])
        self.assertEqual(report.errors, [])  # RUSTSEC-2099-0002 affects all versions but is withdrawn.

    def test_unmaintained_fails_unless_ignored(self):
        report = self.run_checks([self.crate("abandoned", "0.1.0")])
        self.assertEqual(len(report.errors), 1)
        self.assertIn("informational: unmaintained", report.errors[0])

        ignores = '[[advisories.ignore]]\nid = "RUSTSEC-2099-0003"\nreason = "only used at build time"\n'
        report = self.run_checks([self.crate("abandoned", "0.1.0")], ignores)
        self.assertEqual(report.errors, [])
        self.assertEqual(report.exceptions_used, {"RUSTSEC-2099-0003"})

    def test_ignore_without_reason_rejected(self):
        for ignores in [
            '[[advisories.ignore]]\nid = "RUSTSEC-2099-0003"\n',
            '[[advisories.ignore]]\nid = "RUSTSEC-2099-0003"\nreason = "   "\n',
        ]:
            with self.subTest(ignores=ignores), self.assertRaisesRegex(sc.CheckError, "has no reason"):
                self.config(ignores)

    def test_unused_exception_warns(self):
        ignores = '[[advisories.ignore]]\nid = "RUSTSEC-2099-0001"\nreason = "fixed upstream"\n'
        report = self.run_checks([self.crate("vulnerable", "0.4.0")], ignores)
        self.assertEqual(report.errors, [])
        self.assertEqual(len(report.warnings), 1)
        self.assertIn("RUSTSEC-2099-0001 matches no locked crate", report.warnings[0])

    def test_workspace_crate_skips_advisories(self):
        member = sc.Crate("abandoned", "0.1.0", None, "MIT", str(self.root / "member/Cargo.toml"), True)
        self.assertEqual(self.run_checks([member]).errors, [])

    def test_license_not_allowed(self):
        report = self.run_checks([self.crate("copyleft", "1.0.0", license="GPL-3.0-only OR LGPL-3.0-only")])
        self.assertEqual(len(report.errors), 1)
        self.assertIn("copyleft 1.0.0", report.errors[0])
        self.assertIn("GPL-3.0-only OR LGPL-3.0-only", report.errors[0])

    def test_missing_license_fails(self):
        report = self.run_checks([self.crate("unlabelled", "1.0.0", license=None)])
        self.assertEqual(len(report.errors), 1)
        self.assertIn("declares no SPDX `license` field", report.errors[0])

    def test_git_source_fails(self):
        source = "git+https://example.invalid/repo?rev=abc#abc"
        report = self.run_checks([self.crate("forked", "1.0.0", source=source)])
        self.assertEqual(len(report.errors), 1)
        self.assertIn("forked 1.0.0 comes from", report.errors[0])

    def test_path_outside_repository_fails(self):
        outside = sc.Crate("vendored", "1.0.0", None, "MIT", "/opt/elsewhere/vendored/Cargo.toml")
        inside = sc.Crate("member", "0.1.0", None, "MIT", str(self.root / "member/Cargo.toml"), True)
        report = self.run_checks([outside, inside])
        self.assertEqual(len(report.errors), 1)
        self.assertIn("vendored 1.0.0 is a path dependency outside the repository", report.errors[0])

    def test_duplicates_warn(self):
        report = self.run_checks([self.crate("dup", "1.0.0"), self.crate("dup", "2.0.0")])
        self.assertEqual(report.errors, [])
        self.assertEqual(report.warnings, ["duplicate: dup is locked at 2 versions: 1.0.0, 2.0.0"])

    def test_missing_database_rejected(self):
        with self.assertRaisesRegex(sc.CheckError, "advisory database not found"):
            sc.load_advisories(self.root / "nowhere")

    def test_main_reports_and_exits(self):
        (self.root / "Cargo.lock").write_text(
            textwrap.dedent(
                f"""\
                version = 4

                [[package]]
                name = "vulnerable"
                version = "0.3.0"
                source = "{CRATES_IO}"

                [[package]]
                name = "abandoned"
                version = "0.1.0"
                source = "{CRATES_IO}"
                """
            ),
            encoding="utf-8",
        )
        ignores = '[[advisories.ignore]]\nid = "RUSTSEC-2099-0003"\nreason = "only used at build time"\n'
        self.config(ignores)
        metadata = {
            "workspace_members": [],
            "packages": [
                {"id": "a", "name": "vulnerable", "version": "0.3.0", "source": CRATES_IO, "license": "MIT",
                 "manifest_path": "/registry/vulnerable/Cargo.toml"},
                {"id": "b", "name": "abandoned", "version": "0.1.0", "source": CRATES_IO, "license": "Apache-2.0",
                 "manifest_path": "/registry/abandoned/Cargo.toml"},
            ],
        }
        stdout, stderr = io.StringIO(), io.StringIO()
        with mock.patch.object(sc, "run_cargo_metadata", return_value=metadata), redirect_stdout(stdout), redirect_stderr(stderr):
            status = sc.main(["--root", str(self.root)])
        self.assertEqual(status, 1)
        self.assertIn("supply chain: 2 crates, 4 advisories checked, 1 exceptions", stdout.getvalue())
        self.assertIn("vulnerable 0.3.0 is affected by RUSTSEC-2099-0001", stderr.getvalue())

    def test_main_rejects_stale_lock(self):
        (self.root / "Cargo.lock").write_text(
            f'version = 4\n\n[[package]]\nname = "ghost"\nversion = "1.0.0"\nsource = "{CRATES_IO}"\n',
            encoding="utf-8",
        )
        self.config()
        stderr = io.StringIO()
        metadata = {"workspace_members": [], "packages": []}
        with mock.patch.object(sc, "run_cargo_metadata", return_value=metadata), redirect_stderr(stderr):
            status = sc.main(["--root", str(self.root)])
        self.assertEqual(status, 2)
        self.assertIn("ghost 1.0.0 is in Cargo.lock but not in `cargo metadata`", stderr.getvalue())


@unittest.skipUnless((SHARED_DB / "crates").is_dir(), "the shared advisory-db copy is not next to the repository")
class SharedDatabaseTest(unittest.TestCase):
    """Checks against the real database copy, for the advisories the config names."""

    @classmethod
    def setUpClass(cls):
        cls.advisories = sc.load_advisories(SHARED_DB)

    def affecting(self, package, version):
        parsed = sc.Version.parse(version)
        return sorted(a.id for a in self.advisories.get(package, []) if not a.withdrawn and a.affects(parsed))

    def test_every_advisory_parses(self):
        total = sum(len(items) for items in self.advisories.values())
        self.assertGreater(total, 1000)
        for items in self.advisories.values():
            for advisory in items:
                for requirement in advisory.patched + advisory.unaffected:
                    sc.parse_requirement(requirement)

    def test_serde_cbor(self):
        self.assertEqual(self.affecting("serde_cbor", "0.11.2"), ["RUSTSEC-2021-0127"])
        self.assertEqual(self.affecting("serde_cbor", "0.10.1"), ["RUSTSEC-2019-0025", "RUSTSEC-2021-0127"])

    def test_rsa(self):
        self.assertEqual(self.affecting("rsa", "0.10.0"), ["RUSTSEC-2023-0071"])
        self.assertEqual(self.affecting("rsa", "0.9.8"), ["RUSTSEC-2023-0071"])


if __name__ == "__main__":
    unittest.main()
