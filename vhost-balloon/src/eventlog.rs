// SPDX-License-Identifier: GPL-2.0

//! The optional event log (`--log PATH`): one terse line per event, stamped with seconds since
//! the host started (the first line gives the wall-clock start). Written unbuffered, so a
//! `crash` loses nothing.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub struct EventLog {
    file: Option<File>,
    start: Instant,
}

impl EventLog {
    pub fn open(path: Option<&Path>) -> io::Result<Self> {
        let file = match path {
            Some(p) => Some(OpenOptions::new().create(true).append(true).open(p)?),
            None => None,
        };
        let mut log = EventLog {
            file,
            start: Instant::now(),
        };
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        log.line(format_args!(
            "start pid={} unix={unix:.3}",
            std::process::id()
        ));
        Ok(log)
    }

    pub fn enabled(&self) -> bool {
        self.file.is_some()
    }

    pub fn line(&mut self, args: fmt::Arguments<'_>) {
        if let Some(f) = self.file.as_mut() {
            let t = self.start.elapsed().as_secs_f64();
            let _ = f.write_all(format!("{t:10.3} {args}\n").as_bytes());
        }
    }
}

/// `ev!(state, "fmt", args...)`: one event log line (formatted only when there is a log;
/// the arguments may borrow the state).
#[macro_export]
macro_rules! ev {
    ($st:expr, $($arg:tt)*) => {
        if $st.log.enabled() {
            let line = format!($($arg)*);
            $st.log.line(format_args!("{line}"));
        }
    };
}
