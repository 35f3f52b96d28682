// SPDX-License-Identifier: GPL-2.0

//! The host's misbehaviours: one is active at a time. Most are decided where a buffer arrives
//! (see `device.rs`) or in the timer thread (`state.rs`); the two that act on their own, `flip`
//! and `config-storm`, run a thread here until the mode changes.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::state::Shared;

/// The active misbehaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Behave like a correct device.
    Normal,
    /// Take inflate/deflate buffers but never return them (until the mode changes or `release`).
    NeverAck,
    /// Return each inflate/deflate buffer this many ms after it arrived.
    Delay(u64),
    /// Return inflate/deflate/stats buffers with a wrong used length.
    WrongLen,
    /// Hold inflate/deflate buffers until 4 are held or 50 ms passed, return them reversed.
    OutOfOrder,
    /// Set num_pages to A and B alternately every 1 ms, notifying each time.
    Flip(u32, u32),
    /// Return the stats buffer as soon as the guest posts it.
    StatsStorm,
    /// Send config-change notifications in a tight loop.
    ConfigStorm,
    /// At the next inflate buffer, set num_pages to 0 (and notify) before returning it.
    ZeroWhenInflating,
}

impl Mode {
    /// Parses `NAME [ARGS]` as given to the `mode` control command.
    pub fn parse(words: &[&str]) -> Result<Mode, String> {
        let num = |i: usize| -> Result<u64, String> {
            let w = words
                .get(i)
                .ok_or_else(|| format!("mode {} needs an argument", words[0]))?;
            w.parse::<u64>()
                .map_err(|_| format!("mode {}: bad number {w:?}", words[0]))
        };
        let pages = |i: usize| -> Result<u32, String> {
            u32::try_from(num(i)?).map_err(|_| format!("mode {}: {} too large", words[0], words[i]))
        };
        let Some(&name) = words.first() else {
            return Err("mode needs a name".into());
        };
        let (mode, argc) = match name {
            "normal" => (Mode::Normal, 0),
            "never-ack" => (Mode::NeverAck, 0),
            "delay" => (Mode::Delay(num(1)?), 1),
            "wrong-len" => (Mode::WrongLen, 0),
            "out-of-order" => (Mode::OutOfOrder, 0),
            "flip" => (Mode::Flip(pages(1)?, pages(2)?), 2),
            "stats-storm" => (Mode::StatsStorm, 0),
            "config-storm" => (Mode::ConfigStorm, 0),
            "zero-when-inflating" => (Mode::ZeroWhenInflating, 0),
            other => return Err(format!("unknown mode {other:?}")),
        };
        if words.len() != argc + 1 {
            return Err(format!("mode {name} takes {argc} argument(s)"));
        }
        Ok(mode)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Normal => write!(f, "normal"),
            Mode::NeverAck => write!(f, "never-ack"),
            Mode::Delay(ms) => write!(f, "delay {ms}"),
            Mode::WrongLen => write!(f, "wrong-len"),
            Mode::OutOfOrder => write!(f, "out-of-order"),
            Mode::Flip(a, b) => write!(f, "flip {a} {b}"),
            Mode::StatsStorm => write!(f, "stats-storm"),
            Mode::ConfigStorm => write!(f, "config-storm"),
            Mode::ZeroWhenInflating => write!(f, "zero-when-inflating"),
        }
    }
}

/// The wrong used lengths of `wrong-len`, alternately.
pub fn wrong_len(toggle: bool, len: u32) -> u32 {
    if toggle {
        0xffff_fff0
    } else {
        len.wrapping_add(4096)
    }
}

/// Starts the thread of a mode that acts on its own; it ends when the mode generation moves
/// past `gen`.
pub fn spawn_mode_thread(shared: &Arc<Shared>, mode: &Mode, gen: u64) {
    let shared = shared.clone();
    match *mode {
        Mode::Flip(a, b) => {
            thread::spawn(move || flip(&shared, a, b, gen));
        }
        Mode::ConfigStorm => {
            thread::spawn(move || config_storm(&shared, gen));
        }
        _ => {}
    }
}

fn current(shared: &Shared, gen: u64) -> bool {
    shared.mode_gen.load(Ordering::Acquire) == gen
}

fn flip(shared: &Shared, a: u32, b: u32, gen: u64) {
    for value in [a, b].into_iter().cycle() {
        {
            let mut st = shared.lock();
            // Checked under the lock: a mode change (which leaves num_pages at B) cannot be
            // overwritten by a late flip.
            if !current(shared, gen) {
                return;
            }
            st.num_pages = value;
        }
        shared.notify_config();
        thread::sleep(Duration::from_millis(1));
    }
}

fn config_storm(shared: &Shared, gen: u64) {
    while current(shared, gen) {
        // Checked every time: a notification must not reach QEMU while the device is stopped
        // (see `State::notify_allowed`).
        let sent = shared
            .notifier_if_allowed()
            .is_some_and(|n| n.notify().is_ok());
        if sent {
            shared.notifications.fetch_add(1, Ordering::Relaxed);
        } else {
            thread::sleep(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Mode, String> {
        Mode::parse(&s.split_whitespace().collect::<Vec<_>>())
    }

    #[test]
    fn modes_parse_and_print_back() {
        for s in [
            "normal",
            "never-ack",
            "delay 300",
            "wrong-len",
            "out-of-order",
            "flip 16384 81920",
            "stats-storm",
            "config-storm",
            "zero-when-inflating",
        ] {
            assert_eq!(p(s).unwrap().to_string(), s);
        }
        assert_eq!(p("delay 5").unwrap(), Mode::Delay(5));
        assert_eq!(p("flip 1 2").unwrap(), Mode::Flip(1, 2));
    }

    #[test]
    fn bad_modes_are_refused() {
        assert!(p("").is_err());
        assert!(p("delay").is_err());
        assert!(p("delay x").is_err());
        assert!(p("flip 1").is_err());
        assert!(p("flip 1 99999999999").is_err());
        assert!(p("normal 1").is_err());
        assert!(p("sometimes").is_err());
    }

    #[test]
    fn wrong_lengths_alternate() {
        assert_eq!(wrong_len(true, 1024), 0xffff_fff0);
        assert_eq!(wrong_len(false, 1024), 1024 + 4096);
    }
}
