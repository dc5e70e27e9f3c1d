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

pub(crate) fn run(seconds: f64, rate: u64, stream_mib: usize, json: bool) -> io::Result<()> {
    let quiet = json;
    let say = |what: &str| {
        if !quiet {
            eprintln!("tickwire bench: {what}…");
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
    let one: f64 = measure::fan_out(1, 0, seconds).iter().sum();
    say("server to 16 clients");
    let sixteen: f64 = measure::fan_out(16, 0, seconds).iter().sum();
    say("latency, raw socket");
    let raw_lat = measure::raw_latency(rate, seconds);
    say("latency, server to client");
    let (lat, _) = measure::latency(rate, seconds, false, false, false);
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
        let items: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    r#"{{"case":"{}","value":{},"unit":"{}","baseline":"{}","baseline_value":{},"ratio":{}}}"#,
                    r.case,
                    json_number(r.value, 3),
                    r.unit,
                    r.baseline,
                    json_number(r.baseline_value, 3),
                    json_ratio(r.value, r.baseline_value)
                )
            })
            .collect();
        println!(
            r#"{{"crc32c_backend":"{}","stream_frames":{},"stream_bytes":{},"rate":{},"seconds":{},"results":[{}]}}"#,
            tickwire::checksum::backend(),
            batch.len(),
            bytes,
            rate,
            seconds,
            items.join(",")
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

/// `value` as a JSON number with `decimals` decimals, or `null` when it is
/// not finite: JSON has no NaN or infinity.
fn json_number(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "null".to_string()
    }
}

/// `value / baseline` as a JSON number (`null` over a zero baseline).
fn json_ratio(value: f64, baseline: f64) -> String {
    json_number(value / baseline, 4)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ratios_are_never_nan_in_json() {
        assert_eq!(super::json_ratio(1.0, 2.0), "0.5000");
        assert_eq!(super::json_ratio(0.0, 0.0), "null");
        assert_eq!(super::json_ratio(1.0, 0.0), "null");
        assert_eq!(super::json_number(f64::NAN, 3), "null");
        assert_eq!(super::json_number(f64::INFINITY, 3), "null");
        assert_eq!(super::json_number(1.5, 3), "1.500");
    }
}
