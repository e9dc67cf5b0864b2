//! Tests of the simulate subcommand: pattern syntax, the per-bucket table, the printed output.

use super::scenario::{parse_pattern, Arrivals, Scores, Segment, SPAMMER};
use super::*;
use crate::stats::burst::Rater;

fn args(scenario: Scenario, pattern: Option<&str>) -> SimulateArgs {
    SimulateArgs {
        scenario,
        pattern: pattern.map(str::to_string),
        rate: 100.0,
        bucket_secs: None,
        half_life_buckets: None,
        k: None,
        floor: None,
        seed: 1,
        every: 0,
    }
}

fn output(a: &SimulateArgs) -> io::Result<String> {
    let mut out = Vec::new();
    run(a, &mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn pattern_syntax() {
    let cfg = BurstConfig::default();
    let segs = parse_pattern("60x5, 2x2500@0,3x0", &cfg).map_err(|e| e.to_string());
    let even = |count, buckets: i64, scores| Segment {
        arrivals: Arrivals::Even {
            count,
            duration_ms: buckets * 60_000,
        },
        scores,
        rater: None,
        alongside: false,
    };
    assert_eq!(
        segs,
        Ok(vec![
            even(300, 60, Scores::Organic),
            even(5000, 2, Scores::Fixed(0)),
            even(0, 3, Scores::Organic),
        ])
    );
    for bad in [
        "",
        "5",
        "2x2500@9",
        "0x5",
        "axb",
        "2x@1",
        "10000001x1",
        "1x20000001",
    ] {
        let err = parse_pattern(bad, &cfg).map(|_| ()).map_err(|e| e.kind());
        assert_eq!(
            err,
            Err(io::ErrorKind::InvalidInput),
            "{bad:?} was accepted"
        );
    }
}

#[test]
fn custom_pattern_table_counts_damps_and_shows_idle_buckets() -> io::Result<()> {
    let cfg = BurstConfig::default();
    let segs = parse_pattern("60x5@4,2x0,2x2500@0", &cfg)?;
    let rows = table(&events(&segs, &cfg, &mut Rng::new(1)), &cfg);
    assert_eq!(rows.len(), 64);
    assert!(rows[..60].iter().all(|r| r.arrivals == 5 && !r.damped()));
    assert_eq!((rows[60].arrivals, rows[61].arrivals), (0, 0));
    // A new post: UCL = floor in bucket 0, then the baseline grows towards 5 a bucket.
    assert_eq!(rows[0].ucl, 10.0);
    // Idle rows carry the limit a rating would have met there (an empty bucket is folded too).
    assert!(rows[60..62]
        .iter()
        .all(|r| r.ucl >= 10.0 && r.ucl < 30.0 && r.ucl != rows[59].ucl));
    // 5 evenly spread ratings after a bucket of 5: the window always holds about 6.
    assert!(rows[1..60]
        .iter()
        .all(|r| (r.max_estimate - 6.0).abs() < 1e-9));
    assert_eq!((rows[60].max_estimate, rows[0].max_estimate), (0.0, 5.0));
    let bomb = &rows[62];
    assert_eq!(bomb.arrivals, 2500);
    // After idle buckets the window holds only the bomb's own arrivals.
    assert_eq!(bomb.max_estimate, 2500.0);
    assert!(
        (0.02..0.06).contains(&bomb.mean_weight()),
        "bomb bucket mean weight {}",
        bomb.mean_weight()
    );
    // The second bomb bucket still sees the first one in its sliding window: it weighs
    // about one UCL in all, not a fresh UCL of full-weight ratings plus a tail.
    let second = &rows[63];
    assert_eq!(second.max_estimate, 2501.0);
    assert!(
        second.mean_weight() * 2500.0 < 1.1 * second.ucl,
        "second bomb bucket weighs {}",
        second.mean_weight() * 2500.0
    );
    let last = rows[63];
    assert_eq!(
        last.raw_avg.map(|a| (a * 1e4).round()),
        Some((4.0 * 300.0 / 5300.0 * 1e4_f64).round())
    );
    let damped = last.damped_avg.unwrap_or(0.0);
    assert!(
        (2.6..2.8).contains(&damped),
        "damped average {damped} should stay far above the raw one"
    );
    Ok(())
}

#[test]
fn bomb_output_is_a_short_readable_table() -> io::Result<()> {
    let text = output(&args(Scenario::Bomb, None))?;
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("burst simulation: B=60s H=30 buckets k=3 floor=10, 15000 calls (15000 ratings written)"),
        "{}",
        lines[0]
    );
    let columns: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(columns, COLUMNS.map(|(c, _)| c));
    assert_eq!(columns[2..4], ["requests", "arrivals"]);
    assert!(lines.len() < 60, "{} lines", lines.len());
    // Both bomb buckets are shown, with 2,500 arrivals each.
    let bomb_rows = lines
        .iter()
        .filter(|l| l.split_whitespace().nth(3) == Some("2500"))
        .count();
    assert_eq!(bomb_rows, 2, "{text}");
    // The second bomb bucket is judged by its arrivals plus the first one's still in the window.
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().nth(4) == Some("2501.0")),
        "{text}"
    );
    assert!(lines
        .last()
        .is_some_and(|l| l.contains("% of written ratings fell in damped buckets")));
    // Same seed, same table; another seed, another one.
    assert_eq!(output(&args(Scenario::Bomb, None))?, text);
    let mut other = args(Scenario::Bomb, None);
    other.seed = 2;
    assert_ne!(output(&other)?, text);
    Ok(())
}

#[test]
fn overrides_and_bad_input() -> io::Result<()> {
    let mut a = args(Scenario::Custom, Some("3x4,1x40@0"));
    (a.bucket_secs, a.floor, a.every) = (Some(1), Some(2.0), 1);
    let text = output(&a)?;
    assert!(
        text.starts_with(
            "burst simulation: B=1s H=30 buckets k=3 floor=2, 52 calls (52 ratings written) in 4 buckets"
        ),
        "{text}"
    );
    assert_eq!(text.lines().count(), 2 + 4 + 1);
    // Columns: bucket, time, requests, arrivals, max_x_est: at the 40th rating, 39/40 of the bucket has
    // passed and 1/40 of the bucket before's 4 ratings is still in the window.
    let row3: Vec<&str> = text
        .lines()
        .nth(5)
        .map_or(vec![], |l| l.split_whitespace().collect());
    assert_eq!(row3[2..5], ["40", "40", "40.1"], "{text}");
    let mut idle = args(Scenario::Custom, Some("1x4,1x0,1x4"));
    idle.every = 1;
    let text = output(&idle)?;
    let idle_row: Vec<&str> = text
        .lines()
        .nth(3)
        .map_or(vec![], |l| l.split_whitespace().collect());
    assert_eq!(idle_row[2..5], ["0", "0", "-"], "{text}");
    a.floor = Some(0.0);
    assert_eq!(
        output(&a).map_err(|e| e.kind()),
        Err(io::ErrorKind::InvalidInput)
    );
    let no_pattern = output(&args(Scenario::Custom, None)).map_err(|e| e.kind());
    assert_eq!(no_pattern, Err(io::ErrorKind::InvalidInput));
    let mut steady = args(Scenario::Steady, None);
    steady.rate = -1.0;
    assert_eq!(
        output(&steady).map_err(|e| e.kind()),
        Err(io::ErrorKind::InvalidInput)
    );
    Ok(())
}

#[test]
fn one_spammer_counts_once_per_bucket_and_damps_no_one() -> io::Result<()> {
    let cfg = BurstConfig::default();
    let a = args(Scenario::Spammer, None);
    let calls = events(&segments(&a, &cfg)?, &cfg, &mut Rng::new(a.seed));
    let spam = calls.iter().filter(|e| e.rater == Rater::User(SPAMMER));
    assert_eq!(spam.count(), 6_000);
    let rows = table(&calls, &cfg);
    assert_eq!(rows.len(), 60);
    for (i, r) in rows.iter().enumerate() {
        let organic = r.requests - 100;
        // The same zero counts only while it is a new rating (bucket 0), and nothing once it
        // is unchanged; flips count once a bucket, however many there are.
        let spammer = u64::from(i == 0 || i >= 30);
        assert_eq!(r.arrivals, organic + spammer, "bucket {i}: {r:?}");
        // Every flip writes, but the first: it repeats the zero of the first half hour.
        let writes = match i {
            0..30 => spammer,
            30 => 99,
            _ => 100,
        };
        assert_eq!(r.written, organic + writes, "bucket {i}: {r:?}");
        assert!(!r.damped(), "bucket {i}: {r:?}");
    }
    let weight: i64 = rows.iter().map(|r| r.weight_milli_sum).sum();
    let written: u64 = rows.iter().map(|r| r.written).sum();
    assert!(
        weight as f64 >= 0.99 * 1000.0 * written as f64,
        "{weight} of {written}"
    );
    let last = rows[59];
    let (raw, damped) = (last.raw_avg.unwrap_or(0.0), last.damped_avg.unwrap_or(9.0));
    assert!((raw - damped).abs() < 0.05, "raw {raw}, damped {damped}");
    let text = output(&a)?;
    let header = format!(
        "{} calls ({written} ratings written) in 60 buckets",
        calls.len()
    );
    assert!(
        text.lines().next().is_some_and(|l| l.contains(&header)),
        "{text}"
    );
    Ok(())
}
