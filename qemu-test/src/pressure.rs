//! Memory pressure (issue 9): inflating against a full page cache reaches its target, and
//! inflating while a process holds most of the guest's memory neither kills it nor stalls
//! the guest. The page cache is an ext4 file system on a virtio-blk disk, which the kernel can
//! reclaim (the initramfs the other scenarios run from cannot be).

use crate::guest::{Vm, VmOpts, MIB};
use crate::oom::oom_kills;
use crate::scenarios::{
    assert_ballooned, deflate_exact, kernel_module, load, Ctx, Drv, MOVE_TIMEOUT,
};
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The file the guest reads into its page cache.
const CACHE_MIB: u64 = 1400;

/// An ext4 image holding one sparse `CACHE_MIB` file (`mkfs.ext4 -d` keeps it sparse, so the
/// image takes a few MiB on the host; reading the file still fills the guest's page cache).
fn disk_image(work: &Path) -> Result<PathBuf> {
    let dir = work.join("pressure-fs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let f = std::fs::File::create(dir.join("big"))?;
    f.set_len(CACHE_MIB * MIB)?;
    let img = work.join("pressure.ext4");
    // /usr/sbin may be missing from a CI user's PATH.
    let mkfs = ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("mkfs.ext4");
    let st = Command::new(mkfs)
        .args(["-q", "-F", "-d"])
        .arg(&dir)
        .arg(&img)
        .arg(format!("{}M", CACHE_MIB + 200))
        .status()
        .context("mkfs.ext4 (e2fsprogs)")?;
    if !st.success() {
        bail!("mkfs.ext4 failed: {st}");
    }
    Ok(img)
}

pub fn memory_pressure(ctx: &Ctx) -> Result<()> {
    let img = disk_image(&ctx.paths.work)?;
    let opts = VmOpts {
        extra: vec![
            "-drive".into(),
            format!(
                "file={},if=none,id=d0,format=raw,readonly=on",
                img.display()
            ),
            "-device".into(),
            "virtio-blk-pci,drive=d0".into(),
        ],
        ..VmOpts::default()
    };
    let mut vm = Vm::boot("memory_pressure", ctx.paths, ctx.initramfs, &opts)?;
    kernel_module(ctx, &mut vm, "virtio_blk")?;
    kernel_module(ctx, &mut vm, "ext4")?;
    let total0 = vm.mem_total()?;
    load(&mut vm, Drv::Rust)?;
    let kills0 = oom_kills(&mut vm)?;
    page_cache(&mut vm, total0)?;
    hog(&mut vm, total0)?;
    ensure!(oom_kills(&mut vm)? == kills0, "a process was OOM-killed");
    vm.sh("rmmod vballoon")?;
    ensure!(vm.mem_total()? == total0, "rmmod: MemTotal not back");
    vm.assert_dmesg_clean()?;
    vm.shutdown()
}

/// Fill the page cache, then ask for a 1.5 GiB balloon: the balloon reaches it, taking the
/// memory from the cache.
fn page_cache(vm: &mut Vm, total0: u64) -> Result<()> {
    // A modular virtio-blk finds the disk as modprobe returns, but the node may lag behind.
    vm.sh("for i in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.1; done; mkdir -p /mnt && mount -t ext4 -o ro /dev/vda /mnt && cat /mnt/big > /dev/null")?;
    let cached0 = vm.meminfo_kb("Cached")? * 1024;
    ensure!(
        cached0 >= CACHE_MIB * MIB,
        "page cache only {} MiB after reading {CACHE_MIB} MiB",
        cached0 / MIB
    );
    vm.balloon(512 * MIB)?;
    let took = vm
        .wait_actual(512 * MIB, MOVE_TIMEOUT)
        .context("inflate against a full page cache")?;
    let cached1 = vm.meminfo_kb("Cached")? * 1024;
    println!(
        "    1.5 GiB balloon against {} MiB of page cache: reached in {took:?}; cache now {} MiB",
        cached0 / MIB,
        cached1 / MIB
    );
    assert_ballooned(vm, total0, 1536, "page cache")?;
    deflate_exact(vm, total0, "page cache")?;
    vm.sh("umount /mnt")?;
    vm.assert_dmesg_clean()
}

/// A hog holds 1.4 GiB; the host asks for a 1.5 GiB balloon. The balloon stops at the floor,
/// the hog lives and the shell answers; once the hog exits the balloon reaches the target.
fn hog(vm: &mut Vm, total0: u64) -> Result<()> {
    vm.sh(
        "rm -f /tmp/hog.held /tmp/hog.rc; ( hog 1400 20; echo $? > /tmp/hog.rc.new; mv /tmp/hog.rc.new /tmp/hog.rc ) >/dev/null 2>&1 &",
    )?;
    let t = Instant::now();
    while vm
        .sh_rc("test -e /tmp/hog.held", Duration::from_secs(10))?
        .0
        != 0
    {
        ensure!(
            t.elapsed() < Duration::from_secs(60),
            "the hog did not take its memory in 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    vm.balloon(512 * MIB)?;
    let held = vm.wait_actual_settled(Duration::from_secs(3), Duration::from_secs(15))?;
    let t = Instant::now();
    vm.sh_rc("cat /proc/meminfo > /dev/null", Duration::from_secs(10))
        .context("the shell did not answer within 10 s with the hog and the balloon")?;
    println!(
        "    hog of 1400 MiB: balloon held with the guest at {} MiB; shell answered in {:?}",
        held / MIB,
        t.elapsed()
    );
    ensure!(
        held > 512 * MIB,
        "the balloon reached its target while the hog held its memory"
    );
    ensure!(
        vm.sh_rc("test -e /tmp/hog.rc", Duration::from_secs(10))?.0 != 0,
        "the hog ended early (killed?)"
    );
    let t = Instant::now();
    while vm.sh_rc("test -e /tmp/hog.rc", Duration::from_secs(10))?.0 != 0 {
        ensure!(
            t.elapsed() < Duration::from_secs(60),
            "the hog did not finish"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    ensure!(
        vm.sh("cat /tmp/hog.rc")?.trim() == "0",
        "the hog exited {}",
        vm.sh("cat /tmp/hog.rc")?.trim()
    );
    vm.wait_actual(512 * MIB, MOVE_TIMEOUT)
        .context("after the hog exited")?;
    assert_ballooned(vm, total0, 1536, "after the hog")?;
    deflate_exact(vm, total0, "hog")?;
    vm.assert_dmesg_clean()
}
