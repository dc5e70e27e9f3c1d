//! The command line's logger: the library's log lines (through the `log`
//! facade) on stderr, as `tickwire COMMAND: message`, warnings and errors
//! marked. `-v` shows debug lines (connection states, retries), `-vv` trace;
//! `-q` keeps warnings and errors only, `-qq` errors only.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr {
    command: &'static str,
    level: LevelFilter,
}

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level && metadata.target().starts_with("tickwire")
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mark = match record.level() {
            Level::Error => "error: ",
            Level::Warn => "warning: ",
            _ => "",
        };
        let _ = writeln!(
            std::io::stderr().lock(),
            "tickwire {}: {mark}{}",
            self.command,
            record.args()
        );
    }

    fn flush(&self) {}
}

/// The level for `verbose` `-v`s and `quiet` `-q`s (info by default).
pub(crate) fn level(verbose: u8, quiet: u8) -> LevelFilter {
    match i16::from(verbose) - i16::from(quiet) {
        i16::MIN..=-3 => LevelFilter::Off,
        -2 => LevelFilter::Error,
        -1 => LevelFilter::Warn,
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Installs the logger for `command` (once per process).
pub(crate) fn init(command: &'static str, level: LevelFilter) {
    let logger: &'static Stderr = Box::leak(Box::new(Stderr { command, level }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_move_the_level_both_ways() {
        assert_eq!(level(0, 0), LevelFilter::Info);
        assert_eq!(level(1, 0), LevelFilter::Debug);
        assert_eq!(level(5, 0), LevelFilter::Trace);
        assert_eq!(level(0, 1), LevelFilter::Warn);
        assert_eq!(level(0, 2), LevelFilter::Error);
        assert_eq!(level(0, 9), LevelFilter::Off);
        assert_eq!(level(2, 2), LevelFilter::Info);
    }
}
