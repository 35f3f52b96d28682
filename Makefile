# vballoon front door. Thin: every target calls a script in scripts/.
# When invoked by kbuild (KERNELRELEASE set), Kbuild does the work instead.
ifneq ($(KERNELRELEASE),)
include $(src)/Kbuild
else

.PHONY: all setup kernel kernel-debug kdir-debian module install uninstall test test-debug demo watch bench stress clean clippy

all: module

setup:
	bash scripts/setup.sh

kernel: setup
	bash scripts/kernel.sh guest

kernel-debug: setup
	bash scripts/kernel.sh debug

# One of Debian's own Rust-enabled kernels made buildable (its headers plus the Rust half they
# lack, rebuilt in that suite's chroot; scripts/debian-kernel.sh): RELEASE=7.3.4+deb13-amd64, or
# SUITE=trixie-backports|sid for the newest there. Prints the KDIR for make module/install.
kdir-debian: setup
	bash scripts/debian-kernel.sh $(if $(RELEASE),--release $(RELEASE),$(or $(SUITE),trixie-backports))

# KDIR= overrides the kernel build tree (any CONFIG_RUST build made with the same rustc).
module: setup
	bash scripts/module.sh $(if $(KDIR),--kdir $(KDIR))

# Install for the kernel tree KDIR (default: the running kernel's /lib/modules/$(uname -r)/build):
# lib/modules/<release>/extra/vballoon.ko, etc/modprobe.d/vballoon.conf, depmod; under DESTDIR= if
# set. Builds the module first. uninstall removes exactly that (scripts/install.sh).
install:
	bash scripts/install.sh $(if $(KDIR),--kdir $(KDIR)) $(if $(DESTDIR),--destdir $(DESTDIR))

uninstall:
	bash scripts/install.sh --uninstall $(if $(KDIR),--kdir $(KDIR)) $(if $(DESTDIR),--destdir $(DESTDIR))

test:
	bash scripts/test.sh all

test-debug:
	bash scripts/test.sh debug

demo:
	bash scripts/harness.sh demo

# Follow vballoon's counters in a running test guest, once a second (the demo's guest writes
# them; test guests do with VB_WATCH=1). scripts/watch.sh [FILE] follows a given guest.
watch:
	bash scripts/watch.sh

bench:
	bash scripts/harness.sh bench

# The long soak on the debug kernel (scripts/stress.sh; make test runs a short one).
stress:
	bash scripts/stress.sh

clippy:
	bash scripts/lint.sh

clean:
	rm -rf build target
endif
