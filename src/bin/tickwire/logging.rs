//! The command line's logger: every line on stderr, the tool's own and the
//! library's (through the `log` facade), as `tickwire COMMAND: message`,
//! warnings and errors marked. `-v` shows debug lines (connection states,
//! retries), `-vv` trace; `-q` keeps warnings and errors only, `-qq` errors
//! only, `-qqq` nothing. Machine-readable output (JSON lines, `listening
//! ADDR`, tables) goes to stdout and is not affected.
//!
//! The tool's own lines go through [`info!`], [`warning!`], [`error!`] and
//! [`debug!`] here (the target [`CLI`]); the library's lines keep their
//! module targets. Commands that run many in-process clients or none
//! (`gen`, `dump`, `export`, `demo`, `bench`) show the library's lines one
//! level quieter (warnings and errors by default) but their own at the
//! level asked for.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The target of the tool's own lines.
pub(crate) const CLI: &str = "tickwire::cli";

/// A line of the tool's own at info level.
macro_rules! info {
    ($($arg:tt)+) => { log::info!(target: $crate::logging::CLI, $($arg)+) };
}
/// A line of the tool's own at warn level.
macro_rules! warning {
    ($($arg:tt)+) => { log::warn!(target: $crate::logging::CLI, $($arg)+) };
}
/// A line of the tool's own at error level.
macro_rules! error {
    ($($arg:tt)+) => { log::error!(target: $crate::logging::CLI, $($arg)+) };
}
/// A line of the tool's own at debug level.
macro_rules! debug {
    ($($arg:tt)+) => { log::debug!(target: $crate::logging::CLI, $($arg)+) };
}
pub(crate) use {debug, error, info, warning};

struct Stderr {
    command: &'static str,
    /// The tool's own lines.
    cli: LevelFilter,
    /// The library's lines.
    library: LevelFilter,
}

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let target = metadata.target();
        if target == CLI {
            metadata.level() <= self.cli
        } else {
            metadata.level() <= self.library && target.starts_with("tickwire")
        }
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

/// Installs the logger for `command` (once per process): the tool's own
/// lines at `cli`, the library's at `library`.
pub(crate) fn init(command: &'static str, cli: LevelFilter, library: LevelFilter) {
    let logger: &'static Stderr = Box::leak(Box::new(Stderr {
        command,
        cli,
        library,
    }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(cli.max(library));
    }
}

/// Whether the tool's own info lines are shown (for output that is not a
/// log line, such as the live status line of `demo`).
pub(crate) fn info_enabled() -> bool {
    log::log_enabled!(target: CLI, Level::Info)
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
        assert_eq!(level(0, 3), LevelFilter::Off);
        assert_eq!(level(0, 9), LevelFilter::Off);
        assert_eq!(level(2, 2), LevelFilter::Info);
    }
}
