//! Quality regression on a committed subset of NAB (three series, six windows, see
//! `tests/data/README.md`): runs the detector with its default parameters as a stream,
//! scores the result with the NAB procedure (probation, sigmoid-weighted windows, one
//! threshold chosen over the subset, standard profile) and checks the score does not
//! fall below the value the defaults reach. It runs in optimized builds only
//! (`cargo test --release -p edgewarden-detector --test nab_subset`, about a second).

use std::path::Path;

use edgewarden_detector::{Detector, DetectorParams};

/// Score reached by the default parameters on this subset (93.38, standard profile), minus a
/// small margin for floating-point differences between platforms.
const MIN_STANDARD_SCORE: f64 = 92.0;

const FILES: [&str; 3] = [
    "artificialWithAnomaly/art_daily_jumpsup.csv",
    "realKnownCause/ec2_request_latency_system_failure.csv",
    "realTraffic/speed_t4013.csv",
];

struct Scored {
    scores: Vec<f64>,
    window_of: Vec<Option<usize>>,
    value: Vec<f64>,
    first_scored: usize,
    n_windows: usize,
    scorable: Vec<usize>,
}

fn curve(x: f64) -> f64 {
    if x > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * x).exp()) - 1.0
    }
}

fn parse_ms(ts: &str) -> u64 {
    let (date, time) = ts.split_once(' ').expect("date and time");
    let d: Vec<i64> = date.split('-').map(|x| x.parse().expect("date")).collect();
    let t: Vec<i64> = time.split(':').map(|x| x.parse().expect("time")).collect();
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    u64::try_from(days * 86_400_000 + (t[0] * 3600 + t[1] * 60 + t[2]) * 1000).expect("after 1970")
}

fn run_file(root: &Path, key: &str, windows: &[(String, String)]) -> Scored {
    let text = std::fs::read_to_string(root.join(key)).expect("subset file");
    let mut det = Detector::new(DetectorParams::default()).expect("default params");
    let mut stamps = Vec::new();
    let mut scores = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let (ts, value) = line.split_once(',').expect("timestamp,value");
        let v = det.observe_and_retrain(parse_ms(ts), &[value.trim().parse().expect("value")]);
        stamps.push(ts.to_owned());
        scores.push(v.score);
    }
    let n = scores.len();
    let index = |stamp: &str| {
        stamps
            .iter()
            .position(|s| stamp.starts_with(s.as_str()))
            .expect("window bound is a row")
    };
    let spans: Vec<(usize, usize)> = windows.iter().map(|(a, b)| (index(a), index(b))).collect();
    let mut window_of = vec![None; n];
    let mut value = vec![-1.0; n];
    let mut previous: Option<(usize, f64)> = None;
    let mut cursor = 0;
    let fill_outside = |lo: usize, hi: usize, prev: Option<(usize, f64)>, value: &mut [f64]| {
        for (i, v) in value.iter_mut().enumerate().take(hi).skip(lo) {
            *v = match prev {
                None => -1.0,
                Some((end, width)) => curve((i - end) as f64 / (width - 1.0).max(1.0)),
            };
        }
    };
    for (w, &(a, b)) in spans.iter().enumerate() {
        fill_outside(cursor, a, previous, &mut value);
        let width = (b - a + 1) as f64;
        for i in a..=b {
            window_of[i] = Some(w);
            value[i] = curve(-((b - i + 1) as f64) / width);
        }
        previous = Some((b, width));
        cursor = b + 1;
    }
    fill_outside(cursor, n, previous, &mut value);
    let probation = (0.15 * n as f64).floor().min(0.15 * 5000.0);
    let first_scored = (probation.ceil() as usize).min(n);
    let scorable = spans
        .iter()
        .enumerate()
        .filter(|(_, &(_, b))| b >= first_scored)
        .map(|(w, _)| w)
        .collect();
    Scored {
        scores,
        window_of,
        value,
        first_scored,
        n_windows: spans.len(),
        scorable,
    }
}

/// Normalized NAB score with the best single threshold over all files.
fn nab_score(files: &[Scored], tp_w: f64, fp_w: f64, fn_w: f64) -> f64 {
    let left_edge = curve(-1.0);
    let mut rows = Vec::new();
    let mut offset = 0;
    let mut scorable = 0;
    let mut windows = 0;
    for f in files {
        for i in f.first_scored..f.scores.len() {
            rows.push((f.scores[i], f.window_of[i].map(|w| w + offset), f.value[i]));
        }
        offset += f.n_windows;
        scorable += f.scorable.len();
        windows += f.n_windows;
    }
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let null = -fn_w * scorable as f64;
    let mut total = null;
    let mut best = total;
    let mut best_in_window = vec![-fn_w; windows];
    let mut k = 0;
    while k < rows.len() {
        let level = rows[k].0;
        while k < rows.len() && rows[k].0 == level {
            let (_, w, v) = rows[k];
            match w {
                None => total += v * fp_w,
                Some(w) => {
                    let gain = v * tp_w / left_edge;
                    if gain > best_in_window[w] {
                        total += gain - best_in_window[w];
                        best_in_window[w] = gain;
                    }
                }
            }
            k += 1;
        }
        best = best.max(total);
    }
    let perfect = tp_w * windows as f64;
    100.0 * (best - null) / (perfect - null)
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "about 20 s unoptimized; runs with `cargo test --release`"
)]
fn nab_subset_score_does_not_regress() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let labels: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("windows.json")).expect("windows.json"),
    )
    .expect("windows json");
    let files: Vec<Scored> = FILES
        .iter()
        .map(|key| {
            let windows: Vec<(String, String)> = labels[key]
                .as_array()
                .expect("window list")
                .iter()
                .map(|w| {
                    (
                        w[0].as_str().expect("start").to_owned(),
                        w[1].as_str().expect("end").to_owned(),
                    )
                })
                .collect();
            run_file(&root, key, &windows)
        })
        .collect();
    let standard = nab_score(&files, 1.0, 0.11, 1.0);
    let low_fp = nab_score(&files, 1.0, 0.22, 1.0);
    let low_fn = nab_score(&files, 1.0, 0.11, 2.0);
    eprintln!("NAB subset standard={standard:.2} low_fp={low_fp:.2} low_fn={low_fn:.2}");
    assert!(
        standard >= MIN_STANDARD_SCORE,
        "standard score {standard:.2} fell below {MIN_STANDARD_SCORE}"
    );
}
