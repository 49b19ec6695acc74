//! The figures the docs state about this crate's constants, read back from the constants
//! themselves: a constant changed without its docs fails here.

use crate::wal::{AUTOCHECKPOINT_FRAMES, JOURNAL_SIZE_LIMIT, WAL_FRAMES_LIMIT};

const ARCHITECTURE: &str = include_str!("../../../docs/ARCHITECTURE.md");
const RELIABILITY: &str = include_str!("../../../docs/RELIABILITY.md");
const STATS: &str = include_str!("stats.rs");

/// `n` with thousands separated by commas, as the docs write figures.
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Text with line breaks and indentation folded to single spaces, so a figure the docs
/// wrap over two lines is still found.
fn folded(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn assert_states(doc: &str, doc_name: &str, sentences: &[String]) {
    let doc = folded(doc);
    let missing: Vec<_> = sentences
        .iter()
        .filter(|s| !doc.contains(&folded(s)))
        .collect();
    assert!(
        missing.is_empty(),
        "{doc_name} no longer states what the code does; expected: {missing:#?}"
    );
}

/// Bug caught: a WAL limit changed in `wal.rs` while ARCHITECTURE.md, RELIABILITY.md and
/// `Totals::checkpoints` kept stating the old figures (they said 4000 where the code waits
/// at 16,000, and 1000 where it checkpoints at 4000).
#[test]
fn the_docs_state_the_wal_limits_of_the_code() {
    let auto = i64::from(AUTOCHECKPOINT_FRAMES);
    let limit = i64::from(WAL_FRAMES_LIMIT);
    // The docs call the limit "four times the threshold" and journal_size_limit "five times".
    assert_eq!(limit, 4 * auto, "the docs say four times");
    let mb = |frames: i64| (frames * (4096 + 24) + 500_000) / 1_000_000;
    assert_eq!(
        JOURNAL_SIZE_LIMIT,
        5 * auto * (4096 + 24),
        "the docs say five times"
    );
    assert_states(
        ARCHITECTURE,
        "docs/ARCHITECTURE.md",
        &[
            format!("`AUTOCHECKPOINT_FRAMES` in `wal.rs`: {auto} frames"),
            format!(
                "(`WAL_FRAMES_LIMIT`: {} frames, about {} MB)",
                thousands(limit),
                mb(limit)
            ),
            format!("five times the threshold (about {} MB)", mb(5 * auto)),
            format!("four times the threshold ({} frames)", thousands(limit)),
            format!(
                "the WAL stops at about {} frames plus one batch",
                thousands(limit)
            ),
            format!("at most about {} frames plus one batch", thousands(limit)),
        ],
    );
    assert_states(
        RELIABILITY,
        "docs/RELIABILITY.md",
        &[format!(
            "the {} frames past which writers wait for a checkpoint, plus one automatic \
             checkpoint's worth of {}",
            thousands(limit),
            thousands(auto)
        )],
    );
    assert_states(
        STATS,
        "Totals::checkpoints",
        &[format!("auto-checkpoint size ({auto} frames)")],
    );
}

/// Bug caught: the thousands separator misplaced, which would make the check above demand
/// a figure the docs could never match.
#[test]
fn thousands_are_separated_as_the_docs_write_them() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(4000), "4,000");
    assert_eq!(thousands(16_000), "16,000");
    assert_eq!(thousands(1_234_567), "1,234,567");
    assert_eq!(thousands(-1000), "-1,000");
}
