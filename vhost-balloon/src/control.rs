// SPDX-License-Identifier: GPL-2.0

//! The control socket (`--control PATH`): a unix stream socket, one command per line, exactly
//! one JSON line answered per command (`{"ok":true,...}` or `{"ok":false,"error":"..."}`).
//! Each client gets its own thread, so a client that stays connected blocks nobody.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;

use serde_json::{json, Value};

use crate::ev;
use crate::mode::Mode;
use crate::state::Shared;

/// What `crash` exits with.
pub const CRASH_EXIT_CODE: i32 = 3;

/// Binds `path` (removing a stale socket first) and serves clients in the background.
pub fn spawn(path: &Path, shared: Arc<Shared>) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        let shared = shared.clone();
                        let _ = thread::Builder::new()
                            .name("control-client".into())
                            .spawn(move || client(stream, &shared));
                    }
                    Err(e) => eprintln!("vballoon-host: control accept: {e}"),
                }
            }
        })?;
    Ok(())
}

fn client(stream: UnixStream, shared: &Arc<Shared>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else {
            return;
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "crash" {
            ev!(shared.lock(), "control: crash");
            let _ = writeln!(out, "{}", json!({"ok": true, "exiting": CRASH_EXIT_CODE}));
            let _ = out.flush();
            std::process::exit(CRASH_EXIT_CODE);
        }
        let reply = command(shared, line).unwrap_or_else(|e| json!({"ok": false, "error": e}));
        if writeln!(out, "{reply}").is_err() {
            return;
        }
    }
}

/// Runs one command line (other than `crash`); returns its answer.
pub fn command(shared: &Arc<Shared>, line: &str) -> Result<Value, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    if words.is_empty() {
        return Err("empty command".into());
    }
    let args = &words[1..];
    let no_args = || {
        if args.is_empty() {
            Ok(())
        } else {
            Err(format!("{} takes no arguments", words[0]))
        }
    };
    match words[0] {
        "target" => {
            let [pages] = args else {
                return Err("usage: target PAGES".into());
            };
            let pages: u32 = pages
                .parse()
                .map_err(|_| format!("target: bad page count {pages:?}"))?;
            {
                let mut st = shared.lock();
                st.num_pages = pages;
                ev!(st, "control: target {pages}");
            }
            let notified = shared.notify_config();
            Ok(json!({"ok": true, "num_pages": pages, "notified": notified}))
        }
        "notify" => {
            no_args()?;
            let notified = shared.notify_config();
            Ok(json!({"ok": true, "notified": notified}))
        }
        "query" => {
            no_args()?;
            let n = shared.notifications.load(Ordering::Relaxed);
            Ok(shared.lock().query(n))
        }
        "mode" => {
            let mode = Mode::parse(args)?;
            let name = mode.to_string();
            let released = shared.set_mode(mode);
            Ok(json!({"ok": true, "mode": name, "released": released}))
        }
        "release" => {
            no_args()?;
            let mut st = shared.lock();
            let released = st.release_all();
            st.flush();
            ev!(st, "control: release ({released})");
            Ok(json!({"ok": true, "released": released}))
        }
        "stats-now" => {
            no_args()?;
            let mut st = shared.lock();
            let requested = st.request_stats();
            st.flush();
            drop(st);
            shared.wake.notify_all();
            Ok(json!({"ok": true, "requested": requested}))
        }
        other => Err(format!(
            "unknown command {other:?} (target, notify, query, mode, release, crash, stats-now)"
        )),
    }
}
