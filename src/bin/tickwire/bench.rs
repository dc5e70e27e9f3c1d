//! `tickwire bench`: the figures users care about, each with its baseline
//! from the same run.

use std::io;

use crate::measure;

struct Row {
    case: &'static str,
    value: f64,
    unit: &'static str,
    baseline: &'static str,
    baseline_value: f64,
}

/// A row as the `--json` summary writes it.
#[derive(serde::Serialize)]
struct JsonRow {
    case: &'static str,
    value: Option<f64>,
    unit: &'static str,
    baseline: &'static str,
    baseline_value: Option<f64>,
    ratio: Option<f64>,
}

/// The `--json` summary.
#[derive(serde::Serialize)]
struct Summary {
    crc32c_backend: String,
    stream_frames: usize,
    stream_bytes: u64,
    rate: u64,
    seconds: f64,
    results: Vec<JsonRow>,
}

pub(crate) fn run(seconds: f64, rate: u64, stream_mib: usize, json: bool) -> io::Result<()> {
    let quiet = json;
    let say = |what: &str| {
        if !quiet {
            crate::logging::info!("{what}…");
        }
    };
    say(&format!(
        "building a {stream_mib} MiB stream of the 60/30/10 mix"
    ));
    let (data, batch) = measure::synthetic_stream(stream_mib << 20, 42);
    let bytes = data.len() as u64;
    let frames = batch.len() as f64;
    let avg = data.len() as f64 / frames;
    let mut out = vec![0u8; data.len()];
    let mut copy = vec![0u8; data.len()];
    say("memcpy and memchr baselines");
    let memcpy = measure::time_rounds(5, bytes, || {
        copy.copy_from_slice(&data);
        std::hint::black_box(&copy);
        0
    });
    let memchr = measure::time_rounds(5, bytes, || measure::memchr_count(&data));
    say("checked decode and encode");
    let decode = measure::time_rounds(5, bytes, || measure::checked_decode(&data));
    let encode = measure::time_rounds(5, bytes, || measure::encode_all(&batch, &mut out));
    say("raw loopback socket");
    let raw = measure::raw_loopback(&data, seconds) / avg;
    say("server to 1 client");
    let one: f64 = measure::fan_out(1, 0, seconds, false).iter().sum();
    say("server to 16 clients");
    let sixteen: f64 = measure::fan_out(16, 0, seconds, false).iter().sum();
    say("latency, raw socket");
    let raw_lat = measure::raw_latency(rate, seconds);
    say("latency, server to client");
    let (lat, _) = measure::latency(rate, seconds, measure::LatencyCase::default());
    let us = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let memcpy_fps = bytes as f64 / memcpy.best.as_secs_f64() / avg;
    let memchr_fps = bytes as f64 / memchr.best.as_secs_f64() / avg;
    let rows = [
        Row {
            case: "checked decode (frame + CRC-32C + sequence)",
            value: decode.frames_per_sec(),
            unit: "frames/s",
            baseline: "memchr scan of the same bytes",
            baseline_value: memchr_fps,
        },
        Row {
            case: "encode (Sequencer::encode_batch)",
            value: encode.frames_per_sec(),
            unit: "frames/s",
            baseline: "memcpy of the same bytes",
            baseline_value: memcpy_fps,
        },
        Row {
            case: "loopback: server -> 1 client, CRC-checked",
            value: one,
            unit: "frames/s",
            baseline: "raw loopback socket, same bytes",
            baseline_value: raw,
        },
        Row {
            case: "loopback: server -> 16 clients, aggregate",
            value: sixteen,
            unit: "frames/s",
            baseline: "raw loopback socket, same bytes",
            baseline_value: raw,
        },
        Row {
            case: "latency p50 at the rate",
            value: us(&lat, 0.5),
            unit: "µs",
            baseline: "raw socket p50, same pacing",
            baseline_value: us(&raw_lat, 0.5),
        },
        Row {
            case: "latency p99 at the rate",
            value: us(&lat, 0.99),
            unit: "µs",
            baseline: "raw socket p99, same pacing",
            baseline_value: us(&raw_lat, 0.99),
        },
        Row {
            case: "latency p99.9 at the rate",
            value: us(&lat, 0.999),
            unit: "µs",
            baseline: "raw socket p99.9, same pacing",
            baseline_value: us(&raw_lat, 0.999),
        },
    ];
    if json {
        let summary = Summary {
            crc32c_backend: tickwire::checksum::backend().to_string(),
            stream_frames: batch.len(),
            stream_bytes: bytes,
            rate,
            seconds,
            results: rows
                .iter()
                .map(|r| JsonRow {
                    case: r.case,
                    value: rounded(r.value, 3),
                    unit: r.unit,
                    baseline: r.baseline,
                    baseline_value: rounded(r.baseline_value, 3),
                    ratio: rounded(r.value / r.baseline_value, 4),
                })
                .collect(),
        };
        println!(
            "{}",
            serde_json::to_string(&summary).map_err(io::Error::other)?
        );
        return Ok(());
    }
    println!(
        "tickwire bench: {stream_mib} MiB stream ({} frames, {avg:.1} B average), {seconds} s per network case, latency at {rate} msg/s; CRC-32C {}",
        batch.len(),
        tickwire::checksum::backend()
    );
    println!(
        "{:<46} {:>10} {:<11} {:<34} {:>10} {:>7}",
        "case", "value", "unit", "baseline (same run)", "baseline", "ratio"
    );
    for r in &rows {
        let scale = if r.unit == "frames/s" { 1e6 } else { 1.0 };
        let unit = if r.unit == "frames/s" {
            "M frames/s"
        } else {
            r.unit
        };
        println!(
            "{:<46} {:>10.1} {:<11} {:<34} {:>10.1} {:>6.2}x",
            r.case,
            r.value / scale,
            unit,
            r.baseline,
            r.baseline_value / scale,
            r.value / r.baseline_value
        );
    }
    Ok(())
}

/// `value` rounded to `decimals` decimals, or `None` (JSON `null`) when it
/// is not finite: JSON has no NaN or infinity.
fn rounded(value: f64, decimals: i32) -> Option<f64> {
    let scale = 10f64.powi(decimals);
    value.is_finite().then(|| (value * scale).round() / scale)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ratios_are_never_nan_in_json() {
        assert_eq!(super::rounded(1.0 / 2.0, 4), Some(0.5));
        let (zero, one) = (std::hint::black_box(0.0f64), std::hint::black_box(1.0f64));
        assert_eq!(super::rounded(zero / zero, 4), None);
        assert_eq!(super::rounded(one / zero, 4), None);
        assert_eq!(super::rounded(f64::NAN, 3), None);
        assert_eq!(super::rounded(1.23456, 3), Some(1.235));
        let row = super::JsonRow {
            case: "c",
            value: super::rounded(f64::NAN, 3),
            unit: "u",
            baseline: "b",
            baseline_value: Some(2.0),
            ratio: None,
        };
        assert_eq!(
            serde_json::to_string(&row).unwrap(),
            r#"{"case":"c","value":null,"unit":"u","baseline":"b","baseline_value":2.0,"ratio":null}"#
        );
    }
}
