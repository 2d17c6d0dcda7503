//! Semver precedence as the protocol defines it: PROTOCOL.md step 3,
//! "Versions".
//!
//! Versions are compared by semver 2.0 precedence: major, minor, patch, then
//! pre-release (`1.0.0-alpha < 1.0.0`), with build metadata ignored
//! (`1.0.0+a == 1.0.0+b`). An installed version that is not semver counts as
//! 0.0.0, so a device with a garbage version string can still be updated.
//!
//! `semver::Version`'s `Ord` also orders build metadata, so never compare
//! two `Version`s with `<` or `cmp` for protocol decisions: use
//! [`cmp_precedence`] or [`cmp_versions`].

use semver::Version;
use std::cmp::Ordering;

/// True when `s` is a semver 2.0 version, exactly (no leading `v`, no
/// surrounding whitespace, no leading zeros).
pub fn is_valid_semver(s: &str) -> bool {
    Version::parse(s).is_ok()
}

/// Parses `s` as semver; anything that is not semver is 0.0.0.
///
/// Build metadata is kept in the result (it is informative), but
/// [`cmp_versions`] ignores it.
pub fn parse_lenient(s: &str) -> Version {
    Version::parse(s).unwrap_or(Version::new(0, 0, 0))
}

/// Semver 2.0 precedence of two parsed versions: build metadata ignored.
pub fn cmp_versions(a: &Version, b: &Version) -> Ordering {
    a.cmp_precedence(b)
}

/// Semver 2.0 precedence of two version strings, each parsed leniently
/// (not semver → 0.0.0), build metadata ignored.
pub fn cmp_precedence(a: &str, b: &str) -> Ordering {
    cmp_versions(&parse_lenient(a), &parse_lenient(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn precedence() {
        let cases = [
            ("1.0.0", "1.0.0", Equal),
            ("1.0.0", "1.0.1", Less),
            ("1.0.1", "1.1.0", Less),
            ("1.9.0", "1.10.0", Less),
            ("2.0.0", "1.99.99", Greater),
            ("1.0.0-alpha", "1.0.0", Less),
            ("1.0.0-alpha", "1.0.0-alpha.1", Less),
            ("1.0.0-alpha.1", "1.0.0-alpha.beta", Less),
            ("1.0.0-alpha.beta", "1.0.0-beta", Less),
            ("1.0.0-beta", "1.0.0-beta.2", Less),
            ("1.0.0-beta.2", "1.0.0-beta.11", Less),
            ("1.0.0-beta.11", "1.0.0-rc.1", Less),
            ("1.0.0-rc.1", "1.0.0", Less),
            ("1.0.0+build1", "1.0.0+build2", Equal),
            ("1.0.0+build1", "1.0.0", Equal),
            ("1.0.0-rc.1+b", "1.0.0-rc.1+a", Equal),
            ("1.0.0+zzz", "1.0.1+aaa", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(cmp_precedence(a, b), want, "{a} vs {b}");
            assert_eq!(cmp_precedence(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn garbage_is_zero() {
        for s in [
            "", "garbage", "1.0", "v1.0.0", " 1.0.0", "1.0.0 ", "01.0.0", "1.0.0-",
        ] {
            assert!(!is_valid_semver(s), "{s:?}");
            assert_eq!(parse_lenient(s), Version::new(0, 0, 0), "{s:?}");
            assert_eq!(cmp_precedence(s, "0.0.0"), Equal, "{s:?}");
            assert_eq!(cmp_precedence(s, "0.0.1"), Less, "{s:?}");
            assert_eq!(cmp_precedence(s, "0.0.0-alpha"), Greater, "{s:?}");
        }
    }

    #[test]
    fn valid_semver() {
        for s in [
            "0.0.0",
            "1.2.3",
            "1.2.3-rc.1",
            "1.2.3+build.5",
            "1.2.3-x.7.z.92+exp.sha.5114f85",
        ] {
            assert!(is_valid_semver(s), "{s}");
        }
    }

    #[test]
    fn build_metadata_kept_but_ignored() {
        let a = parse_lenient("1.2.3+one");
        let b = parse_lenient("1.2.3+two");
        assert_eq!(a.build.as_str(), "one");
        assert_ne!(a.cmp(&b), Equal, "semver's Ord orders build metadata");
        assert_eq!(cmp_versions(&a, &b), Equal);
    }
}
