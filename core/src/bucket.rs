//! Rollout decisions as plain functions: the bucket a subject falls in, whether
//! a flag lets it through, and the phase name of a rollout. No pgrx here.

use md5::{Digest, Md5};
use std::collections::HashSet;

/// One row of `webhook_outbox.feature_flags`, as the decision needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flag {
    pub enabled: bool,
    /// 0..=100 (a CHECK on the table).
    pub percentage: u8,
    pub allowlist: HashSet<String>,
    pub denylist: HashSet<String>,
    /// `None`: the unsalted formula, so cohorts bucketed that way elsewhere carry over.
    pub salt: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    UnknownFlag,
    Disabled,
    Denylist,
    Allowlist,
    Percentage,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UnknownFlag => "unknown_flag",
            Reason::Disabled => "disabled",
            Reason::Denylist => "denylist",
            Reason::Allowlist => "allowlist",
            Reason::Percentage => "percentage",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub emit: bool,
    pub reason: Reason,
    /// The subject's bucket, when the decision came down to the percentage.
    pub bucket: Option<u8>,
}

/// 0..=99: the first 8 hex digits of md5(subject) as an unsigned integer,
/// modulo 100 (as Python's `int(md5(s).hexdigest()[:8], 16) % 100`), or of
/// md5(salt || ':' || subject) when the flag has a salt.
pub fn bucket(subject: &str, salt: Option<&str>) -> u8 {
    let digest = match salt {
        None => Md5::digest(subject),
        Some(salt) => Md5::new()
            .chain_update(salt)
            .chain_update(":")
            .chain_update(subject)
            .finalize(),
    };
    // 8 hex digits are the first 4 bytes, most significant first.
    let head = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    (head % 100) as u8
}

/// Whether `subject` gets events under `flag` (`None`: no such flag), checked
/// in this order: unknown, disabled, denylist, allowlist, percentage.
/// A NULL subject has no bucket and is on no list: only 100% lets it through.
pub fn decide(flag: Option<&Flag>, subject: Option<&str>) -> Decision {
    let verdict = |emit, reason| Decision {
        emit,
        reason,
        bucket: None,
    };
    let Some(flag) = flag else {
        return verdict(false, Reason::UnknownFlag);
    };
    if !flag.enabled {
        return verdict(false, Reason::Disabled);
    }
    if subject.is_some_and(|s| flag.denylist.contains(s)) {
        return verdict(false, Reason::Denylist);
    }
    if subject.is_some_and(|s| flag.allowlist.contains(s)) {
        return verdict(true, Reason::Allowlist);
    }
    let bucket = subject.map(|s| bucket(s, flag.salt.as_deref()));
    // Buckets are 0..=99, so 0% admits nobody and 100% everybody.
    let emit = flag.percentage >= 100 || bucket.is_some_and(|b| b < flag.percentage);
    Decision {
        emit,
        reason: Reason::Percentage,
        bucket,
    }
}

/// The rollout phase shown by `v_rollout_status` (canary_2pct … full_rollout,
/// plus `disabled` for a switched-off flag).
pub fn phase(enabled: bool, percentage: i32) -> &'static str {
    if !enabled {
        return "disabled";
    }
    match percentage {
        ..=0 => "disabled",
        1..=5 => "canary_2pct",
        6..=15 => "canary_10pct",
        16..=60 => "canary_50pct",
        _ => "full_rollout",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(percentage: u8) -> Flag {
        Flag {
            enabled: true,
            percentage,
            ..Flag::default()
        }
    }

    fn subjects(n: usize) -> impl Iterator<Item = String> {
        (1..=n).map(|i| format!("user-{i}"))
    }

    #[test]
    fn buckets_match_the_python_formula() {
        // From python3: int(hashlib.md5(s.encode()).hexdigest()[:8], 16) % 100,
        // salted with md5((salt + ':' + s).encode()).
        let table: &[(Option<&str>, &str, u8)] = &[
            (None, "", 93),
            (None, "user-1", 19),
            (None, "user-2", 12),
            (None, "user-42", 87),
            (None, "user-1000000", 19),
            (None, "cliente-123", 86),
            (None, "550e8400-e29b-41d4-a716-446655440000", 82),
            (None, "shopper_test_001", 65),
            (None, "josé", 19),
            (None, "日本語", 20),
            (Some("checkout-v2"), "user-1", 1),
            (Some("checkout-v2"), "user-42", 92),
            (Some("emails"), "user-1", 89),
            (Some("emails"), "550e8400-e29b-41d4-a716-446655440000", 88),
        ];
        for &(salt, subject, expected) in table {
            assert_eq!(
                bucket(subject, salt),
                expected,
                "bucket({subject:?}, salt {salt:?})"
            );
        }
    }

    #[test]
    fn ten_percent_admits_about_ten_percent() {
        let f = flag(10);
        let admitted = subjects(10_000)
            .filter(|s| decide(Some(&f), Some(s)).emit)
            .count();
        assert!(
            (850..=1150).contains(&admitted),
            "{admitted} of 10000 admitted at 10%"
        );
    }

    #[test]
    fn salts_spread_buckets_and_pick_different_cohorts() {
        let salted = Flag {
            salt: Some("checkout-v2".into()),
            ..flag(10)
        };
        let admitted: HashSet<String> = subjects(10_000)
            .filter(|s| decide(Some(&salted), Some(s)).emit)
            .collect();
        assert!(
            (850..=1150).contains(&admitted.len()),
            "{} of 10000 admitted at 10% with a salt",
            admitted.len()
        );
        let unsalted: HashSet<String> = subjects(10_000)
            .filter(|s| decide(Some(&flag(10)), Some(s)).emit)
            .collect();
        // Independent cohorts overlap by about 10% of 10%: nowhere near all.
        assert!(admitted.intersection(&unsalted).count() < 300);
    }

    #[test]
    fn the_same_subject_always_gets_the_same_answer() {
        let f = flag(37);
        for s in subjects(1_000) {
            let first = decide(Some(&f), Some(&s));
            assert!(
                (0..100).all(|_| decide(Some(&f), Some(&s)) == first),
                "{s} changed its answer"
            );
        }
    }

    #[test]
    fn raising_the_percentage_only_adds_subjects() {
        let all: Vec<String> = subjects(2_000).collect();
        let mut previous: HashSet<&String> = HashSet::new();
        for pct in 0..=100 {
            let f = flag(pct);
            let admitted: HashSet<&String> = all
                .iter()
                .filter(|s| decide(Some(&f), Some(s)).emit)
                .collect();
            assert!(
                admitted.is_superset(&previous),
                "raising to {pct}% dropped subjects"
            );
            previous = admitted;
        }
        assert_eq!(previous.len(), all.len(), "100% admits everybody");
    }

    #[test]
    fn precedence() {
        let f = Flag {
            enabled: true,
            percentage: 100,
            allowlist: ["vip".to_owned(), "both".to_owned()].into(),
            denylist: ["banned".to_owned(), "both".to_owned()].into(),
            salt: None,
        };
        let check = |flag: Option<&Flag>, subject: Option<&str>| {
            let d = decide(flag, subject);
            (d.emit, d.reason)
        };
        assert_eq!(check(None, Some("vip")), (false, Reason::UnknownFlag));
        let off = Flag {
            enabled: false,
            ..f.clone()
        };
        assert_eq!(
            check(Some(&off), Some("vip")),
            (false, Reason::Disabled),
            "disabled beats the allowlist"
        );
        assert_eq!(
            check(Some(&f), Some("banned")),
            (false, Reason::Denylist),
            "denylist beats 100%"
        );
        assert_eq!(
            check(Some(&f), Some("both")),
            (false, Reason::Denylist),
            "denylist beats the allowlist"
        );
        let zero = Flag {
            percentage: 0,
            ..f.clone()
        };
        assert_eq!(
            check(Some(&zero), Some("vip")),
            (true, Reason::Allowlist),
            "allowlist beats 0%"
        );
        assert_eq!(
            check(Some(&zero), Some("anyone")),
            (false, Reason::Percentage)
        );
        assert_eq!(check(Some(&f), Some("anyone")), (true, Reason::Percentage));
    }

    #[test]
    fn the_bucket_is_reported_only_for_percentage_decisions() {
        let f = Flag {
            allowlist: ["vip".to_owned()].into(),
            ..flag(50)
        };
        assert_eq!(decide(Some(&f), Some("user-42")).bucket, Some(87));
        assert_eq!(decide(Some(&f), Some("vip")).bucket, None);
        assert_eq!(decide(None, Some("user-42")).bucket, None);
    }

    #[test]
    fn a_null_subject_passes_only_at_full_rollout() {
        for (pct, emit) in [(0, false), (1, false), (99, false), (100, true)] {
            let d = decide(Some(&flag(pct)), None);
            assert_eq!(
                (d.emit, d.reason, d.bucket),
                (emit, Reason::Percentage, None),
                "at {pct}%"
            );
        }
    }

    #[test]
    fn phase_names() {
        let table = [
            (0, "disabled"),
            (1, "canary_2pct"),
            (2, "canary_2pct"),
            (5, "canary_2pct"),
            (6, "canary_10pct"),
            (15, "canary_10pct"),
            (16, "canary_50pct"),
            (60, "canary_50pct"),
            (61, "full_rollout"),
            (100, "full_rollout"),
        ];
        for (pct, name) in table {
            assert_eq!(phase(true, pct), name, "{pct}%");
        }
        assert_eq!(phase(false, 50), "disabled");
    }
}
