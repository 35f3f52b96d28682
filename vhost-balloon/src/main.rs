// SPDX-License-Identifier: GPL-2.0

//! `vballoon-host`: a virtio-balloon device (virtio id 5) as a vhost-user backend, for QEMU's
//! generic `vhost-user-device-pci`, that plays a hostile host against the guest driver: it
//! behaves like QEMU's balloon by default, turns on one misbehaviour at a time on command, and
//! records every protocol violation of the guest. See `usage()`.

mod checker;
mod control;
mod device;
mod eventlog;
mod mode;
mod notify;
mod state;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::device::BalloonBackend;
use crate::eventlog::EventLog;
use crate::state::{Options, Shared, State};

fn usage() -> &'static str {
    "usage: vballoon-host --socket PATH [--control PATH] [--target PAGES]
                     [--features stats,oom,reporting|none] [--no-discard]
                     [--stats-period-ms MS] [--log PATH] [--once]

  --socket PATH        vhost-user socket to listen on (QEMU connects; re-bound at start)
  --control PATH       control socket: one command per line, one JSON line per answer:
                         target PAGES | notify | query | mode NAME [ARGS] | release |
                         crash | stats-now
                       modes: normal, never-ack, delay MS, wrong-len, out-of-order,
                         flip A B, stats-storm, config-storm, zero-when-inflating
  --target PAGES       initial num_pages (4 KiB pages, default 0)
  --features LIST      balloon features offered besides VERSION_1 (default: stats)
  --no-discard         do not punch holes for inflated pages and reported ranges
  --stats-period-ms MS request stats this often (default 1000, 0 = never)
  --log PATH           event log
  --once               exit when the first QEMU connection ends (default: listen again)"
}

struct Cli {
    socket: PathBuf,
    control: Option<PathBuf>,
    target: u32,
    features: u64,
    discard: bool,
    stats_period_ms: u64,
    log: Option<PathBuf>,
    once: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Cli> {
    let mut socket = None;
    let mut cli = Cli {
        socket: PathBuf::new(),
        control: None,
        target: 0,
        features: 1 << checker::F_STATS_VQ,
        discard: true,
        stats_period_ms: 1000,
        log: None,
        once: false,
    };
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow!("{arg} needs a value\n{}", usage()))
        };
        match arg.as_str() {
            "--socket" => socket = Some(PathBuf::from(value()?)),
            "--control" => cli.control = Some(PathBuf::from(value()?)),
            "--target" => cli.target = value()?.parse().context("--target")?,
            "--features" => {
                cli.features = checker::parse_features(&value()?).map_err(|e| anyhow!(e))?
            }
            "--no-discard" => cli.discard = false,
            "--stats-period-ms" => {
                cli.stats_period_ms = value()?.parse().context("--stats-period-ms")?
            }
            "--log" => cli.log = Some(PathBuf::from(value()?)),
            "--once" => cli.once = true,
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{}", usage()),
        }
    }
    cli.socket = socket.ok_or_else(|| anyhow!("--socket is required\n{}", usage()))?;
    Ok(cli)
}

fn run() -> Result<()> {
    let cli = parse_args(std::env::args().skip(1))?;
    let log =
        EventLog::open(cli.log.as_deref()).with_context(|| format!("opening log {:?}", cli.log))?;
    let opts = Options {
        features: (1u64 << VIRTIO_F_VERSION_1) | cli.features,
        discard: cli.discard,
        stats_period: (cli.stats_period_ms > 0).then(|| Duration::from_millis(cli.stats_period_ms)),
    };
    let shared = Arc::new(Shared::new(State::new(opts, cli.target, log)));

    // The vhost-user socket first: a harness that sees the control socket may start QEMU.
    let mut listener = Listener::new(&cli.socket, true)
        .map_err(|e| anyhow!("listening on {}: {e}", cli.socket.display()))?;
    if let Some(path) = &cli.control {
        control::spawn(path, shared.clone())
            .with_context(|| format!("control socket {}", path.display()))?;
    }
    {
        let shared = shared.clone();
        thread::Builder::new()
            .name("timer".into())
            .spawn(move || shared.timer_loop())?;
    }

    loop {
        let backend = BalloonBackend::new(shared.clone());
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let mut daemon = VhostUserDaemon::new("vballoon-host".into(), backend, mem)
            .map_err(|e| anyhow!("creating the vhost-user daemon: {e}"))?;
        daemon
            .start(&mut listener)
            .map_err(|e| anyhow!("accepting on {}: {e}", cli.socket.display()))?;
        shared.lock().on_connect();
        let result = daemon.wait();
        shared.lock().on_disconnect();
        if let Err(e) = &result {
            eprintln!("vballoon-host: connection ended: {e}");
        }
        // Dropping the daemon ends its vring thread (exit event) before the next accept.
        drop(daemon);
        if cli.once {
            return Ok(());
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vballoon-host: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Cli> {
        parse_args(s.split_whitespace().map(String::from))
    }

    #[test]
    fn defaults() {
        let c = args("--socket /tmp/s").unwrap();
        assert_eq!(c.socket, PathBuf::from("/tmp/s"));
        assert_eq!(c.features, 1 << checker::F_STATS_VQ);
        assert!(c.discard);
        assert_eq!(c.stats_period_ms, 1000);
        assert_eq!(c.target, 0);
        assert!(c.control.is_none() && c.log.is_none() && !c.once);
    }

    #[test]
    fn all_flags() {
        let c = args(
            "--socket s --control c --target 65536 --features reporting,oom --no-discard \
             --stats-period-ms 0 --log l --once",
        )
        .unwrap();
        assert_eq!(c.control, Some(PathBuf::from("c")));
        assert_eq!(c.target, 65536);
        assert_eq!(
            c.features,
            (1 << checker::F_REPORTING) | (1 << checker::F_DEFLATE_ON_OOM)
        );
        assert!(!c.discard && c.once);
        assert_eq!(c.stats_period_ms, 0);
    }

    #[test]
    fn bad_args() {
        assert!(args("").is_err());
        assert!(args("--socket").is_err());
        assert!(args("--socket s --features hint").is_err());
        assert!(args("--socket s --target -1").is_err());
        assert!(args("--socket s --bogus").is_err());
    }
}
